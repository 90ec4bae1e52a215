//! cri-server: a CRI v1 runtime and image service for the kubelet.
//!
//! `service` is the gRPC wire layer; `image` the image domain; `config` and `store` the
//! daemon's configuration and its on-disk state helpers; `server` wires them to a unix socket.

pub mod cgroup_warm;
pub mod config;
pub mod container;
pub mod failpoint;
pub mod features;
pub mod image;
pub mod metrics;
pub mod mountapi;
pub mod network;
pub mod oci;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod stats;
pub mod store;
pub mod streaming;
