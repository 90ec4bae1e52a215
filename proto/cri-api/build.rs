//! Generates CRI runtime.v1 (messages, RuntimeService and ImageService clients
//! and servers) from `proto/cri/v1/api.proto` with `protox`, a pure Rust
//! protobuf compiler, so building needs no system `protoc`.
//!
//! Every message also derives serde: cri-server keeps request configs (pod and
//! container configs) in its on-disk records.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cri");
    let proto = include.join("v1/api.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([&proto], [&include])?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
