//! Watching for namespaces and devices that come and go.
//!
//! One thread does everything, woken by epoll:
//! - inotify on the bind-mount folders ([`BIND_DIRS`], or their nearest existing ancestor
//!   until they exist) and the mount table (`/proc/self/mountinfo` signals `EPOLLPRI` on every
//!   mount/umount: `ip netns add` creates the file *before* mounting the namespace on it, so the
//!   mount event, not the file, is what says the namespace is there);
//! - one rtnetlink socket per namespace in scope, created inside it and subscribed to
//!   `RTNLGRP_LINK` (RTM_NEWLINK/RTM_DELLINK; a device moved away shows as DELLINK);
//! - fork/exec events from the proc connector (scope `All`): the namespace of a process that
//!   just forked or exec'd is stat'ed, so `unshare -n CMD` is seen within ~10 ms (events are
//!   read in batches, [`PROC_COALESCE`]);
//! - a periodic rescan of `/proc/*/ns/net` (or of the cgroup subtree) for namespaces that only
//!   processes hold, as a backstop and to notice namespaces whose last process exited: every
//!   [`RESCAN_INTERVAL`] without the proc connector; with it, at once when a process through
//!   which a namespace was found exits, and every [`RESCAN_BACKSTOP`] otherwise.
//!
//! Every namespace in scope is held open (its nsfs fd and its netlink socket) while tracked;
//! both are closed when a rescan no longer reaches it, so that it can die.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};
use inotify::{Inotify, WatchDescriptor, WatchMask};
use periscope_pipeline::model::NetnsId;

use super::devices::{
    link_subscription, list_addresses, list_devices, parse_links, request_socket, DeviceAddress,
    LinkUpdate, RECV_BUF,
};
use super::discover::{
    bind_mounts, host_found, merge, names_by_inode, pid_namespaces, proc_namespaces, stat_at,
    unmounted_bind_files, BIND_DIRS,
};
use super::enter::{run_in, socket_cookie, NetnsFd, NetnsHandle};
use super::fds::{ctx, drain_eventfd, epoll_add, epoll_del, epoll_rearm, owned, wake};
use super::owner::{names_workload, owner_cgroup, workload_cgroup};
use super::peers::{addresses, Peers};
use super::procevents::{Pids, ProcEvents};
use super::scope::{cgroup_pids, cgroup_relative, in_cgroup, resolve_listed, NamespaceScope};
use super::tracked::Tracked;
use super::Found;
use super::{Device, Discovery, Namespace};

/// How often `/proc` (or the cgroup subtree) is rescanned for namespaces that no bind mount
/// announces. A scan of ~300 processes costs ~1.4 ms of CPU (`proc_scan_cost` in discover.rs),
/// so 250 ms keeps it near 0.5% of a core; namespaces under `/run/netns` are seen at once
/// through the mount table anyway.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(250);

/// How often `/proc` is rescanned when the proc connector reports processes as they are born,
/// exec and exit (the events find new namespaces, and the exit of a process through which a
/// namespace was found triggers a rescan): a backstop for what no event announces (a process
/// that calls `unshare(CLONE_NEWNET)` and never execs), at a fraction of the idle CPU.
pub const RESCAN_BACKSTOP: Duration = Duration::from_secs(5);

/// How long the bind mounts listed last stay trusted without a mount-table or folder event:
/// listing them stats every file (two syscalls per pod on a node), and the events announce
/// every change; this bounds what a missed event can cost.
const BINDS_TRUSTED_FOR: Duration = Duration::from_secs(30);

/// A running watcher; dropping it stops the watch and releases every namespace it held.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        wake(&self.wake);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("netns watcher thread panicked");
            }
        }
    }
}

/// Starts watching: reports every namespace in scope and its devices now, then changes as they
/// happen, on `events`.
///
/// `NamespaceAdded` comes before any `DeviceAdded` of that namespace. It is sent again for a
/// namespace already reported when its name becomes known (a bind mount appeared): treat it as
/// an update. `DeviceAdded` is likewise sent again when a device's name or state changes.
pub fn watch(scope: NamespaceScope, events: Sender<Discovery>) -> io::Result<Watcher> {
    if let NamespaceScope::Cgroup(dir) = &scope {
        if !dir.join("cgroup.procs").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: not a cgroup v2 directory (no cgroup.procs)",
                    dir.display()
                ),
            ));
        }
    }
    let host = host_found()?;
    // SAFETY: plain syscalls; results are checked and owned at once.
    let epoll = owned(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    let wake_fd = Arc::new(owned(
        // SAFETY: as above.
        unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) },
        "eventfd",
    )?);
    let inotify = Inotify::init().map_err(|e| ctx(e, "inotify_init"))?;
    let mountinfo = File::open("/proc/self/mountinfo").map_err(|e| ctx(e, "open mountinfo"))?;
    epoll_add(
        &epoll,
        wake_fd.as_raw_fd(),
        libc::EPOLLIN as u32,
        TOKEN_WAKE,
    )?;
    epoll_add(
        &epoll,
        inotify.as_raw_fd(),
        libc::EPOLLIN as u32,
        TOKEN_INOTIFY,
    )?;
    epoll_add(
        &epoll,
        mountinfo.as_raw_fd(),
        libc::EPOLLPRI as u32,
        TOKEN_MOUNTS,
    )?;

    // The cgroup's path as `/proc/PID/cgroup` shows it, to tell whether a new process is in it.
    let cgroup_rel = match &scope {
        NamespaceScope::Cgroup(dir) => cgroup_relative(dir),
        _ => None,
    };
    let procs = if matches!(scope, NamespaceScope::All) || cgroup_rel.is_some() {
        match ProcEvents::subscribe() {
            Ok(p) => match epoll_add(&epoll, p.as_raw_fd(), PROCS_EVENTS, TOKEN_PROCS) {
                Ok(()) => Some(p),
                Err(e) => {
                    tracing::debug!(error = %e, "proc connector not polled");
                    None
                }
            },
            Err(e) => {
                tracing::info!(error = %e, "no proc connector: processes' namespaces are found by periodic scans only");
                None
            }
        }
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut state = Loop {
        scope,
        out: Out {
            events,
            stop: stop.clone(),
            closed: false,
        },
        epoll,
        inotify,
        dir_watches: HashSet::new(),
        _mountinfo: mountinfo,
        procs,
        cgroup_rel,
        proc_dir: File::open("/proc").ok(),
        wake: wake_fd.clone(),
        tracked: HashMap::new(),
        peers: Peers::default(),
        host,
        last_scan: Vec::new(),
        found_through: HashSet::new(),
        binds: None,
        procs_rearm: None,
        full_due: false,
        buf: vec![0; RECV_BUF],
    };
    let thread = std::thread::Builder::new()
        .name("netns-watch".into())
        .spawn(move || state.run())?;
    Ok(Watcher {
        stop,
        wake: wake_fd,
        thread: Some(thread),
    })
}

/// How often, and for how long after a file appeared in a bind-mount folder, the folders are
/// looked at again while a file there is not (yet) a mounted namespace.
const BIND_RETRY: Duration = Duration::from_millis(20);
const BIND_RETRY_FOR: Duration = Duration::from_secs(2);

/// The proc connector reports every fork, exec and exit on the host: on a busy node (a build,
/// probes exec'ing) that was a wake-up per process. After one, the socket is left unpolled
/// this long so that the events meanwhile are read in one go (they queue in its buffer;
/// an overflow triggers a full rescan): a namespace found through a process is seen up to
/// this much later.
const PROC_COALESCE: Duration = Duration::from_millis(10);

/// How many processes of a namespace first seen in one batch of process events are kept as
/// candidates to tell whose it is.
const PIDS_PER_NEW_NAMESPACE: usize = 8;

/// The proc connector socket is armed for one wake-up at a time (re-armed after
/// [`PROC_COALESCE`]).
const PROCS_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_INOTIFY: u64 = u64::MAX - 1;
const TOKEN_MOUNTS: u64 = u64::MAX - 2;
const TOKEN_PROCS: u64 = u64::MAX - 3;
// Netlink sockets use the namespace's inode (u32) as their token: no clash with the above.

/// The sending side, which gives up when the watcher stops or the receiver is gone.
struct Out {
    events: Sender<Discovery>,
    stop: Arc<AtomicBool>,
    closed: bool,
}

impl Out {
    fn send(&mut self, mut ev: Discovery) {
        // A bounded, unread channel must not keep Drop of the Watcher waiting forever.
        loop {
            if self.closed || self.stop.load(Ordering::Relaxed) {
                return;
            }
            match self.events.send_timeout(ev, Duration::from_millis(50)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(back)) => ev = back,
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.closed || self.stop.load(Ordering::Relaxed)
    }
}

struct Loop {
    scope: NamespaceScope,
    out: Out,
    epoll: OwnedFd,
    inotify: Inotify,
    dir_watches: HashSet<WatchDescriptor>,
    /// Held for its `EPOLLPRI` on mount table changes; never read.
    _mountinfo: File,
    /// fork/exec events (scope `All` only; `None` if the kernel refused): a process in a new
    /// namespace is looked at at once.
    procs: Option<ProcEvents>,
    /// Scope `Cgroup`: its path relative to the cgroup2 root (`/a/b`).
    cgroup_rel: Option<String>,
    /// `/proc`, to stat `PID/ns/net` of those processes.
    proc_dir: Option<File>,
    wake: Arc<OwnedFd>,
    tracked: HashMap<u32, Tracked>,
    /// Sequence numbers of the `RTM_GETNSID` requests.
    peers: Peers,
    host: Found,
    /// The last `/proc` (scope `All`) or cgroup (scope `Cgroup`) scan, reused by the quick
    /// rescans that events trigger between two periodic ones.
    last_scan: Vec<Found>,
    /// The processes through which `last_scan` found its namespaces (`/proc/PID/ns/net`):
    /// when one exits, its namespace may be gone.
    found_through: HashSet<u32>,
    /// The bind mounts listed last and when; `None` after a mount-table or folder event.
    binds: Option<(Vec<Found>, Instant)>,
    /// When to poll the proc connector again (it is unpolled after a wake-up until then).
    procs_rearm: Option<Instant>,
    /// Events were lost, or such a process exited: rescan everything now.
    full_due: bool,
    buf: Vec<u8>,
}

impl Loop {
    fn run(&mut self) {
        self.refresh_dir_watches();
        self.rescan(true);
        let every = if self.procs.is_some() {
            RESCAN_BACKSTOP
        } else {
            RESCAN_INTERVAL
        };
        let mut next_full = Instant::now() + every;
        // A file appeared in a bind-mount folder before its mount (`ip netns add` creates the
        // file, then mounts on it): look again every BIND_RETRY until it is a namespace or
        // BIND_RETRY_FOR has passed, in case the mount's EPOLLPRI is missed (a mount made in
        // another mount namespace and propagated here).
        let mut retry_until: Option<Instant> = None;
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.out.done() {
            // Rounded up: a 0 ms timeout just before the deadline would spin.
            let mut wake_at = match retry_until {
                Some(_) => next_full.min(Instant::now() + BIND_RETRY),
                None => next_full,
            };
            if let Some(at) = self.procs_rearm {
                wake_at = wake_at.min(at);
            }
            let timeout = (wake_at.saturating_duration_since(Instant::now())
                + Duration::from_micros(999))
            .as_millis()
            .min(i32::MAX as u128) as i32;
            // SAFETY: `ready` is a valid, writable array of its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    ready.as_mut_ptr(),
                    ready.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "netns watcher: epoll_wait failed, stopping");
                return;
            }
            let mut quick = false;
            for ev in &ready[..n as usize] {
                match ev.u64 {
                    TOKEN_WAKE => drain_eventfd(&self.wake),
                    TOKEN_INOTIFY => {
                        self.binds = None;
                        self.drain_inotify();
                        self.refresh_dir_watches();
                        quick = true;
                        retry_until = Some(Instant::now() + BIND_RETRY_FOR);
                    }
                    TOKEN_MOUNTS => {
                        self.binds = None;
                        quick = true;
                    }
                    TOKEN_PROCS => {
                        quick |= self.new_process_namespaces();
                        self.procs_rearm = Some(Instant::now() + PROC_COALESCE);
                    }
                    token => self.read_links(token as u32),
                }
            }
            if self.out.done() {
                break;
            }
            if self.procs_rearm.is_some_and(|at| Instant::now() >= at) {
                self.procs_rearm = None;
                if let Some(p) = &self.procs {
                    if let Err(e) =
                        epoll_rearm(&self.epoll, p.as_raw_fd(), PROCS_EVENTS, TOKEN_PROCS)
                    {
                        tracing::warn!(error = %e, "netns watcher: proc connector not polled again; periodic scans only");
                        self.procs = None;
                    }
                }
            }
            if retry_until.is_some() {
                self.binds = None; // a file there is waiting for its mount
            }
            if Instant::now() >= next_full || std::mem::take(&mut self.full_due) {
                self.rescan(true);
                next_full = Instant::now() + every;
            } else if quick || retry_until.is_some() {
                self.rescan(false);
            }
            if let Some(until) = retry_until {
                if Instant::now() >= until || unmounted_bind_files() == 0 {
                    retry_until = None;
                }
            }
        }
        // Dropping `self` closes every socket and fd held in a namespace.
    }

    /// Looks at the namespace of each process that just forked or exec'd; true if one is not
    /// known yet (it is added to the last scan, for a quick rescan to pick it up).
    fn new_process_namespaces(&mut self) -> bool {
        let (Some(procs), Some(dir)) = (&self.procs, &self.proc_dir) else {
            return false;
        };
        let mut pids = Pids::default();
        if procs.drain(&mut self.buf, &mut pids).is_err() {
            self.full_due = true; // events were lost
        }
        if pids.exited.iter().any(|p| self.found_through.contains(p)) {
            self.full_due = true; // maybe the last process of its namespace
        }
        // Most new processes are in a namespace already tracked: build this only when one
        // is not (the proc connector wakes this thread for every fork, exec and exit).
        let mut known: Option<HashSet<u32>> = None;
        // Namespaces first seen in this batch, and how many of their processes were kept.
        let mut fresh: Vec<(u32, usize)> = Vec::new();
        let mut new = false;
        let mut rel = String::new();
        for pid in pids.new {
            rel.clear();
            let _ = write!(rel, "{pid}/ns/net\0");
            if let Some(cg) = &self.cgroup_rel {
                if !in_cgroup(pid, cg) {
                    continue;
                }
            }
            let Some(ino) = stat_at(dir, rel.as_bytes()) else {
                continue;
            };
            let Ok(inode) = u32::try_from(ino) else {
                continue;
            };
            if let Some(t) = self.tracked.get_mut(&inode) {
                // Found before any process of a container was in it (CNI, `ip netns add`, a
                // runtime's setup process): the first one of a container tells whose it is
                // (a pod's pause container).
                // Not the host's: a container's runtime starts its first process there.
                if !names_workload(t.ns.cgroup.as_deref()) && inode != self.host.inode {
                    if let Some(cg) = workload_cgroup(inode, Some(pid), &[]) {
                        t.ns.cgroup = Some(cg);
                        t.ns.cgroup_late = true;
                        self.out.send(Discovery::NamespaceAdded(t.ns.clone()));
                    }
                }
                continue;
            }
            let known =
                known.get_or_insert_with(|| self.last_scan.iter().map(|f| f.inode).collect());
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if known.insert(inode) {
                self.last_scan.push(Found {
                    inode,
                    name: None,
                    path,
                });
                self.found_through.insert(pid);
                new = true;
                fresh.push((inode, 1));
            } else if let Some((_, n)) = fresh.iter_mut().find(|(i, _)| *i == inode) {
                // More processes of a namespace first seen in this batch: the first may be a
                // runtime's setup process, gone before its cgroup is read; a later one (the
                // container's) names it at discovery (`owner_cgroup`).
                if *n < PIDS_PER_NEW_NAMESPACE {
                    *n += 1;
                    self.last_scan.push(Found {
                        inode,
                        name: None,
                        path,
                    });
                }
            }
        }
        new
    }

    /// Finds what is in scope now and reports the difference. `full` rescans `/proc` (or the
    /// cgroup); otherwise the last such scan is reused with fresh bind mounts.
    fn rescan(&mut self, full: bool) {
        let binds = self.bind_mounts();
        let wanted: Vec<Found> = match &self.scope {
            NamespaceScope::All => {
                if full {
                    match proc_namespaces() {
                        Ok(found) => self.last_scan = found,
                        Err(e) => tracing::warn!(error = %e, "netns watcher: /proc scan failed"),
                    }
                }
                merge(self.host.clone(), binds, self.last_scan.clone())
            }
            NamespaceScope::Listed(list) => resolve_listed(list, &self.host, &binds),
            NamespaceScope::Cgroup(dir) => {
                if full {
                    self.last_scan = pid_namespaces(cgroup_pids(dir));
                }
                let names = names_by_inode(&binds);
                // One per inode (process events may have added more of a new one).
                let mut seen = HashSet::new();
                let mut found = self.last_scan.clone();
                found.retain(|f| seen.insert(f.inode));
                for f in &mut found {
                    if let Some(n) = names.get(&f.inode) {
                        f.name = Some(n.clone());
                    }
                }
                found
            }
        };
        if full {
            self.found_through = self
                .last_scan
                .iter()
                .filter_map(|f| {
                    let pid = f.path.strip_prefix("/proc").ok()?.iter().next()?;
                    pid.to_str()?.parse().ok()
                })
                .collect();
        }
        let inodes: HashSet<u32> = wanted.iter().map(|f| f.inode).collect();
        let gone: Vec<u32> = self
            .tracked
            .keys()
            .filter(|i| !inodes.contains(i))
            .copied()
            .collect();
        for inode in gone {
            self.remove(inode);
        }
        for f in wanted {
            match self.tracked.get_mut(&f.inode) {
                None => self.add(f),
                Some(t) => {
                    let mut update = false;
                    // Found before any process of a container was in it: one the last full
                    // scan saw (quick rescans reuse that scan: nothing new to look at).
                    if full && !names_workload(t.ns.cgroup.as_deref()) && f.inode != self.host.inode
                    {
                        if let Some(cg) = workload_cgroup(f.inode, None, &self.last_scan) {
                            t.ns.cgroup = Some(cg);
                            t.ns.cgroup_late = true;
                            update = true;
                        }
                    }
                    if f.name.is_some() && f.name != t.ns.name {
                        t.ns.name = f.name;
                        // Found first through a process (`ip netns add` is one, for a moment,
                        // before it mounts): its bind mount outlives the process, so receivers
                        // that could not open `/proc/PID/ns/net` in time open it from there.
                        if BIND_DIRS.iter().any(|d| f.path.starts_with(d)) {
                            t.ns.path = f.path;
                        }
                        update = true;
                    }
                    if update {
                        let ns = t.ns.clone();
                        self.out.send(Discovery::NamespaceAdded(ns));
                    }
                }
            }
            if self.out.done() {
                return;
            }
        }
    }

    /// The namespaces bind-mounted now: listed again after a mount-table or folder event (or
    /// while a file there is not mounted yet), else the last list.
    fn bind_mounts(&mut self) -> Vec<Found> {
        if let Some((binds, at)) = &self.binds {
            if at.elapsed() < BINDS_TRUSTED_FOR {
                return binds.clone();
            }
        }
        let binds = bind_mounts();
        self.binds = Some((binds.clone(), Instant::now()));
        binds
    }

    /// Opens a namespace, subscribes to its links from inside and reports it with its devices.
    fn add(&mut self, f: Found) {
        let handle = match NetnsHandle::open_path(&f.path, Some(f.inode)) {
            Ok(h) => h,
            Err(e) => {
                // Gone between the scan and now (a process exited): the next scan settles it.
                tracing::debug!(error = %e, "netns watcher: namespace not opened");
                return;
            }
        };
        // Subscribe before dumping, so that no change between the two is missed.
        let inside = run_in(&handle, || -> io::Result<_> {
            let links = link_subscription()?;
            let cookie = socket_cookie(links.as_raw_fd())?;
            let devices = list_devices()?;
            let query = request_socket()?;
            // After the subscription: an address added meanwhile is in one or the other.
            let addrs = list_addresses()?;
            Ok((links, cookie, devices, query, addrs))
        });
        let (links, cookie, devices, query, addrs) = match inside.and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "netns watcher: cannot watch namespace");
                return;
            }
        };
        if let Err(e) = epoll_add(
            &self.epoll,
            links.as_raw_fd(),
            libc::EPOLLIN as u32,
            u64::from(f.inode),
        ) {
            tracing::warn!(error = %e, "netns watcher: cannot poll netlink socket");
            return;
        }
        let cgroup = owner_cgroup(&f, &self.last_scan);
        // Shared with the receivers: the process it was found through may exit first.
        let fd = match handle.fd.try_clone() {
            Ok(fd) => Some(NetnsFd::new(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "netns watcher: dup of a namespace fd");
                None
            }
        };
        let ns = Namespace {
            fd,
            id: NetnsId {
                inode: f.inode,
                cookie,
            },
            name: f.name,
            path: f.path,
            cgroup,
            cgroup_late: false,
        };
        tracing::debug!(
            ?ns,
            devices = devices.len(),
            "netns watcher: namespace added"
        );
        self.out.send(Discovery::NamespaceAdded(ns.clone()));
        let mut map = BTreeMap::new();
        for device in devices {
            map.insert(device.ifindex, device.clone());
            self.out.send(Discovery::DeviceAdded {
                netns: ns.id,
                device,
            });
        }
        let addrs: std::collections::BTreeSet<DeviceAddress> = addrs.into_iter().collect();
        self.out.send(Discovery::Addresses {
            netns: ns.id,
            addresses: addresses(&addrs),
        });
        self.tracked.insert(
            ns.id.inode,
            Tracked {
                ns,
                handle,
                links,
                devices: map,
                addrs,
                query,
                nsids: HashMap::new(),
                nsids_complete: false,
            },
        );
        // The new namespace may be where unresolved peers are.
        for t in self.tracked.values_mut() {
            t.nsids_complete = false;
        }
        self.resolve_peers();
    }

    /// Resolves veth peers across namespaces and decides which namespace each serves; reports
    /// the devices whose peer or role changed.
    fn resolve_peers(&mut self) {
        let changed = self.peers.resolve(&mut self.tracked, self.host.inode);
        for (inode, ifindex) in changed {
            let Some(t) = self.tracked.get(&inode) else {
                continue;
            };
            if let Some(device) = t.devices.get(&ifindex) {
                let device = device.clone();
                let netns = t.ns.id;
                self.out.send(Discovery::DeviceAdded { netns, device });
            }
        }
    }

    fn remove(&mut self, inode: u32) {
        let Some(t) = self.tracked.remove(&inode) else {
            return;
        };
        epoll_del(&self.epoll, t.links.as_raw_fd());
        tracing::debug!(ns = ?t.ns, "netns watcher: namespace removed");
        let id = t.ns.id;
        // Close the socket and the nsfs fd before reporting, so the namespace can die.
        drop(t);
        for other in self.tracked.values_mut() {
            other.nsids.retain(|_, n| *n != id);
        }
        self.out.send(Discovery::NamespaceRemoved(id));
    }

    /// Drains a namespace's link socket and reports what changed.
    fn read_links(&mut self, inode: u32) {
        let Some(t) = self.tracked.get_mut(&inode) else {
            return;
        };
        let mut updates = Vec::new();
        let mut resync = false;
        loop {
            match t.links.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    let n = n.min(self.buf.len());
                    if let Err(e) = parse_links(&self.buf[..n], |u| updates.push(u)) {
                        tracing::debug!(error = %e, "netns watcher: netlink error message");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The socket overflowed: changes were lost, so list the devices again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => resync = true,
                Err(e) => {
                    tracing::warn!(error = %e, "netns watcher: netlink recv failed");
                    break;
                }
            }
        }
        let netns = t.ns.id;
        let addrs_before = t.addrs.clone();
        let mut links_changed = false;
        for u in updates {
            match u {
                LinkUpdate::New(mut device, has_kind) => {
                    if let Some(known) = t.devices.get(&device.ifindex) {
                        if !has_kind {
                            device.kind = known.kind.clone();
                        }
                        // Resolved here, not by the kernel: kept while the link is the same.
                        if known.link == device.link && known.link_netnsid == device.link_netnsid {
                            device.peer = known.peer;
                            device.serves_peer = known.serves_peer;
                            device.leaf_peer = known.leaf_peer;
                        }
                    }
                    if t.devices.get(&device.ifindex) != Some(&device) {
                        t.devices.insert(device.ifindex, device.clone());
                        links_changed = true;
                        self.out.send(Discovery::DeviceAdded { netns, device });
                    }
                }
                LinkUpdate::Del(ifindex) => {
                    t.addrs.retain(|a| a.ifindex != ifindex);
                    if t.devices.remove(&ifindex).is_some() {
                        links_changed = true;
                        self.out.send(Discovery::DeviceRemoved { netns, ifindex });
                    }
                }
                LinkUpdate::AddrNew(a) => t.addrs.extend(a),
                LinkUpdate::AddrDel(a) => {
                    for a in a {
                        t.addrs.remove(&a);
                    }
                }
            }
        }
        if resync {
            match run_in(&t.handle, list_devices).and_then(|r| r) {
                Ok(now) => {
                    let now: BTreeMap<u32, Device> =
                        now.into_iter().map(|d| (d.ifindex, d)).collect();
                    let old = std::mem::replace(&mut t.devices, now);
                    for ifindex in old.keys().filter(|i| !t.devices.contains_key(i)) {
                        let ifindex = *ifindex;
                        self.out.send(Discovery::DeviceRemoved { netns, ifindex });
                    }
                    for (ifindex, device) in &t.devices {
                        if old.get(ifindex) != Some(device) {
                            let device = device.clone();
                            self.out.send(Discovery::DeviceAdded { netns, device });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "netns watcher: device resync failed"),
            }
            match run_in(&t.handle, list_addresses).and_then(|r| r) {
                Ok(now) => t.addrs = now.into_iter().collect(),
                Err(e) => tracing::warn!(error = %e, "netns watcher: address resync failed"),
            }
            links_changed = true;
        }
        if links_changed {
            // A link made here may have made this namespace number another one.
            t.nsids_complete = false;
        }
        if t.addrs != addrs_before {
            let addresses = addresses(&t.addrs);
            self.out.send(Discovery::Addresses { netns, addresses });
        }
        if links_changed {
            self.resolve_peers();
        }
    }

    fn drain_inotify(&mut self) {
        let mut buf = [0u8; 4096];
        // Non-blocking: loops until EAGAIN. What changed does not matter: any change rescans.
        while let Ok(events) = self.inotify.read_events(&mut buf) {
            if events.count() == 0 {
                break;
            }
        }
    }

    /// Watches each bind-mount folder, or its nearest existing ancestor until it exists.
    fn refresh_dir_watches(&mut self) {
        let mut now = HashSet::new();
        for dir in BIND_DIRS {
            let (path, mask) = watch_target(Path::new(dir));
            match self.inotify.watches().add(&path, mask) {
                Ok(wd) => {
                    now.insert(wd);
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "inotify watch failed")
                }
            }
        }
        for old in self.dir_watches.difference(&now) {
            // Fails harmlessly if the folder is gone (the kernel already dropped the watch).
            let _ = self.inotify.watches().remove(old.clone());
        }
        self.dir_watches = now;
    }
}

/// The folder itself if it exists, else its nearest existing ancestor (for its creation).
fn watch_target(dir: &Path) -> (PathBuf, WatchMask) {
    if dir.is_dir() {
        return (
            dir.to_path_buf(),
            WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR,
        );
    }
    let mut up = dir.parent();
    while let Some(p) = up {
        if p.is_dir() {
            break;
        }
        up = p.parent();
    }
    (
        up.unwrap_or(Path::new("/")).to_path_buf(),
        WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
    )
}
