//! The "node": a namespace of its own standing for the host a CNI plugin wires pods to, with
//! a bridge `br0` (10.178.0.1/16), a UDP sink and a TCP server the pods talk to. Removed on
//! drop (its servers stopped first), also when the test panics.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ns;
use crate::netns::Netns;

/// The bridge's address; pods get 10.178.x.y/16.
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 178, 0, 1);
/// The UDP sink's port on [`NODE_ADDR`].
pub const UDP_PORT: u16 = 9411;
/// The TCP server's port on [`NODE_ADDR`].
pub const TCP_PORT: u16 = 9412;

/// The node namespace with its bridge and servers.
pub struct Node {
    netns: Netns,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Node {
    /// Creates `ct<pid>n<k>` with `lo` up, IPv6 off, `br0` up with 10.178.0.1/16, and the
    /// servers listening.
    pub fn new(k: u64) -> Node {
        let name = ns::name('n', k);
        let netns = Netns::create(&name);
        let path = netns.path();
        ns::run_in(&path, ns::quiet_here);
        netns.ip(&["link", "add", "br0", "type", "bridge"]);
        netns.ip(&["addr", "add", &format!("{NODE_ADDR}/16"), "dev", "br0"]);
        netns.ip(&["link", "set", "br0", "up"]);
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = vec![
            {
                let (stop, received, path, tx) =
                    (stop.clone(), received.clone(), path.clone(), tx.clone());
                std::thread::spawn(move || udp_sink(&path, &stop, &received, tx))
            },
            {
                let (stop, path) = (stop.clone(), path.clone());
                std::thread::spawn(move || tcp_server(&path, &stop, tx))
            },
        ];
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the node's servers listen");
        }
        Node {
            netns,
            stop,
            received,
            threads,
        }
    }

    /// The namespace's `ip netns` name.
    pub fn name(&self) -> &str {
        self.netns.name()
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        self.netns.path()
    }

    /// The namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The namespace's inode.
    pub fn inode(&self) -> u64 {
        ns::inode(&self.path())
    }

    /// The namespace's cookie.
    pub fn cookie(&self) -> u64 {
        ns::run_in(&self.path(), ns::own_cookie)
    }

    /// Datagrams the UDP sink has read, from all pods.
    pub fn udp_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The namespace goes with `self.netns`.
    }
}

fn udp_sink(
    path: &Path,
    stop: &AtomicBool,
    received: &AtomicU64,
    ready: std::sync::mpsc::Sender<()>,
) {
    ns::enter(path);
    let sock = UdpSocket::bind(SocketAddrV4::new(NODE_ADDR, UDP_PORT)).expect("bind the sink");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let _ = ready.send(());
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if sock.recv(&mut buf).is_ok() {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Accepts connections; each: reads a request, answers `ok`, reads to the client's close and
/// closes, on a thread of its own.
fn tcp_server(path: &Path, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) {
    ns::enter(path);
    let l = TcpListener::bind(SocketAddrV4::new(NODE_ADDR, TCP_PORT)).expect("bind the server");
    l.set_nonblocking(true).expect("nonblocking");
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut c, _)) => {
                std::thread::spawn(move || {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut buf = [0u8; 64];
                    if c.read(&mut buf).is_ok_and(|n| n > 0) {
                        let _ = c.write_all(b"ok");
                        while c.read(&mut buf).is_ok_and(|n| n > 0) {}
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
