//! device-plugin: a kubelet device plugin (v1beta1) for GPUs and other devices (issue 7).
//!
//! Not built yet: it says so and exits non-zero rather than registering nothing.

fn main() {
    eprintln!("device-plugin: not implemented yet; it does not register with the kubelet");
    std::process::exit(1);
}
