//! The Flexvolume calls as the kubelet and controller-manager make them, against real
//! loop devices and mounts (needs root).

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Sandbox, opts, s};

/// attach, waitforattach, mountdevice, and the global mount path used.
fn bring_up(sb: &Sandbox, name: &str, json: &str) -> (String, std::path::PathBuf) {
    let attach = sb.ok(&["attach", json, "node-1"]);
    let dev = attach.device();
    assert!(dev.starts_with("/dev/loop"), "{dev}");
    let wait = sb.ok(&["waitforattach", &dev, json]);
    assert_eq!(wait.device(), dev);
    let global = sb.path(&format!(
        "plugins/kubernetes.io/flexvolume/node-rs/loop/mounts/{name}"
    ));
    sb.ok(&["mountdevice", s(&global), &dev, json]);
    (dev, global)
}

fn tear_down(sb: &Sandbox, name: &str, global: &Path) {
    sb.ok(&["unmountdevice", s(global)]);
    sb.ok(&["detach", name, "node-1"]);
}

fn pod_dir(sb: &Sandbox, pod: &str, name: &str) -> std::path::PathBuf {
    sb.path(&format!("pods/{pod}/volumes/node-rs~loop/{name}"))
}

#[test]
fn init_reports_capabilities_and_nothing_on_stderr() {
    let sb = Sandbox::new();
    let c = sb.ok(&["init"]);
    let caps = &c.json["capabilities"];
    assert_eq!(caps["attach"], true);
    assert_eq!(caps["requiresFSResize"], true);
    assert_eq!(caps["supportsMetrics"], true);
    assert_eq!(caps["selinuxRelabel"], false);
    assert_eq!(caps["fsGroup"], false);
}

#[test]
fn bad_input_is_a_clear_failure_and_changes_nothing() {
    let sb = Sandbox::new();
    let m = sb.fails(&[]).message();
    assert!(m.contains("no call"), "{m}");
    let m = sb
        .fails(&["attach", "{\"kubernetes.io/pvOrVolumeName\":", "node-1"])
        .message();
    assert!(m.contains("JSON"), "{m}");
    let m = sb
        .fails(&["attach", r#"{"kubernetes.io/fsType":"ext4"}"#, "node-1"])
        .message();
    assert!(m.contains("kubernetes.io/pvOrVolumeName"), "{m}");
    let m = sb
        .fails(&["attach", &opts("../../etc", &[]), "node-1"])
        .message();
    assert!(m.contains("volume name"), "{m}");
    let m = sb
        .fails(&["attach", &opts("v", &[("size", "lots")]), "node-1"])
        .message();
    assert!(m.contains("size"), "{m}");
    let m = sb
        .fails(&[
            "attach",
            &opts("v", &[("kubernetes.io/fsType", "ntfs")]),
            "node-1",
        ])
        .message();
    assert!(m.contains("not supported"), "{m}");
    let m = sb
        .fails(&["mountdevice", "relative", "/dev/loop0", &opts("v", &[])])
        .message();
    assert!(m.contains("absolute"), "{m}");
    let m = sb
        .fails(&["mount", s(&sb.path("pod")), &opts("never-attached", &[])])
        .message();
    assert!(m.contains("not found") || m.contains("not staged"), "{m}");
    sb.fails(&["unmount"]);
    sb.fails(&["init", "extra"]);
    let c = sb.call(&["frobnicate", "{}"]);
    assert_eq!(
        (c.code, c.json["status"].as_str()),
        (1, Some("Not supported"))
    );
    // Nothing was created: no record, no backing file, no loop device, no lock.
    let records = std::fs::read_dir(sb.state().join("volumes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0);
    sb.assert_clean();
}

#[test]
fn inverses_of_things_never_done_succeed() {
    let sb = Sandbox::new();
    sb.ok(&["unmount", s(&sb.path("pods/x/vol"))]);
    sb.ok(&["unmountdevice", s(&sb.path("global/x"))]);
    sb.ok(&["detach", "x", "node-1"]);
    sb.ok(&["detach", "/dev/loop-does-not-exist", "node-1"]);
    let c = sb.ok(&["isattached", &opts("x", &[]), "node-1"]);
    assert_eq!(c.json["attached"], false);
    sb.assert_clean();
}

#[test]
fn kubelet_sequence_with_two_pods_and_repeats_leaves_nothing_behind() {
    let sb = Sandbox::new();
    let name = "pv-ext4";
    let json = opts(name, &[]);
    let (dev, global) = bring_up(&sb, name, &json);
    // Every step again: same answers, nothing doubled.
    assert_eq!(sb.ok(&["attach", &json, "node-1"]).device(), dev);
    sb.ok(&["mountdevice", s(&global), &dev, &json]);
    assert_eq!(
        sb.ok(&["isattached", &json, "node-1"]).json["attached"],
        true
    );
    let gv = sb.ok(&["getvolumename", &json]);
    assert_eq!(gv.json["volumeName"], name);

    let (a, b) = (pod_dir(&sb, "uid-a", name), pod_dir(&sb, "uid-b", name));
    let pod_opts = |pod: &str| {
        opts(
            name,
            &[
                ("kubernetes.io/pod.name", pod),
                ("kubernetes.io/pod.namespace", "default"),
                ("kubernetes.io/pod.uid", pod),
                ("kubernetes.io/serviceAccount.name", "default"),
                ("kubernetes.io/secret/token", "s3cret"),
            ],
        )
    };
    sb.ok(&["mount", s(&a), &pod_opts("uid-a")]);
    sb.ok(&["mount", s(&a), &pod_opts("uid-a")]);
    sb.ok(&["mount", s(&b), &pod_opts("uid-b")]);
    std::fs::write(a.join("hello"), "from a").unwrap();
    assert_eq!(std::fs::read_to_string(b.join("hello")).unwrap(), "from a");
    assert_eq!(sb.mounts().len(), 3, "one global mount and two binds");
    assert!(
        !sb.log_text().contains("s3cret"),
        "secret leaked into the log"
    );

    // The device is busy: detach and unmountdevice refuse, changing nothing.
    let m = sb.fails(&["detach", name, "node-1"]).message();
    assert!(m.contains("still mounted"), "{m}");
    let m = sb.fails(&["unmountdevice", s(&global)]).message();
    assert!(m.contains("still mounted"), "{m}");
    assert_eq!(sb.mounts().len(), 3);

    sb.ok(&["unmount", s(&a)]);
    sb.ok(&["unmount", s(&a)]);
    sb.ok(&["unmount", s(&b)]);
    assert!(!a.exists() && !b.exists(), "pod mount dirs are removed");
    tear_down(&sb, name, &global);
    sb.ok(&["unmountdevice", s(&global)]);
    sb.ok(&["detach", name, "node-1"]);
    assert_eq!(
        sb.ok(&["isattached", &json, "node-1"]).json["attached"],
        false
    );
    sb.assert_clean();

    // Attach again: the data is there, the filesystem was not made again.
    let (_, global) = bring_up(&sb, name, &json);
    assert_eq!(
        std::fs::read_to_string(global.join("hello")).unwrap(),
        "from a"
    );
    tear_down(&sb, name, &global);
    sb.assert_clean();
}

#[test]
fn xfs_volume_grows_online_and_is_never_reformatted_as_ext4() {
    let sb = Sandbox::new();
    let name = "pv-xfs";
    // mkfs.xfs wants at least 300 MiB.
    let json = opts(name, &[("kubernetes.io/fsType", "xfs"), ("size", "320Mi")]);
    let (dev, global) = bring_up(&sb, name, &json);
    let pod = pod_dir(&sb, "uid-x", name);
    sb.ok(&["mount", s(&pod), &json]);
    std::fs::write(pod.join("data"), "xfs data").unwrap();
    let table = flexvolume_driver::sys::mount::table().unwrap();
    let entry = flexvolume_driver::sys::mount::mount_at(&table, &global).unwrap();
    assert_eq!(entry.fs_type, "xfs");

    let before = flexvolume_driver::sys::fs::usage(&pod).unwrap().total_bytes;
    let new_size = (400u64 << 20).to_string();
    let old_size = (320u64 << 20).to_string();
    let c = sb.ok(&["expandvolume", &json, &dev, &new_size, &old_size]);
    assert_eq!(c.json["volumeNewSize"], 400u64 << 20);
    sb.ok(&["expandfs", &json, &dev, s(&global), &new_size, &old_size]);
    let after = flexvolume_driver::sys::fs::usage(&pod).unwrap().total_bytes;
    assert!(
        after > before + (60 << 20),
        "xfs did not grow: {before} -> {after}"
    );
    assert_eq!(
        std::fs::read_to_string(pod.join("data")).unwrap(),
        "xfs data"
    );

    sb.ok(&["unmount", s(&pod)]);
    tear_down(&sb, name, &global);

    // Asked for ext4 now: a mismatch is an error, not a reformat.
    let ext4 = opts(name, &[("kubernetes.io/fsType", "ext4"), ("size", "320Mi")]);
    let dev = sb.ok(&["attach", &ext4, "node-1"]).device();
    let m = sb
        .fails(&["mountdevice", s(&global), &dev, &ext4])
        .message();
    assert!(m.contains("not reformatting"), "{m}");
    assert!(sb.mounts().is_empty());
    // Still xfs with its data.
    sb.ok(&["mountdevice", s(&global), &dev, &json]);
    assert_eq!(
        std::fs::read_to_string(global.join("data")).unwrap(),
        "xfs data"
    );
    tear_down(&sb, name, &global);
    sb.assert_clean();
}

#[test]
fn read_only_mounts_refuse_writes_and_never_format() {
    let sb = Sandbox::new();
    let name = "pv-ro";
    let ro = opts(name, &[("kubernetes.io/readwrite", "ro")]);
    // Never formatted and read-only: a clear failure, nothing mounted.
    let dev = sb.ok(&["attach", &ro, "node-1"]).device();
    let global = sb.path(&format!("global/{name}"));
    let m = sb.fails(&["mountdevice", s(&global), &dev, &ro]).message();
    assert!(m.contains("read-only"), "{m}");
    sb.ok(&["detach", name, "node-1"]);
    sb.assert_clean();

    // Write some data read-write first.
    let rw = opts(name, &[]);
    let (_, global) = bring_up(&sb, name, &rw);
    std::fs::write(global.join("file"), "kept").unwrap();
    tear_down(&sb, name, &global);

    // Then read-only: readable, not writable, at the global path and in the pod.
    let (dev, global) = bring_up(&sb, name, &ro);
    let pod = pod_dir(&sb, "uid-r", name);
    sb.ok(&["mount", s(&pod), &ro]);
    assert_eq!(std::fs::read_to_string(pod.join("file")).unwrap(), "kept");
    for dir in [&pod, &global] {
        let err = std::fs::write(dir.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{}", dir.display());
    }
    // A read-write pod mount of a read-only staged volume is refused.
    let m = sb
        .fails(&["mount", s(&pod_dir(&sb, "uid-w", name)), &rw])
        .message();
    assert!(m.contains("read-only"), "{m}");
    sb.ok(&["unmount", s(&pod)]);
    assert!(dev.starts_with("/dev/loop"));
    tear_down(&sb, name, &global);
    sb.assert_clean();
}

#[test]
fn fs_group_is_applied_on_mount() {
    let sb = Sandbox::new();
    let name = "pv-fsgroup";
    let json = opts(name, &[]);
    let (_, global) = bring_up(&sb, name, &json);
    std::fs::create_dir(global.join("sub")).unwrap();
    std::fs::write(global.join("sub/old"), "x").unwrap();
    std::fs::set_permissions(
        global.join("sub/old"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let pod = pod_dir(&sb, "uid-g", name);
    let with_group = opts(name, &[("kubernetes.io/mounterArgs.FsGroup", "4321")]);
    sb.ok(&["mount", s(&pod), &with_group]);
    for p in [pod.clone(), pod.join("sub"), pod.join("sub/old")] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.gid(), 4321, "{}", p.display());
    }
    let dir_mode = std::fs::metadata(pod.join("sub")).unwrap().mode();
    assert_ne!(dir_mode & 0o2000, 0, "setgid on directories");
    assert_eq!(dir_mode & 0o070, 0o070);
    assert_eq!(
        std::fs::metadata(pod.join("sub/old")).unwrap().mode() & 0o060,
        0o060
    );
    // New files inherit the group.
    std::fs::File::create(pod.join("sub/new"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    assert_eq!(std::fs::metadata(pod.join("sub/new")).unwrap().gid(), 4321);
    sb.fails(&[
        "mount",
        s(&pod_dir(&sb, "uid-h", name)),
        &opts(name, &[("kubernetes.io/mounterArgs.FsGroup", "abc")]),
    ]);
    sb.ok(&["unmount", s(&pod)]);
    tear_down(&sb, name, &global);
    sb.assert_clean();
}

#[test]
fn ext4_grows_online_or_else_at_the_next_mountdevice() {
    let sb = Sandbox::new();
    let name = "pv-grow";
    let json = opts(name, &[]);
    let (dev, global) = bring_up(&sb, name, &json);
    let pod = pod_dir(&sb, "uid-e", name);
    sb.ok(&["mount", s(&pod), &json]);
    std::fs::write(pod.join("data"), "before growth").unwrap();
    let before = flexvolume_driver::sys::fs::usage(&pod).unwrap().total_bytes;
    let (new, old) = ((128u64 << 20).to_string(), (64u64 << 20).to_string());
    let c = sb.ok(&["expandvolume", &json, &dev, &new, &old]);
    assert_eq!(c.json["volumeNewSize"], 128u64 << 20);
    // The loop device follows the backing file at once.
    let size = flexvolume_driver::sys::loopdev::size_bytes(Path::new(&dev)).unwrap();
    assert_eq!(size, 128 << 20);
    let expandfs = [
        "expandfs",
        json.as_str(),
        dev.as_str(),
        s(&global),
        new.as_str(),
        old.as_str(),
    ];
    if flexvolume_driver::sys::fs::has_capability(flexvolume_driver::sys::fs::CAP_SYS_RESOURCE) {
        sb.ok(&expandfs);
        sb.ok(&expandfs);
    } else {
        // ext4 online resize needs CAP_SYS_RESOURCE: a clear failure, nothing broken.
        let m = sb.fails(&expandfs).message();
        assert!(m.contains("CAP_SYS_RESOURCE"), "{m}");
        sb.ok(&["unmount", s(&pod)]);
        tear_down(&sb, name, &global);
        let (_, g) = bring_up(&sb, name, &json);
        assert_eq!(g, global);
        sb.ok(&["mount", s(&pod), &json]);
    }
    let after = flexvolume_driver::sys::fs::usage(&pod).unwrap().total_bytes;
    assert!(
        after > before + (50 << 20),
        "ext4 did not grow: {before} -> {after}"
    );
    assert_eq!(
        std::fs::read_to_string(pod.join("data")).unwrap(),
        "before growth"
    );
    // Shrinking is never done.
    let c = sb.ok(&["expandvolume", &json, &dev, &old, &new]);
    assert_eq!(c.json["volumeNewSize"], 128u64 << 20);
    sb.ok(&["unmount", s(&pod)]);
    tear_down(&sb, name, &global);
    sb.assert_clean();
}

#[test]
fn existing_block_device_as_backing() {
    let sb = Sandbox::new();
    // A block device this test made itself, over a file in its temp dir.
    let device = sb.own_block_device("disk.img", 64 << 20);
    let name = "pv-blockdev";
    let json = opts(name, &[("blockDevice", s(&device))]);
    let (dev, global) = bring_up(&sb, name, &json);
    assert_ne!(
        Path::new(&dev),
        device,
        "the driver maps its own loop device over it"
    );
    std::fs::write(global.join("f"), "on the device").unwrap();
    let pod = pod_dir(&sb, "uid-d", name);
    sb.ok(&["mount", s(&pod), &json]);
    assert_eq!(
        std::fs::read_to_string(pod.join("f")).unwrap(),
        "on the device"
    );
    // A device cannot grow.
    let m = sb
        .fails(&["expandvolume", &json, &dev, "134217728", "67108864"])
        .message();
    assert!(m.contains("cannot grow"), "{m}");
    sb.ok(&["unmount", s(&pod)]);
    tear_down(&sb, name, &global);
    sb.assert_clean();
    // The test's own device is still there, untouched by the driver's detach.
    assert!(flexvolume_driver::sys::loopdev::backing_file(&device).is_some());
}

#[test]
fn concurrent_calls_run_in_parallel_for_different_volumes_and_serialize_for_one() {
    let sb = Sandbox::new();
    // One volume, four kubelets at once: one device, one global mount.
    let name = "pv-shared";
    let json = opts(name, &[]);
    let global = sb.path(&format!("global/{name}"));
    let devices: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| sb.ok(&["attach", &json, "node-1"]).device()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(devices.iter().all(|d| *d == devices[0]), "{devices:?}");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| sb.ok(&["mountdevice", s(&global), &devices[0], &json]));
        }
    });
    assert_eq!(sb.mounts().len(), 1);
    tear_down(&sb, name, &global);

    // Six volumes, each through its whole life on its own thread.
    std::thread::scope(|scope| {
        for i in 0..6 {
            let sb = &sb;
            scope.spawn(move || {
                let name = format!("pv-par-{i}");
                let json = opts(&name, &[]);
                let (_, global) = bring_up(sb, &name, &json);
                let pod = pod_dir(sb, &format!("uid-{i}"), &name);
                sb.ok(&["mount", s(&pod), &json]);
                std::fs::write(pod.join("id"), &name).unwrap();
                sb.ok(&["unmount", s(&pod)]);
                tear_down(sb, &name, &global);
            });
        }
    });
    sb.assert_clean();
}

/// Runs `args` with crash point `fault` armed: the process must die without a reply;
/// then the same call without the fault must succeed.
fn crash_then_retry(sb: &Sandbox, fault: &str, args: &[&str]) {
    let out = sb.run_with_fault(fault, args);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{fault}: the crash point was not reached"
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{fault}: output after a crash"
    );
    sb.ok(args);
}

#[test]
fn a_crash_at_any_step_then_a_retry_converges() {
    let sb = Sandbox::new();
    let faults = [
        "attach:after-loop",
        "mountdevice:after-mkfs",
        "mountdevice:after-mount",
        "mount:after-bind",
        "unmount:after-umount",
        "unmountdevice:after-umount",
        "detach:after-clear",
    ];
    for (i, fault) in faults.iter().enumerate() {
        let name = format!("pv-crash-{i}");
        let json = opts(&name, &[]);
        let ro = opts(&name, &[("kubernetes.io/readwrite", "ro")]);
        let global = sb.path(&format!("global/{name}"));
        let (a, b) = (pod_dir(&sb, "uid-a", &name), pod_dir(&sb, "uid-b", &name));
        let at = |call: &str| fault.starts_with(&format!("{call}:"));

        let attach = ["attach", json.as_str(), "node-1"];
        if at("attach") {
            crash_then_retry(&sb, fault, &attach);
        }
        let dev = sb.ok(&attach).device();
        let mountdevice = ["mountdevice", s(&global), dev.as_str(), json.as_str()];
        if at("mountdevice") {
            crash_then_retry(&sb, fault, &mountdevice);
        }
        sb.ok(&mountdevice);
        sb.ok(&["mount", s(&a), &json]);
        let mount_ro = ["mount", s(&b), ro.as_str()];
        if at("mount") {
            crash_then_retry(&sb, fault, &mount_ro);
        }
        sb.ok(&mount_ro);
        // The retry finished the read-only remount the crash skipped.
        let err = std::fs::write(b.join("x"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{fault}");
        std::fs::write(a.join("data"), &name).unwrap();
        let unmount = ["unmount", s(&a)];
        if at("unmount") {
            crash_then_retry(&sb, fault, &unmount);
        }
        sb.ok(&unmount);
        sb.ok(&["unmount", s(&b)]);
        let unmountdevice = ["unmountdevice", s(&global)];
        if at("unmountdevice") {
            crash_then_retry(&sb, fault, &unmountdevice);
        }
        sb.ok(&unmountdevice);
        let detach = ["detach", name.as_str(), "node-1"];
        if at("detach") {
            crash_then_retry(&sb, fault, &detach);
        }
        sb.ok(&detach);
        sb.assert_clean();
        // The data survived the crash and was not formatted over.
        let (_, global) = bring_up(&sb, &name, &json);
        assert_eq!(
            std::fs::read_to_string(global.join("data")).unwrap(),
            name,
            "{fault}"
        );
        tear_down(&sb, &name, &global);
        sb.assert_clean();
    }
}

#[test]
fn a_crash_then_teardown_instead_of_retry_also_leaves_nothing() {
    let sb = Sandbox::new();
    let name = "pv-crash-teardown";
    let json = opts(name, &[]);
    let global = sb.path(&format!("global/{name}"));
    let out = sb.run_with_fault("attach:after-loop", &["attach", &json, "node-1"]);
    assert_eq!(out.status.code(), Some(137));
    // The kubelet gives up and detaches: the device the crashed call made is found.
    sb.ok(&["detach", name, "node-1"]);
    sb.assert_clean();

    let dev = sb.ok(&["attach", &json, "node-1"]).device();
    let out = sb.run_with_fault(
        "mountdevice:after-mount",
        &["mountdevice", s(&global), &dev, &json],
    );
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(sb.mounts().len(), 1);
    sb.ok(&["unmountdevice", s(&global)]);
    sb.ok(&["detach", name, "node-1"]);
    sb.assert_clean();
}
