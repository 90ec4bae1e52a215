//! The monitor daemon: one thread, one poll(2) loop over the socket, the client connections,
//! a signalfd (SIGCHLD, SIGTERM, SIGINT) and every container output. Nothing blocks the loop
//! for long: `create` spawns the runtime and is answered when the reaper sees it exit.

mod conn;
mod console;
mod container;
mod create;
pub mod cri_log;
pub mod diag;
mod reaper;
pub mod timestamp;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::{Mode, umask};

use cri_monitor::protocol::{
    ContainerInfo, CreateRequest, DIAG_LOG_NAME, PID_FILE_NAME, Request, Response, SOCKET_NAME,
    attach,
};
use cri_monitor::sockpath;

use conn::Connection;
use container::{Container, ReadOutcome};
use create::PendingCreate;
use diag::diag;
use reaper::Reaped;

/// What the daemon was started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub sandbox_id: String,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
}

/// Most client connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// Reaped pids that were not (yet) known container inits, kept in case a `create` learns
/// about its init only after that init already died.
const MAX_UNKNOWN_EXITS: usize = 64;
/// One read from any fd goes here: the loop's only large buffer.
const READ_BUF: usize = 32 * 1024;

pub struct Daemon {
    config: Config,
    dir_handle: File,
    socket_path: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    conns: Vec<Connection>,
    containers: Vec<Container>,
    pending: Vec<PendingCreate>,
    unknown_exits: VecDeque<Reaped>,
    next_key: u64,
    read_buf: Vec<u8>,
    out_buf: Vec<u8>,
    shutting_down: bool,
}

/// What a poll slot belongs to.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Signals,
    Listener,
    Conn(u64),
    Output { container: u64, index: usize },
}

impl Daemon {
    /// Everything before "ready": session, subreaper, signals, socket, pid file, and stdio
    /// pointed at /dev/null. An error here is reported to the starting process.
    pub fn prepare(config: Config) -> io::Result<Daemon> {
        let dir_handle = File::open(&config.dir)
            .map_err(|e| with_context(e, format!("open state dir {}", config.dir.display())))?;
        if !dir_handle.metadata()?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                config.dir.display()
            )));
        }
        nix::unistd::setsid().map_err(|e| with_context(e.into(), "setsid".into()))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| with_context(e.into(), "become a child subreaper".into()))?;
        // SAFETY: SIG_IGN installs no handler code; nothing else in this process relies on
        // SIGPIPE or SIGHUP being delivered.
        unsafe {
            signal(Signal::SIGPIPE, SigHandler::SigIgn).map_err(io::Error::from)?;
            signal(Signal::SIGHUP, SigHandler::SigIgn).map_err(io::Error::from)?;
        }
        let mut mask = SigSet::empty();
        for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(sig);
        }
        mask.thread_block().map_err(io::Error::from)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| with_context(e.into(), "signalfd".into()))?;

        diag::init(&config.dir.join(DIAG_LOG_NAME), &config.sandbox_id).map_err(|e| {
            with_context(
                e,
                format!("open {}", config.dir.join(DIAG_LOG_NAME).display()),
            )
        })?;
        let socket_path = config.dir.join(SOCKET_NAME);
        let listener = bind_socket(&socket_path)?;
        write_pid_file(&config.dir.join(PID_FILE_NAME))?;

        let devnull = File::options().read(true).write(true).open("/dev/null")?;
        nix::unistd::dup2_stdin(&devnull).map_err(io::Error::from)?;
        nix::unistd::dup2_stdout(&devnull).map_err(io::Error::from)?;
        nix::unistd::dup2_stderr(&devnull).map_err(io::Error::from)?;
        std::env::set_current_dir("/")?;
        umask(Mode::from_bits_truncate(0o022));

        diag!(
            "monitor started pid={} dir={} runtime_root={}",
            std::process::id(),
            config.dir.display(),
            config.runtime_root.display()
        );
        Ok(Daemon {
            config,
            dir_handle,
            socket_path,
            listener,
            signals,
            conns: Vec::new(),
            containers: Vec::new(),
            pending: Vec::new(),
            unknown_exits: VecDeque::new(),
            next_key: 1,
            read_buf: vec![0; READ_BUF],
            out_buf: Vec::new(),
            shutting_down: false,
        })
    }

    /// Serves until `shutdown` (or SIGTERM with no running container), then cleans up.
    pub fn run(mut self) {
        let mut ready = Vec::new();
        while !self.shutting_down {
            if let Err(e) = self.wait(&mut ready) {
                diag!("poll failed: {e}; exiting");
                break;
            }
            for &slot in &ready {
                self.handle(slot);
            }
            self.conns.retain(|c| !c.closed);
        }
        self.stop();
    }

    /// Polls every fd the daemon watches; fills `ready` with the slots that have events.
    fn wait(&self, ready: &mut Vec<Slot>) -> nix::Result<()> {
        ready.clear();
        let mut slots = Vec::with_capacity(2 + self.conns.len() + 2 * self.containers.len());
        let mut fds = Vec::with_capacity(slots.capacity());
        let readable = PollFlags::POLLIN;
        slots.push(Slot::Signals);
        fds.push(PollFd::new(self.signals.as_fd(), readable));
        if self.conns.len() < MAX_CONNECTIONS {
            slots.push(Slot::Listener);
            fds.push(PollFd::new(self.listener.as_fd(), readable));
        }
        for conn in self.conns.iter().filter(|c| !c.busy || c.wants_write()) {
            let mut flags = if conn.busy {
                PollFlags::empty()
            } else {
                readable
            };
            if conn.wants_write() {
                flags |= PollFlags::POLLOUT;
            }
            slots.push(Slot::Conn(conn.key));
            fds.push(PollFd::new(conn.stream.as_fd(), flags));
        }
        for c in &self.containers {
            for (index, output) in c.outputs.iter().enumerate() {
                slots.push(Slot::Output {
                    container: c.key,
                    index,
                });
                fds.push(PollFd::new(output.file.as_fd(), readable));
            }
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        // Outputs first (by descending index, so removing a closed output keeps the other
        // indices valid), then signals (an exit drains its outputs), then clients.
        for (slot, fd) in slots.iter().zip(&fds).rev() {
            if fd.revents().is_some_and(|f| !f.is_empty()) {
                ready.push(*slot);
            }
        }
        ready.sort_by_key(|slot| match slot {
            Slot::Output { .. } => 0,
            Slot::Signals => 1,
            Slot::Listener => 2,
            Slot::Conn(_) => 3,
        });
        Ok(())
    }

    fn handle(&mut self, slot: Slot) {
        match slot {
            Slot::Output { container, index } => {
                let Some(c) = self.containers.iter_mut().find(|c| c.key == container) else {
                    return;
                };
                if index >= c.outputs.len() {
                    return;
                }
                let (outcome, kind, len) =
                    c.read_output(index, &mut self.read_buf, &mut self.out_buf);
                let ended = outcome == ReadOutcome::Closed && c.outputs.is_empty();
                if ended {
                    diag!("container={} output closed", c.id);
                }
                for conn in self
                    .conns
                    .iter_mut()
                    .filter(|conn| conn.attached == Some(container))
                {
                    if len > 0 {
                        conn.forward(kind, &self.read_buf[..len]);
                    }
                    if ended {
                        conn.end_attach();
                    }
                }
            }
            Slot::Signals => self.on_signals(),
            Slot::Listener => self.accept(),
            Slot::Conn(key) => {
                if let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) {
                    conn.flush();
                    if !conn.busy {
                        conn.receive(&mut self.read_buf);
                    }
                }
                self.serve(key);
            }
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) =
                Signal::try_from(info.ssi_signo as i32)
            else {
                continue; // SIGCHLD: reaped below
            };
            let running = self.containers.iter().filter(|c| c.exit.is_none()).count();
            if running == 0 && self.pending.is_empty() {
                diag!("{sig} with no running container: exiting");
                self.shutting_down = true;
            } else {
                diag!(
                    "{sig} ignored: {running} containers running, {} being created",
                    self.pending.len()
                );
            }
        }
        // Reap whatever exited: SIGCHLDs coalesce, so one may stand for many exits.
        for reaped in reaper::reap_all() {
            self.on_reaped(reaped);
        }
    }

    fn on_reaped(&mut self, reaped: Reaped) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.runtime_pid == reaped.pid)
        {
            let pending = self.pending.swap_remove(i);
            self.finish_create(pending, &reaped);
        } else if let Some(c) = self
            .containers
            .iter_mut()
            .find(|c| c.pid == reaped.pid && c.exit.is_none())
        {
            record_exit(c, &reaped, &mut self.read_buf, &mut self.out_buf);
            let key = c.key;
            self.end_attaches(key);
        } else {
            if self.unknown_exits.len() == MAX_UNKNOWN_EXITS {
                self.unknown_exits.pop_front();
            }
            self.unknown_exits.push_back(reaped);
        }
    }

    fn finish_create(&mut self, pending: PendingCreate, runtime: &Reaped) {
        let conn = pending.conn;
        let started = pending.started_at_unix_nanos;
        let id = pending.request.id.clone();
        let key = self.next_key;
        self.next_key += 1;
        let response = match pending.finish(runtime, key) {
            Ok(mut container) => {
                diag!("container={id} created pid={}", container.pid);
                let pid = container.pid;
                // The init may have died before we knew its pid.
                if let Some(i) = self
                    .unknown_exits
                    .iter()
                    .position(|r| r.pid == pid && r.at_unix_nanos >= started)
                {
                    let reaped = self.unknown_exits.remove(i).expect("index in range");
                    record_exit(
                        &mut container,
                        &reaped,
                        &mut self.read_buf,
                        &mut self.out_buf,
                    );
                }
                self.containers.push(container);
                Response {
                    ok: true,
                    pid: Some(pid),
                    ..Response::default()
                }
            }
            Err(error) => {
                diag!("container={id} create failed: {error}");
                Response::error(error)
            }
        };
        if let Some(c) = self.conns.iter_mut().find(|c| c.key == conn) {
            c.busy = false;
            let _ = c.respond(&response);
            // Requests the client sent behind the create waited in its buffer.
            self.serve(conn);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let key = self.next_key;
                    self.next_key += 1;
                    match Connection::new(key, stream) {
                        Ok(conn) => self.conns.push(conn),
                        Err(e) => diag!("set up a client connection: {e}"),
                    }
                    if self.conns.len() >= MAX_CONNECTIONS {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    diag!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Closes the attach streams of container `key` (after what they have queued).
    fn end_attaches(&mut self, key: u64) {
        for conn in self.conns.iter_mut().filter(|c| c.attached == Some(key)) {
            conn.end_attach();
        }
    }

    /// Turns connection `conn` into an attach stream of container `id`.
    fn attach(&mut self, conn: u64, id: &str) -> Response {
        let Some(c) = self.containers.iter().find(|c| c.id == id) else {
            return Response::error(format!("container {id} not found"));
        };
        if c.exit.is_some() || c.outputs.is_empty() {
            return Response::error(format!("container {id} is not running"));
        }
        let (key, tty) = (c.key, c.is_tty());
        if let Some(conn) = self.conns.iter_mut().find(|x| x.key == conn) {
            conn.attached = Some(key);
        }
        diag!("container={id} attached");
        Response {
            ok: true,
            tty: Some(tty),
            ..Response::default()
        }
    }

    /// Applies the attach frames a connection has buffered.
    fn serve_attach(&mut self, key: u64) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) else {
            return;
        };
        let Some(container) = conn.attached else {
            return;
        };
        let mut frames = Vec::new();
        while let Some(f) = conn.next_frame() {
            frames.push(f);
        }
        let Some(c) = self.containers.iter_mut().find(|c| c.key == container) else {
            conn.end_attach();
            return;
        };
        for (kind, payload) in frames {
            match kind {
                attach::STDIN => {
                    if let Err(e) = c.write_stdin(&payload) {
                        diag!("container={} attach stdin: {e}", c.id);
                    }
                }
                attach::CLOSE_STDIN => c.close_stdin(),
                attach::RESIZE if payload.len() == 4 => c.resize(
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                ),
                _ => {
                    diag!("container={} attach: bad frame kind {kind}", c.id);
                    conn.closed = true;
                    return;
                }
            }
        }
    }

    /// Answers the complete requests a connection has buffered, until one must wait.
    fn serve(&mut self, key: u64) {
        loop {
            let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) else {
                return;
            };
            if conn.busy || conn.closed {
                return;
            }
            if conn.attached.is_some() {
                return self.serve_attach(key);
            }
            let request = match conn.next_request() {
                None => return,
                Some(Err(bad)) => {
                    let _ = conn.respond(&bad);
                    continue;
                }
                Some(Ok(request)) => request,
            };
            let response = match request {
                Request::Create(create) => match self.start_create(key, create) {
                    Some(response) => response,
                    None => {
                        if let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) {
                            conn.busy = true;
                        }
                        return;
                    }
                },
                Request::ReopenLog { id } => self.reopen_log(&id),
                Request::List => Response {
                    ok: true,
                    containers: Some(
                        self.containers
                            .iter()
                            .map(|c| ContainerInfo {
                                id: c.id.clone(),
                                pid: c.pid,
                                exited: c.exit.is_some(),
                            })
                            .collect(),
                    ),
                    ..Response::default()
                },
                Request::Forget { id } => self.forget(&id),
                Request::Attach { id } => self.attach(key, &id),
                Request::Shutdown => {
                    diag!("shutdown requested");
                    self.shutting_down = true;
                    Response::ok()
                }
            };
            if let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) {
                let _ = conn.respond(&response);
            }
        }
    }

    /// Starts a create; `None` when the runtime runs and the answer comes later.
    fn start_create(&mut self, conn: u64, request: CreateRequest) -> Option<Response> {
        let id = request.id.clone();
        if self.shutting_down {
            return Some(Response::error("monitor is shutting down"));
        }
        if self.containers.iter().any(|c| c.id == id) {
            return Some(Response::error(format!("container {id} already exists")));
        }
        if self.pending.iter().any(|p| p.request.id == id) {
            return Some(Response::error(format!(
                "container {id} is already being created"
            )));
        }
        let seq = self.next_key;
        self.next_key += 1;
        let ctx = create::Context {
            runtime_root: &self.config.runtime_root,
            dir: &self.config.dir,
            dir_handle: &self.dir_handle,
            seq,
            now_unix_nanos: timestamp::now_unix_nanos(),
        };
        match create::start(conn, request, &ctx) {
            Ok(pending) => {
                diag!(
                    "container={id} create started runtime_pid={} bundle={}",
                    pending.runtime_pid,
                    pending.request.bundle.display()
                );
                self.pending.push(pending);
                None
            }
            Err(error) => {
                diag!("container={id} create failed: {error}");
                Some(Response::error(error))
            }
        }
    }

    fn reopen_log(&mut self, id: &str) -> Response {
        let Some(c) = self.containers.iter_mut().find(|c| c.id == id) else {
            return Response::error(format!("container {id} not found"));
        };
        // Write out what is already read before the old file goes.
        c.write_log(&mut self.out_buf);
        match c.reopen_log() {
            Ok(()) => {
                diag!("container={id} log reopened {}", c.log_path.display());
                Response::ok()
            }
            Err(e) => {
                diag!("container={id} reopen log failed: {e}");
                Response::error(format!("reopen log {}: {e}", c.log_path.display()))
            }
        }
    }

    fn forget(&mut self, id: &str) -> Response {
        if let Some(i) = self.containers.iter().position(|c| c.id == id) {
            let mut c = self.containers.remove(i);
            c.drain_outputs(&mut self.read_buf, &mut self.out_buf);
            c.close_outputs(&mut self.out_buf);
            diag!("container={id} forgotten (exited={})", c.exit.is_some());
            self.end_attaches(c.key);
        }
        Response::ok()
    }

    /// Flushes every log and removes the socket and pid file.
    fn stop(mut self) {
        for c in &mut self.containers {
            c.drain_outputs(&mut self.read_buf, &mut self.out_buf);
            c.close_outputs(&mut self.out_buf);
            let _ = c.log.sync_data();
        }
        let _ = fs::remove_file(&self.socket_path);
        let _ = fs::remove_file(self.config.dir.join(PID_FILE_NAME));
        diag!(
            "monitor exiting with {} containers recorded",
            self.containers.len()
        );
    }
}

/// The init of `c` exited: log what it wrote until then, then write `exit.json`.
fn record_exit(c: &mut Container, reaped: &Reaped, buf: &mut [u8], out: &mut Vec<u8>) {
    c.drain_outputs(buf, out);
    let record = reaper::exit_record(reaped, c.cgroup_memory_dir.as_deref());
    match reaper::write_exit_record(&c.bundle, &record) {
        Ok(()) => diag!(
            "container={} exited code={} signal={:?} oom_killed={}",
            c.id,
            record.exit_code,
            record.signal,
            record.oom_killed
        ),
        Err(e) => diag!(
            "container={} exited code={} but writing {}/exit.json failed: {e}",
            c.id,
            record.exit_code,
            c.bundle.display()
        ),
    }
    c.exit = Some(record);
}

/// Binds `DIR/monitor.sock` with mode 0600, replacing a stale socket nobody listens on.
fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(_) => match sockpath::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another monitor is listening on {}", path.display()),
                ));
            }
            Err(_) => {
                fs::remove_file(path).map_err(|e| {
                    with_context(e, format!("remove stale socket {}", path.display()))
                })?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_context(e, format!("stat {}", path.display()))),
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = sockpath::bind(path);
    umask(old);
    let listener = bound.map_err(|e| with_context(e, format!("bind {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Writes the daemon's pid to `path` (temp file + rename, so readers never see half).
fn write_pid_file(path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| with_context(e, format!("write {}", path.display())))
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
