//! cri-monitor: the per-pod monitor daemon's protocol, a blocking client for cri-server, and
//! a helper to start the daemon. The daemon itself is the `cri-monitor` binary (`src/main.rs`,
//! `src/daemon/`): it holds container stdio, writes CRI-format logs and records exit codes.

pub mod client;
pub mod launch;
pub mod protocol;
pub mod sockpath;
