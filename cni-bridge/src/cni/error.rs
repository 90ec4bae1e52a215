//! The plugin's one error type, mapped to the CNI spec's error codes.

use std::io;

use serde_json::json;

use crate::netlink::NetlinkError;

/// Spec well-known codes (0-99) and ours (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A netlink request the kernel refused.
    pub const NETLINK: u32 = 100;
    /// No free address left in a range.
    pub const ADDRESS_EXHAUSTED: u32 = 101;
    /// CHECK found the kernel state different from the previous result.
    pub const CHECK_MISMATCH: u32 = 102;
    /// The nftables batch failed.
    pub const NFTABLES: u32 = 103;
    /// An address asked for explicitly is taken or outside every range.
    pub const ADDRESS_UNAVAILABLE: u32 = 104;
    /// Anything else that went wrong inside the plugin.
    pub const INTERNAL: u32 = 999;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field in network configuration: {0}")]
    UnsupportedField(String),
    #[error("invalid environment: {0}")]
    InvalidEnv(String),
    #[error("decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        source: NetlinkError,
    },
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    AddressUnavailable(String),
    #[error("{0}")]
    Check(String),
    #[error("nftables: {0}")]
    Nftables(String),
    #[error("{0}")]
    NotAvailable(String),
    #[error("{0}")]
    TryAgain(String),
    /// An error answered by a delegated IPAM plugin, passed through with its code.
    #[error("{msg}")]
    Delegated {
        code: u32,
        msg: String,
        details: String,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => code::INCOMPATIBLE_VERSION,
            Error::UnsupportedField(_) => code::UNSUPPORTED_FIELD,
            Error::InvalidEnv(_) => code::INVALID_ENV,
            Error::Decode { .. } => code::DECODE,
            Error::InvalidConfig(_) => code::INVALID_CONFIG,
            Error::Io { .. } => code::IO_FAILURE,
            Error::Netlink { .. } => code::NETLINK,
            Error::Exhausted(_) => code::ADDRESS_EXHAUSTED,
            Error::AddressUnavailable(_) => code::ADDRESS_UNAVAILABLE,
            Error::Check(_) => code::CHECK_MISMATCH,
            Error::Nftables(_) => code::NFTABLES,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::TryAgain(_) => code::TRY_AGAIN,
            Error::Delegated { code, .. } => *code,
            Error::Internal(_) => code::INTERNAL,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn netlink(context: impl Into<String>, source: NetlinkError) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }

    /// The spec's error JSON. `msg` is short; `details` carries the full chain.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let (msg, details) = match self {
            Error::Delegated { msg, details, .. } => (msg.clone(), details.clone()),
            Error::Decode { what, .. } => (format!("decode {what}"), self.to_string()),
            Error::Io { context, .. } | Error::Netlink { context, .. } => {
                (context.clone(), self.to_string())
            }
            other => (other.to_string(), String::new()),
        };
        let mut v = json!({ "cniVersion": cni_version, "code": self.code(), "msg": msg });
        if !details.is_empty() {
            v["details"] = json!(details);
        }
        v
    }
}

/// Adds "what was being done" to fallible netlink and I/O calls.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, NetlinkError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::netlink(what(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
