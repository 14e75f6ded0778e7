//! cgroup v2 directories for tests, and processes started inside one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::netns::Netns;

/// cgroup directories a test makes, in order (parents first); on drop their processes are
/// killed and the directories removed, deepest first (also when the test panics).
#[derive(Debug, Default)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// None yet.
    pub fn new() -> Cgroups {
        Cgroups::default()
    }

    /// Creates the cgroup `path` (its parent must exist) and remembers it; returns `path`.
    pub fn mkdir(&mut self, path: PathBuf) -> PathBuf {
        // A leftover of an earlier run.
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.dirs.push(path.clone());
        path
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            for _ in 0..100 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                eprintln!("warning: could not remove cgroup {}", dir.display());
            }
        }
    }
}

/// One cgroup of the test, `periscope-test-<pid>-<n>` under `root` (the cgroup v2 mount).
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    _dirs: Cgroups,
}

impl TestCgroup {
    /// Creates a fresh one.
    pub fn new(root: &Path) -> TestCgroup {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut dirs = Cgroups::new();
        let path = dirs.mkdir(root.join(format!(
            "periscope-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )));
        TestCgroup { path, _dirs: dirs }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its cgroup id (the directory's inode).
    pub fn id(&self) -> u64 {
        inode(&self.path)
    }

    /// `program ARGS...` started in this cgroup and inside `ns` (see [`command_in`]).
    pub fn command(&self, ns: &Netns, program: &str) -> Command {
        command_in(&self.path, ns, program)
    }
}

/// The inode of `path` (a cgroup's id).
pub fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// A command that moves itself into `cgroup` and then execs `ip netns exec NS program`, with
/// the arguments the caller adds: the program's pid is the command's, and every process it
/// starts is in the cgroup.
pub fn command_in(cgroup: &Path, ns: &Netns, program: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec ip netns exec "$ns" "$@""#)
        .arg(cgroup)
        .arg(ns.name())
        .arg(program);
    cmd
}

/// 64 hex digits (a container id), different for every run and every `salt`.
pub fn container_id(salt: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed =
        nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..4)
        .map(|i| format!("{:016x}", seed.rotate_left(i * 16) ^ (i as u64 + salt)))
        .collect()
}

/// A pod uid (8-4-4-4-12) made of the first 32 digits of `hex` (e.g. a [`container_id`]).
pub fn pod_uid(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
