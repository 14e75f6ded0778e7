//! Receivers: where events come from.

pub mod pcap;
pub mod synthetic;
