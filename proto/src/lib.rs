//! Vigil's own protobuf messages, generated at build time from `proto/vigil/`,
//! and the Prometheus remote-write messages from `proto/prometheus/`.
//!
//! OTLP types are not here: they come from the `opentelemetry-proto` crate.

/// `vigil.bus.v1`: messages between Vigil's components on the bus.
pub mod bus {
    /// Version 1 of the bus messages.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/vigil.bus.v1.rs"));
    }
}

/// `vigil.client.v1`: telemetry from mobile and web apps, and its gRPC service.
pub mod client {
    /// Version 1 of client telemetry.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/vigil.client.v1.rs"));
    }
}

/// Prometheus remote-write 1.0 (`prometheus.WriteRequest`), as Prometheus sends it.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// The descriptors of every message and service above (a serialized
/// `google.protobuf.FileDescriptorSet`), for clients that build messages at
/// run time, like the prober's gRPC steps.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptors.bin"));

pub mod wire;
