//! Streaming RPCs: Exec, Attach, PortForward. Each validates the request and returns the URL
//! of the streaming server where the client gets the stream.

use k8s_cri::v1::*;
use tonic::Status;

use crate::streaming::{
    AttachParams, ExecParams, PortForwardParams, StreamingError, StreamingServer,
};

fn status(e: StreamingError) -> Status {
    match e {
        StreamingError::InvalidArgument(m) => Status::invalid_argument(m),
        e @ StreamingError::NotFound(_) => Status::not_found(e.to_string()),
        StreamingError::FailedPrecondition(m) => Status::failed_precondition(m),
        e @ StreamingError::TooManyInFlight(_) => Status::resource_exhausted(e.to_string()),
        e @ StreamingError::Io { .. } => Status::internal(e.to_string()),
    }
}

fn require<'a>(what: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(v)
    }
}

pub fn exec(s: &StreamingServer, req: ExecRequest) -> Result<ExecResponse, Status> {
    let url = s
        .exec(ExecParams {
            container_id: require("container_id", &req.container_id)?.to_string(),
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .map_err(status)?;
    Ok(ExecResponse { url })
}

pub fn attach(s: &StreamingServer, req: AttachRequest) -> Result<AttachResponse, Status> {
    let url = s
        .attach(AttachParams {
            container_id: require("container_id", &req.container_id)?.to_string(),
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .map_err(status)?;
    Ok(AttachResponse { url })
}

pub fn port_forward(
    s: &StreamingServer,
    req: PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    let ports = req
        .port
        .iter()
        .map(|p| {
            u16::try_from(*p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Status::invalid_argument(format!("invalid port {p}")))
        })
        .collect::<Result<Vec<u16>, Status>>()?;
    let url = s
        .port_forward(PortForwardParams {
            sandbox_id: require("pod_sandbox_id", &req.pod_sandbox_id)?.to_string(),
            ports,
        })
        .map_err(status)?;
    Ok(PortForwardResponse { url })
}
