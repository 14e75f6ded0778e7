//! The config, and files that cannot be replayed: errors that name the file, the record and the byte, never a panic.

use super::*;

#[test]
fn config_parses_validates_and_is_finite() {
    use periscope_pipeline::config::{de::from_node, yaml::parse};
    let c: PcapConfig =
        from_node(&parse("path: a.pcap\nspeed: realtime").expect("yaml"), &[]).expect("config");
    assert_eq!(
        (c.path.to_str(), c.speed),
        (Some("a.pcap"), Speed::Realtime)
    );
    let c: PcapConfig = from_node(&parse("path: a.pcap").expect("yaml"), &[]).expect("config");
    assert_eq!(c.speed, Speed::Max);
    assert!(c.validate().is_ok());
    assert!(c.is_finite());
    let e = from_node::<PcapConfig>(&parse("path: a.pcap\nsped: max").expect("yaml"), &[])
        .expect_err("unknown option");
    assert!(e.message.contains("sped"), "{}", e.message);
    let empty = PcapConfig {
        path: "".into(),
        speed: Speed::Max,
        dns_ports: Vec::new(),
    };
    let problems = empty.validate().expect_err("empty path");
    assert_eq!(problems[0].path, "path");
}

fn build_error(path: &Path) -> String {
    match pcap_config(path).build(&context("pcap")) {
        Ok(_) => panic!("{} opened; wanted an error", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn unopenable_and_foreign_files_fail_to_build() {
    assert_eq!(
        build_error(Path::new("/nonexistent/x/y.pcap")),
        "cannot open /nonexistent/x/y.pcap: No such file or directory"
    );
    let dir = TestDir::new("foreign");
    let text = dir.join("notes.txt");
    std::fs::write(&text, b"hello, this is not a capture").expect("write");
    assert_eq!(
        build_error(&text),
        format!(
            "`{}` is not a pcap or pcapng file (starts with 0x68656c6c)",
            text.display()
        )
    );
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").expect("write");
    assert!(build_error(&empty).ends_with("is not a pcap or pcapng file (it is empty)"));
    assert!(build_error(dir.path()).ends_with("it is a directory"));
}

#[test]
fn broken_file_headers_fail_the_run() {
    let dir = TestDir::new("headers");
    let short = dir.join("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0]).expect("write");
    let (r, e) = replay_err(&short);
    assert_eq!(
        e,
        format!(
            "{}: truncated: the file ends 10 bytes into a 24-byte pcap file header",
            short.display()
        )
    );
    assert!(r.events.is_empty());

    let mut bytes = 0xa1b2_c3d4_u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0x37; 40]);
    let version = dir.join("version.pcap");
    std::fs::write(&version, &bytes).expect("write");
    assert_eq!(
        replay_err(&version).1,
        format!(
            "{}: the pcap file header says version 14135.14135; only 2.x exists",
            version.display()
        )
    );

    let ng_short = dir.join("short.pcapng");
    std::fs::write(&ng_short, [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c]).expect("write");
    assert_eq!(
        replay_err(&ng_short).1,
        format!(
            "{}: record 1 at byte 0: truncated: the file ends 10 bytes into a 12-byte section header",
            ng_short.display()
        )
    );
    let ng_magic_only = dir.join("magic.pcapng");
    std::fs::write(&ng_magic_only, [0x0a, 0x0d, 0x0d, 0x0a]).expect("write");
    assert_eq!(
        replay_err(&ng_magic_only).1,
        format!(
            "{}: record 1 at byte 0: truncated: the file ends 4 bytes into a 8-byte block header",
            ng_magic_only.display()
        )
    );
    let mut bytes = 0x0a0d_0d0a_u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0x55; 60]);
    let ng_bom = dir.join("bom.pcapng");
    std::fs::write(&ng_bom, &bytes).expect("write");
    assert_eq!(
        replay_err(&ng_bom).1,
        format!(
            "{}: record 1 at byte 0: section header with byte-order magic 0x55555555 (expected 0x1a2b3c4d either way round)",
            ng_bom.display()
        )
    );
    // Header-only files are empty captures, not errors.
    let header_only = dir.join("header-only.pcap");
    write_pcap(
        &header_only,
        Endianness::Big,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &[],
    );
    assert!(replay_ok(&header_only).events.is_empty());
}

#[test]
fn a_record_cut_short_is_reported_after_the_packets_before_it() {
    let dir = TestDir::new("cut");
    let path = dir.join("capture.pcap");
    let (bytes, offsets) = ethernet_file(&path);
    // Record 3 is the 84-byte IPv6 frame; keep 30 of its bytes.
    std::fs::write(&path, &bytes[..offsets[2] as usize + 16 + 30]).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 3 at byte {}: truncated: the record header says 84 bytes but only 30 remain",
            path.display(),
            offsets[2]
        )
    );
    assert_eq!(
        r.events.len(),
        2,
        "the packets before the bad record are delivered"
    );

    // Cut inside a record header.
    std::fs::write(&path, &bytes[..offsets[1] as usize + 7]).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 2 at byte {}: truncated: the file ends 7 bytes into a 16-byte record header",
            path.display(),
            offsets[1]
        )
    );
    assert_eq!(r.events.len(), 1);
}

#[test]
fn an_absurd_record_length_is_refused_not_allocated() {
    let dir = TestDir::new("absurd");
    let path = dir.join("capture.pcap");
    let (mut bytes, offsets) = ethernet_file(&path);
    let at = offsets[1] as usize + 8;
    bytes[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 2 at byte {}: the record header says 4294967280 bytes, more than the 262144 a record may have (corrupt file?)",
            path.display(),
            offsets[1]
        )
    );
    assert_eq!(r.events.len(), 1);
}

#[test]
fn garbage_after_the_last_record_is_an_error_not_a_panic() {
    let dir = TestDir::new("garbage");
    let path = dir.join("capture.pcap");
    let (mut bytes, offsets) = ethernet_file(&path);
    let end = bytes.len() as u64;
    bytes.extend_from_slice(b"\x01\x02\x03this is definitely not a pcap record......");
    std::fs::write(&path, &bytes).expect("write");
    let (r, e) = replay_err(&path);
    assert!(
        e.starts_with(&format!("{}: record 5 at byte {end}: ", path.display())),
        "{e}"
    );
    assert_eq!(r.events.len(), 4);
    assert_eq!(offsets.len(), 4);
}

/// Offsets of the blocks of a small little-endian pcapng file: SHB, IDB, 3 EPBs.
fn small_pcapng(path: &Path) -> (Vec<u8>, Vec<u64>) {
    let mut w =
        PcapNgWriter::with_endianness(File::create(path).expect("create"), Endianness::Little)
            .expect("shb");
    let mut offsets = vec![0u64];
    let mut at = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // The writer has flushed the SHB straight to the file: it is unbuffered.
    offsets.push(at);
    at += w
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .expect("idb") as u64;
    for (i, f) in [tcp_syn(), vlan_udp(), tcp6_fin()].into_iter().enumerate() {
        offsets.push(at);
        at += w
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_micros(i as u64),
                original_len: f.len() as u32,
                data: Cow::Owned(f),
                options: vec![],
            })
            .expect("epb") as u64;
    }
    drop(w);
    let bytes = std::fs::read(path).expect("read back");
    assert_eq!(bytes.len() as u64, at);
    (bytes, offsets)
}

#[test]
fn pcapng_structural_errors_name_the_block() {
    let dir = TestDir::new("ngerr");
    let path = dir.join("capture.pcapng");
    let (orig, offsets) = small_pcapng(&path);
    assert_eq!(replay_ok(&path).events.len(), 3);
    let shown = path.display().to_string();
    let len_at = |i: usize| offsets[i] as usize + 4;
    let block_len = |b: &[u8], i: usize| {
        let at = len_at(i);
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    };
    // (what, how the file is broken, the error wanted, events delivered before it)
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Vec<u8>) + 'a>, String, usize);
    let cases: Vec<Case> = vec![
        (
            "absurd length",
            Box::new(|b: &mut Vec<u8>| {
                let at = len_at(3);
                b[at..at + 4].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
            }),
            format!(
                "{shown}: record 4 at byte {}: the block header says 4294967292 bytes, more than the 327680 a record may have (corrupt file?)",
                offsets[3]
            ),
            1,
        ),
        (
            "length not a multiple of 4",
            Box::new(|b: &mut Vec<u8>| {
                let at = len_at(4);
                let n = block_len(b, 4) + 1;
                b[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }),
            format!(
                "{shown}: record 5 at byte {}: block length {} is not a multiple of 4",
                offsets[4],
                block_len(&orig, 4) + 1
            ),
            2,
        ),
        (
            "closing length differs",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[3] as usize + block_len(b, 3) as usize - 4;
                b[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 4 at byte {}: the block's closing length 8 differs from its opening length {}",
                offsets[3],
                block_len(&orig, 3)
            ),
            1,
        ),
        (
            "cut mid-block",
            Box::new(|b: &mut Vec<u8>| b.truncate(offsets[4] as usize + 40)),
            format!(
                "{shown}: record 5 at byte {}: truncated: the block header says {} bytes but only 40 remain",
                offsets[4],
                block_len(&orig, 4)
            ),
            2,
        ),
        (
            "unknown interface",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[2] as usize + 8;
                b[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 3 at byte {}: the packet is from interface 5 but the section describes 1 interface(s) before it",
                offsets[2]
            ),
            0,
        ),
        (
            "captured length beyond the block",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[2] as usize + 20;
                b[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 3 at byte {}: the packet block says it holds 1000 captured bytes but has room for 56",
                offsets[2]
            ),
            0,
        ),
        (
            "skipped block longer than the file",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[4] as usize;
                b[at..at + 4].copy_from_slice(&0x0000_0bad_u32.to_le_bytes());
                let len = b.len() as u32;
                b[at + 4..at + 8].copy_from_slice(&(len * 4).to_le_bytes());
            }),
            format!(
                "{shown}: record 5 at byte {}: truncated: the block header says {} bytes but only {} remain",
                offsets[4],
                orig.len() * 4,
                orig.len() - offsets[4] as usize
            ),
            2,
        ),
    ];
    for (what, patch, want, events) in cases {
        let mut bytes = orig.clone();
        patch(&mut bytes);
        std::fs::write(&path, &bytes).expect("write");
        let (r, e) = replay_err(&path);
        assert_eq!(e, want, "{what}");
        assert_eq!(r.events.len(), events, "{what}: events before the error");
    }
}

#[test]
fn random_corruption_never_panics() {
    let dir = TestDir::new("fuzz");
    let classic = dir.join("c.pcap");
    let (c_bytes, _) = ethernet_file(&classic);
    let ng = dir.join("n.pcapng");
    write_pcapng(&ng);
    let n_bytes = std::fs::read(&ng).expect("read");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (name, orig) in [("c.pcap", &c_bytes), ("n.pcapng", &n_bytes)] {
        let path = dir.join(format!("fuzzed-{name}"));
        for _ in 0..300 {
            let mut b = orig.clone();
            for _ in 0..(next() % 4 + 1) {
                // Keep the magic so that the records get read.
                let at = 4 + (next() as usize) % (b.len() - 4);
                b[at] = next() as u8;
            }
            if next() % 3 == 0 {
                let keep = 4 + (next() as usize) % (b.len() - 4);
                b.truncate(keep);
            }
            std::fs::write(&path, &b).expect("write");
            // Build errors and run errors are fine; panics and hangs are not.
            if let Ok(r) = run(&pcap_config(&path), StopSignal::default()) {
                assert!(r.events.len() <= 10);
                if let Err(e) = r.result {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains(": record ") || e.contains("pcap file header"),
                        "{e}"
                    );
                }
            }
        }
    }
}
