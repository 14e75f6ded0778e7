//! One measured flood: the sender and sink threads, the records reader, their CPU times.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use periscope_bench::{enter_netns, joined, set_socket_option, thread_cpu_ns};
use periscope_pipeline::edge::EventOutput;
use periscope_pipeline::model::{Direction, Event};

use crate::cpu::{ksoftirqd_pids, pin_to, proc_stat_busy_ns, runtime_ns};
use crate::modes::Attached;
use crate::topology::Topology;
use crate::{BATCH, INTERRUPTED, PAYLOAD, POLL, PORT, RX_ADDR, SENDER_CPU, SINK_CPU, TX_ADDR};

/// One mode's measurement in one round.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    /// sender + sink + ksoftirqd, ns.
    pub(crate) cpu_ns: u64,
    /// `/proc/stat` non-idle over all CPUs, ns (includes everything else on the machine).
    pub(crate) stat_ns: u64,
    pub(crate) reader_ns: u64,
    pub(crate) records: u64,
    pub(crate) lost: u64,
    /// Packets the kernel counters saw on veth-rx ingress (0 when nothing is attached).
    pub(crate) counted_rx: u64,
    /// Packets the flow slots had no room for (counted in the device totals only).
    pub(crate) flows_overflow: u64,
    pub(crate) wall: Duration,
}

impl Sample {
    /// The machine's non-idle time beyond ours (sender, sink, ksoftirqd, reader), as a
    /// fraction of ours. `/proc/stat` counts in 10 ms ticks: a few percent is resolution.
    pub(crate) fn others(&self) -> f64 {
        let ours = (self.cpu_ns + self.reader_ns) as f64;
        (self.stat_ns as f64 - ours).max(0.0) / ours
    }
}

pub(crate) fn flood(topo: &Topology, packets: u64, attached: &mut Attached) -> Result<Sample> {
    let start = Arc::new(Barrier::new(3));
    let sender_done = Arc::new(AtomicBool::new(false));
    let sink_stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let ksoft = ksoftirqd_pids();

    let sink = {
        let path = Topology::path(&topo.rx);
        let (start, stop, received) = (start.clone(), sink_stop.clone(), received.clone());
        std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || -> Result<u64> {
                enter_netns(&path)?;
                pin_to(SINK_CPU);
                let sock = UdpSocket::bind(SocketAddrV4::new(RX_ADDR, PORT))?;
                sock.set_read_timeout(Some(Duration::from_millis(20)))?;
                set_buf(&sock, libc::SO_RCVBUF, 8 << 20);
                let mut bufs = vec![[0u8; 2048]; BATCH];
                let mut iov: Vec<libc::iovec> = bufs
                    .iter_mut()
                    .map(|b| libc::iovec {
                        iov_base: b.as_mut_ptr().cast(),
                        iov_len: b.len(),
                    })
                    .collect();
                // SAFETY: mmsghdr is plain data; zero is a valid empty header.
                let mut msgs: Vec<libc::mmsghdr> =
                    (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
                for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                    m.msg_hdr.msg_iov = v;
                    m.msg_hdr.msg_iovlen = 1;
                }
                start.wait();
                let t0 = thread_cpu_ns();
                let mut n = 0u64;
                loop {
                    // SAFETY: msgs point at live buffers of the stated lengths.
                    let r = unsafe {
                        libc::recvmmsg(
                            sock.as_raw_fd(),
                            msgs.as_mut_ptr(),
                            BATCH as u32,
                            0,
                            std::ptr::null_mut(),
                        )
                    };
                    if r > 0 {
                        n += r as u64;
                        received.store(n, Ordering::Relaxed);
                    } else if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Ok(thread_cpu_ns() - t0)
            })?
    };

    let sender = {
        let path = Topology::path(&topo.tx);
        let (start, done) = (start.clone(), sender_done.clone());
        std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn(move || -> Result<(u64, u64)> {
                enter_netns(&path)?;
                pin_to(SENDER_CPU);
                let sock = UdpSocket::bind(SocketAddrV4::new(TX_ADDR, 0))?;
                sock.connect(SocketAddrV4::new(RX_ADDR, PORT))?;
                set_buf(&sock, libc::SO_SNDBUF, 4 << 20);
                let mut payload = [0x5au8; PAYLOAD];
                let mut iov = libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: PAYLOAD,
                };
                // SAFETY: mmsghdr is plain data; zero is a valid empty header.
                let mut msgs: Vec<libc::mmsghdr> =
                    (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
                for m in &mut msgs {
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                }
                start.wait();
                let t0 = thread_cpu_ns();
                let mut sent = 0u64;
                while sent < packets && !INTERRUPTED.load(Ordering::Relaxed) {
                    let want = (packets - sent).min(BATCH as u64) as u32;
                    // SAFETY: msgs point at a live payload of the stated length.
                    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), want, 0) };
                    if r > 0 {
                        sent += r as u64;
                    } else {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::ENOBUFS)
                            && e.raw_os_error() != Some(libc::EAGAIN)
                        {
                            done.store(true, Ordering::SeqCst);
                            return Err(e).context("sendmmsg");
                        }
                    }
                }
                let cpu = thread_cpu_ns() - t0;
                done.store(true, Ordering::SeqCst);
                Ok((sent, cpu))
            })?
    };

    start.wait();
    let t0 = Instant::now();
    let reader0 = thread_cpu_ns();
    let ksoft0 = runtime_ns(&ksoft);
    let stat0 = proc_stat_busy_ns();
    // Records go, in batches, into an `EventOutput` (what the receiver hands the pipeline)
    // whose consumer only counts them.
    let (mut output, events_rx, _) = EventOutput::for_test(1024);
    let consumer = std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            let mut n = 0u64;
            while let Ok(p) = events_rx.recv() {
                n += p.item_count() as u64;
            }
            n
        })?;
    let mut batch = output.new_batch();
    let mut drain = |attached: &mut Attached| {
        if let Attached::Periscope(a) = attached {
            a.drain(&mut |ev| {
                batch.push(Event::Packet(ev));
                if batch.is_full() {
                    let fresh = output.new_batch();
                    output.send(std::mem::replace(&mut batch, fresh));
                }
            });
            if !batch.is_empty() {
                let fresh = output.new_batch();
                output.send(std::mem::replace(&mut batch, fresh));
            }
        }
    };
    while !sender_done.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        drain(attached);
    }
    // Let the sink take what is queued (it stops after 20 ms without a datagram).
    let mut last = received.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    sink_stop.store(true, Ordering::SeqCst);
    drain(attached);
    let wall = t0.elapsed();
    let stat1 = proc_stat_busy_ns();
    let ksoft1 = runtime_ns(&ksoft);
    let reader_ns = thread_cpu_ns() - reader0;
    drop(output);
    let records = joined(consumer.join(), "consumer")?;
    let (sent, sender_ns) = joined(sender.join(), "sender")??;
    let sink_ns = joined(sink.join(), "sink")??;
    let (mut lost, mut counted_rx, mut flows_overflow) = (0, 0, 0);
    if let Attached::Periscope(a) = attached {
        let (counters, l) = a.read_counters();
        lost = l;
        counted_rx = counters
            .iter()
            .filter(|c| c.direction == Direction::Ingress && c.device.netns.inode != 0)
            .map(|c| c.packets)
            .max()
            .unwrap_or(0);
        flows_overflow = counters.iter().map(|c| c.flows_overflow_packets).sum();
    }
    Ok(Sample {
        sent,
        received: received.load(Ordering::Relaxed),
        cpu_ns: sender_ns + sink_ns + ksoft1.saturating_sub(ksoft0),
        stat_ns: stat1.saturating_sub(stat0),
        reader_ns,
        records,
        lost,
        counted_rx,
        flows_overflow,
        wall,
    })
}

fn set_buf(sock: &UdpSocket, opt: libc::c_int, bytes: libc::c_int) {
    set_socket_option(sock, opt, &bytes);
}
