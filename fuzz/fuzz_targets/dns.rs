//! DNS payloads (UDP, and TCP with its length prefix) as the `pcap` and `xdp`/`tcx`
//! receivers hand them to the parser: never a panic, memory bounded by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

use periscope_pipeline::model::{PacketEvent, Transport};
use periscope_pipeline::DnsTable;
use periscope_receivers::shared::dns::parse;

fuzz_target!(|data: &[u8]| {
    // A small table: interning must stay bounded whatever the names.
    let names = DnsTable::new(64, 64);
    for transport in [Transport::Udp, Transport::Tcp] {
        let ev = PacketEvent {
            transport,
            src_port: 53,
            dst_port: 40000,
            ..PacketEvent::default()
        };
        let _ = parse(&ev, data, &names);
    }
});
