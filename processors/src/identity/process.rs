//! Processes: pid → executable name and path, owner, command line and cgroup, read from procfs
//! with the `procfs` crate. Cached (bounded, with a time to live); a sweep drops entries whose
//! `/proc` entry is gone or whose start time changed (the pid was reused).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procfs::process::Process;
use rustc_hash::FxHashMap;

use super::cache::{Cache, Lookup};
use super::cgroup::{parse_proc_cgroup, Workload};

/// What procfs says about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22): with the pid, it
    /// identifies the process.
    pub start_time: u64,
    /// The target of `/proc/PID/exe`.
    pub exe_path: Option<String>,
    /// Its base name.
    pub exe_name: Option<String>,
    /// The user name of the owner (from the passwd file), else the uid as a number.
    pub owner: Option<String>,
    /// The arguments joined by spaces (read only when asked for), at most
    /// [`MAX_COMMAND_LINE`] bytes.
    pub command_line: Option<String>,
    /// The cgroup v2 path (`0::` line of `/proc/PID/cgroup`).
    pub cgroup_path: Option<String>,
    /// The container and pod its cgroups (v2, else v1) name.
    pub workload: Workload,
}

/// Longest command line kept.
pub const MAX_COMMAND_LINE: usize = 4096;
/// Most uid → user name entries kept.
const MAX_USERS: usize = 4096;

/// A bounded cache of processes.
#[derive(Debug)]
pub struct Processes {
    proc_root: PathBuf,
    passwd: PathBuf,
    command_line: bool,
    /// `None` remembers a failed lookup (until it expires) so that it is retried, and
    /// counted, once per time to live rather than per data point.
    cache: Cache<u32, Option<Arc<ProcessInfo>>>,
    users: FxHashMap<u32, Arc<str>>,
    /// Boot time (ns since the epoch, second precision) and clock ticks per second: when a
    /// process started, to tell a reused pid. `None` when unknown (a fake proc root).
    clock: Option<(u64, u64)>,
}

impl Processes {
    pub fn new(
        proc_root: PathBuf,
        passwd: PathBuf,
        command_line: bool,
        capacity: usize,
        ttl: Duration,
    ) -> Self {
        Processes {
            proc_root,
            passwd,
            command_line,
            cache: Cache::new(capacity, ttl),
            users: FxHashMap::default(),
            clock: procfs::boot_time_secs().ok().map(|b| {
                (
                    b.saturating_mul(1_000_000_000),
                    procfs::ticks_per_second().max(1),
                )
            }),
        }
    }

    /// When `info`'s process started, ns since the epoch (to within a second).
    pub fn started_ns(&self, info: &ProcessInfo) -> Option<u64> {
        let (boot, ticks) = self.clock?;
        let since_boot = u128::from(info.start_time) * 1_000_000_000 / u128::from(ticks);
        Some(boot.saturating_add(u64::try_from(since_boot).unwrap_or(u64::MAX)))
    }

    pub fn lookup(&mut self, pid: u32, now: Instant) -> Lookup<Arc<ProcessInfo>> {
        if pid == 0 {
            return Lookup::KnownMissing;
        }
        if let Some(entry) = self.cache.get(&pid, now) {
            return match entry {
                Some(info) => Lookup::Found(info.clone()),
                None => Lookup::KnownMissing,
            };
        }
        match self.read(pid) {
            Ok(info) => {
                let info = Arc::new(info);
                self.cache.insert(pid, Some(info.clone()), now);
                Lookup::Found(info)
            }
            Err(e) => {
                tracing::debug!(pid, "identity: cannot read process: {e}");
                self.cache.insert(pid, None, now);
                Lookup::Failed
            }
        }
    }

    /// Drops cached processes that exited or whose pid now belongs to another process.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.cache.len();
        let root = self.proc_root.clone();
        self.cache.retain(now, |pid, info| match info {
            Some(info) => start_time(&root, *pid) == Some(info.start_time),
            None => true,
        });
        before - self.cache.len()
    }

    /// Processes cached (found or missing).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn read(&mut self, pid: u32) -> Result<ProcessInfo, procfs::ProcError> {
        let p = Process::new_with_root(self.proc_root.join(pid.to_string()))?;
        let stat = p.stat()?;
        let exe_path = p.exe().ok().map(|e| e.to_string_lossy().into_owned());
        let exe_name = exe_path.as_deref().and_then(|e| {
            Path::new(e)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        });
        let owner = p.uid().ok().map(|uid| self.user_name(uid).to_string());
        let command_line = if self.command_line {
            p.cmdline().ok().map(|args| truncate(args.join(" ")))
        } else {
            None
        };
        let (cgroup_path, workload) = read_limited(&self.proc_root.join(format!("{pid}/cgroup")))
            .map(|text| parse_proc_cgroup(&text))
            .unwrap_or_default();
        let info = ProcessInfo {
            start_time: stat.starttime,
            exe_path,
            exe_name,
            owner,
            command_line,
            cgroup_path,
            workload,
        };
        // The pid may have been reused while we read: keep only a consistent view.
        if start_time(&self.proc_root, pid) != Some(info.start_time) {
            return Err(procfs::ProcError::NotFound(None));
        }
        Ok(info)
    }

    fn user_name(&mut self, uid: u32) -> Arc<str> {
        if let Some(n) = self.users.get(&uid) {
            return n.clone();
        }
        let name: Arc<str> = read_limited(&self.passwd)
            .and_then(|text| user_in_passwd(&text, uid))
            .unwrap_or_else(|| uid.to_string())
            .into();
        if self.users.len() >= MAX_USERS {
            self.users.clear();
        }
        self.users.insert(uid, name.clone());
        name
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_COMMAND_LINE {
        let mut end = MAX_COMMAND_LINE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Reads at most 1 MiB of a text file.
pub(crate) fn read_limited(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let p = Process::new_with_root(proc_root.join(pid.to_string())).ok()?;
    p.stat().ok().map(|s| s.starttime)
}

/// The name of `uid` in a passwd file (`name:x:uid:gid:...`).
pub fn user_in_passwd(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let id: u32 = f.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_proc(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "periscope-identity-proc-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn stat_line(pid: u32, comm: &str, start: u64) -> String {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
        format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 {start} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    fn add_process(root: &Path, pid: u32, exe: &str, start: u64, cgroup: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("stat"), stat_line(pid, "srv", start)).expect("stat");
        std::fs::write(dir.join("cmdline"), "/usr/bin/srv\0--port\x00443\0").expect("cmdline");
        std::fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
        let _ = std::fs::remove_file(dir.join("exe"));
        symlink(exe, dir.join("exe")).expect("exe link");
    }

    #[test]
    fn reads_processes_and_evicts_exited_and_reused_pids() {
        let root = fake_proc("sweep");
        let passwd = root.join("passwd");
        std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\nbroken line\n").expect("passwd");
        let id = "ab".repeat(32);
        add_process(
            &root,
            42,
            "/usr/bin/srv",
            1000,
            &format!("0::/system.slice/docker-{id}.scope\n"),
        );
        let mut procs = Processes::new(root.clone(), passwd, true, 16, Duration::from_secs(60));
        let now = Instant::now();
        let info = procs.lookup(42, now).found().expect("found");
        assert_eq!(info.exe_path.as_deref(), Some("/usr/bin/srv"));
        assert_eq!(info.exe_name.as_deref(), Some("srv"));
        assert_eq!(
            info.command_line.as_deref(),
            Some("/usr/bin/srv --port 443")
        );
        assert_eq!(info.start_time, 1000);
        assert_eq!(info.workload.container, Some((id.clone(), Some("docker"))));
        // The owner is whoever owns the directory; here, the test's user.
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let expected = if uid == 0 {
            "root".to_string()
        } else {
            uid.to_string()
        };
        assert_eq!(info.owner.as_deref(), Some(expected.as_str()));
        assert_eq!(procs.sweep(now), 0, "still running");

        // The pid is reused by another process: the sweep evicts it and a lookup reads anew.
        add_process(&root, 42, "/usr/bin/other", 2000, "0::/\n");
        assert_eq!(procs.sweep(now), 1);
        let info = procs.lookup(42, now).found().expect("found");
        assert_eq!(info.exe_name.as_deref(), Some("other"));
        assert!(info.workload.is_empty());

        // It exits: evicted; a lookup fails once, then is known missing.
        std::fs::remove_dir_all(root.join("42")).expect("rm");
        assert_eq!(procs.sweep(now), 1);
        assert!(matches!(procs.lookup(42, now), Lookup::Failed));
        assert!(matches!(procs.lookup(42, now), Lookup::KnownMissing));
        assert!(matches!(procs.lookup(0, now), Lookup::KnownMissing));
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn garbage_procfs_contents_degrade_without_panicking() {
        let root = fake_proc("garbage");
        for (pid, stat) in [
            (1u32, "".to_string()),
            (2, "garbage".to_string()),
            (3, "3 (x) S".to_string()),
            (4, "\0\0\0\u{fffd}".repeat(1000)),
        ] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("stat"), stat).expect("stat");
            std::fs::write(dir.join("cgroup"), "\0\0garbage:::\n").expect("cgroup");
        }
        // A process with a readable stat but nothing else: found, with no names.
        add_process(&root, 5, "/x", 7, "garbage");
        std::fs::remove_file(root.join("5/exe")).expect("rm exe");
        let mut procs = Processes::new(
            root.clone(),
            root.join("no-passwd"),
            true,
            4,
            Duration::from_secs(60),
        );
        let now = Instant::now();
        for pid in 1..=4 {
            assert!(
                matches!(procs.lookup(pid, now), Lookup::Failed),
                "pid {pid}"
            );
        }
        let info = procs.lookup(5, now).found().expect("found");
        assert_eq!(info.exe_name, None);
        assert!(info.workload.is_empty());
        // The cache stays within its capacity.
        for pid in 100..200 {
            procs.lookup(pid, now);
        }
        assert!(procs.cached() <= 4);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn this_process_is_found_in_the_real_procfs() {
        let mut procs = Processes::new(
            PathBuf::from("/proc"),
            PathBuf::from("/etc/passwd"),
            false,
            4,
            Duration::from_secs(60),
        );
        let info = procs
            .lookup(std::process::id(), Instant::now())
            .found()
            .expect("our own process");
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(info.exe_path.as_deref(), exe.to_str());
        assert!(info.command_line.is_none(), "command lines are opt-in");
    }

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0::/root:/bin/sh\n:x:5:5\nbad\nnobody:x:65534:65534::/:/bin/false\n";
        assert_eq!(user_in_passwd(text, 0).as_deref(), Some("root"));
        assert_eq!(user_in_passwd(text, 65534).as_deref(), Some("nobody"));
        assert_eq!(user_in_passwd(text, 5), None);
        assert_eq!(user_in_passwd(text, 7), None);
        assert_eq!(truncate("é".repeat(3000)).len(), MAX_COMMAND_LINE);
    }
}
