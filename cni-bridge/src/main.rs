//! cni-bridge: the CNI plugin binary. Reads `CNI_*` and the configuration on stdin, prints
//! the result (or the spec's error JSON) on stdout; logs go to stderr only.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("cni-bridge: read stdin: {e}");
    }
    let outcome = cni_bridge::command::run(|k| std::env::var(k).ok(), &stdin);
    let mut out = std::io::stdout().lock();
    match outcome.output {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
        }
        Ok(None) => {}
        Err(e) => {
            let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
            let id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
            eprintln!(
                "cni-bridge: command={cmd} container={id} code={} error={e}",
                e.code()
            );
            let _ = writeln!(out, "{}", e.to_json(&outcome.cni_version));
            let _ = out.flush();
            std::process::exit(1);
        }
    }
}
