//! DEL: detach a sandbox (SPEC section 3, "Deleting an attachment"), from the cache alone.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::cache::{self, CacheRecord};
use super::conf::NetworkConfig;
use super::invoke::{Command, Invocation, run_plugin};
use super::{Cni, CniError, cni_args_env, validate_sandbox_id};

/// "Container unknown or does not exist": the plugin has nothing to clean up.
const CODE_CONTAINER_UNKNOWN: u32 = 3;

impl Cni {
    /// Runs DEL through the plugins in reverse order, with the config list, parameters and
    /// final result cached by ADD, so it works after a restart and after the config changed.
    /// Idempotent: without a cache record there is nothing to do. The record is removed only
    /// when every plugin succeeded.
    ///
    /// `netns`: the pod's namespace path, passed as is even when it no longer exists (plugins
    /// must then still release what they hold). `None` means the caller has none: the cached
    /// path is used if it still exists, otherwise `CNI_NETNS` is empty (allowed for DEL).
    #[tracing::instrument(name = "cni_del", skip_all, fields(sandbox = %sandbox_id))]
    pub async fn del(&self, sandbox_id: &str, netns: Option<&Path>) -> Result<(), CniError> {
        validate_sandbox_id(sandbox_id)?;
        let _guard = self.locks.lock(sandbox_id).await;
        let Some(rec) = cache::read(&self.cache_dir, sandbox_id)? else {
            tracing::debug!("no CNI attachment cached; nothing to delete");
            return Ok(());
        };
        self.del_cached(&rec, netns).await?;
        cache::remove(&self.cache_dir, sandbox_id)?;
        tracing::info!(network = %rec.network_name, "pod detached from CNI network");
        Ok(())
    }

    /// DEL of the attachment a cache record describes; leaves the record in place.
    pub(super) async fn del_cached(
        &self,
        rec: &CacheRecord,
        netns: Option<&Path>,
    ) -> Result<(), CniError> {
        let record_path = cache::record_path(&self.cache_dir, &rec.sandbox_id);
        let conf = NetworkConfig::from_list(rec.config.clone(), &record_path).map_err(|e| {
            CniError::Cache {
                path: record_path.clone(),
                reason: format!("cached config: {e}"),
            }
        })?;
        let plugins = conf.find_plugins(&self.bin_dirs)?;
        let netns = match netns {
            Some(p) => p
                .to_str()
                .ok_or_else(|| CniError::InvalidArgument {
                    what: "netns",
                    reason: format!("{} is not UTF-8", p.display()),
                })?
                .to_string(),
            None if !rec.netns.is_empty() && Path::new(&rec.netns).exists() => rec.netns.clone(),
            None => String::new(),
        };
        let args_env = cni_args_env(&rec.cni_args);
        let cni_path = self.cni_path();
        let inv = Invocation {
            command: Command::Del,
            container_id: &rec.sandbox_id,
            netns: &netns,
            ifname: &rec.ifname,
            cni_args: &args_env,
            cni_path: &cni_path,
        };
        // prevResult on DEL came with 0.4.0.
        let prev = rec.result.as_ref().filter(|_| conf.version.has_check());
        tracing::debug!(network = %conf.name, netns = %netns, "CNI DEL");
        self.del_plugins(&conf, &plugins, &inv, prev, &rec.capability_args)
            .await
    }

    /// DEL through `plugins` (a prefix of the list) in reverse; stops at the first error.
    pub(super) async fn del_plugins(
        &self,
        conf: &NetworkConfig,
        plugins: &[PathBuf],
        inv: &Invocation<'_>,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) -> Result<(), CniError> {
        for (i, plugin) in plugins.iter().enumerate().rev() {
            self.del_one(conf, i, plugin, inv, prev, caps).await?;
        }
        Ok(())
    }

    /// DEL through plugin `index` of the list. A plugin answering "container unknown"
    /// (code 3) has nothing to clean up, which counts as success.
    pub(super) async fn del_one(
        &self,
        conf: &NetworkConfig,
        index: usize,
        plugin: &Path,
        inv: &Invocation<'_>,
        prev: Option<&Value>,
        caps: &Map<String, Value>,
    ) -> Result<(), CniError> {
        let stdin = conf.plugin_stdin(index, prev, caps);
        match run_plugin(plugin, inv, stdin, self.plugin_timeout).await {
            Ok(_) => Ok(()),
            Err(CniError::Plugin {
                code: CODE_CONTAINER_UNKNOWN,
                msg,
                ..
            }) => {
                tracing::debug!(plugin = conf.plugin_type(index), %msg, "container unknown to plugin");
                Ok(())
            }
            Err(err) => {
                tracing::error!(plugin = conf.plugin_type(index), error = %err, "CNI DEL failed");
                Err(err)
            }
        }
    }
}
