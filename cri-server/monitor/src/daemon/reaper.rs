//! Child reaping and exit records. The monitor is a child subreaper, so it reaps the OCI
//! runtime's `create` process, the container inits reparented to it, and any stray
//! grandchild; only container inits get an `exit.json`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use cri_monitor::protocol::{EXIT_FILE_NAME, ExitRecord};

use super::timestamp;

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    /// Exit code, or 128 + signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub at_unix_nanos: i64,
}

impl Reaped {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none()
    }
}

/// Reaps every child that has exited, without blocking.
pub fn reap_all() -> Vec<Reaped> {
    let mut reaped = Vec::new();
    loop {
        let (pid, exit_code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
        {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
            Ok(WaitStatus::Signaled(pid, sig, _core)) => {
                let sig = sig as i32;
                (pid, 128 + sig, Some(sig))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) => continue, // stopped/continued: not asked for, not an exit
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        reaped.push(Reaped {
            pid: pid.as_raw(),
            exit_code,
            signal,
            at_unix_nanos: timestamp::now_unix_nanos(),
        });
    }
    reaped
}

/// Builds the exit record of a container init, reading its OOM counter.
pub fn exit_record(reaped: &Reaped, cgroup_memory_dir: Option<&Path>) -> ExitRecord {
    ExitRecord {
        exit_code: reaped.exit_code,
        signal: reaped.signal,
        exited_at_unix_nanos: reaped.at_unix_nanos,
        oom_killed: cgroup_memory_dir.is_some_and(oom_killed),
    }
}

/// True if the memory cgroup counted an OOM kill: `oom_kill N` in `memory.events` (v2) or
/// `memory.oom_control` (v1).
pub fn oom_killed(dir: &Path) -> bool {
    ["memory.events", "memory.oom_control"]
        .iter()
        .any(|name| fs::read_to_string(dir.join(name)).is_ok_and(|text| oom_kill_count(&text) > 0))
}

fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// Writes `<bundle>/exit.json` atomically (temp file, rename): readers see all of it or
/// nothing. No fsync: the bundle is volatile state (like cri-server's pod and container
/// records), and two disk flushes here would delay every StopContainer.
pub fn write_exit_record(bundle: &Path, record: &ExitRecord) -> io::Result<()> {
    let tmp = bundle.join(".exit.json.tmp");
    let mut bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    drop(file);
    fs::rename(&tmp, bundle.join(EXIT_FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_counter_of_v1_and_v2() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), 2);
        assert_eq!(oom_kill_count(v2), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
