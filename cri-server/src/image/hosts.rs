//! Registry endpoints from containerd's `certs.d` layout: `<config_path>/<host>/hosts.toml`.
//!
//! Each `[host."<url>"]` table is a mirror tried in file order; the upstream (`server`, or the
//! registry itself) comes last unless the file says `fallback = false` (our one addition to
//! containerd's format; containerd ignores it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImageError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]` to connect to.
    pub host: String,
    /// May be asked to turn a tag into a digest.
    pub resolve: bool,
    /// May serve manifests and blobs by digest.
    pub pull: bool,
    pub skip_verify: bool,
    pub ca: Vec<PathBuf>,
    /// The registry named by the image reference (credentials from the request apply to it).
    pub upstream: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    ca: Option<OneOrMany>,
    #[serde(default)]
    fallback: Option<bool>,
    #[serde(default)]
    host: BTreeMap<String, HostTable>,
    // containerd keys we accept and do not use.
    #[serde(default, rename = "header")]
    _header: Option<toml::Value>,
    #[serde(default, rename = "client")]
    _client: Option<toml::Value>,
    #[serde(default, rename = "override_path")]
    _override_path: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostTable {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<OneOrMany>,
    #[serde(default, rename = "header")]
    _header: Option<toml::Value>,
    #[serde(default, rename = "client")]
    _client: Option<toml::Value>,
    #[serde(default, rename = "override_path")]
    _override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn paths(self, base: &Path) -> Vec<PathBuf> {
        let list = match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        list.into_iter().map(|p| base.join(p)).collect()
    }
}

/// Registry settings: the certs.d directory and the hosts allowed over plain HTTP.
#[derive(Debug, Clone)]
pub struct Hosts {
    config_path: PathBuf,
    insecure: Vec<String>,
}

impl Hosts {
    pub fn new(config_path: PathBuf, insecure: Vec<String>) -> Self {
        Self {
            config_path,
            insecure,
        }
    }

    /// The endpoints to try for `registry` (as in the image reference), in order.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, ImageError> {
        let mut file = None;
        for dir in [registry, "_default"] {
            let path = self.config_path.join(dir).join("hosts.toml");
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let parsed: HostsFile =
                        toml::from_str(&text).map_err(|e| ImageError::RegistryConfig {
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                    file = Some((parsed, path));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ImageError::RegistryConfig {
                        path,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let default_upstream = self.default_upstream(registry);
        let Some((file, path)) = file else {
            return Ok(vec![default_upstream]);
        };
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let bad = |reason: String| ImageError::RegistryConfig {
            path: path.clone(),
            reason,
        };

        let mut out = Vec::new();
        for (url, table) in file.host {
            let (scheme, host) = split_url(&url).map_err(&bad)?;
            let (resolve, pull) = capabilities(table.capabilities.as_deref()).map_err(&bad)?;
            out.push(Endpoint {
                scheme,
                host,
                resolve,
                pull,
                skip_verify: table.skip_verify.unwrap_or(false),
                ca: table.ca.map(|c| c.paths(&dir)).unwrap_or_default(),
                upstream: false,
            });
        }
        if file.fallback.unwrap_or(true) {
            let mut upstream = match &file.server {
                Some(server) => {
                    let (scheme, host) = split_url(server).map_err(&bad)?;
                    Endpoint {
                        scheme,
                        host,
                        ..default_upstream
                    }
                }
                None => default_upstream,
            };
            let (resolve, pull) = capabilities(file.capabilities.as_deref()).map_err(&bad)?;
            upstream.resolve = resolve;
            upstream.pull = pull;
            upstream.skip_verify = file.skip_verify.unwrap_or(false);
            upstream.ca = file.ca.map(|c| c.paths(&dir)).unwrap_or_default();
            out.push(upstream);
        }
        if out.is_empty() {
            return Err(bad(
                "no [host] table and fallback = false: no endpoint left".into(),
            ));
        }
        Ok(out)
    }

    fn default_upstream(&self, registry: &str) -> Endpoint {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if self.insecure.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        };
        Endpoint {
            scheme: scheme.into(),
            host: host.into(),
            resolve: true,
            pull: true,
            skip_verify: false,
            ca: Vec::new(),
            upstream: true,
        }
    }
}

/// Splits `https://host:port[/v2]` into scheme and host. A bare host means https.
fn split_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("https", url),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?}: scheme must be http or https"));
    }
    let host = rest.split('/').next().unwrap_or("");
    let path = rest[host.len()..].trim_end_matches('/');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    if !path.is_empty() && path != "/v2" {
        return Err(format!("{url:?}: only the /v2 path is supported"));
    }
    Ok((scheme.into(), host.into()))
}

fn capabilities(caps: Option<&[String]>) -> Result<(bool, bool), String> {
    let Some(caps) = caps else {
        return Ok((true, true));
    };
    let (mut resolve, mut pull) = (false, false);
    for c in caps {
        match c.as_str() {
            "resolve" => resolve = true,
            "pull" => pull = true,
            "push" => {}
            other => return Err(format!("unknown capability {other:?}")),
        }
    }
    Ok((resolve, pull))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts_with(host: &str, text: &str) -> (tempfile::TempDir, Hosts) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(host)).unwrap();
        std::fs::write(dir.path().join(host).join("hosts.toml"), text).unwrap();
        let hosts = Hosts::new(dir.path().into(), vec![]);
        (dir, hosts)
    }

    #[test]
    fn no_hosts_file_means_the_registry_itself_over_https() {
        let hosts = Hosts::new("/nonexistent".into(), vec!["10.0.0.1:5000".into()]);
        let e = hosts.endpoints("docker.io").unwrap();
        assert_eq!(
            (e[0].scheme.as_str(), e[0].host.as_str()),
            ("https", "registry-1.docker.io")
        );
        let e = hosts.endpoints("10.0.0.1:5000").unwrap();
        assert_eq!(e[0].scheme, "http");
    }

    #[test]
    fn mirrors_come_first_in_file_order_then_upstream() {
        let (_d, hosts) = hosts_with(
            "registry.k8s.io",
            r#"
server = "https://registry.k8s.io"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
[host."https://mirror.example:8443/v2"]
  capabilities = ["pull"]
  skip_verify = true
"#,
        );
        let e = hosts.endpoints("registry.k8s.io").unwrap();
        assert_eq!(e.len(), 3);
        // BTreeMap orders the tables by URL; both mirrors precede the upstream.
        assert!(e[..2].iter().all(|x| !x.upstream));
        let m = e.iter().find(|x| x.host == "mirror.example:8443").unwrap();
        assert!(m.pull && !m.resolve && m.skip_verify);
        assert!(e[2].upstream && e[2].host == "registry.k8s.io");
    }

    #[test]
    fn fallback_false_drops_the_upstream() {
        let (_d, hosts) = hosts_with(
            "registry.k8s.io",
            "fallback = false\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        );
        let e = hosts.endpoints("registry.k8s.io").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].host, "127.0.0.1:5000");
    }

    #[test]
    fn default_dir_applies_to_other_hosts() {
        let (_d, hosts) = hosts_with("_default", "[host.\"http://127.0.0.1:1\"]\n");
        let e = hosts.endpoints("quay.io").unwrap();
        assert_eq!(e[0].host, "127.0.0.1:1");
        assert_eq!(e[1].host, "quay.io");
    }

    #[test]
    fn bad_hosts_file_names_the_file() {
        let (_d, hosts) = hosts_with("x.io", "[host.\"ftp://a\"]\n");
        let err = hosts.endpoints("x.io").unwrap_err().to_string();
        assert!(
            err.contains("hosts.toml") && err.contains("scheme"),
            "{err}"
        );
        let (_d, hosts) = hosts_with("y.io", "[host.\"http://a\"]\ncapabilities = [\"fly\"]\n");
        assert!(
            hosts
                .endpoints("y.io")
                .unwrap_err()
                .to_string()
                .contains("fly")
        );
    }
}
