//! flexvolume-driver: Flexvolume calls and a CSI node endpoint over loop devices (issue 6).
//!
//! Not built yet. Every call answers the Flexvolume "Failure" JSON and exits non-zero, so the
//! kubelet never believes a volume was attached or mounted.

fn main() {
    let call = std::env::args().nth(1).unwrap_or_default();
    println!(
        "{{\"status\":\"Failure\",\"message\":\"flexvolume-driver is not implemented yet (call {call:?})\"}}"
    );
    std::process::exit(1);
}
