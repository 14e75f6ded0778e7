//! Receivers: where events come from.
//!
//! One module per receiver type, named after its config (`xdp`, `tcx`, `sockops`, `sk_msg`,
//! `tcp_udp`, `cgroup_skb`, `qdisc`, `pcap`, `synthetic`), and the two bodies several of them share:
//! [`netdev`] (programs on every net_device of every namespace: `xdp`, `tcx`) and [`socket`]
//! (global hooks drained by one run loop: `sockops`, `sk_msg`, `tcp_udp`,
//! `cgroup_skb`, `qdisc`). What they all stand on — eBPF objects and records, kernel probes, network
//! namespaces, the DNS parser — is under [`shared`].

pub mod cgroup_skb;
pub mod netdev;
pub mod pcap;
pub mod qdisc;
pub mod shared;
pub mod sk_msg;
pub mod socket;
pub mod sockops;
pub mod synthetic;
pub mod tcp_udp;
pub mod tcx;
pub mod xdp;
