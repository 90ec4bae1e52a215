//! Network configuration: finding the config file, validating it, and deriving the per-plugin
//! configuration that goes to a plugin's stdin (SPEC section 3, "Deriving execution
//! configuration from plugin configuration").

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// The spec versions this executor speaks. Older ones (0.1.0, 0.2.0) have no result chaining
/// and no `prevResult`; they are refused.
pub const SUPPORTED_VERSIONS: [CniVersion; 5] = [
    CniVersion(0, 3, 0),
    CniVersion(0, 3, 1),
    CniVersion(0, 4, 0),
    CniVersion(1, 0, 0),
    CniVersion(1, 1, 0),
];

/// A CNI spec version (`major.minor.patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CniVersion(pub u16, pub u16, pub u16);

impl CniVersion {
    pub fn parse(s: &str) -> Option<CniVersion> {
        let mut parts = s.split('.');
        let mut next = || -> Option<u16> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = CniVersion(next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    pub fn is_supported(self) -> bool {
        SUPPORTED_VERSIONS.contains(&self)
    }

    /// CHECK, and `prevResult` on DEL, came with 0.4.0.
    pub fn has_check(self) -> bool {
        self >= CniVersion(0, 4, 0)
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A validated network configuration list. A single-plugin `.conf`/`.json` file is wrapped
/// into a one-plugin list, as libcni does.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The file it was read from (informational after a restart: the cache keeps `raw`).
    pub source: PathBuf,
    pub name: String,
    pub version: CniVersion,
    pub disable_check: bool,
    /// The plugin configuration objects, in list order, as written.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as loaded; what the cache stores and [`NetworkConfig::from_list`] reads back.
    pub raw: Value,
}

impl NetworkConfig {
    /// Reads one config file; `.conflist` is a list, anything else a single plugin config.
    pub fn load_file(path: &Path) -> Result<NetworkConfig, CniError> {
        let bad = |reason: String| CniError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let data = fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let value: Value =
            serde_json::from_slice(&data).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if path.extension().is_some_and(|e| e == "conflist") {
            NetworkConfig::from_list(value, path)
        } else {
            NetworkConfig::from_single(value, path)
        }
    }

    /// Validates a configuration list (SPEC section 1).
    pub fn from_list(raw: Value, source: &Path) -> Result<NetworkConfig, CniError> {
        let bad = |reason: String| CniError::BadConfig {
            path: source.to_path_buf(),
            reason,
        };
        let obj = raw
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("\"name\" is not a string".into())),
            None => return Err(bad("no \"name\"".into())),
        };
        if !is_valid_id(&name) {
            return Err(bad(format!(
                "network name {name:?} must start with a letter or digit and hold only \
                 letters, digits, '_', '.' and '-'"
            )));
        }
        let version = choose_version(obj).map_err(bad)?;
        let disable_check = match obj.get("disableCheck") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => return Err(bad(format!("\"disableCheck\" is not a boolean: {other}"))),
        };
        let list = match obj.get("plugins") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            None => return Err(bad("no \"plugins\" list".into())),
        };
        if list.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        let mut plugins = Vec::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            let p = p
                .as_object()
                .ok_or_else(|| bad(format!("plugins[{i}] is not an object")))?;
            validate_plugin(p).map_err(|r| bad(format!("plugins[{i}]: {r}")))?;
            plugins.push(p.clone());
        }
        Ok(NetworkConfig {
            source: source.to_path_buf(),
            name,
            version,
            disable_check,
            plugins,
            raw,
        })
    }

    /// Wraps a single plugin configuration (the legacy `.conf` format) into a list.
    pub fn from_single(raw: Value, source: &Path) -> Result<NetworkConfig, CniError> {
        let bad = |reason: String| CniError::BadConfig {
            path: source.to_path_buf(),
            reason,
        };
        let obj = raw
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if !obj.contains_key("type") {
            let hint = if obj.contains_key("plugins") {
                " (a configuration list belongs in a .conflist file)"
            } else {
                ""
            };
            return Err(bad(format!(
                "no \"type\": a single-plugin config needs one{hint}"
            )));
        }
        let mut list = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(v) = obj.get(key) {
                list.insert(key.into(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![raw.clone()]));
        NetworkConfig::from_list(Value::Object(list), source)
    }

    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The configuration one plugin gets on stdin: its own object with `name` and `cniVersion`
    /// of the list, `prevResult` when given, `runtimeConfig` holding the capability arguments
    /// it declares in `capabilities`, and without `capabilities` itself.
    pub fn plugin_stdin(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut conf = self.plugins[index].clone();
        let capabilities = conf.remove("capabilities");
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.version.to_string()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut runtime = Map::new();
        if let Some(Value::Object(caps)) = capabilities {
            for (cap, enabled) in caps {
                if enabled == Value::Bool(true)
                    && let Some(arg) = capability_args.get(&cap)
                {
                    runtime.insert(cap, arg.clone());
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        // Serializing a map of JSON values cannot fail.
        serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
    }

    /// The plugin binaries of the list, in order; the first missing one is an error.
    pub fn find_plugins(&self, bin_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, CniError> {
        (0..self.plugins.len())
            .map(|i| find_plugin(self.plugin_type(i), bin_dirs))
            .collect()
    }
}

/// Loads the network config the runtime uses: the first valid file of `conf_dir` by name.
pub fn load_first(conf_dir: &Path) -> Result<NetworkConfig, CniError> {
    let entries = match fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CniError::NoConfig {
                dir: conf_dir.to_path_buf(),
            });
        }
        Err(e) => return Err(CniError::io("read CNI config directory", conf_dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
                && fs::metadata(p).is_ok_and(|m| m.is_file())
        })
        .collect();
    files.sort();
    let mut first_error = None;
    for path in files {
        match NetworkConfig::load_file(&path) {
            Ok(conf) => {
                if let Some(err) = &first_error {
                    tracing::warn!(error = %err, chosen = %path.display(), "skipped an invalid CNI config");
                }
                return Ok(conf);
            }
            Err(err) => {
                tracing::debug!(error = %err, "invalid CNI config file");
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| CniError::NoConfig {
        dir: conf_dir.to_path_buf(),
    }))
}

/// The executable for plugin `ty`: the first `<dir>/<ty>` that is an executable file.
pub fn find_plugin(ty: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|d| d.join(ty))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: ty.to_string(),
            dirs: bin_dirs.to_vec(),
        })
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the spec's rule for network names and container IDs.
pub fn is_valid_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The spec's (and Linux's) rule for `CNI_IFNAME`.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > 15 {
        return Err(format!("{name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} contains '/', ':' or whitespace"));
    }
    Ok(())
}

fn validate_plugin(p: &Map<String, Value>) -> Result<(), String> {
    let ty = match p.get("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err("\"type\" is not a string".into()),
        None => return Err("no \"type\"".into()),
    };
    if ty.is_empty() || ty == "." || ty == ".." || ty.contains(['/', '\\', '\0']) {
        return Err(format!("\"type\" {ty:?} is not a plugin file name"));
    }
    match p.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(caps)) => {
            if let Some((k, _)) = caps.iter().find(|(_, v)| !v.is_boolean()) {
                return Err(format!("capability {k:?} is not true or false"));
            }
        }
        Some(_) => return Err("\"capabilities\" is not an object".into()),
    }
    Ok(())
}

/// `cniVersion`, or with 1.1's `cniVersions` the highest supported of all versions listed.
fn choose_version(obj: &Map<String, Value>) -> Result<CniVersion, String> {
    let mut listed: Vec<&str> = Vec::new();
    match obj.get("cniVersion") {
        None => {}
        Some(Value::String(s)) => listed.push(s),
        Some(_) => return Err("\"cniVersion\" is not a string".into()),
    }
    match obj.get("cniVersions") {
        None => {}
        Some(Value::Array(vs)) => {
            for v in vs {
                listed.push(
                    v.as_str()
                        .ok_or_else(|| "\"cniVersions\" holds a non-string".to_string())?,
                );
            }
        }
        Some(_) => return Err("\"cniVersions\" is not a list".into()),
    }
    if listed.is_empty() {
        return Err("no \"cniVersion\"".into());
    }
    let mut best: Option<CniVersion> = None;
    for s in &listed {
        let v = CniVersion::parse(s).ok_or_else(|| format!("cniVersion {s:?} is not a version"))?;
        if v.is_supported() && best.is_none_or(|b| v.cmp(&b) == Ordering::Greater) {
            best = Some(v);
        }
    }
    best.ok_or_else(|| {
        let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect();
        format!(
            "cniVersion {} is not supported (supported: {})",
            listed.join(", "),
            supported.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(v: Value) -> Result<NetworkConfig, CniError> {
        NetworkConfig::from_list(v, Path::new("/x/10-net.conflist"))
    }

    fn reason(r: Result<NetworkConfig, CniError>) -> String {
        match r {
            Err(CniError::BadConfig { path, reason }) => {
                assert_eq!(path, Path::new("/x/10-net.conflist"));
                reason
            }
            other => panic!("expected BadConfig, got {other:?}"),
        }
    }

    #[test]
    fn versions_outside_the_supported_set_are_refused() {
        for v in ["0.1.0", "0.2.0", "2.0.0", "1.0"] {
            let r = reason(list(
                json!({"cniVersion": v, "name": "n", "plugins": [{"type": "b"}]}),
            ));
            assert!(r.contains(v), "{r}");
        }
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let c =
                list(json!({"cniVersion": v, "name": "n", "plugins": [{"type": "b"}]})).unwrap();
            assert_eq!(c.version.to_string(), v);
        }
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let c = list(
            json!({"cniVersions": ["0.4.0", "1.0.0", "9.9.9"], "cniVersion": "0.3.1",
            "name": "n", "plugins": [{"type": "b"}]}),
        )
        .unwrap();
        assert_eq!(c.version, CniVersion(1, 0, 0));
    }

    #[test]
    fn invalid_lists_say_what_is_wrong() {
        let cases = [
            (json!([]), "not a JSON object"),
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "b"}]}),
                "no \"name\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "a/b", "plugins": [{"type": "b"}]}),
                "network name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n"}),
                "no \"plugins\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
                "empty",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}),
                "plugins[0]: no \"type\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}),
                "file name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "b", "capabilities": {"portMappings": 1}}]}),
                "capability",
            ),
            (
                json!({"name": "n", "plugins": [{"type": "b"}]}),
                "no \"cniVersion\"",
            ),
        ];
        for (v, want) in cases {
            let r = reason(list(v));
            assert!(r.contains(want), "{r:?} should contain {want:?}");
        }
    }

    #[test]
    fn single_plugin_conf_is_wrapped_into_a_list() {
        let c = NetworkConfig::from_single(
            json!({"cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "br9"}),
            Path::new("/x/a.conf"),
        )
        .unwrap();
        assert_eq!(c.name, "single");
        assert_eq!(c.version, CniVersion(0, 4, 0));
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugin_type(0), "bridge");
        assert_eq!(c.plugins[0]["bridge"], "br9");
        // The wrapped form reads back as a list (the cache stores it).
        let again = NetworkConfig::from_list(c.raw.clone(), Path::new("/cache")).unwrap();
        assert_eq!(again.plugins, c.plugins);

        let err = NetworkConfig::from_single(
            json!({"cniVersion": "0.4.0", "name": "l", "plugins": []}),
            Path::new("/x/b.conf"),
        )
        .unwrap_err();
        assert!(err.to_string().contains(".conflist"), "{err}");
    }

    #[test]
    fn stdin_config_gets_name_version_prev_result_and_declared_capabilities_only() {
        let c = list(json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
            {"type": "bridge", "name": "ignored", "bridge": "br0"},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true, "cgroupPath": false}},
        ]}))
        .unwrap();
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]),
        );
        caps.insert("cgroupPath".into(), json!("/kubepods/pod1"));

        let first: Value = serde_json::from_slice(&c.plugin_stdin(0, None, &caps)).unwrap();
        assert_eq!(
            first,
            json!({"type": "bridge", "name": "net", "cniVersion": "1.0.0", "bridge": "br0"})
        );

        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]});
        let second: Value = serde_json::from_slice(&c.plugin_stdin(1, Some(&prev), &caps)).unwrap();
        assert_eq!(
            second,
            json!({"type": "portmap", "name": "net", "cniVersion": "1.0.0", "prevResult": prev,
                "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}})
        );
    }

    #[test]
    fn ids_and_interface_names_follow_the_spec() {
        assert!(is_valid_id("abc-1.2_3"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("-abc"));
        assert!(!is_valid_id("a/b"));
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_valid_file_by_name_wins_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_first(dir.path()),
            Err(CniError::NoConfig { .. })
        ));
        assert!(matches!(
            load_first(&dir.path().join("missing")),
            Err(CniError::NoConfig { .. })
        ));

        let broken = dir.path().join("05-broken.conflist");
        fs::write(&broken, "{ not json").unwrap();
        fs::write(dir.path().join("README"), "not a config").unwrap();
        match load_first(dir.path()) {
            Err(CniError::BadConfig { path, reason }) => {
                assert_eq!(path, broken);
                assert!(reason.contains("JSON"), "{reason}");
            }
            other => panic!("{other:?}"),
        }

        fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"0.3.1","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let c = load_first(dir.path()).unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.source, dir.path().join("10-a.conflist"));
    }

    #[test]
    fn plugins_are_found_in_the_first_directory_that_has_them() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let exe = b.path().join("p");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(a.path().join("p"), "not executable").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).unwrap(), exe);
        match find_plugin("q", &dirs) {
            Err(CniError::PluginNotFound { plugin, dirs: d }) => {
                assert_eq!(plugin, "q");
                assert_eq!(d, dirs);
            }
            other => panic!("{other:?}"),
        }
    }
}
