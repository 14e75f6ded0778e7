//! Network namespaces and veth pairs for tests. Each namespace is removed when its guard is
//! dropped (also when the test panics); namespaces left by a test process that died without
//! cleaning up are removed before new ones are made.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use crate::process::run_ok;

/// Every namespace a test makes is called `periscope-t-<pid>-<n>`.
const PREFIX: &str = "periscope-t-";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `periscope-t-<pid>-<n>` with `lo` up.
    pub fn new() -> Netns {
        static SWEEP: Once = Once::new();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        SWEEP.call_once(remove_stale);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // A leftover of an earlier process that had our pid.
        if Path::new("/run/netns").join(&name).exists() {
            delete(&name);
        }
        run_ok(Command::new("ip").args(["netns", "add", &name]), TIMEOUT);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`; `ip`
    /// execs the program, so the child's pid is the program's).
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `ip -n NAME ARGS...`; panics if it fails.
    pub fn ip(&self, args: &[&str]) {
        run_ok(
            Command::new("ip").args(["-n", &self.name]).args(args),
            TIMEOUT,
        );
    }

    /// Sets a sysctl inside the namespace, e.g. `net/ipv6/conf/all/disable_ipv6`.
    pub fn sysctl(&self, key: &str, value: &str) {
        let key = key.replace('.', "/");
        run_ok(
            self.exec("sh")
                .arg("-c")
                .arg(format!("echo {value} > /proc/sys/{key}")),
            TIMEOUT,
        );
    }

    /// Turns IPv6 off for existing and future devices, so that no router solicitations, MLD
    /// reports or neighbour discovery add traffic the test did not make.
    pub fn disable_ipv6(&self) {
        self.sysctl("net/ipv6/conf/all/disable_ipv6", "1");
        self.sysctl("net/ipv6/conf/default/disable_ipv6", "1");
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

fn delete(name: &str) {
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "warning: `ip netns del {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("warning: cannot run `ip netns del {name}`: {e}"),
    }
}

/// Deletes `periscope-t-<pid>-*` namespaces whose process no longer exists.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name} (its test process {pid} is gone)");
            delete(&name);
        }
    }
}

/// Checks that a test address is one we may use: 10.0.0.0/8 (inside namespaces the tests
/// create) or 127.0.0.0/8.
pub fn assert_test_address(cidr: &str) {
    let addr: Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("`{cidr}` is not an IPv4 address/prefix"));
    let first = addr.octets()[0];
    assert!(
        first == 10 || first == 127,
        "{cidr}: tests may only use 10.0.0.0/8 inside their own namespaces, or 127.0.0.0/8"
    );
}

/// Joins `a` and `b` with a veth pair: `a_if` in `a` with `a_cidr`, `b_if` in `b` with
/// `b_cidr` (e.g. `10.200.0.1/24`), both up. The pair disappears with either namespace.
pub fn veth_pair(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    assert_test_address(a_cidr);
    assert_test_address(b_cidr);
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", a_cidr, "dev", a_if]);
    b.ip(&["addr", "add", b_cidr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Runs `f` on a thread of its own inside the namespace `name` (`/run/netns/NAME`), so that
/// sockets `f` opens belong to it; the calling thread stays where it is.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open netns {name}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid nsfs fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
