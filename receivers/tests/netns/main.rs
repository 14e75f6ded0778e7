//! Namespace and device discovery in real namespaces (needs root): scan, list_devices,
//! run_in, the watcher (adds, removes, moves, scopes), its latency, and that it leaks nothing.
//!
//! Namespaces are the test kit's (`periscope-t-<pid>-<n>`): stale ones from a killed run are
//! deleted first, and guards delete ours even when a check fails.

/// The binary's lock, taken as root; or the test returns (the skip rules said why, or failed
/// it under CI).
macro_rules! serial_root {
    () => {
        match crate::SERIAL.lock_if(periscope_testkit::require_root(
            periscope_testkit::test_name!(),
        )) {
            Some(guard) => guard,
            None => return,
        }
    };
}

mod cgroup;
mod churn;
mod churn_process;
mod churn_release;
mod churn_telemetry;
mod docker;
mod latency;
mod scan;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use periscope_pipeline::model::NetnsId;
use periscope_receivers::shared::netns::{
    list_devices, netns_cookie, run_in, scan, watch, Discovery, Namespace, NamespaceScope,
    NetnsHandle,
};
use periscope_testkit::cgroup::Cgroups;
use periscope_testkit::process::{run_ok, Background};
use periscope_testkit::stats::percentile;
use periscope_testkit::{Netns, Serial};

/// The tests count this process's fds and share /run/netns: one at a time.
static SERIAL: Serial = Serial::new();

const WAIT: Duration = Duration::from_secs(3);

fn ip(args: &[&str]) -> String {
    let out = run_ok(Command::new("ip").args(args), Duration::from_secs(10));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip` that may fail (cleanup).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The namespace's inode as the watcher reports it.
fn inode(ns: &Netns) -> u32 {
    ns.inode() as u32
}

/// A host link of ours (deleting one end of a veth deletes both), deleted on drop.
struct HostLink(String);

impl Drop for HostLink {
    fn drop(&mut self) {
        ip_quiet(&["link", "del", &self.0]);
    }
}

/// The ifindex of `dev` in namespace `ns` (None: the host), as iproute2 reports it.
fn ifindex(ns: Option<&str>, dev: &str) -> u32 {
    let mut args = vec![];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-o", "link", "show", "dev", dev]);
    let out = ip(&args);
    out.split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
}

/// Whether this process has an fd open on namespace `inode`.
fn holds_netns(inode: u32) -> bool {
    let want = format!("net:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("read fds")
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read fds")
        .count()
}

/// What a watcher sent, with the events not yet matched kept in order.
/// A thread stamps each event as it arrives, so that latencies do not include the time the
/// test spent running a command.
struct Events {
    rx: Receiver<(Discovery, Instant)>,
    backlog: Vec<(Discovery, Instant)>,
}

impl Events {
    fn new(rx: Receiver<Discovery>) -> Events {
        let (tx, stamped) = unbounded();
        // Ends when the watcher is dropped (its sender goes away).
        std::thread::spawn(move || {
            for ev in rx.iter() {
                if tx.send((ev, Instant::now())).is_err() {
                    break;
                }
            }
        });
        Events {
            rx: stamped,
            backlog: Vec::new(),
        }
    }

    /// Takes the first event (already received or still to come) that matches; returns it
    /// and when it arrived.
    fn expect(&mut self, what: &str, f: impl Fn(&Discovery) -> bool) -> (Discovery, Instant) {
        if let Some(i) = self.backlog.iter().position(|(e, _)| f(e)) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((ev, at)) if f(&ev) => return (ev, at),
                Ok(got) => self.backlog.push(got),
                Err(_) => panic!(
                    "timed out waiting for {what}; unmatched: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// Everything received and not matched so far.
    fn rest(&mut self) -> Vec<Discovery> {
        let mut out: Vec<Discovery> = self.backlog.drain(..).map(|(e, _)| e).collect();
        out.extend(self.rx.try_iter().map(|(e, _)| e));
        out
    }
}

fn ns_added(rx: &mut Events, inode: u32) -> Namespace {
    ns_added_where(rx, &format!("NamespaceAdded {inode}"), |ns| {
        ns.id.inode == inode
    })
}

/// Ours, by name: inode numbers are reused (other tests create and delete namespaces too).
fn ns_named(rx: &mut Events, ns: &Netns) -> Namespace {
    ns_added_where(rx, &format!("NamespaceAdded {}", ns.name()), |n| {
        n.name.as_deref() == Some(ns.name())
    })
}

fn ns_added_where(rx: &mut Events, what: &str, f: impl Fn(&Namespace) -> bool) -> Namespace {
    match rx
        .expect(
            what,
            |e| matches!(e, Discovery::NamespaceAdded(ns) if f(ns)),
        )
        .0
    {
        Discovery::NamespaceAdded(ns) => ns,
        _ => unreachable!(),
    }
}

fn device_added(rx: &mut Events, netns: NetnsId, name: &str) -> (u32, Instant) {
    let (ev, at) = rx.expect(
        &format!("DeviceAdded {name}"),
        |e| matches!(e, Discovery::DeviceAdded { netns: n, device } if *n == netns && device.name == name),
    );
    match ev {
        Discovery::DeviceAdded { device, .. } => (device.ifindex, at),
        _ => unreachable!(),
    }
}

fn device_removed(rx: &mut Events, netns: NetnsId, ifindex: u32) -> Instant {
    rx.expect(&format!("DeviceRemoved {ifindex}"), |e| {
        matches!(e, Discovery::DeviceRemoved { netns: n, ifindex: i } if *n == netns && *i == ifindex)
    })
    .1
}

/// The median and the 99th percentile.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
}
