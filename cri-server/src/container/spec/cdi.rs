//! CDI (Container Device Interface): device names the kubelet passes (`cdi_devices`, and
//! `cdi.k8s.io/*` annotations from device plugins) resolved against the spec files in the
//! CDI dirs, and their container edits (env, device nodes, mounts, hooks) applied to the OCI
//! spec. Spec files are JSON or YAML; a later dir overrides an earlier one (`/var/run/cdi`
//! over `/etc/cdi`), as the CDI spec orders them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, Device};
use oci_spec::runtime::{Hook, Hooks, Mount, Spec};
use serde::Deserialize;

use super::SpecError;

const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerEdits {
    env: Vec<String>,
    device_nodes: Vec<DeviceNode>,
    mounts: Vec<CdiMount>,
    hooks: Vec<CdiHook>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DeviceNode {
    path: String,
    host_path: Option<String>,
    permissions: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CdiMount {
    host_path: String,
    container_path: String,
    options: Vec<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CdiHook {
    hook_name: String,
    path: String,
    args: Vec<String>,
    env: Vec<String>,
    timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    #[serde(default)]
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<CdiDevice>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiDevice {
    name: String,
    #[serde(default)]
    container_edits: ContainerEdits,
}

/// The fully qualified CDI names (`vendor.com/class=name`) a container asks for.
pub fn requested_names(config: &ContainerConfig) -> Vec<String> {
    let mut names: Vec<String> = config
        .cdi_devices
        .iter()
        .map(|d| d.name.trim().to_string())
        .collect();
    let mut keys: Vec<&String> = config
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        names.extend(
            config.annotations[k]
                .split(',')
                .map(|s| s.trim().to_string()),
        );
    }
    names.retain(|n| !n.is_empty());
    names.dedup();
    names
}

/// Resolves `names` against the spec files in `dirs`: the edits to apply, spec-level edits
/// once per file used. An unknown name is an error naming it.
pub fn resolve(dirs: &[PathBuf], names: &[String]) -> Result<Vec<ContainerEdits>, SpecError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // name -> (file index, device edits); later dirs and files override earlier ones.
    let mut files: Vec<SpecFile> = Vec::new();
    let mut index: HashMap<String, (usize, usize)> = HashMap::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SpecError::Io {
                    what: "read CDI dir",
                    path: dir.clone(),
                    source: e,
                });
            }
        };
        paths.sort();
        for path in paths {
            let Some(file) = read_spec_file(&path)? else {
                continue;
            };
            let fi = files.len();
            for (di, d) in file.devices.iter().enumerate() {
                index.insert(format!("{}={}", file.kind, d.name), (fi, di));
            }
            files.push(file);
        }
    }
    let mut out = Vec::new();
    let mut used_files = Vec::new();
    for name in names {
        let Some(&(fi, di)) = index.get(name) else {
            return Err(SpecError::InvalidArgument(format!(
                "unknown CDI device {name:?}: no spec in {} defines it",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if !used_files.contains(&fi) {
            used_files.push(fi);
            out.push(files[fi].container_edits.clone());
        }
        out.push(files[fi].devices[di].container_edits.clone());
    }
    Ok(out)
}

fn read_spec_file(path: &Path) -> Result<Option<SpecFile>, SpecError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "json" | "yaml" | "yml") {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::Io {
        what: "read CDI spec",
        path: path.to_path_buf(),
        source: e,
    })?;
    let bad = |reason: String| {
        SpecError::InvalidArgument(format!("CDI spec {}: {reason}", path.display()))
    };
    let file: SpecFile = if ext == "json" {
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?
    };
    if !file.kind.contains('/') {
        return Err(bad(format!("kind {:?} is not vendor/class", file.kind)));
    }
    if file.cdi_version.is_empty() {
        return Err(bad("no cdiVersion".into()));
    }
    Ok(Some(file))
}

/// Applies resolved edits to `spec`.
pub fn apply(spec: &mut Spec, edits: &[ContainerEdits]) -> Result<(), SpecError> {
    for e in edits {
        if !e.env.is_empty() {
            let mut process = spec.process().clone().unwrap_or_default();
            let mut env = process.env().clone().unwrap_or_default();
            for kv in &e.env {
                let key = kv.split('=').next().unwrap_or(kv);
                match env.iter_mut().find(|x| x.split('=').next() == Some(key)) {
                    Some(slot) => *slot = kv.clone(),
                    None => env.push(kv.clone()),
                }
            }
            process.set_env(Some(env));
            spec.set_process(Some(process));
        }
        if !e.device_nodes.is_empty() {
            let cri: Vec<Device> = e
                .device_nodes
                .iter()
                .map(|d| Device {
                    container_path: d.path.clone(),
                    host_path: d.host_path.clone().unwrap_or_else(|| d.path.clone()),
                    permissions: d.permissions.clone().unwrap_or_else(|| "rwm".into()),
                })
                .collect();
            let (devs, rules) = super::devices::cri_devices(&cri)?;
            let mut linux = spec.linux().clone().unwrap_or_default();
            let mut all = linux.devices().clone().unwrap_or_default();
            all.retain(|d| !devs.iter().any(|n| n.path() == d.path()));
            all.extend(devs);
            linux.set_devices(Some(all));
            let mut res = linux.resources().clone().unwrap_or_default();
            let mut r = res.devices().clone().unwrap_or_default();
            r.extend(rules);
            res.set_devices(Some(r));
            linux.set_resources(Some(res));
            spec.set_linux(Some(linux));
        }
        if !e.mounts.is_empty() {
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            for m in &e.mounts {
                if !m.container_path.starts_with('/') {
                    return Err(SpecError::InvalidArgument(format!(
                        "CDI mount {:?} is not absolute",
                        m.container_path
                    )));
                }
                mounts.retain(|x| x.destination() != Path::new(&m.container_path));
                let mut mount = Mount::default();
                mount.set_destination(PathBuf::from(&m.container_path));
                mount.set_source(Some(PathBuf::from(&m.host_path)));
                mount.set_typ(Some(m.typ.clone().unwrap_or_else(|| "bind".into())));
                let options = if m.options.is_empty() {
                    vec!["rbind".into(), "rprivate".into()]
                } else {
                    m.options.clone()
                };
                mount.set_options(Some(options));
                mounts.push(mount);
            }
            spec.set_mounts(Some(mounts));
        }
        for h in &e.hooks {
            let mut hook = Hook::default();
            hook.set_path(PathBuf::from(&h.path));
            hook.set_args((!h.args.is_empty()).then(|| h.args.clone()));
            hook.set_env((!h.env.is_empty()).then(|| h.env.clone()));
            hook.set_timeout(h.timeout);
            let mut hooks: Hooks = spec.hooks().clone().unwrap_or_default();
            let list = match h.hook_name.as_str() {
                "prestart" => hooks.prestart().clone(),
                "createRuntime" => hooks.create_runtime().clone(),
                "createContainer" => hooks.create_container().clone(),
                "startContainer" => hooks.start_container().clone(),
                "poststart" => hooks.poststart().clone(),
                "poststop" => hooks.poststop().clone(),
                other => {
                    return Err(SpecError::InvalidArgument(format!(
                        "CDI hook name {other:?} is unknown"
                    )));
                }
            };
            let mut list = list.unwrap_or_default();
            list.push(hook);
            match h.hook_name.as_str() {
                "prestart" => hooks.set_prestart(Some(list)),
                "createRuntime" => hooks.set_create_runtime(Some(list)),
                "createContainer" => hooks.set_create_container(Some(list)),
                "startContainer" => hooks.set_start_container(Some(list)),
                "poststart" => hooks.set_poststart(Some(list)),
                _ => hooks.set_poststop(Some(list)),
            };
            spec.set_hooks(Some(hooks));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::CdiDevice as CriCdi;

    #[test]
    fn names_come_from_the_field_and_the_annotations() {
        let mut c = ContainerConfig {
            cdi_devices: vec![CriCdi {
                name: "a.com/x=1".into(),
            }],
            ..Default::default()
        };
        c.annotations
            .insert("cdi.k8s.io/plugin".into(), "b.com/y=2, a.com/x=3".into());
        c.annotations.insert("other".into(), "c.com/z=9".into());
        assert_eq!(
            requested_names(&c),
            vec!["a.com/x=1", "b.com/y=2", "a.com/x=3"]
        );
    }

    #[test]
    fn resolution_applies_env_mounts_hooks_and_refuses_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vendor.yaml"),
            "cdiVersion: 0.6.0\nkind: example.com/dev\ncontainerEdits:\n  env: [COMMON=1]\ndevices:\n  - name: d0\n    containerEdits:\n      env: [DEV=d0]\n      mounts:\n        - {hostPath: /opt/lib, containerPath: /usr/lib/x, options: [ro, bind]}\n      hooks:\n        - {hookName: createContainer, path: /bin/true}\n",
        )
        .unwrap();
        let edits = resolve(&[dir.path().to_path_buf()], &["example.com/dev=d0".into()]).unwrap();
        assert_eq!(edits.len(), 2, "spec-level then device edits");
        let mut spec = Spec::default();
        apply(&mut spec, &edits).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"COMMON=1".to_string()) && env.contains(&"DEV=d0".to_string()));
        assert!(
            spec.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == Path::new("/usr/lib/x"))
        );
        assert_eq!(
            spec.hooks()
                .as_ref()
                .unwrap()
                .create_container()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        let err = resolve(
            &[dir.path().to_path_buf()],
            &["example.com/dev=nope".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn later_dirs_override_earlier_ones() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let file = |env: &str| {
            format!(
                r#"{{"cdiVersion":"0.6.0","kind":"x.io/c","devices":[{{"name":"d","containerEdits":{{"env":["{env}"]}}}}]}}"#
            )
        };
        std::fs::write(a.path().join("s.json"), file("V=etc")).unwrap();
        std::fs::write(b.path().join("s.json"), file("V=run")).unwrap();
        let edits = resolve(&[a.path().into(), b.path().into()], &["x.io/c=d".into()]).unwrap();
        let mut spec = Spec::default();
        apply(&mut spec, &edits).unwrap();
        assert!(
            spec.process()
                .as_ref()
                .unwrap()
                .env()
                .as_ref()
                .unwrap()
                .contains(&"V=run".to_string())
        );
    }
}
