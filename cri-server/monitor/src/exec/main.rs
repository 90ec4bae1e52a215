//! `cri-exec`: runs one command inside a running container as `runc exec` would, in a few
//! milliseconds instead of two Go runtime start-ups. cri-server uses it for ExecSync.
//!
//! `cri-exec --pid PID --config BUNDLE/config.json -- CMD [ARGS...]`, with the container's
//! init PID. It joins the init's cgroups and namespaces (user first, mount last), forks (a
//! PID namespace applies to children), and the child takes on the container's process
//! settings from config.json: seccomp (built as runc builds it), bounding, permitted,
//! effective, inheritable and ambient capabilities, groups, gid, uid, rlimits, no_new_privs,
//! cwd, env; then it execs CMD looked up in the container's PATH. The child dies with us.
//!
//! Exit status: the command's, or 128+signal. Anything that fails before CMD runs is written
//! as one line `E <reason>` to fd 3 when open (so cri-server can fall back to the OCI runtime)
//! and to stderr, and the exit status is 255.

mod caps;
mod cgroup;
mod seccomp;
mod spec;

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str =
    "usage: cri-exec --pid PID --id CONTAINER_ID --config CONFIG_JSON -- CMD [ARGS...]
       cri-exec --check CONFIG_JSON   (can the process of CONFIG_JSON be reproduced?)";

/// fd 3, when the caller passed it: where setup failures are reported.
const STATUS_FD: i32 = 3;

fn fail(msg: &str) -> ExitCode {
    report('E', msg);
    ExitCode::from(255)
}

/// `E`: nothing ran, the caller may use the OCI runtime instead; `X`: the command itself could
/// not be executed (a result, as runc reports it).
fn report(kind: char, msg: &str) {
    let line = format!("{kind} {msg}\n");
    // SAFETY: plain writes of a buffer we own; fd 3 may not be open (EBADF is fine).
    unsafe {
        libc::write(STATUS_FD, line.as_ptr().cast(), line.len());
        let e = format!("cri-exec: {msg}\n");
        libc::write(2, e.as_ptr().cast(), e.len());
    }
}

fn main() -> ExitCode {
    // fd 3 is the status pipe; without one, /dev/null holds the number so no file we open
    // later lands on it.
    // SAFETY: fcntl/open/dup2 on descriptor numbers only.
    unsafe {
        if libc::fcntl(STATUS_FD, libc::F_GETFD) < 0 {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 && null != STATUS_FD {
                libc::dup2(null, STATUS_FD);
                libc::close(null);
            }
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut pid: Option<i32> = None;
    let mut id: Option<String> = None;
    let mut config: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        match a.as_ref() {
            "--pid" => {
                pid = args.get(i + 1).and_then(|v| v.to_str()?.parse().ok());
                i += 2;
            }
            "--config" => {
                config = args.get(i + 1).map(PathBuf::from);
                i += 2;
            }
            "--id" => {
                id = args.get(i + 1).map(|v| v.to_string_lossy().into_owned());
                i += 2;
            }
            "--check" => {
                let Some(path) = args.get(i + 1) else {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                };
                return check(Path::new(path));
            }
            "--" => {
                i += 1;
                break;
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let cmd: Vec<OsString> = args[i.min(args.len())..].to_vec();
    let (Some(pid), Some(id), Some(config), false) = (pid, id, config, cmd.is_empty()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(pid, &id, &config, &cmd) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Exit 0 when a container with this config could be exec'd into directly: its settings are
/// all ones we reproduce and its seccomp filter compiles here.
fn check(config: &Path) -> ExitCode {
    match spec::Spec::read(config).and_then(|s| s.prepare().map(drop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-exec: {e}");
            ExitCode::from(1)
        }
    }
}

/// The process `pid` names, pinned: a pidfd, once its cgroup shows it is container `id`'s.
fn pin_init(pid: i32, id: &str) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open returns a descriptor we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(format!(
            "container init {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: just returned by the kernel.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let ours = cgroups
        .lines()
        .filter_map(|l| l.rsplit(':').next())
        .any(|path| path.rsplit('/').next() == Some(id));
    if !ours {
        return Err(format!("process {pid} is not container {id}'s init"));
    }
    Ok(fd)
}

/// Still the process `pin_init` checked (its pid was not reused meanwhile)?
fn still_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 through a pidfd we hold only checks that the process exists.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

fn run(pid: i32, id: &str, config: &Path, cmd: &[OsString]) -> Result<ExitCode, String> {
    // Nothing in the container may open /proc/<us>/exe or ptrace us while we are in it.
    // SAFETY: prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let spec = spec::Spec::read(config)?;
    let prepared = spec.prepare()?;
    let argv: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "NUL in the command".to_string()))
        .collect::<Result<_, _>>()?;
    let program = find_program(&cmd[0]);
    // A pid read from a record can be reused once the container exits: pin the process, check
    // it is this container's, and check it is still the same one after reading its cgroups and
    // opening its namespaces by pid.
    let init = pin_init(pid, id)?;
    cgroup::join(pid)?;
    let namespaces = open_namespaces(pid)?;
    if !still_alive(&init) {
        return Err(format!("container {id} exited"));
    }
    for (ns, fd) in &namespaces {
        // SAFETY: setns with a namespace fd we hold; single-threaded process.
        if unsafe { libc::setns(fd.as_raw_fd(), 0) } != 0 {
            return Err(format!(
                "join the container's {ns} namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(namespaces);
    // SAFETY: single-threaded; the child only makes syscalls and execs or exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        // Our pid as seen from here (0 when we are outside its PID namespace).
        // SAFETY: getppid never fails.
        let parent = unsafe { libc::getppid() };
        let (kind, e) = match become_container_process(&prepared, parent, program.as_deref(), &argv)
        {
            Failure::Setup(e) => ('E', e),
            Failure::Exec(e) => ('X', e),
        };
        report(kind, &e);
        // SAFETY: leave without running anything of the parent's.
        unsafe { libc::_exit(255) };
    }
    // The command's own status is ours; nothing else may write to fd 3 now.
    // SAFETY: closing our copy of the status fd.
    unsafe { libc::close(STATUS_FD) };
    let mut status = 0;
    loop {
        // SAFETY: waiting for our child.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Ok(ExitCode::from(255));
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    };
    Ok(ExitCode::from(code as u8))
}

/// The init's namespaces that differ from ours, user first and mount last (after mount, the
/// /proc we see is the container's).
fn open_namespaces(pid: i32) -> Result<Vec<(&'static str, OwnedFd)>, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for ns in ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"] {
        let theirs = format!("/proc/{pid}/ns/{ns}");
        let ours = format!("/proc/self/ns/{ns}");
        let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            return Err(format!("read {theirs}"));
        };
        if t.ino() == o.ino() && t.dev() == o.dev() {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| format!("open {theirs}: {e}"))?;
        out.push((ns, OwnedFd::from(f)));
    }
    Ok(out)
}

/// A program named with a slash is run as given; a bare name is looked up on the
/// container's PATH by the child, inside the container's mount namespace.
fn find_program(name: &OsString) -> Option<CString> {
    let bytes = name.as_bytes();
    if bytes.contains(&b'/') {
        CString::new(bytes).ok()
    } else {
        None
    }
}

enum Failure {
    Setup(String),
    Exec(String),
}

/// In the forked child: become the container's process and exec. Returns only on failure.
fn become_container_process(
    p: &spec::Prepared,
    parent: i32,
    program: Option<&std::ffi::CStr>,
    argv: &[CString],
) -> Failure {
    match setup_child(p) {
        Err(e) => Failure::Setup(e),
        Ok(()) => Failure::Exec(exec(p, parent, program, argv)),
    }
}

fn setup_child(p: &spec::Prepared) -> Result<(), String> {
    macro_rules! sys {
        ($what:expr, $call:expr) => {
            // SAFETY: plain syscalls on our own process with arguments we own.
            if unsafe { $call } != 0 {
                return Err(format!("{}: {}", $what, std::io::Error::last_os_error()));
            }
        };
    }
    // Default signal dispositions and an empty mask, as a process runc starts gets (Rust
    // ignores SIGPIPE in its own processes, and an ignored signal stays ignored across exec).
    // SAFETY: resetting our own dispositions and mask.
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    // Only 0-2 (and fd 3 until exec) stay open.
    // SAFETY: close_range on descriptors this process inherited.
    unsafe {
        libc::syscall(libc::SYS_close_range, 4u32, libc::c_uint::MAX, 0);
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    if let Some(f) = &p.seccomp
        && !p.no_new_privileges
        && let Err(e) = seccomp::load(f)
    {
        return Err(format!("load the seccomp filter: {e}"));
    }
    for cap in 0..=caps::LAST_CAP {
        if p.caps.bounding & (1 << cap) == 0 {
            // SAFETY: dropping a capability from our own bounding set.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(format!(
                    "drop capability {cap} from the bounding set: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    sys!(
        "keep capabilities",
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)
    );
    let groups: Vec<libc::gid_t> = p.additional_gids.clone();
    sys!(
        "set supplementary groups",
        libc::setgroups(groups.len(), groups.as_ptr())
    );
    sys!("set gid", libc::setresgid(p.gid, p.gid, p.gid));
    sys!("set uid", libc::setresuid(p.uid, p.uid, p.uid));
    sys!(
        "clear keep-capabilities",
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0)
    );
    caps::apply(&p.caps)?;
    for (resource, soft, hard) in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        sys!(
            format!("set rlimit {resource}"),
            libc::setrlimit(*resource as _, &lim)
        );
    }
    // SAFETY: umask never fails.
    unsafe { libc::umask(0o022) };
    if let Ok(cwd) = CString::new(p.cwd.as_bytes()) {
        sys!(format!("chdir to {:?}", p.cwd), libc::chdir(cwd.as_ptr()));
    }
    if p.no_new_privileges {
        sys!(
            "set no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
        if let Some(f) = &p.seccomp
            && let Err(e) = seccomp::load(f)
        {
            return Err(format!("load the seccomp filter: {e}"));
        }
    }
    Ok(())
}

/// Execs the command (PATH lookup for a bare name). Returns only on failure.
fn exec(
    p: &spec::Prepared,
    parent: i32,
    program: Option<&std::ffi::CStr>,
    argv: &[CString],
) -> String {
    // Die with cri-exec (cri-server kills it at the ExecSync timeout).
    // SAFETY: prctl and getppid on ourselves.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(137);
        }
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let candidates: Vec<CString> = match program {
        Some(path) => vec![path.to_owned()],
        None => p
            .env_path
            .split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| CString::new(format!("{d}/{}", argv[0].to_string_lossy())).ok())
            .collect(),
    };
    let mut last = libc::ENOENT;
    for c in &candidates {
        // SAFETY: execve with NUL-terminated argv/envp arrays that outlive the call.
        unsafe { libc::execve(c.as_ptr(), argv_p.as_ptr(), envp.as_ptr()) };
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if err != libc::ENOENT && err != libc::ENOTDIR {
            last = err;
        }
    }
    if program.is_none() && last == libc::ENOENT {
        return format!(
            "exec: {:?}: executable file not found in $PATH",
            argv[0].to_string_lossy()
        );
    }
    format!(
        "exec {:?}: {}",
        argv[0].to_string_lossy(),
        std::io::Error::from_raw_os_error(last)
    )
}
