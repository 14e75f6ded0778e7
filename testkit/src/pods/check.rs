//! What an agent reported about churned pods, against their ground truth: per pod, packets
//! on its `eth0` (transmit) and its node-side device (receive), under which names, and its
//! connection spans; across pods, series named after one pod with another's namespace, and
//! `if<N>` device names. [`table`] prints it expected-vs-got, one line per pod.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;

use super::{Pattern, PodRecord};
use crate::otlp::{points, PointData, Series, Span};

const NAME: &str = "periscope.netns.name";
const COOKIE: &str = "periscope.netns.cookie";
const INODE: &str = "periscope.netns.inode";
const IFACE: &str = "network.interface.name";
const DIRECTION: &str = "network.io.direction";
const TRANSPORT: &str = "network.transport";

/// Packets on one device in one direction: expected and reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// UDP datagrams the generator sent.
    pub want_udp: i64,
    /// UDP + TCP packets: what the kernel counted during the traffic, when probes were sent
    /// before it (their ARP exchange done, nothing else crosses the device meanwhile); `None`
    /// without probes (the first datagram's ARP request falls in the window: `want_all`
    /// covers it).
    pub want_udp_tcp: Option<i64>,
    /// Every packet the kernel counted on the device (when no probes were sent, else `None`).
    pub want_all: Option<i64>,
    pub got_udp: i64,
    pub got_udp_tcp: i64,
    pub got_all: i64,
    /// What series with the pod's inode but no cookie reported (all transports).
    pub got_by_inode_only: i64,
}

impl Count {
    /// Whether every expectation holds.
    pub fn exact(&self) -> bool {
        self.got_udp == self.want_udp
            && self.want_udp_tcp.is_none_or(|w| w == self.got_udp_tcp)
            && self.want_all.is_none_or(|w| w == self.got_all)
    }

    fn cell(&self) -> String {
        format!(
            "{}/{} {}/{} {}/{}{}",
            self.got_udp,
            self.want_udp,
            self.got_udp_tcp,
            self.want_udp_tcp.map_or("-".into(), |w| w.to_string()),
            self.got_all,
            self.want_all.map_or("-".into(), |w| w.to_string()),
            if self.got_by_inode_only > 0 {
                format!(" (inode only: {})", self.got_by_inode_only)
            } else {
                String::new()
            }
        )
    }
}

/// One pod's outcome.
#[derive(Clone, Debug)]
pub struct PodCheck {
    pub pod: PodRecord,
    pub eth0_tx: Count,
    pub node_rx: Count,
    /// Connection spans in the pod's namespace (by cookie), and how many of them are its
    /// connection (local port) named after it.
    pub spans: usize,
    pub spans_right: usize,
    /// What is wrong with names: series or spans of the pod's namespace under another name
    /// (namespace or device), and anything named after the pod in another namespace.
    pub wrong: Vec<String>,
}

impl PodCheck {
    /// Everything as expected.
    pub fn exact(&self) -> bool {
        self.eth0_tx.exact()
            && self.node_rx.exact()
            && self.spans == usize::from(self.pod.tcp_attempted)
            && self.spans_right == self.spans
            && self.wrong.is_empty()
    }
}

fn delta(end: u64, before: u64) -> i64 {
    end as i64 - before as i64
}

/// Packets of `series` on device `dev` in `direction` of the namespace `cookie`.
fn count(series: &[Series], cookie: u64, inode: u64, dev: &str, direction: &str) -> Count {
    let (cookie, inode) = (cookie.to_string(), inode.to_string());
    let mut c = Count::default();
    for s in series {
        if s.attr(IFACE) != Some(dev) || s.attr(DIRECTION) != Some(direction) {
            continue;
        }
        if s.attr(COOKIE) == Some(cookie.as_str()) {
            c.got_all += s.value;
            match s.attr(TRANSPORT) {
                Some("udp") => {
                    c.got_udp += s.value;
                    c.got_udp_tcp += s.value;
                }
                Some("tcp") => c.got_udp_tcp += s.value,
                _ => {}
            }
        } else if s.attr(COOKIE).is_none() && s.attr(INODE) == Some(inode.as_str()) {
            c.got_by_inode_only += s.value;
        }
    }
    c
}

/// Checks every pod against `packets` (the series of `periscope.network.packets`) and
/// `spans` (connection spans); `node_cookie` is the node namespace's.
pub fn check(
    pods: &[PodRecord],
    node_cookie: u64,
    node_inode: u64,
    packets: &[Series],
    spans: &[Span],
) -> Vec<PodCheck> {
    pods.iter()
        .map(|p| {
            let mut eth0_tx = count(packets, p.cookie, p.inode, "eth0", "transmit");
            eth0_tx.want_udp = p.udp_sent as i64;
            let probed = p.probes_sent > 0;
            eth0_tx.want_udp_tcp =
                probed.then(|| delta(p.eth0_end.tx_packets, p.eth0_before.tx_packets));
            eth0_tx.want_all = (p.probes_sent == 0).then_some(p.eth0_end.tx_packets as i64);
            let mut node_rx = count(packets, node_cookie, node_inode, &p.node_dev, "receive");
            node_rx.want_udp = p.udp_sent as i64;
            node_rx.want_udp_tcp =
                probed.then(|| delta(p.node_dev_end.rx_packets, p.node_dev_before.rx_packets));
            node_rx.want_all = (p.probes_sent == 0).then_some(p.node_dev_end.rx_packets as i64);
            let cookie = p.cookie.to_string();
            let inode = p.inode.to_string();
            let mut wrong = Vec::new();
            let devices: BTreeSet<&str> = ["eth0", "lo"].into();
            for s in packets
                .iter()
                .filter(|s| s.attr(COOKIE) == Some(cookie.as_str()))
            {
                if s.attr(NAME) != p.netns_name.as_deref() || s.attr(INODE) != Some(inode.as_str())
                {
                    wrong.push(format!(
                        "series of its namespace named {:?} (inode {:?})",
                        s.attr(NAME),
                        s.attr(INODE)
                    ));
                }
                if !s.attr(IFACE).is_some_and(|d| devices.contains(d)) {
                    wrong.push(format!(
                        "series of its namespace on device {:?}",
                        s.attr(IFACE)
                    ));
                }
            }
            // Named after this pod, in another namespace.
            for s in packets
                .iter()
                .filter(|s| s.attr(NAME) == Some(p.name.as_str()))
            {
                if s.attr(COOKIE) != Some(cookie.as_str()) {
                    wrong.push(format!(
                        "series named after it with cookie {:?} (inode {:?}, device {:?})",
                        s.attr(COOKIE),
                        s.attr(INODE),
                        s.attr(IFACE)
                    ));
                }
            }
            let mine: Vec<&Span> = spans
                .iter()
                .filter(|s| s.text(COOKIE).as_deref() == Some(cookie.as_str()))
                .collect();
            let spans_right = mine
                .iter()
                .filter(|s| {
                    p.tcp_port
                        .is_none_or(|port| s.int("network.local.port") == Some(i64::from(port)))
                        && s.str(NAME) == p.netns_name.as_deref()
                        && s.text(INODE).as_deref() == Some(inode.as_str())
                })
                .count();
            for s in spans
                .iter()
                .filter(|s| s.str(NAME) == Some(p.name.as_str()))
            {
                if s.text(COOKIE).as_deref() != Some(cookie.as_str()) {
                    wrong.push(format!(
                        "span named after it with cookie {:?} (port {:?})",
                        s.text(COOKIE),
                        s.text("network.local.port")
                    ));
                }
            }
            PodCheck {
                pod: p.clone(),
                eth0_tx,
                node_rx,
                spans: mine.len(),
                spans_right,
                wrong,
            }
        })
        .collect()
}

/// Series whose device is named `if<N>` (a name lost), as `inode/cookie/name`.
pub fn if_n_names(packets: &[Series]) -> Vec<String> {
    packets
        .iter()
        .filter(|s| {
            s.attr(IFACE).is_some_and(|d| {
                d.strip_prefix("if")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|s| {
            format!(
                "{}/{}/{}",
                s.attr(INODE).unwrap_or("-"),
                s.attr(COOKIE).unwrap_or("-"),
                s.attr(IFACE).unwrap_or("-")
            )
        })
        .collect()
}

/// Inodes that more than one pod's namespace had, with the pods.
pub fn reused_inodes(pods: &[PodRecord]) -> BTreeMap<u64, Vec<String>> {
    let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for p in pods {
        m.entry(p.inode).or_default().push(p.name.clone());
    }
    m.retain(|_, v| v.len() > 1);
    m
}

/// The expected-vs-got table, one line per pod: counts as `got/want` for UDP, UDP+TCP and
/// every packet.
pub fn table(checks: &[PodCheck]) -> String {
    let mut out = format!(
        "{:<14} {:<10} {:>10} {:>6} {:<38} {:<38} {:<6} {}\n",
        "pod",
        "pattern",
        "inode",
        "cookie",
        "eth0 tx udp, udp+tcp, all",
        "node rx udp, udp+tcp, all",
        "spans",
        "verdict"
    );
    for c in checks {
        out.push_str(&format!(
            "{:<14} {:<10} {:>10} {:>6} {:<38} {:<38} {:<6} {}\n",
            c.pod.name,
            c.pod.pattern.name(),
            c.pod.inode,
            c.pod.cookie,
            c.eth0_tx.cell(),
            c.node_rx.cell(),
            format!(
                "{}/{}",
                c.spans_right,
                usize::from(c.pod.tcp_port.is_some())
            ),
            if c.exact() {
                "exact".to_string()
            } else if c.wrong.is_empty() {
                "WRONG".to_string()
            } else {
                format!("WRONG: {}", summary(&c.wrong))
            }
        ));
    }
    out
}

/// Distinct findings with how often each came up, the first three.
fn summary(wrong: &[String]) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for w in wrong {
        *n.entry(w.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = n
        .iter()
        .take(3)
        .map(|(w, k)| {
            if *k > 1 {
                format!("{w} ×{k}")
            } else {
                w.to_string()
            }
        })
        .collect();
    if n.len() > 3 {
        parts.push(format!("… {} more kinds", n.len() - 3));
    }
    parts.join("; ")
}

/// Exact pods of each pattern: (exact, total).
pub fn by_pattern(checks: &[PodCheck]) -> BTreeMap<Pattern, (usize, usize)> {
    let mut m: BTreeMap<Pattern, (usize, usize)> = BTreeMap::new();
    for c in checks {
        let e = m.entry(c.pod.pattern).or_default();
        e.0 += usize::from(c.exact());
        e.1 += 1;
    }
    m
}

/// The series of the cumulative integer sum `name`, each at its latest point, without the
/// strict checks of `otlp::sum_series` (which panics at the first series that goes down: here
/// that is a finding, not a broken file); and the series that went down without a new start
/// time (one series carrying two namespaces that had the same inode, for instance).
pub fn lenient_sums(
    requests: &[ExportMetricsServiceRequest],
    name: &str,
) -> (Vec<Series>, Vec<String>) {
    type Key = (String, BTreeMap<String, String>);
    let mut raw: BTreeMap<Key, Vec<(u64, u64, i64)>> = BTreeMap::new();
    for p in points(requests)
        .into_iter()
        .filter(|p| p.metric.name == name)
    {
        let PointData::Sum { point, .. } = p.data else {
            continue;
        };
        let Some(number_data_point::Value::AsInt(v)) = point.value else {
            continue;
        };
        raw.entry((p.scope.to_string(), p.attributes))
            .or_default()
            .push((point.time_unix_nano, point.start_time_unix_nano, v));
    }
    let mut down = Vec::new();
    let series = raw
        .into_iter()
        .map(|((scope, attributes), mut pts)| {
            pts.sort_by_key(|p| p.0);
            if pts.windows(2).any(|w| w[1].2 < w[0].2 && w[1].1 == w[0].1) {
                down.push(format!("{attributes:?}"));
            }
            let last = *pts.last().expect("a point");
            Series {
                resource: Default::default(),
                scope,
                attributes,
                value: last.2,
                points: pts.len(),
                start_time_unix_nano: last.1,
                time_unix_nano: last.0,
            }
        })
        .collect();
    (series, down)
}
