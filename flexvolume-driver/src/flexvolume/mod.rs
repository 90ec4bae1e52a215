//! The Flexvolume exec protocol: one call per process, argv as the kubelet and the
//! controller-manager build it (pkg/volume/flexvolume), one JSON reply on stdout.
//!
//! | call | argv after the call name |
//! |---|---|
//! | `init` | |
//! | `getvolumename` | `<json>` |
//! | `attach` | `<json> <node>` |
//! | `detach` | `<volumeName> <node>` |
//! | `waitforattach` | `<devicePath> <json>` |
//! | `isattached` | `<json> <node>` |
//! | `mountdevice` | `<deviceMountPath> <devicePath> <json>` |
//! | `unmountdevice` | `<deviceMountPath>` |
//! | `mount` | `<targetDir> <json>` |
//! | `unmount` | `<targetDir>` |
//! | `expandvolume` | `<json> <devicePath> <newSize> <oldSize>` |
//! | `expandfs` | `<json> <devicePath> <deviceMountPath> <newSize> <oldSize>` |

pub mod options;
pub mod reply;

use std::path::{Path, PathBuf};

use crate::volume::{PublishOptions, Volumes};
use crate::{Error, Result};
pub use options::Options;
pub use reply::{Capabilities, Reply};

/// What `init` reports. The driver applies fsGroup itself on `mount`, so the kubelet
/// is told not to walk the volume a second time.
pub fn capabilities() -> Capabilities {
    Capabilities {
        attach: true,
        selinux_relabel: false,
        supports_metrics: true,
        fs_group: false,
        requires_fs_resize: true,
    }
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| Error::InvalidArgument(format!("missing argument {i} ({what})")))
}

fn path_arg(args: &[String], i: usize, what: &str) -> Result<PathBuf> {
    let p = arg(args, i, what)?;
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} must be an absolute path, got {p:?}"
        )))
    }
}

fn expect_args(args: &[String], min: usize, max: usize, usage: &str) -> Result<()> {
    if args.len() < min || args.len() > max {
        return Err(Error::InvalidArgument(format!(
            "expected: {usage} (got {} arguments)",
            args.len()
        )));
    }
    Ok(())
}

/// Runs one call: `args` is argv without the program name. Never panics on input.
pub fn run(args: &[String], volumes: &Volumes) -> Reply {
    let Some(call) = args.first() else {
        return Reply::failure("no call given (expected init, attach, mount, ...)");
    };
    let rest = &args[1..];
    let span = tracing::info_span!("call", call = %call);
    let _enter = span.enter();
    let result = dispatch(call, rest, volumes);
    match result {
        Ok(reply) => {
            tracing::info!(status = reply.status, message = %reply.message, "done");
            reply
        }
        Err(e) => {
            tracing::error!(error = %e, "failed");
            Reply::failure(format!("{call}: {e}"))
        }
    }
}

fn dispatch(call: &str, args: &[String], volumes: &Volumes) -> Result<Reply> {
    match call {
        "init" => {
            expect_args(args, 0, 0, "init")?;
            let mut r = Reply::success("flexvolume-driver ready");
            r.capabilities = Some(capabilities());
            Ok(r)
        }
        "getvolumename" => {
            expect_args(args, 1, 1, "getvolumename <json>")?;
            let opts = parsed(&args[0])?;
            let mut r = Reply::success("");
            r.volume_name = Some(opts.volume_id()?);
            Ok(r)
        }
        "attach" => {
            expect_args(args, 1, 2, "attach <json> <node>")?;
            let opts = parsed(&args[0])?;
            let id = opts.volume_id()?;
            let device = volumes.attach(&id, &opts.spec()?)?;
            let mut r = Reply::success(format!("volume {id} attached"));
            r.device = Some(device.display().to_string());
            Ok(r)
        }
        "detach" => {
            expect_args(args, 1, 2, "detach <volumeName> <node>")?;
            let name = arg(args, 0, "volume name")?;
            match volumes.detach(name)? {
                Some(id) => Ok(Reply::success(format!("volume {id} detached"))),
                None => Ok(Reply::success(format!("volume {name} is not attached"))),
            }
        }
        "waitforattach" => {
            expect_args(args, 2, 2, "waitforattach <devicePath> <json>")?;
            let opts = parsed(&args[1])?;
            let id = opts.volume_id()?;
            // Runs on the node: make sure the device is there even if attach ran on
            // another host (controller-managed attach).
            let device = volumes.attach(&id, &opts.spec()?)?;
            let hint = &args[0];
            if !hint.is_empty() && Path::new(hint) != device {
                tracing::warn!(volume = %id, given = %hint, actual = %device.display(), "waitforattach: device path differs");
            }
            let mut r = Reply::success(format!("volume {id} is attached"));
            r.device = Some(device.display().to_string());
            Ok(r)
        }
        "isattached" => {
            expect_args(args, 1, 2, "isattached <json> <node>")?;
            let opts = parsed(&args[0])?;
            let id = opts.volume_id()?;
            let mut r = Reply::success("");
            r.attached = Some(volumes.attached_device(&id)?.is_some());
            Ok(r)
        }
        "mountdevice" => {
            expect_args(
                args,
                3,
                3,
                "mountdevice <deviceMountPath> <devicePath> <json>",
            )?;
            let path = path_arg(args, 0, "device mount path")?;
            let opts = parsed(&args[2])?;
            let id = opts.volume_id()?;
            let hint = Some(PathBuf::from(&args[1])).filter(|p| !p.as_os_str().is_empty());
            let device = volumes.mount_device(&id, &path, &opts.stage(hint)?)?;
            let mut r = Reply::success(format!("volume {id} mounted at {}", path.display()));
            r.device = Some(device.display().to_string());
            Ok(r)
        }
        "unmountdevice" => {
            expect_args(args, 1, 1, "unmountdevice <deviceMountPath>")?;
            let path = path_arg(args, 0, "device mount path")?;
            volumes.unmount_device(&path)?;
            Ok(Reply::success(format!("{} unmounted", path.display())))
        }
        "mount" => {
            // The pre-1.6 form `mount <dir> <device> <json>` is accepted too.
            expect_args(args, 2, 3, "mount <targetDir> <json>")?;
            let target = path_arg(args, 0, "target dir")?;
            let opts = parsed(&args[args.len() - 1])?;
            tracing::info!(options = ?opts.redacted(), "mount options");
            let id = opts.volume_id()?;
            let publish = PublishOptions {
                read_only: opts.read_only()?,
                fs_group: opts.fs_group()?,
            };
            volumes.publish(&id, &target, &publish)?;
            Ok(Reply::success(format!(
                "volume {id} mounted at {}",
                target.display()
            )))
        }
        "unmount" => {
            expect_args(args, 1, 1, "unmount <targetDir>")?;
            let target = path_arg(args, 0, "target dir")?;
            volumes.unpublish(&target)?;
            Ok(Reply::success(format!("{} unmounted", target.display())))
        }
        "expandvolume" => {
            expect_args(
                args,
                3,
                4,
                "expandvolume <json> <devicePath> <newSize> <oldSize>",
            )?;
            let opts = parsed(&args[0])?;
            let id = opts.volume_id()?;
            let new_size = size_arg(args, 2)?;
            let size = volumes.expand(&id, new_size)?;
            let mut r = Reply::success(format!("volume {id} is {size} bytes"));
            r.volume_new_size = Some(size);
            Ok(r)
        }
        "expandfs" => {
            expect_args(
                args,
                4,
                5,
                "expandfs <json> <devicePath> <deviceMountPath> <newSize> <oldSize>",
            )?;
            let opts = parsed(&args[0])?;
            let id = opts.volume_id()?;
            let new_size = size_arg(args, 3)?;
            // The kubelet may call expandfs without expandvolume having run here.
            volumes.expand(&id, new_size)?;
            let size = volumes.expand_fs(&id)?;
            let mut r = Reply::success(format!("filesystem of volume {id} grown"));
            r.volume_new_size = Some(size);
            Ok(r)
        }
        other => Ok(Reply::not_supported(format!(
            "call {other:?} is not supported by flexvolume-driver"
        ))),
    }
}

fn parsed(json: &str) -> Result<Options> {
    Options::parse(json)
}

fn size_arg(args: &[String], i: usize) -> Result<u64> {
    let s = arg(args, i, "size")?;
    s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "size must be a positive number of bytes, got {s:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn init_and_bad_calls_need_no_root() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(dir.path(), 1 << 20, "ext4");
        let r = run(&args(&["init"]), &v);
        assert!(r.ok());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["capabilities"]["attach"], true);
        assert_eq!(json["capabilities"]["requiresFSResize"], true);

        let r = run(&args(&[]), &v);
        assert_eq!((r.status, r.exit_code()), ("Failure", 1));
        let r = run(&args(&["frobnicate"]), &v);
        assert_eq!((r.status, r.exit_code()), ("Not supported", 1));
        let r = run(&args(&["attach", "{not json", "node1"]), &v);
        assert_eq!(r.status, "Failure");
        assert!(r.message.contains("JSON"), "{}", r.message);
        let r = run(&args(&["attach", "{}", "node1"]), &v);
        assert!(r.message.contains("pvOrVolumeName"), "{}", r.message);
        let r = run(&args(&["mount", "relative/dir", "{}"]), &v);
        assert!(r.message.contains("absolute"), "{}", r.message);
        let r = run(&args(&["unmountdevice"]), &v);
        assert_eq!(r.status, "Failure");
        let r = run(
            &args(&[
                "getvolumename",
                r#"{"kubernetes.io/pvOrVolumeName":"pv-7"}"#,
            ]),
            &v,
        );
        assert_eq!(r.volume_name.as_deref(), Some("pv-7"));
        // Nothing was created by any of these.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
