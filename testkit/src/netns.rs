//! Network namespaces and veth pairs for tests. Each namespace is removed when its guard is
//! dropped (also when the test panics); namespaces left by a test process that died without
//! cleaning up are removed before new ones are made.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
        Netns::create(&Netns::unique_name())
    }

    /// A name no namespace of this process has had yet (`periscope-t-<pid>-<n>`): for a
    /// namespace the test makes later (then [`Netns::create`]) or that something else makes.
    /// Namespaces of test processes that are gone are removed on the first call.
    pub fn unique_name() -> String {
        static SWEEP: Once = Once::new();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        SWEEP.call_once(remove_stale);
        format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Creates namespace `name` (from [`Netns::unique_name`]) with `lo` up.
    pub fn create(name: &str) -> Netns {
        // A leftover of an earlier process that had our pid.
        if Path::new("/run/netns").join(name).exists() {
            delete(name);
        }
        run_ok(Command::new("ip").args(["netns", "add", name]), TIMEOUT);
        let ns = Netns::adopt(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Takes charge of namespace `name`, made by someone else: deleted on drop.
    pub fn adopt(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
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

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The namespace's inode number (what periscope reports as `periscope.netns.inode`).
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// The namespace's cookie (`SO_NETNS_COOKIE` of a socket opened inside it).
    pub fn cookie(&self) -> u64 {
        self.run(|| {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
            let mut cookie = 0u64;
            let mut len = size_of::<u64>() as libc::socklen_t;
            // SAFETY: SO_NETNS_COOKIE writes a u64 into `cookie`, `len` says how big it is.
            let rc = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NETNS_COOKIE,
                    (&mut cookie as *mut u64).cast(),
                    &mut len,
                )
            };
            assert_eq!(
                rc,
                0,
                "SO_NETNS_COOKIE: {}",
                std::io::Error::last_os_error()
            );
            cookie
        })
    }

    /// The namespace's devices as `(ifindex, name)`, from `ip -o link`.
    pub fn links(&self) -> Vec<(u32, String)> {
        let out = run_ok(
            Command::new("ip").args(["-n", &self.name, "-o", "link", "show"]),
            TIMEOUT,
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ": ");
                let ifindex = parts.next()?.trim().parse().ok()?;
                let name = parts.next()?.split('@').next()?.to_string();
                Some((ifindex, name))
            })
            .collect()
    }

    /// The ifindex of device `dev` in the namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        self.links()
            .into_iter()
            .find_map(|(i, name)| (name == dev).then_some(i))
            .unwrap_or_else(|| panic!("no device {dev} in {}", self.name))
    }

    /// Runs `f` on a thread of its own inside the namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
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

/// Moves the calling thread into the namespace `name` (`/run/netns/NAME`) for good: for
/// threads that live in one namespace (generators, pollers). Other threads stay where they are.
pub fn enter_netns(name: &str) {
    let path = Path::new("/run/netns").join(name);
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open netns {name}: {e}"));
    // SAFETY: a valid nsfs fd; setns changes the namespace of the calling thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread of its own inside the namespace `name` (`/run/netns/NAME`), so that
/// sockets `f` opens belong to it; the calling thread stays where it is.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(name);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Two "pods": namespaces with IPv6 off, joined by a veth pair (`a_if` with `a_cidr` in the
/// first, `b_if` with `b_cidr` in the second).
pub fn pods(a_if: &str, a_cidr: &str, b_if: &str, b_cidr: &str) -> (Netns, Netns) {
    let a = Netns::new();
    let b = Netns::new();
    a.disable_ipv6();
    b.disable_ipv6();
    veth_pair(&a, a_if, a_cidr, &b, b_if, b_cidr);
    (a, b)
}

/// UDP datagrams from one namespace to a socket in another, as [`udp`] sends them.
#[derive(Debug, Clone)]
pub struct UdpTraffic<'a> {
    /// The sender's namespace and address (port 0: any).
    pub from: (&'a str, SocketAddrV4),
    /// The receiver's namespace and address.
    pub to: (&'a str, SocketAddrV4),
    /// Datagrams to send.
    pub count: u64,
    /// Payload bytes of each.
    pub size: usize,
    /// The sender pauses 1 ms after every this many datagrams (a receive buffer must not
    /// overflow).
    pub pause_every: u64,
    /// The receiver stops after this long without a datagram.
    pub idle: Duration,
}

/// What [`udp`] sent and what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOutcome {
    /// The sender's port.
    pub port: u16,
    /// Datagrams the sender's `send_to` accepted.
    pub sent: u64,
    /// Datagrams the receiving socket read.
    pub received: u64,
}

/// Sends `t.count` datagrams while a socket in the receiving namespace reads them; after the
/// last, `then` gets the sender's socket (for more traffic from the same port).
pub fn udp(t: &UdpTraffic<'_>, then: impl FnOnce(&UdpSocket) + Send) -> UdpOutcome {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let sink = s.spawn(|| {
            in_netns(t.to.0, || {
                let sock = UdpSocket::bind(t.to.1).expect("bind sink");
                sock.set_read_timeout(Some(t.idle)).expect("timeout");
                ready_tx.send(()).expect("ready");
                let mut buf = [0u8; 65536];
                let mut got = 0;
                while got < t.count {
                    match sock.recv(&mut buf) {
                        Ok(_) => got += 1,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            break
                        }
                        Err(e) => panic!("sink: {e}"),
                    }
                }
                got
            })
        });
        ready_rx.recv().expect("sink ready");
        let (port, sent) = in_netns(t.from.0, || {
            let sock = UdpSocket::bind(t.from.1).expect("bind sender");
            let port = sock.local_addr().expect("addr").port();
            let payload = vec![0x5au8; t.size];
            let mut sent = 0;
            for i in 0..t.count {
                if sock.send_to(&payload, t.to.1).is_ok() {
                    sent += 1;
                }
                if i % t.pause_every == t.pause_every - 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            then(&sock);
            (port, sent)
        });
        UdpOutcome {
            port,
            sent,
            received: sink.join().expect("sink thread"),
        }
    })
}
