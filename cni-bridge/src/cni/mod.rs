//! The CNI protocol: environment, configuration, results, errors and versions, as the spec
//! (1.1, answering 1.0.0, 0.4.0 and 0.3.x configurations too) defines them.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use error::{Context, Error, Result};
