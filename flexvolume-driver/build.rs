//! Generates the CSI v1 API (messages, client and server) from
//! `proto/csi/v1/csi.proto`.
//!
//! The .proto is parsed by `protox`, a pure Rust compiler, so no system
//! `protoc` is needed; its descriptor set is handed to `tonic-prost-build`.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/csi");
    let proto = include.join("v1/csi.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([&proto], [&include])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
