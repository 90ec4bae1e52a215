//! cni-bridge: a CNI plugin wiring pod netns to a Linux bridge (issue 4).
//!
//! Not built yet. It answers every CNI command with the spec's error JSON so a runtime that
//! execs it fails clearly instead of believing a network was set up.

fn main() {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    // CNI error code 4 means "invalid environment variables"; the closest honest code for
    // "this plugin cannot do anything yet" in the spec's reserved range is a plugin-specific
    // code (>= 100).
    println!(
        "{{\"cniVersion\":\"1.1.0\",\"code\":100,\"msg\":\"cni-bridge is not implemented yet\",\"details\":\"command {command:?} refused\"}}"
    );
    eprintln!("cni-bridge: not implemented yet (command {command:?})");
    std::process::exit(1);
}
