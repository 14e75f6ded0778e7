//! Helpers for periscope's end-to-end tests.
//!
//! - [`periscope`]: find the `periscope` binary (building it when it is missing or older than
//!   the sources) and run it with a hard timeout.
//! - [`process`]: run commands with a timeout; background processes that die with the test.
//! - [`netns`]: network namespaces and veth pairs that remove themselves, even on panic.
//! - [`capture`]: capture with `dumpcap`, count with `tshark` (the ground truth).
//! - [`otlp`]: decode the `file` exporter's OTLP/JSON lines and sum data points by attribute.
//!
//! Everything here panics with context instead of returning errors, so that a failing test
//! says what went wrong and where.

pub mod capture;
pub mod dns;
pub mod netns;
pub mod otlp;
pub mod pcapgen;
pub mod periscope;
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use capture::{Dumpcap, DumpcapStats, Frame, GroundTruth, Totals};
pub use netns::{in_netns, veth_pair, Netns};
pub use periscope::{periscope_bin, run_periscope, run_periscope_config, workspace_root};
pub use process::{output_with_timeout, Background};

/// Whether the `CI` environment variable is set: then nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips a test with a one-line reason (returns `false`), or panics when `CI` is set: in CI
/// every test must run.
pub fn skip(test: &str, reason: &str) -> bool {
    if in_ci() {
        panic!("{test}: cannot run, and CI is set so it may not be skipped: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// `true` when the test runs as root (it needs network namespaces and packet capture);
/// otherwise skips with a reason (`false`), or panics under CI.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        true
    } else {
        skip(
            test,
            &format!("needs root for network namespaces and packet capture (euid {euid})"),
        )
    }
}

/// `true` when every program in `tools` is on `PATH`; otherwise skips with a reason that says
/// which package provides them (`false`), or panics under CI.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| package_of(t)).collect();
    packages.dedup();
    skip(
        test,
        &format!(
            "needs {} (DEBIAN_FRONTEND=noninteractive apt-get install -y {})",
            missing.join(", "),
            packages.join(" ")
        ),
    )
}

fn package_of(tool: &str) -> &str {
    match tool {
        "tshark" => "tshark",
        "dumpcap" | "editcap" | "capinfos" | "mergecap" => "tshark",
        "ip" => "iproute2",
        other => other,
    }
}

/// The full path of `program` if it is on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A directory for one test's files, unique per process and test. Removed when dropped,
/// unless the test is panicking: then it is kept, and its path printed, for inspection.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// `$TMPDIR/periscope-it-<uid>/<test>-<pid>-<n>`, empty.
    pub fn new(test: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let path = std::env::temp_dir()
            .join(format!("periscope-it-{uid}"))
            .join(format!(
                "{test}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
        // A leftover from an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create test directory {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept {} for inspection", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Quotes a path for a YAML config: a double-quoted scalar with `\` and `"` escaped.
pub fn yaml_path(path: &Path) -> String {
    let s = path.to_str().expect("test paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
