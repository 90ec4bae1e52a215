//! Kubernetes CRI v1 (`runtime.v1`) generated from `proto/cri/v1/api.proto`.
//!
//! The workspace imports this crate under the name `k8s_cri`, so paths read
//! `k8s_cri::v1::RuntimeServiceClient` and so on.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}
