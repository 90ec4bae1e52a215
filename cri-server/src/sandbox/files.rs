//! The files a pod's containers share: hostname, hosts, resolv.conf, and a /dev/shm tmpfs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_cri::v1::DnsConfig;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Size of a pod's /dev/shm, as docker and containerd default it.
pub const SHM_SIZE: &str = "size=65536k";

pub fn resolv_conf(dns: Option<&DnsConfig>) -> std::io::Result<String> {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                let _ = writeln!(s, "search {}", d.searches.join(" "));
            }
            for server in &d.servers {
                let _ = writeln!(s, "nameserver {server}");
            }
            if !d.options.is_empty() {
                let _ = writeln!(s, "options {}", d.options.join(" "));
            }
            Ok(s)
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").or_else(|_| Ok(String::new())),
    }
}

pub fn hosts(hostname: &str) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        let _ = writeln!(s, "127.0.1.1\t{hostname}");
    }
    s
}

/// Writes the pod's etc files into `dir`.
pub fn write_etc(
    dir: &Path,
    hostname: &str,
    dns: Option<&DnsConfig>,
    host_network: bool,
) -> std::io::Result<()> {
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| self::hosts(hostname))
    } else {
        self::hosts(hostname)
    };
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("resolv.conf"), resolv_conf(dns)?)?;
    Ok(())
}

/// Mounts a fresh tmpfs at `dir/shm` for the pod.
pub fn mount_shm(dir: &Path) -> std::io::Result<PathBuf> {
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm)?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{SHM_SIZE}").as_str()),
    )?;
    Ok(shm)
}

pub fn unmount_shm(dir: &Path) {
    let shm = dir.join("shm");
    let _ = umount2(&shm, MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_dns_config() {
        let d = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&d)).unwrap(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_names_the_pod() {
        assert!(hosts("web-0").contains("127.0.1.1\tweb-0\n"));
        assert!(hosts("web-0").starts_with("127.0.0.1\tlocalhost\n"));
    }
}
