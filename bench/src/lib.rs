//! What the benchmark commands share: `ip`, entering a namespace, a thread's CPU time.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A joined thread's result, its panic turned into an error naming `what` panicked. Takes
/// `handle.join()` of a plain or a scoped thread alike.
pub fn joined<T>(result: std::thread::Result<T>, what: &str) -> Result<T> {
    result.map_err(|_| anyhow::anyhow!("{what} panicked"))
}

/// An error unless this process runs as root; `needs` says what for.
pub fn require_root(needs: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root ({needs})");
    }
    Ok(())
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)`, best effort (a benchmark runs without it).
pub fn set_socket_option<T>(fd: &impl AsRawFd, opt: libc::c_int, value: &T) {
    // SAFETY: a valid socket, and a value of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        );
    }
}

/// Runs `ip ARGS...`; an error with what it printed when it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/NAME`).
pub fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: a valid nsfs fd; only the calling thread changes namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// CPU time the calling thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
