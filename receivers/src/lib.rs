//! Receivers: where events come from.

pub mod decode;
pub mod ebpf;
pub mod kernel;
pub mod netdev;
pub mod netns;
pub mod pcap;
pub mod synthetic;
pub mod tcx;
pub mod xdp;
