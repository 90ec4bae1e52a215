//! cni-bridge: the CNI plugin binary. Reads `CNI_*` and the configuration on stdin, prints
//! the result (or the spec's error JSON) on stdout; logs go to stderr only.
//!
//! A runtime starts the plugin once per command, so its start-up is part of every ADD's
//! latency. It starts at the C `main`: std's own start-up (stack-overflow guard and handlers,
//! which read `/proc/self/maps`) buys nothing for a process that lives a few milliseconds.
#![cfg_attr(not(test), no_main)]

use std::io::{Read, Write};

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // What std's start-up would do: a closed stdout is EPIPE, not a silent death by SIGPIPE.
    // SAFETY: setting a signal disposition to SIG_IGN runs no code of ours.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic must not unwind out of an `extern "C"` function; it fails the command instead.
    std::panic::catch_unwind(run).unwrap_or(101)
}

#[cfg(test)]
fn main() {}

#[cfg_attr(test, allow(dead_code))]
fn run() -> libc::c_int {
    cni_bridge::trace::init(|k| std::env::var(k).ok());
    cni_bridge::trace::mark("start");
    // One read for any configuration of ordinary size.
    let mut stdin = Vec::with_capacity(16 * 1024);
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut stdin) {
        eprintln!("cni-bridge: read stdin: {e}");
    }
    cni_bridge::trace::mark("stdin read");
    let outcome = cni_bridge::command::run(|k| std::env::var(k).ok(), &stdin);
    let mut out = std::io::stdout().lock();
    let code = match outcome.output {
        Ok(Some(v)) => {
            let mut text = serde_json::to_vec(&v).unwrap_or_default();
            text.push(b'\n');
            let _ = out.write_all(&text);
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
            let id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
            eprintln!(
                "cni-bridge: command={cmd} container={id} code={} error={e}",
                e.code()
            );
            let _ = writeln!(out, "{}", e.to_json(&outcome.cni_version));
            1
        }
    };
    // Nothing flushes std's buffers after a C `main` returns.
    let _ = out.flush();
    cni_bridge::trace::mark("result written");
    code
}
