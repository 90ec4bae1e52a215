//! Test support for end-to-end tests: a real local OCI registry and test images built in Rust.

pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod images;
pub mod netns;
pub mod node;
pub mod registry;
