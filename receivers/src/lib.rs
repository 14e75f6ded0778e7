//! Receivers: where events come from.

pub mod decode;
pub mod pcap;
pub mod synthetic;
