//! Attach: the pod's monitor holds the container's stdio, so an attach is a connection to the
//! monitor (`attach` op) carrying its frames; here they become the same stdin/stdout/stderr
//! ends an exec has, so both share the stream sessions. Ending the session detaches; the
//! container keeps running.

use std::io;
use std::sync::Arc;

use cri_monitor::protocol::attach as frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::ExecParams;
use super::exec::{ExecProcess, Reader, Writer};
use crate::container::ContainerPhase;
use crate::runtime::Runtime;

pub(crate) struct AttachProcess {
    stdin: Option<Writer>,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
    resize: mpsc::Sender<(u16, u16)>,
    done: Option<oneshot::Receiver<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl AttachProcess {
    async fn start(rt: &Runtime, p: &ExecParams) -> Result<AttachProcess, String> {
        let rec = rt
            .refreshed(&p.container_id)
            .ok_or_else(|| format!("container {} not found", p.container_id))?;
        if rec.phase != ContainerPhase::Running {
            return Err(format!("container {} is not running", rec.id));
        }
        let sb = rt
            .sandbox(&rec.sandbox_id)
            .ok_or_else(|| format!("pod sandbox {} not found", rec.sandbox_id))?;
        let socket = sb.monitor_socket();
        let id = rec.id.clone();
        let (_tty, stream, early) = tokio::task::spawn_blocking(move || {
            cri_monitor::client::Client::connect(&socket)?.attach(&id)
        })
        .await
        .map_err(|e| format!("attach: {e}"))?
        .map_err(|e| e.to_string())?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("attach: {e}"))?;
        let stream =
            tokio::net::UnixStream::from_std(stream).map_err(|e| format!("attach: {e}"))?;
        let (mut rd, mut wr) = stream.into_split();
        let (mut out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (mut err_w, err_r) = tokio::io::duplex(64 * 1024);
        let (in_w, mut in_r) = tokio::io::duplex(64 * 1024);
        let (resize, mut resize_rx) = mpsc::channel::<(u16, u16)>(8);
        let (done_tx, done) = oneshot::channel();
        let demux = tokio::spawn(async move {
            let mut buf = early;
            let mut chunk = vec![0u8; 32 * 1024];
            'read: loop {
                while let Some(parsed) = frame::parse(&buf) {
                    let Ok((kind, payload, used)) = parsed else {
                        break 'read;
                    };
                    let sink = match kind {
                        frame::STDOUT => &mut out_w,
                        frame::STDERR => &mut err_w,
                        _ => break 'read,
                    };
                    // A reader that went away (stream not wanted) is not an error.
                    let _ = sink.write_all(payload).await;
                    buf.drain(..used);
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = done_tx.send(());
        });
        let stdin_once = rec.config.stdin_once;
        let mux = tokio::spawn(async move {
            let mut chunk = vec![0u8; frame::MAX_FRAME];
            let mut stdin_open = true;
            loop {
                tokio::select! {
                    n = in_r.read(&mut chunk), if stdin_open => match n {
                        Ok(0) | Err(_) => {
                            stdin_open = false;
                            if stdin_once
                                && wr.write_all(&frame::frame(frame::CLOSE_STDIN, &[])).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(n) => {
                            if wr.write_all(&frame::frame(frame::STDIN, &chunk[..n])).await.is_err() {
                                return;
                            }
                        }
                    },
                    size = resize_rx.recv() => {
                        let Some((w, h)) = size else { return };
                        let mut b = w.to_be_bytes().to_vec();
                        b.extend(h.to_be_bytes());
                        if wr.write_all(&frame::frame(frame::RESIZE, &b)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(AttachProcess {
            stdin: p.stdin.then(|| Box::new(in_w) as Writer),
            stdout: Some(Box::new(out_r)),
            stderr: Some(Box::new(err_r)),
            resize,
            done: Some(done),
            tasks: vec![demux, mux],
        })
    }
}

impl Drop for AttachProcess {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a stream session drives: a new process (exec) or a running container (attach).
pub(crate) enum Proc {
    Exec(ExecProcess),
    Attach(AttachProcess),
}

impl Proc {
    pub(crate) async fn start(
        rt: &Arc<Runtime>,
        p: &ExecParams,
        attach: bool,
    ) -> Result<Proc, String> {
        if attach {
            AttachProcess::start(rt, p).await.map(Proc::Attach)
        } else {
            ExecProcess::spawn(rt, p).await.map(Proc::Exec)
        }
    }

    /// stdin (when requested), stdout, stderr.
    pub(crate) fn take_io(&mut self) -> (Option<Writer>, Option<Reader>, Option<Reader>) {
        match self {
            Proc::Exec(e) => (e.stdin.take(), e.stdout.take(), e.stderr.take()),
            Proc::Attach(a) => (a.stdin.take(), a.stdout.take(), a.stderr.take()),
        }
    }

    /// The exit code; an attach ends with 0 when the container's outputs end.
    pub(crate) async fn wait(&mut self) -> io::Result<i32> {
        match self {
            Proc::Exec(e) => e.wait().await,
            Proc::Attach(a) => match a.done.as_mut() {
                Some(done) => {
                    let _ = done.await;
                    a.done = None;
                    Ok(0)
                }
                None => std::future::pending().await,
            },
        }
    }

    pub(crate) fn resize(&self, width: u16, height: u16) {
        match self {
            Proc::Exec(e) => e.resize(width, height),
            Proc::Attach(a) => {
                let _ = a.resize.try_send((width, height));
            }
        }
    }

    /// Ends it: kills an exec; detaches an attach.
    pub(crate) async fn kill(&mut self) {
        match self {
            Proc::Exec(e) => e.kill().await,
            Proc::Attach(a) => {
                for t in &a.tasks {
                    t.abort();
                }
            }
        }
    }
}
