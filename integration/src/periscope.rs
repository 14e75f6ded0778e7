//! The `periscope` binary under test: where it is, building it when needed, running it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::process::output_with_timeout;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ lives inside the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR` (relative to the workspace root when relative), or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The `periscope` binary, built by `cargo build -p periscope` (debug profile) if it is
/// missing or older than any source it is built from. Set `PERISCOPE_BIN` to test another
/// binary as is. Built at most once per test process.
pub fn periscope_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    if let Some(bin) = std::env::var_os("PERISCOPE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PERISCOPE_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let bin = target_dir().join("debug").join("periscope");
    let reason = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
        Err(_) => Some(format!("{} does not exist", bin.display())),
        Ok(built) => newest_source()
            .filter(|(changed, _)| *changed > built)
            .map(|(_, path)| format!("{} changed since it was built", path.display())),
    };
    if let Some(reason) = reason {
        build(&reason);
        assert!(
            bin.is_file(),
            "`cargo build -p periscope` succeeded but {} is missing",
            bin.display()
        );
    }
    bin
}

fn build(reason: &str) {
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    eprintln!("building periscope: {reason}");
    let out = output_with_timeout(
        Command::new(&cargo)
            .args(["build", "-p", "periscope"])
            .current_dir(workspace_root()),
        Duration::from_secs(1200),
    );
    if !out.status.success() {
        panic!(
            "`cargo build -p periscope` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The newest modification time among the files the binary is built from, and that file.
fn newest_source() -> Option<(SystemTime, PathBuf)> {
    let root = workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut consider = |path: &Path| {
        if let Ok(t) = std::fs::metadata(path).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, path.to_path_buf()));
            }
        }
    };
    consider(&root.join("Cargo.toml"));
    consider(&root.join("Cargo.lock"));
    for krate in [
        "pipeline",
        "agent",
        "receivers",
        "processors",
        "exporters",
    ] {
        let dir = root.join(krate);
        consider(&dir.join("Cargo.toml"));
        consider(&dir.join("build.rs"));
        walk(&dir.join("src"), &mut consider);
    }
    walk(&root.join("ebpf"), &mut consider);
    newest
}

fn walk(dir: &Path, consider: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, consider),
            Ok(t) if t.is_file() => consider(&path),
            _ => {}
        }
    }
}

/// A `Command` for the periscope binary, with colours off so that messages can be matched.
pub fn periscope_command() -> Command {
    let mut cmd = Command::new(periscope_bin());
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `periscope ARGS...` to completion; kills it and panics (with what it printed) if it
/// has not exited after `timeout`.
pub fn run_periscope<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Output {
    output_with_timeout(periscope_command().args(args), timeout)
}

/// Runs `periscope SUBCOMMAND -c CONFIG` (`run` or `validate`) with [`run_periscope`].
pub fn run_periscope_config(subcommand: &str, config: &Path, timeout: Duration) -> Output {
    output_with_timeout(
        periscope_command().arg(subcommand).arg("-c").arg(config),
        timeout,
    )
}

/// Formats a finished periscope run for assertion messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
