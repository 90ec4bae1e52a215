//! Integration tests: the real `device-plugin` binary, the file backend over char devices
//! made with mknod in a temp dir, a kubelet stand-in (a Registration server on
//! `<dir>/kubelet.sock`) and a DevicePlugin client on the plugin's socket. Needs root (mknod).

mod harness;

mod allocate;
mod list_and_watch;
mod nvml;
mod preferred_allocation;
mod registration;
mod time_slicing;
