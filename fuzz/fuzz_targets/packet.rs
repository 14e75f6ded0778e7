//! Captured frames of every link type, and raw ring-buffer records of every kind, through
//! the decoders that read them: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use periscope_pipeline::DnsTable;
use periscope_receivers::pcap::{decode_frame, l4_payload, FrameMeta, LinkType};
use periscope_receivers::netdev::{decode_burst, decode_dns, decode_packet};
use periscope_receivers::shared::ebpf::BootClock;
use periscope_receivers::socket::{decode_record, DropReasons};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let link = match selector % 7 {
        0 => LinkType::Null,
        1 => LinkType::Ethernet,
        2 => LinkType::RawIp,
        3 => LinkType::Loop,
        4 => LinkType::LinuxSll,
        5 => LinkType::LinuxSll2,
        _ => LinkType::Other(u32::from(selector)),
    };
    let meta = FrameMeta {
        orig_len: bytes.len() as u32,
        ..FrameMeta::default()
    };
    let _ = decode_frame(link, bytes, meta);
    let _ = l4_payload(link, bytes);
    let clock = BootClock::from_offset_ns(0);
    let _ = decode_packet(bytes, &clock);
    let _ = decode_burst(bytes, &clock);
    let _ = decode_dns(bytes, &clock, &DnsTable::new(64, 64));
    let _ = decode_record(bytes, &clock, &DropReasons::default());
});
