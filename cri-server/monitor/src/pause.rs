//! `cri-monitor pause --pid-file FILE`: the infra process of a pod that shares one PID
//! namespace. It creates the namespace, forks its PID 1 (named `cri-pause`), writes that
//! process's host pid to FILE and exits; PID 1 reaps orphans until SIGTERM/SIGINT or SIGKILL
//! (which ends every process of the namespace with it). With `--userns PATH` it joins the
//! pod's user namespace first, so the PID namespace is owned by it and the containers' root can
//! mount its /proc.

use std::path::Path;
use std::process::ExitCode;

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};

extern "C" fn leave(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

pub fn run(pid_file: &Path, userns: Option<&Path>) -> ExitCode {
    if let Some(path) = userns {
        let joined = std::fs::File::open(path).and_then(|f| {
            nix::sched::setns(f, CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)
        });
        if let Err(e) = joined {
            eprintln!(
                "cri-monitor pause: join the user namespace {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        eprintln!("cri-monitor pause: unshare the PID namespace: {e}");
        return ExitCode::FAILURE;
    }
    // SAFETY: single-threaded here; the child only makes plain syscalls.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("cri-monitor pause: fork: {e}");
            ExitCode::FAILURE
        }
        Ok(ForkResult::Parent { child }) => {
            let tmp = pid_file.with_extension("tmp");
            let written = std::fs::write(&tmp, child.to_string())
                .and_then(|()| std::fs::rename(&tmp, pid_file));
            if let Err(e) = written {
                eprintln!("cri-monitor pause: write {}: {e}", pid_file.display());
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(ForkResult::Child) => {
            let _ = setsid();
            // SAFETY: the name is a NUL-terminated static string.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"cri-pause".as_ptr(), 0, 0, 0) };
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this process.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            // SAFETY: close_range only closes descriptors this fresh process inherited.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, libc::c_uint::MAX, 0) };
            // PID 1 has no default signal actions: install the ones that end it.
            // SAFETY: the handler only calls _exit.
            unsafe {
                let _ = signal(Signal::SIGTERM, SigHandler::Handler(leave));
                let _ = signal(Signal::SIGINT, SigHandler::Handler(leave));
            }
            loop {
                if waitpid(None, None).is_err() {
                    // No child: sleep until a signal (a new orphan sends SIGCHLD).
                    // SAFETY: pause only waits for a signal.
                    unsafe { libc::pause() };
                }
            }
        }
    }
}
