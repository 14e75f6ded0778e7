//! Packet captures as ground truth: `dumpcap` writes them, `tshark` counts them.
//!
//! This file also holds the few tshark readings tests compare periscope with: frames and bytes
//! per display filter, TCP handshake times and DNS responses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::process::{run_ok, Background};

/// A running `dumpcap` inside a namespace.
pub struct Dumpcap {
    process: Background,
    file: PathBuf,
}

/// What `dumpcap` said when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpcapStats {
    /// "Packets captured: N" (written to the file).
    pub captured: u64,
    /// Packets the interface's capture socket received.
    pub received: u64,
    /// Packets dropped by the kernel, libpcap or dumpcap.
    pub dropped: u64,
}

impl Dumpcap {
    /// Starts `dumpcap -i IFACE -w FILE EXTRA...` in `ns` and returns once it is capturing: the
    /// capture is open and the file's header is written (dumpcap prints `File: ...` only after
    /// it opened the interface and the file).
    pub fn start(ns: &Netns, iface: &str, file: &Path, extra: &[&str]) -> Dumpcap {
        let mut cmd = ns.exec("dumpcap");
        cmd.args(["-i", iface, "-w"]).arg(file).args(extra);
        let mut process = Background::spawn(&mut cmd, "dumpcap");
        process.wait_until(
            Duration::from_secs(15),
            "`File:` line and file header",
            |p| p.stderr().contains("File: ") && std::fs::metadata(file).is_ok_and(|m| m.len() > 0),
        );
        Dumpcap {
            process,
            file: file.to_path_buf(),
        }
    }

    /// The capture file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many packets dumpcap says it has written so far (its `Packets: N` progress).
    pub fn packets_written(&self) -> u64 {
        parse_progress(&self.process.stderr())
    }

    /// Waits until dumpcap has written at least `min_packets` and then nothing new for
    /// `quiet`; returns the count. Needed before [`Dumpcap::stop`]: libpcap hands packets
    /// over in blocks that the kernel retires up to two read timeouts (2 × 250 ms for
    /// dumpcap) after their first packet, and packets still in an unretired block when
    /// dumpcap stops are lost without being counted anywhere.
    pub fn wait_until_settled(
        &mut self,
        min_packets: u64,
        quiet: Duration,
        timeout: Duration,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = (self.packets_written(), Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.packets_written();
            if now != last.0 {
                last = (now, Instant::now());
            } else if now >= min_packets && last.1.elapsed() >= quiet {
                return now;
            }
            if self.process.has_exited() {
                panic!(
                    "dumpcap exited during the capture:\n{}",
                    self.process.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "dumpcap wrote {now} packets, expected at least {min_packets} and then a pause of {quiet:?}, within {timeout:?}:\n{}",
                    self.process.stderr()
                );
            }
        }
    }

    /// Stops the capture cleanly (SIGINT: dumpcap finishes the file and prints its counts).
    pub fn stop(self) -> DumpcapStats {
        self.process.signal(libc::SIGINT);
        let out = self.process.wait(Duration::from_secs(15));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "dumpcap failed ({}):\n{stderr}",
            out.status
        );
        parse_dumpcap_stats(&stderr)
            .unwrap_or_else(|| panic!("dumpcap printed no packet counts:\n{stderr}"))
    }
}

/// The last `Packets: N` progress report (0 before the first).
fn parse_progress(stderr: &str) -> u64 {
    stderr
        .rfind("Packets: ")
        .map(|at| {
            stderr[at + "Packets: ".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// Reads "Packets captured: N" and "Packets received/dropped on interface 'X': R/D (...)".
fn parse_dumpcap_stats(stderr: &str) -> Option<DumpcapStats> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &stderr[stderr.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let captured = number_after("Packets captured: ")?;
    let line = stderr
        .lines()
        .find(|l| l.contains("Packets received/dropped on interface"))?;
    let counts = line.rsplit_once("': ")?.1.split_whitespace().next()?;
    let (received, dropped) = counts.split_once('/')?;
    Some(DumpcapStats {
        captured,
        received: received.parse().ok()?,
        dropped: dropped.parse().ok()?,
    })
}

/// One frame as `tshark` dissected it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `frame.len`: the length on the wire.
    pub len: u64,
    /// `frame.cap_len`: the bytes stored in the file (less when a snap length cut it).
    pub cap_len: u64,
    /// `frame.time_epoch`, seconds.
    pub time: f64,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or `other`: the first of these in `frame.protocols`
    /// (the outer one, for ICMP errors that quote a datagram).
    pub transport: &'static str,
    /// Outer IPv4/IPv6 source and destination, if any.
    pub src: Option<String>,
    pub dst: Option<String>,
    /// TCP/UDP ports (none for other transports).
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// Packets and bytes (sum of `frame.len`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, frame: &Frame) {
        self.packets += 1;
        self.bytes += frame.len;
    }
}

/// What `tshark -r` counts in a capture file.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    pub file: PathBuf,
    pub frames: Vec<Frame>,
}

const FIELDS: &[&str] = &[
    "frame.len",
    "frame.cap_len",
    "frame.time_epoch",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
];

impl GroundTruth {
    /// Dissects `file` with `tshark -r` (no name resolution; first occurrence of each field).
    pub fn read(file: &Path) -> GroundTruth {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(file).args([
            "-n",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-E",
            "occurrence=f",
        ]);
        for f in FIELDS {
            cmd.args(["-e", f]);
        }
        let out = run_ok(&mut cmd, Duration::from_secs(30));
        let text = String::from_utf8(out.stdout).expect("tshark prints UTF-8");
        let frames = text
            .lines()
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, line)| {
                parse_frame(line).unwrap_or_else(|| {
                    panic!(
                        "{}: tshark frame {}: cannot parse `{line}`",
                        file.display(),
                        i + 1
                    )
                })
            })
            .collect();
        GroundTruth {
            file: file.to_path_buf(),
            frames,
        }
    }

    /// All packets and bytes.
    pub fn total(&self) -> Totals {
        let mut t = Totals::default();
        self.frames.iter().for_each(|f| t.add(f));
        t
    }

    /// Packets and bytes per transport (`tcp`, `udp`, `icmp`, `icmpv6`, `other`).
    pub fn by_transport(&self) -> BTreeMap<String, Totals> {
        let mut m: BTreeMap<String, Totals> = BTreeMap::new();
        for f in &self.frames {
            m.entry(f.transport.to_string()).or_default().add(f);
        }
        m
    }

    /// Packets and bytes per (transport, source address, source port, destination address,
    /// destination port), for IP packets; ports are 0 for protocols without ports.
    pub fn by_flow(&self) -> BTreeMap<[String; 5], Totals> {
        let mut m: BTreeMap<[String; 5], Totals> = BTreeMap::new();
        for f in &self.frames {
            let (Some(src), Some(dst)) = (&f.src, &f.dst) else {
                continue;
            };
            let key = [
                f.transport.to_string(),
                src.clone(),
                f.src_port.unwrap_or(0).to_string(),
                dst.clone(),
                f.dst_port.unwrap_or(0).to_string(),
            ];
            m.entry(key).or_default().add(f);
        }
        m
    }

    /// Sum of `frame.cap_len` (what the file stores).
    pub fn captured_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.cap_len).sum()
    }

    /// Time from the first to the last packet.
    pub fn duration(&self) -> Duration {
        let first = self
            .frames
            .iter()
            .map(|f| f.time)
            .fold(f64::INFINITY, f64::min);
        let last = self
            .frames
            .iter()
            .map(|f| f.time)
            .fold(f64::NEG_INFINITY, f64::max);
        if self.frames.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(last - first)
        }
    }
}

/// `tshark -r FILE EXTRA... -T fields -e FIELD...`: one `Vec` of field values per frame that
/// `filter` (a display filter) lets through; panics when tshark fails.
pub fn tshark_fields(
    file: &Path,
    extra: &[&str],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(extra)
        .args(["-Y", filter, "-T", "fields", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Frames and bytes (sum of `frame.len`) that each display filter lets through.
pub fn frames_and_bytes(file: &Path, filters: &[&str]) -> Vec<(u64, u64)> {
    filters
        .iter()
        .map(|f| {
            let lens: Vec<u64> = tshark_fields(file, &[], f, &["frame.len"])
                .iter()
                .filter_map(|l| l.first()?.trim().parse().ok())
                .collect();
            (lens.len() as u64, lens.iter().sum())
        })
        .collect()
}

/// SYN → SYN/ACK time (seconds) per client port of the connections to `server_port`, as tshark
/// sees them in the capture.
pub fn handshake_times(file: &Path, server_port: u16) -> BTreeMap<u16, f64> {
    let mut syn = BTreeMap::new();
    let mut synack = BTreeMap::new();
    let rows = tshark_fields(
        file,
        &[],
        "tcp.flags.syn == 1",
        &[
            "tcp.srcport",
            "tcp.dstport",
            "tcp.flags.ack",
            "frame.time_epoch",
        ],
    );
    for f in rows {
        if f.len() < 4 {
            continue;
        }
        let (Ok(sport), Ok(dport), Ok(t)) = (
            f[0].parse::<u16>(),
            f[1].parse::<u16>(),
            f[3].parse::<f64>(),
        ) else {
            continue;
        };
        let ack = f[2] == "1" || f[2] == "True";
        if !ack && dport == server_port {
            syn.entry(sport).or_insert(t);
        } else if ack && sport == server_port {
            synack.entry(dport).or_insert(t);
        }
    }
    syn.into_iter()
        .filter_map(|(port, t)| synack.get(&port).map(|a| (port, a - t)))
        .collect()
}

/// One DNS response as tshark dissects it.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsResponse {
    pub id: u16,
    pub name: String,
    pub rcode: u8,
    /// `dns.time`: seconds since its query (absent when tshark saw no query).
    pub time: Option<f64>,
}

/// The DNS responses in a capture, with tshark's `dns.time`, in capture order; `extra` are
/// more tshark arguments (e.g. `-d` to decode a port as DNS).
pub fn dns_responses(file: &Path, extra: &[&str]) -> Vec<DnsResponse> {
    tshark_fields(
        file,
        extra,
        "dns.flags.response == 1",
        &["dns.id", "dns.qry.name", "dns.flags.rcode", "dns.time"],
    )
    .into_iter()
    .filter_map(|f| {
        let id = f.first()?.trim_start_matches("0x");
        Some(DnsResponse {
            id: u16::from_str_radix(id, 16).ok()?,
            name: f.get(1)?.to_string(),
            rcode: f.get(2)?.parse().ok()?,
            time: f.get(3).and_then(|t| t.parse().ok()),
        })
    })
    .collect()
}

fn parse_frame(line: &str) -> Option<Frame> {
    let cols: Vec<&str> = line.split('\t').collect();
    if cols.len() != FIELDS.len() {
        return None;
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let port = |a: &str, b: &str| -> Option<u16> {
        let s = if a.is_empty() { b } else { a };
        s.parse().ok()
    };
    let transport = cols[3]
        .split(':')
        .find_map(|p| match p {
            "tcp" => Some("tcp"),
            "udp" => Some("udp"),
            "icmp" => Some("icmp"),
            "icmpv6" => Some("icmpv6"),
            _ => None,
        })
        .unwrap_or("other");
    let ported = matches!(transport, "tcp" | "udp");
    Some(Frame {
        len: cols[0].parse().ok()?,
        cap_len: cols[1].parse().ok()?,
        time: cols[2].parse().ok()?,
        transport,
        src: opt(cols[4]).or_else(|| opt(cols[6])),
        dst: opt(cols[5]).or_else(|| opt(cols[7])),
        // An ICMP error quotes a datagram: its ports are not the ICMP packet's.
        src_port: ported.then(|| port(cols[8], cols[10])).flatten(),
        dst_port: ported.then(|| port(cols[9], cols[11])).flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumpcap_counts_are_parsed() {
        let stderr = "Capturing on 'peri-b'\nFile: /tmp/x.pcapng\nPackets: 5 \rPackets captured: 53\n\
                      Packets received/dropped on interface 'peri-b': 53/2 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (100.0%)\n";
        assert_eq!(
            parse_dumpcap_stats(stderr),
            Some(DumpcapStats {
                captured: 53,
                received: 53,
                dropped: 2
            })
        );
        assert_eq!(parse_dumpcap_stats("Capturing on 'x'\n"), None);
        assert_eq!(parse_progress(stderr), 5);
        assert_eq!(parse_progress("File: x\nPackets: 3 \rPackets: 38 "), 38);
        assert_eq!(parse_progress("File: x\n"), 0);
    }

    #[test]
    fn frames_are_classified_by_their_outer_transport() {
        let f = parse_frame(
            "98\t98\t1.5\teth:ethertype:ip:icmp:ip:udp\t10.0.0.1\t10.0.0.2\t\t\t\t\t53\t9",
        )
        .unwrap();
        assert_eq!((f.transport, f.len, f.src_port), ("icmp", 98, None));
        let f =
            parse_frame("66\t66\t1.5\teth:ethertype:ip:tcp\t10.0.0.1\t10.0.0.2\t\t\t4000\t80\t\t")
                .unwrap();
        assert_eq!(
            (f.transport, f.src_port, f.dst_port),
            ("tcp", Some(4000), Some(80))
        );
        let f = parse_frame("42\t42\t1.5\teth:ethertype:arp\t\t\t\t\t\t\t\t").unwrap();
        assert_eq!((f.transport, f.src.as_deref()), ("other", None));
        assert!(parse_frame("42\t42").is_none());
    }
}
