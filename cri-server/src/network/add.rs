//! ADD: attach a sandbox to the network (SPEC section 3, "Adding an attachment").

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::cache::{self, CACHE_KIND, CacheRecord};
use super::conf::{self, NetworkConfig};
use super::invoke::{Command, Invocation, run_plugin};
use super::result::status_from_result;
use super::{
    Attachment, Cni, CniError, NetworkStatus, capability_args, cni_args, cni_args_env,
    validate_attachment,
};

impl Cni {
    /// Runs ADD through every plugin of the config list in order, each getting the previous
    /// one's result as `prevResult`, and returns what the final result says about the pod.
    ///
    /// A cache record is written before the first plugin runs (so a crash mid-chain still
    /// leaves DEL something to work from) and holds the final result before this returns.
    /// When a plugin fails, DEL runs for it and the plugins before it, in reverse, and the
    /// record is removed; if that undo fails too, the record stays (without a result) so that
    /// [`Cni::del`] can finish the cleanup.
    #[tracing::instrument(name = "cni_add", skip_all, fields(sandbox = %a.sandbox_id))]
    pub async fn add(&self, a: &Attachment) -> Result<NetworkStatus, CniError> {
        let netns = validate_attachment(a)?;
        let _guard = self.locks.lock(&a.sandbox_id).await;

        match cache::read(&self.cache_dir, &a.sandbox_id)? {
            Some(rec) if rec.result.is_some() => {
                return Err(CniError::AlreadyAttached {
                    sandbox_id: a.sandbox_id.clone(),
                    network: rec.network_name,
                });
            }
            Some(rec) => {
                tracing::warn!(
                    network = %rec.network_name,
                    "an earlier ADD of this sandbox did not finish; deleting it first"
                );
                self.del_cached(&rec, None).await?;
                cache::remove(&self.cache_dir, &a.sandbox_id)?;
            }
            None => {}
        }

        let conf = conf::load_first(&self.conf_dir)?;
        let plugins = conf.find_plugins(&self.bin_dirs)?;
        let args = cni_args(a);
        let caps = capability_args(a);
        let mut rec = CacheRecord {
            kind: CACHE_KIND.into(),
            sandbox_id: a.sandbox_id.clone(),
            network_name: conf.name.clone(),
            cni_version: conf.version.to_string(),
            config_source: conf.source.clone(),
            config: conf.raw.clone(),
            netns: netns.to_string(),
            ifname: a.ifname.clone(),
            cni_args: args,
            capability_args: caps,
            result: None,
            status: None,
        };
        cache::write(&self.cache_dir, &rec)?;

        let args_env = cni_args_env(&rec.cni_args);
        let cni_path = self.cni_path();
        let inv = Invocation {
            command: Command::Add,
            container_id: &a.sandbox_id,
            netns,
            ifname: &a.ifname,
            cni_args: &args_env,
            cni_path: &cni_path,
        };
        tracing::debug!(network = %conf.name, version = %conf.version, "CNI ADD");

        let mut prev: Option<Value> = None;
        for (i, plugin) in plugins.iter().enumerate() {
            let stdin = conf.plugin_stdin(i, prev.as_ref(), &rec.capability_args);
            let outcome = run_plugin(plugin, &inv, stdin, self.plugin_timeout)
                .await
                .and_then(|out| parse_result(conf.plugin_type(i), &out));
            match outcome {
                Ok(result) => prev = Some(result),
                Err(err) => {
                    tracing::error!(plugin = conf.plugin_type(i), error = %err, "CNI ADD failed");
                    let undo = Undo {
                        add: &inv,
                        prev: prev.as_ref(),
                        caps: &rec.capability_args,
                        sandbox_id: &a.sandbox_id,
                        failed: Some(i),
                    };
                    self.undo_add(&conf, &plugins[..=i], undo).await;
                    return Err(err);
                }
            }
        }

        // The list is never empty, so the last plugin left a result.
        let result = prev.unwrap_or(Value::Null);
        let status = match status_from_result(&result, &a.ifname, &conf.name) {
            Ok(s) => s,
            Err(reason) => {
                let err = CniError::BadResult {
                    plugin: conf.plugin_type(plugins.len() - 1).to_string(),
                    command: "ADD".into(),
                    reason,
                };
                let undo = Undo {
                    add: &inv,
                    prev: Some(&result),
                    caps: &rec.capability_args,
                    sandbox_id: &a.sandbox_id,
                    failed: None,
                };
                self.undo_add(&conf, &plugins, undo).await;
                return Err(err);
            }
        };
        if status.ips.is_empty() {
            tracing::warn!(network = %conf.name, "CNI ADD result gives the pod no IP address");
        }
        rec.result = Some(result);
        rec.status = Some(status.clone());
        if let Err(err) = cache::write(&self.cache_dir, &rec) {
            let undo = Undo {
                add: &inv,
                prev: rec.result.as_ref(),
                caps: &rec.capability_args,
                sandbox_id: &a.sandbox_id,
                failed: None,
            };
            self.undo_add(&conf, &plugins, undo).await;
            return Err(err);
        }
        tracing::info!(network = %conf.name, ips = ?status.ips, "pod attached to CNI network");
        Ok(status)
    }

    /// Best-effort DEL after a failed ADD, in reverse, of `plugins` (those that ran; `failed`
    /// is the index of the one whose ADD failed, if any). Every plugin gets its DEL even when
    /// an earlier one fails. An error from the failed plugin's own DEL is only logged (its
    /// config may be what made ADD fail, so it would fail forever); any other error keeps the
    /// cache record (without a result) so that [`Cni::del`] can finish the cleanup later.
    /// Otherwise the record is removed.
    async fn undo_add(&self, conf: &NetworkConfig, plugins: &[PathBuf], undo: Undo<'_>) {
        let inv = Invocation {
            command: Command::Del,
            ..undo.add.clone()
        };
        let prev = undo.prev.filter(|_| conf.version.has_check());
        let mut clean = true;
        for (i, plugin) in plugins.iter().enumerate().rev() {
            if let Err(err) = self.del_one(conf, i, plugin, &inv, prev, undo.caps).await {
                if undo.failed == Some(i) {
                    tracing::warn!(error = %err, "DEL of the plugin whose ADD failed failed too; ignored");
                } else {
                    clean = false;
                }
            }
        }
        if clean {
            if let Err(err) = cache::remove(&self.cache_dir, undo.sandbox_id) {
                tracing::warn!(error = %err, "removing the CNI cache record after a failed ADD");
            }
        } else {
            tracing::error!(
                "undoing a failed CNI ADD failed; the cache record stays for a later DEL"
            );
        }
    }
}

/// What [`Cni::undo_add`] needs to know about the failed ADD.
struct Undo<'a> {
    add: &'a Invocation<'a>,
    /// The last result the chain produced, if any.
    prev: Option<&'a Value>,
    caps: &'a Map<String, Value>,
    sandbox_id: &'a str,
    /// The index of the plugin whose ADD failed; `None` when the chain itself succeeded.
    failed: Option<usize>,
}

/// A plugin's ADD output: a JSON object.
fn parse_result(plugin: &str, out: &[u8]) -> Result<Value, CniError> {
    let bad = |reason: String| CniError::BadResult {
        plugin: plugin.to_string(),
        command: "ADD".into(),
        reason,
    };
    if out.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("no result on stdout".into()));
    }
    match serde_json::from_slice::<Value>(out) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad("result is not a JSON object".into())),
        Err(e) => Err(bad(format!("result is not JSON: {e}"))),
    }
}
