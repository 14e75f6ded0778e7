//! The two namespaces of a run and their veth pair, and stale ones left by a bench killed hard.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use periscope_bench::ip;
use periscope_pipeline::model::NetnsId;
use periscope_receivers::shared::netns::{netns_cookie, Namespace, NetnsHandle};

/// The two namespaces and their veth pair; deleted on drop (the veth goes with them).
pub(crate) struct Topology {
    pub(crate) tx: String,
    pub(crate) rx: String,
}

pub(crate) const PREFIX: &str = "periscope-bench-";

impl Topology {
    pub(crate) fn new() -> Result<Topology> {
        remove_stale();
        let pid = std::process::id();
        let t = Topology {
            tx: format!("{PREFIX}{pid}-tx"),
            rx: format!("{PREFIX}{pid}-rx"),
        };
        for ns in [&t.tx, &t.rx] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            for key in ["all", "default"] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                    .output();
            }
        }
        ip(&[
            "-n", &t.tx, "link", "add", "veth-tx", "type", "veth", "peer", "name", "veth-rx",
            "netns", &t.rx,
        ])?;
        ip(&[
            "-n",
            &t.tx,
            "addr",
            "add",
            "10.231.0.1/24",
            "dev",
            "veth-tx",
        ])?;
        ip(&[
            "-n",
            &t.rx,
            "addr",
            "add",
            "10.231.0.2/24",
            "dev",
            "veth-rx",
        ])?;
        ip(&["-n", &t.tx, "link", "set", "veth-tx", "up"])?;
        ip(&["-n", &t.rx, "link", "set", "veth-rx", "up"])?;
        // Sender-side ARP resolved once, for good: no ARP exchange in the middle of a round.
        let mac = mac_in(&t.rx, "veth-rx")?;
        ip(&[
            "-n",
            &t.tx,
            "neigh",
            "replace",
            "10.231.0.2",
            "lladdr",
            mac.trim(),
            "dev",
            "veth-tx",
            "nud",
            "permanent",
        ])?;
        Ok(t)
    }

    pub(crate) fn path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }
}

fn mac_in(ns: &str, dev: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/address"))
        .output()?;
    if !out.status.success() {
        bail!("cannot read the MAC address of {dev} in {ns}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.tx, &self.rx] {
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: `ip netns del {ns}`: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("warning: `ip netns del {ns}`: {e}"),
            }
        }
    }
}

/// Deletes `periscope-bench-<pid>-*` namespaces whose process is gone (a bench killed hard).
pub(crate) fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

pub(crate) fn namespace(name: &str) -> Result<(Namespace, NetnsHandle)> {
    let path = Topology::path(name);
    let inode = std::fs::metadata(&path)?.ino() as u32;
    let mut ns = Namespace {
        id: NetnsId { inode, cookie: 0 },
        name: Some(name.to_string()),
        path,
        cgroup: None,
        cgroup_late: false,
        fd: None,
    };
    let handle = NetnsHandle::open(&ns)?;
    ns.id.cookie = netns_cookie(&handle)?;
    Ok((ns, handle))
}
