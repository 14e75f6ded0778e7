//! Receivers: where events come from.

pub mod cgroup_skb;
pub mod decode;
pub mod dns;
pub mod ebpf;
pub mod kernel;
pub mod netdev;
pub mod netns;
pub mod pcap;
pub mod sk_msg;
pub mod socket;
pub mod sockops;
pub mod synthetic;
pub mod tcp_udp;
pub mod tcx;
pub mod xdp;
