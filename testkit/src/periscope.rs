//! The `periscope` binary under test: where it is, and running it.
//!
//! Tests of the binary live in its own package (`agent/tests`), so cargo builds the binary
//! before it runs them and puts it beside their executables' folder: `target/<profile>/`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::output_with_timeout;

/// The `periscope` binary: `PERISCOPE_BIN` when set (to test another binary as is), else the
/// one cargo built for this test run (`target/<profile>/periscope`, beside `deps/` where the
/// test executable runs).
pub fn periscope_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate).clone()
}

fn locate() -> PathBuf {
    if let Some(bin) = std::env::var_os("PERISCOPE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PERISCOPE_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let test = std::env::current_exe().expect("the test executable's path");
    let bin = test
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("periscope"))
        .unwrap_or_else(|| panic!("{} has no profile folder", test.display()));
    assert!(
        bin.is_file(),
        "{} is missing: run the binary's tests with `cargo test -p periscope` (which builds \
         it), or set PERISCOPE_BIN",
        bin.display()
    );
    bin
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

/// Starts `periscope run -c CONFIG` in the background; `what` names it in messages.
pub fn start_agent(config: &Path, what: &str) -> crate::process::Background {
    crate::process::Background::spawn(periscope_command().arg("run").arg("-c").arg(config), what)
}

/// Stops an agent started with [`start_agent`] as an operator would (SIGTERM) and waits up to
/// `timeout`; panics with what it logged unless it exited 0. Returns what it printed.
pub fn stop_agent(agent: crate::process::Background, timeout: Duration) -> Output {
    agent.signal(libc::SIGTERM);
    let out = agent.wait(timeout);
    assert!(
        out.status.success(),
        "the agent failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
