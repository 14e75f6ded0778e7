//! Receivers: where events come from.

pub mod decode;
pub mod ebpf;
pub mod pcap;
pub mod synthetic;
