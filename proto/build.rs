//! Compiles the `.proto` files under `vigil/` and `prometheus/` with the
//! vendored `protoc`, so a build needs no `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "vigil/bus/v1/distribution.proto",
        "vigil/bus/v1/rollup.proto",
        "vigil/client/v1/client.proto",
        "prometheus/remote.proto",
    ];
    // Once a build script names what it depends on, cargo watches only that:
    // name this file and the proto folders, so new or edited files rebuild.
    for path in ["build.rs", "vigil", "prometheus"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Client telemetry is also sent as JSON: lowerCamelCase names, and a
    // missing field is its default.
    let client = ".vigil.client.v1";
    // The descriptor set lets tools without the generated code (the
    // prober's gRPC steps) build these messages.
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("vigil_descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .build_client(true)
        .build_server(true)
        .type_attribute(client, "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(client, "#[serde(default, rename_all = \"camelCase\")]")
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
