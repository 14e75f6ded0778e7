//! What the pods need of a namespace they reach by path (`/run/netns/NAME` or
//! `/proc/PID/ns/net`): `ip` inside it, a thread inside it, its inode and cookie, device
//! counters; and the names of this process's namespaces and devices (`ct` + the pid in base
//! 36, so that no other test's names collide and leftovers of a dead run can be found).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use crate::process::{output_with_timeout, run_ok};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Every name starts with this, then 5 base-36 digits of the pid, a kind letter, a number.
pub const PREFIX: &str = "ct";
const PID_DIGITS: usize = 5;

fn base36(mut n: u32) -> String {
    let mut s = vec![b'0'; PID_DIGITS];
    for d in s.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(s).expect("ascii")
}

/// `ct<pid>`: the start of every name this process makes. Leftovers of dead runs are removed
/// on the first call.
pub fn run_prefix() -> String {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(remove_stale);
    format!("{PREFIX}{}", base36(std::process::id()))
}

/// `ct<pid><kind><n>` (at most 15 bytes for n < 10^7: a valid device name).
pub fn name(kind: char, n: u64) -> String {
    format!("{}{kind}{n}", run_prefix())
}

/// Deletes `/run/netns/ct<pid>*` namespaces whose process is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.get(..PID_DIGITS))
            .and_then(|p| u32::from_str_radix(p, 36).ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name} (its process {pid} is gone)");
            let _ = output_with_timeout(Command::new("ip").args(["netns", "del", &name]), TIMEOUT);
        }
    }
}

/// `nsenter --net=PATH ip ARGS...`; panics if it fails.
pub fn ip_in(path: &Path, args: &[&str]) {
    run_ok(
        Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .arg("ip")
            .args(args),
        TIMEOUT,
    );
}

/// `ip ARGS...` in this process's namespace; panics if it fails.
pub fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), TIMEOUT);
}

/// Moves the calling thread into the namespace at `path`, for good.
pub fn enter(path: &Path) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a valid nsfs fd; setns moves the calling thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread of its own inside the namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(path);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The inode of the namespace at `path` (`periscope.netns.inode`).
pub fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// The cookie (`SO_NETNS_COOKIE`) of the calling thread's namespace.
pub fn own_cookie() -> u64 {
    // SAFETY: a plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_NETNS_COOKIE writes a u64 into `cookie`, `len` says how big it is.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    assert_eq!(rc, 0, "SO_NETNS_COOKIE: {err}");
    cookie
}

/// Writes a sysctl of the calling thread's namespace (`net/ipv6/conf/all/disable_ipv6`):
/// `/proc/sys/net` shows the namespace of the thread that opens it.
pub fn sysctl_here(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

/// IPv6 off for the namespace's present and future devices (no router solicitations, MLD or
/// neighbour discovery adding packets the test did not send); ping sockets allowed.
pub fn quiet_here() {
    sysctl_here("net/ipv6/conf/all/disable_ipv6", "1");
    sysctl_here("net/ipv6/conf/default/disable_ipv6", "1");
    sysctl_here("net/ipv4/ping_group_range", "0 2147483647");
}

/// What the kernel counted on a device: (rx packets, tx packets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// The kernel's counters of device `dev` in the namespace at `path` (`ip -s -j link`).
pub fn counters(path: &Path, dev: &str) -> Counters {
    let out = run_ok(
        Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-s", "-j", "link", "show", "dev", dev]),
        TIMEOUT,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ip -s -j link show dev {dev}: {e}"));
    let stats = &v[0]["stats64"];
    Counters {
        rx_packets: stats["rx"]["packets"].as_u64().unwrap_or(0),
        tx_packets: stats["tx"]["packets"].as_u64().unwrap_or(0),
    }
}

/// `/proc/PID/ns/net`.
pub fn proc_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}
