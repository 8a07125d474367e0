//! Compiles the `.proto` files under `vigil/` with the vendored `protoc`, so a
//! build needs no `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["vigil/bus/v1/distribution.proto", "prometheus/remote.proto"];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
