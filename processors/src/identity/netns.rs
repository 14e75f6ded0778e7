//! Network namespaces: inode → name, from the bind mounts in `/run/netns` (`ip netns`) and
//! `/var/run/docker/netns` (Docker), else from the container whose processes live in it
//! (a scan of `/proc/*/ns/net`). Rebuilt when an unknown inode appears, at most once per
//! `min_interval`; bounded.
//!
//! Inodes are reused as soon as a namespace is freed, so what a scan finds under an inode may
//! be a later namespace than the one asked about: the scan reads each namespace's cookie from
//! its nsfs file (`NS_GET_ID`, the cookie on kernels that have it) and a lookup with a cookie
//! accepts only the namespace with that cookie. Where the kernel cannot tell (no `NS_GET_ID`,
//! or not an nsfs file) the inode alone decides, as before.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use periscope_pipeline::model::NetnsId;

use super::cache::Lookup;
use super::cgroup::{parse_proc_cgroup, Workload};
use super::process::read_limited;

/// What is known of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsInfo {
    /// The bind mount's file name (`ip netns` name), if one names it.
    pub name: Option<String>,
    /// The container (and pod) of the processes in it, if they are in one.
    pub workload: Workload,
    /// Its cookie, read from the nsfs file it was found by; 0 when the kernel cannot tell.
    pub cookie: u64,
}

/// Processes whose cgroup is read per namespace while looking for its container.
const CGROUP_READS_PER_NETNS: usize = 4;

/// inode → namespace info.
#[derive(Debug)]
pub struct NetnsNames {
    dirs: Vec<PathBuf>,
    proc_root: PathBuf,
    containers: bool,
    capacity: usize,
    min_interval: Duration,
    map: FxHashMap<u32, Arc<NetnsInfo>>,
    last_scan: Option<Instant>,
    /// Scans done (for tests).
    pub scans: u64,
}

impl NetnsNames {
    pub fn new(
        dirs: Vec<PathBuf>,
        proc_root: PathBuf,
        containers: bool,
        capacity: usize,
        min_interval: Duration,
    ) -> Self {
        NetnsNames {
            dirs,
            proc_root,
            containers,
            capacity: capacity.max(1),
            min_interval,
            map: FxHashMap::default(),
            last_scan: None,
            scans: 0,
        }
    }

    /// What is known of namespace `netns`; scans again when it is unknown (or its inode is
    /// known as another namespace's) and the last scan is `min_interval` old.
    /// `KnownMissing` when it is unknown and a scan is not due yet.
    pub fn lookup(&mut self, netns: NetnsId, now: Instant) -> Lookup<Arc<NetnsInfo>> {
        if let Some(i) = self.get(netns) {
            return Lookup::Found(i);
        }
        if netns.inode == 0
            || self
                .last_scan
                .is_some_and(|t| now.saturating_duration_since(t) < self.min_interval)
        {
            return Lookup::KnownMissing;
        }
        self.scan(now);
        match self.get(netns) {
            Some(i) => Lookup::Found(i),
            None => Lookup::Failed,
        }
    }

    /// The namespace with `netns`'s inode, unless both cookies are known and differ (a reused
    /// inode: another namespace).
    fn get(&self, netns: NetnsId) -> Option<Arc<NetnsInfo>> {
        self.map
            .get(&netns.inode)
            .filter(|i| i.cookie == 0 || netns.cookie == 0 || i.cookie == netns.cookie)
            .cloned()
    }

    fn scan(&mut self, now: Instant) {
        self.last_scan = Some(now);
        self.scans += 1;
        let mut map: FxHashMap<u32, NetnsInfo> = FxHashMap::default();
        for dir in &self.dirs {
            for (inode, name) in named_namespaces(dir) {
                if map.len() >= self.capacity {
                    break;
                }
                let info = map.entry(inode).or_default();
                if info.name.is_none() {
                    info.name = Some(name.clone());
                    info.cookie = netns_cookie_of(&dir.join(&name)).unwrap_or(0);
                }
            }
        }
        if self.containers {
            self.scan_processes(&mut map);
        }
        self.map = map.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    }

    /// Maps each namespace to the container of its processes (not the agent's own namespace:
    /// host-network containers share it).
    fn scan_processes(&self, map: &mut FxHashMap<u32, NetnsInfo>) {
        let own = netns_inode_of(&self.proc_root.join("self/ns/net"));
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let mut tries: FxHashMap<u32, usize> = FxHashMap::default();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let dir = self.proc_root.join(pid.to_string());
            let Some(inode) = netns_inode_of(&dir.join("ns/net")) else {
                continue;
            };
            if Some(inode) == own {
                continue;
            }
            if map.get(&inode).is_some_and(|i| !i.workload.is_empty()) {
                continue;
            }
            let n = tries.entry(inode).or_default();
            if *n >= CGROUP_READS_PER_NETNS {
                continue;
            }
            *n += 1;
            if !map.contains_key(&inode) && map.len() >= self.capacity {
                continue;
            }
            let Some(text) = read_limited(&dir.join("cgroup")) else {
                continue;
            };
            let (_, workload) = parse_proc_cgroup(&text);
            if workload.container.is_some() {
                let info = map.entry(inode).or_default();
                if info.cookie == 0 {
                    info.cookie = netns_cookie_of(&dir.join("ns/net")).unwrap_or(0);
                }
                info.workload = workload;
            }
        }
    }
}

/// The inode of the namespace a `/proc/PID/ns/net` link points to (`net:[4026531840]`).
fn netns_inode_of(link: &Path) -> Option<u32> {
    let target = std::fs::read_link(link).ok()?;
    let t = target.to_str()?;
    t.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// `NS_GET_ID` (`_IOR(0xb7, 13, __u64)`): a namespace's id, for a network namespace its
/// cookie (`SO_NETNS_COOKIE`).
const NS_GET_ID: libc::c_ulong = 0x8008_b70d;

/// The cookie of the namespace whose nsfs file (`/proc/PID/ns/net`, a bind mount) is at
/// `path`; `None` when it is not one or the kernel has no `NS_GET_ID`.
pub fn netns_cookie_of(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).ok()?;
    let mut id: u64 = 0;
    // SAFETY: NS_GET_ID writes one u64 through the pointer, which points at `id`; the fd is
    // open for the call's duration.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_ID as _, &mut id as *mut u64) };
    (r == 0 && id != 0).then_some(id)
}

/// (inode, file name) of every namespace bind-mounted in `dir`. A file that is not a mounted
/// namespace has the inode of an ordinary file: harmless, it matches no namespace.
pub fn named_namespaces(dir: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let m = std::fs::metadata(e.path()).ok()?;
            let inode = u32::try_from(m.ino()).ok()?;
            Some((inode, e.file_name().to_string_lossy().into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "periscope-identity-netns-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn id(inode: u32) -> NetnsId {
        NetnsId { inode, cookie: 0 }
    }

    fn ns(inode: u32) -> NetnsId {
        id(inode)
    }

    fn ino(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").ino() as u32
    }

    #[test]
    fn names_from_bind_mount_dirs_rescanned_for_unknown_inodes() {
        let run = temp_dir("run");
        let docker = temp_dir("docker");
        std::fs::write(run.join("pod-a"), "").expect("write");
        std::fs::write(docker.join("1a2b3c4d5e6f"), "").expect("write");
        let mut names = NetnsNames::new(
            vec![run.clone(), docker.clone(), run.join("missing")],
            run.join("no-proc"),
            true,
            16,
            Duration::from_millis(50),
        );
        let t0 = Instant::now();
        let a = names
            .lookup(id(ino(&run.join("pod-a"))), t0)
            .found()
            .expect("pod-a");
        assert_eq!(a.name.as_deref(), Some("pod-a"));
        let d = names
            .lookup(id(ino(&docker.join("1a2b3c4d5e6f"))), t0)
            .found()
            .expect("docker's");
        assert_eq!(d.name.as_deref(), Some("1a2b3c4d5e6f"));
        assert_eq!(names.scans, 1);
        // A namespace added later: found by the next scan, not before `min_interval`.
        std::fs::write(run.join("pod-b"), "").expect("write");
        let b = ino(&run.join("pod-b"));
        assert!(matches!(
            names.lookup(id(b), t0 + Duration::from_millis(10)),
            Lookup::KnownMissing
        ));
        assert_eq!(
            names
                .lookup(id(b), t0 + Duration::from_millis(60))
                .found()
                .and_then(|i| i.name.clone())
                .as_deref(),
            Some("pod-b")
        );
        assert_eq!(names.scans, 2);
        assert!(names
            .lookup(id(0), t0 + Duration::from_secs(9))
            .found()
            .is_none());
        // Bounded.
        for i in 0..40 {
            std::fs::write(run.join(format!("ns{i}")), "").expect("write");
        }
        names.lookup(id(u32::MAX), t0 + Duration::from_secs(10));
        assert!(names.map.len() <= 16);
        std::fs::remove_dir_all(&run).expect("cleanup");
        std::fs::remove_dir_all(&docker).expect("cleanup");
    }

    #[test]
    fn namespaces_of_container_processes_are_named_by_their_container() {
        let proc_root = temp_dir("proc");
        let id = "cd".repeat(32);
        // pid 7 is in a container in namespace 4026532999; pid 8 is in no container.
        for (pid, ns, cgroup) in [
            (
                7u32,
                4026532999u32,
                format!("0::/system.slice/docker-{id}.scope\n"),
            ),
            (8, 4026532998, "0::/user.slice\n".to_string()),
            (9, 0, "garbage".to_string()),
        ] {
            let dir = proc_root.join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).expect("mkdir");
            std::os::unix::fs::symlink(format!("net:[{ns}]"), dir.join("ns/net")).expect("link");
            std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
        }
        std::os::unix::fs::symlink("garbage", proc_root.join("self")).expect("self");
        let mut names = NetnsNames::new(Vec::new(), proc_root.clone(), true, 16, Duration::ZERO);
        let now = Instant::now();
        let info = names
            .lookup(ns(4026532999), now)
            .found()
            .expect("container's namespace");
        assert_eq!(info.workload.container, Some((id, Some("docker"))));
        assert_eq!(info.name, None);
        assert!(matches!(names.lookup(ns(4026532998), now), Lookup::Failed));
        std::fs::remove_dir_all(&proc_root).expect("cleanup");
    }

    #[test]
    fn the_real_run_netns_does_not_panic() {
        let mut names = NetnsNames::new(
            vec![
                PathBuf::from("/run/netns"),
                PathBuf::from("/var/run/docker/netns"),
            ],
            PathBuf::from("/proc"),
            true,
            4096,
            Duration::ZERO,
        );
        names.lookup(id(1), Instant::now());
    }

    #[test]
    fn a_namespace_found_under_a_reused_inode_is_not_the_one_asked_about() {
        let run = temp_dir("cookie");
        std::os::unix::fs::symlink("/proc/self/ns/net", run.join("host")).expect("link");
        let own = ino(&run.join("host"));
        // The cookie of this namespace, as a socket in it tells.
        let cookie = {
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            assert!(fd >= 0);
            let mut c: u64 = 0;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_NETNS_COOKIE,
                    &mut c as *mut u64 as *mut libc::c_void,
                    &mut len,
                )
            };
            unsafe { libc::close(fd) };
            assert_eq!(r, 0, "SO_NETNS_COOKIE");
            c
        };
        let Some(read) = netns_cookie_of(&run.join("host")) else {
            eprintln!("no NS_GET_ID on this kernel: the inode alone decides");
            return;
        };
        assert_eq!(read, cookie, "NS_GET_ID is the netns cookie");
        let mut names = NetnsNames::new(
            vec![run.clone()],
            run.join("no-proc"),
            false,
            16,
            Duration::ZERO,
        );
        let now = Instant::now();
        let this = NetnsId { inode: own, cookie };
        assert_eq!(
            names
                .lookup(this, now)
                .found()
                .and_then(|i| i.name.clone())
                .as_deref(),
            Some("host")
        );
        let earlier = NetnsId {
            inode: own,
            cookie: cookie + 1000,
        };
        assert!(
            matches!(names.lookup(earlier, now), Lookup::Failed),
            "a gone namespace whose inode was reused gets no name"
        );
        std::fs::remove_dir_all(&run).expect("cleanup");
    }
}
