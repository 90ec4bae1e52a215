//! CHECK: ask every plugin whether an attachment is still as ADD made it (SPEC section 3,
//! "Checking an attachment"; spec 0.4.0 and later).

use super::cache;
use super::conf::NetworkConfig;
use super::invoke::{Command, Invocation, run_plugin};
use super::{
    Attachment, Cni, CniError, capability_args, cni_args, cni_args_env, validate_attachment,
};

impl Cni {
    /// Runs CHECK through the plugins in order with the cached config list and the cached
    /// final ADD result as `prevResult`; the first failure is returned. A list with
    /// `disableCheck` passes without running anything.
    #[tracing::instrument(name = "cni_check", skip_all, fields(sandbox = %a.sandbox_id))]
    pub async fn check(&self, a: &Attachment) -> Result<(), CniError> {
        let netns = validate_attachment(a)?;
        let _guard = self.locks.lock(&a.sandbox_id).await;
        let rec = match cache::read(&self.cache_dir, &a.sandbox_id)? {
            Some(rec) if rec.result.is_some() => rec,
            _ => {
                return Err(CniError::NotAttached {
                    sandbox_id: a.sandbox_id.clone(),
                });
            }
        };
        let record_path = cache::record_path(&self.cache_dir, &a.sandbox_id);
        let conf = NetworkConfig::from_list(rec.config.clone(), &record_path).map_err(|e| {
            CniError::Cache {
                path: record_path.clone(),
                reason: format!("cached config: {e}"),
            }
        })?;
        if !conf.version.has_check() {
            return Err(CniError::CheckUnsupported {
                network: conf.name,
                version: conf.version.to_string(),
            });
        }
        if conf.disable_check {
            tracing::debug!(network = %conf.name, "disableCheck set; CHECK skipped");
            return Ok(());
        }
        let plugins = conf.find_plugins(&self.bin_dirs)?;
        let args_env = cni_args_env(&cni_args(a));
        let caps = capability_args(a);
        let cni_path = self.cni_path();
        let inv = Invocation {
            command: Command::Check,
            container_id: &a.sandbox_id,
            netns,
            ifname: &a.ifname,
            cni_args: &args_env,
            cni_path: &cni_path,
        };
        for (i, plugin) in plugins.iter().enumerate() {
            let stdin = conf.plugin_stdin(i, rec.result.as_ref(), &caps);
            run_plugin(plugin, &inv, stdin, self.plugin_timeout).await?;
        }
        Ok(())
    }
}
