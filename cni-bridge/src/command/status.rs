//! STATUS: can this plugin serve an ADD now? (50 when IPAM is exhausted or its store unusable.)

use crate::cni::Result;
use crate::cni::config::NetConf;
use crate::cni::env::Env;
use crate::ipam::Ipam;

pub fn status(conf: &NetConf, env: &Env, raw: &[u8]) -> Result<()> {
    Ipam::from_conf(conf)?.status(conf, env, raw)
}
