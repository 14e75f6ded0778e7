//! Receivers: where events come from.

pub mod decode;
pub mod ebpf;
pub mod kernel;
pub mod pcap;
pub mod synthetic;
