//! `cri-monitor`: the per-pod monitor daemon. Forks; the child becomes the daemon and, once
//! its socket is bound, tells the parent, which exits 0 (or prints the startup error and
//! exits 1). The daemon then lives on, reparented, whatever happens to its caller.

mod daemon;
mod pause;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, fork, pipe2};

const USAGE: &str = "\
usage: cri-monitor --sandbox-id ID --dir DIR --runtime-root RUNROOT
       cri-monitor pause --pid-file FILE [--userns PATH]

Per-pod monitor: holds container stdio, writes CRI-format logs and records exit codes.
Binds DIR/monitor.sock (one JSON request per line), writes DIR/monitor.pid and logs to
DIR/monitor.log. Exits 0 once the daemon it forks is ready; the daemon keeps running.

  --sandbox-id ID        the pod sandbox id (for the monitor's own log)
  --dir DIR              the pod's state dir (must exist)
  --runtime-root RUNROOT the OCI runtime's --root
  --help                 this text

`pause` starts the PID 1 of a pod-wide PID namespace (named cri-pause), writes its pid to
FILE and exits. With --userns it first joins that user namespace, so the PID namespace
belongs to the pod's user namespace.
";

/// The byte the daemon sends its parent when it is ready.
const READY: u8 = b'R';

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "pause") {
        let rest: Vec<OsString> = args.skip(1).collect();
        return match rest.as_slice() {
            [flag, file] if flag == "--pid-file" => pause::run(std::path::Path::new(file), None),
            [flag, file, uflag, userns] if flag == "--pid-file" && uflag == "--userns" => {
                pause::run(
                    std::path::Path::new(file),
                    Some(std::path::Path::new(userns)),
                )
            }
            _ => {
                eprintln!("usage: cri-monitor pause --pid-file FILE [--userns PATH]");
                ExitCode::from(2)
            }
        };
    }
    let config = match parse_args(args) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cri-monitor: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (ready_r, ready_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cri-monitor: make a pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the process is single-threaded here (nothing has spawned a thread), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("cri-monitor: fork: {e}");
            ExitCode::FAILURE
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_w);
            let mut answer = Vec::new();
            let _ = std::fs::File::from(ready_r).read_to_end(&mut answer);
            if answer.first() == Some(&READY) {
                return ExitCode::SUCCESS;
            }
            // The daemon failed and exited: reap it, then say why.
            let _ = nix::sys::wait::waitpid(child, None);
            if answer.is_empty() {
                eprintln!("cri-monitor: the daemon exited during startup");
            } else {
                eprintln!("cri-monitor: {}", String::from_utf8_lossy(&answer));
            }
            ExitCode::FAILURE
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            close_inherited_fds(ready_w.as_raw_fd());
            let mut ready_w = std::fs::File::from(ready_w);
            match daemon::Daemon::prepare(config) {
                Ok(d) => {
                    let _ = ready_w.write_all(&[READY]);
                    drop(ready_w);
                    d.run();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = ready_w.write_all(format!("start monitor: {e}").as_bytes());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Closes every fd above stderr except `keep`: the daemon must not hold on to pipes or
/// sockets its caller let it inherit (a caller reading to EOF would wait forever).
fn close_inherited_fds(keep: RawFd) {
    let keep = keep as libc::c_uint;
    for (first, last) in [(3, keep.saturating_sub(1)), (keep + 1, libc::c_uint::MAX)] {
        if first <= last {
            // SAFETY: close_range(2) only closes descriptors; none above 2 but `keep` is in
            // use by this freshly forked, single-threaded process.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    }
}

/// Parses the flags; `Ok(None)` for `--help`.
fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Option<daemon::Config>, String> {
    let (mut sandbox_id, mut dir, mut runtime_root) = (None, None, None);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || -> Result<OsString, String> {
            match &inline {
                Some(v) => Ok(v.into()),
                None => args.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--sandbox-id" => sandbox_id = Some(value()?.into_string().map_err(|_| "bad id")?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--runtime-root" => runtime_root = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let missing = |name: &str| format!("{name} is required");
    // The daemon changes to `/`: relative paths are made absolute first.
    let absolute =
        |p: PathBuf| std::path::absolute(&p).map_err(|e| format!("{}: {e}", p.display()));
    let dir = absolute(dir.ok_or_else(|| missing("--dir"))?)?;
    let runtime_root = absolute(runtime_root.ok_or_else(|| missing("--runtime-root"))?)?;
    Ok(Some(daemon::Config {
        sandbox_id: sandbox_id.ok_or_else(|| missing("--sandbox-id"))?,
        dir,
        runtime_root,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<daemon::Config>, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let c = parse(&["--sandbox-id", "s1", "--dir=/d", "--runtime-root", "/r"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                c.sandbox_id.as_str(),
                c.dir.to_str(),
                c.runtime_root.to_str()
            ),
            ("s1", Some("/d"), Some("/r"))
        );
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--dir", "/d"]).is_err());
        let rel = parse(&["--sandbox-id", "s", "--dir", "rel", "--runtime-root", "/r"]);
        assert!(rel.unwrap().unwrap().dir.is_absolute());
        assert!(parse(&["--bogus"]).is_err());
    }
}
