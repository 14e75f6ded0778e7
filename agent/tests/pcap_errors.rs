//! `periscope run` on capture files it cannot replay: a file that is missing, one that is not a
//! capture, corrupt ones and truncated ones. Each run must fail cleanly — exit code 1 (not a
//! panic's 101, no "panicked"), an `error:` line that names the file, and for a bad record its
//! number and byte offset, which the test knows because it wrote the file. Packets before the
//! bad record still count.
//!
//! No root needed: the captures are written by the test (`periscope_testkit::pcapgen`),
//! and cross-checked with `tshark` where it is installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use periscope_testkit::otlp::{read_requests, sum_series, total};
use periscope_testkit::pcapgen::{
    classic_pcap, pcapng, pseudo_random_bytes, sample_records, CaptureBytes, Record,
};
use periscope_testkit::periscope::{describe_output, run_periscope_config};
use periscope_testkit::process::output_with_timeout;
use periscope_testkit::skip::find_program;
use periscope_testkit::{yaml_path, TestDir};

const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// 2023-11-14T22:13:20Z: any fixed time will do.
const START_NS: u64 = 1_700_000_000_000_000_000;

/// Writes a pcap → flow → file config for `capture` and returns (config, output file).
fn config(dir: &TestDir, capture: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("metrics.jsonl");
    let yaml = format!(
        "receivers:\n  pcap: {{path: {}, speed: max}}\n\
         processors:\n  flow: {{interval: 60s}}\n\
         exporters:\n  file: {{path: {}}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [pcap], processors: [flow], exporters: [file]}}\n  \
         telemetry: {{metrics: {{enabled: false}}}}\n",
        yaml_path(capture),
        yaml_path(&out)
    );
    (dir.write("config.yaml", yaml), out)
}

/// A run that failed as it should.
struct Failure {
    /// The line of the error that names the capture.
    line: String,
    /// Where the file exporter writes.
    output: PathBuf,
}

/// Runs the replay and checks that it failed cleanly: exit code 1, no panic, and an `error:`
/// that names `capture`.
fn run_expecting_failure(dir: &TestDir, capture: &Path) -> Failure {
    let (config, output) = config(dir, capture);
    let out = run_periscope_config("run", &config, RUN_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad capture must fail the run with exit code 1\n{}",
        describe_output(&out)
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "periscope panicked on a bad capture\n{}",
        describe_output(&out)
    );
    // One `error:` line names the component and the file, whether the file failed while the
    // pipeline was built (open, magic) or while it was read.
    let shown = capture.display().to_string();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: receiver `pcap`: ") && l.contains(&shown))
        .unwrap_or_else(|| {
            panic!(
                "no `error: receiver `pcap`: ...` line names {shown}\n{}",
                describe_output(&out)
            )
        })
        .to_string();
    Failure { line, output }
}

/// Asserts that `line` places the error at `record N at byte OFFSET`.
fn assert_located(line: &str, record: usize, offset: usize) {
    let place = format!("record {record} at byte {offset}");
    assert!(
        line.contains(&place),
        "the error should say `{place}`, got:\n{line}"
    );
}

/// The packets and bytes the replay counted before it failed: what was read before the bad
/// record still counts.
fn counted(output: &Path) -> (i64, i64) {
    let requests = read_requests(output);
    (
        total(&sum_series(&requests, "periscope.network.packets")),
        total(&sum_series(&requests, "periscope.network.bytes")),
    )
}

fn wire_bytes(records: &[Record]) -> i64 {
    records.iter().map(|r| i64::from(r.orig_len)).sum()
}

/// Runs `tshark -r` on a capture: (frames it printed, its stderr).
fn tshark_read(capture: &Path) -> Option<(usize, String)> {
    find_program("tshark")?;
    let out = output_with_timeout(
        Command::new("tshark").arg("-r").arg(capture).args([
            "-n",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ]),
        Duration::from_secs(20),
    );
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    Some((frames, String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn missing_file_passes_validate_but_fails_the_run() {
    let dir = TestDir::new("missing_file");
    let capture = dir.join("no-such-capture.pcapng");
    let (config, _) = config(&dir, &capture);

    // `validate` is pure: it checks the config, not the world.
    let out = run_periscope_config("validate", &config, RUN_TIMEOUT);
    assert!(
        out.status.success(),
        "validate must not open the capture\n{}",
        describe_output(&out)
    );

    let line = run_expecting_failure(&dir, &capture).line;
    assert!(
        line.contains("cannot open") && line.contains("No such file or directory"),
        "the error should say the file cannot be opened and why, got:\n{line}"
    );
}

#[test]
fn empty_file_and_bad_magic_are_not_captures() {
    let dir = TestDir::new("bad_magic");
    // Random bytes whose first four are no capture magic.
    let mut garbage = pseudo_random_bytes(7, 4096);
    garbage[..4].copy_from_slice(b"RIFF");
    let garbage = dir.write("garbage.bin", &garbage);
    let empty = dir.write("empty.bin", b"");
    for (capture, why) in [(&garbage, "starts with 0x52494646"), (&empty, "empty")] {
        let line = run_expecting_failure(&dir, capture).line;
        // The path is in the line already; what is said about it must be the news.
        let message = line.replace(&capture.display().to_string(), "FILE");
        assert!(
            message.contains("not a pcap or pcapng file") && message.contains(why),
            "the error should say FILE is not a pcap or pcapng file ({why}), got:\n{message}"
        );
    }
}

#[test]
fn valid_magic_followed_by_garbage_fails_at_the_first_record() {
    let dir = TestDir::new("magic_then_garbage");

    // Classic pcap: the magic and nothing else right. Where it fails depends on how strict
    // the header check is (tshark and libpcap refuse the version number); it must fail
    // cleanly and say something beyond the file's name.
    let mut bytes = 0xa1b2_c3d4_u32.to_le_bytes().to_vec();
    bytes.extend(pseudo_random_bytes(11, 4092));
    let classic = dir.write("garbage.pcap", &bytes);
    let line = run_expecting_failure(&dir, &classic).line;
    let message = line.replace(&classic.display().to_string(), "FILE");
    assert!(
        message.contains("record 1 at byte 24") || message.contains("header"),
        "the error should blame the file header or record 1, got:\n{message}"
    );

    // A good classic header, then random bytes: record 1 claims more than the file holds.
    let header = classic_pcap(&[], false, 262_144).bytes;
    let mut bytes = header.clone();
    bytes.extend(pseudo_random_bytes(11, 4072));
    let incl_len = u32::from_le_bytes(bytes[32..36].try_into().unwrap());
    let available = bytes.len() - 40;
    assert!(
        incl_len as usize > available,
        "seed: record 1 should claim more ({incl_len}) than the file has ({available})"
    );
    let classic = dir.write("garbage-records.pcap", &bytes);
    assert_located(&run_expecting_failure(&dir, &classic).line, 1, header.len());

    // pcapng: the section header block's magic, then random bytes: the section header
    // (record 1) cannot have the byte-order magic it needs.
    let mut bytes = 0x0a0d_0d0a_u32.to_le_bytes().to_vec();
    bytes.extend(pseudo_random_bytes(13, 4092));
    let ng = dir.write("garbage.pcapng", &bytes);
    assert_located(&run_expecting_failure(&dir, &ng).line, 1, 0);
}

#[test]
fn corrupt_record_length_is_reported_with_its_place_and_earlier_packets_count() {
    let dir = TestDir::new("corrupt_record");
    let records = sample_records(START_NS);
    let bad = 8; // 1-based packet number

    // Classic pcap: packet 8's header claims 2 GiB.
    let CaptureBytes {
        mut bytes,
        record_offsets,
    } = classic_pcap(&records, false, 262_144);
    let at = record_offsets[bad - 1];
    bytes[at + 8..at + 12].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes());
    let classic = dir.write("corrupt.pcap", &bytes);
    let failure = run_expecting_failure(&dir, &classic);
    assert_located(&failure.line, bad, at);
    assert!(
        failure.line.contains("2147483647"),
        "the error should quote the bad length:\n{}",
        failure.line
    );
    assert_eq!(
        counted(&failure.output),
        (bad as i64 - 1, wire_bytes(&records[..bad - 1])),
        "the packets before the corrupt record should be counted, and only those"
    );

    // pcapng: the Enhanced Packet Block of packet 8 claims 4 GiB. Records are blocks there:
    // the section header is record 1 and the interface description record 2.
    let CaptureBytes {
        mut bytes,
        record_offsets,
    } = pcapng(&records, "eth0");
    let at = record_offsets[bad - 1];
    bytes[at + 4..at + 8].copy_from_slice(&0xffff_fff0_u32.to_le_bytes());
    let ng = dir.write("corrupt.pcapng", &bytes);
    let failure = run_expecting_failure(&dir, &ng);
    assert_located(&failure.line, bad + 2, at);
    assert_eq!(
        counted(&failure.output),
        (bad as i64 - 1, wire_bytes(&records[..bad - 1])),
        "the packets before the corrupt block should be counted, and only those"
    );
}

#[test]
fn truncated_capture_is_reported_with_its_place_and_earlier_packets_count() {
    let dir = TestDir::new("truncated");
    let records = sample_records(START_NS);
    let cut = 13; // 1-based packet number cut short

    // The intact files are well-formed: tshark reads every frame of them.
    let classic = classic_pcap(&records, true, 262_144);
    let ng = pcapng(&records, "eth0");
    for (name, c) in [("intact.pcap", &classic), ("intact.pcapng", &ng)] {
        let path = dir.write(name, &c.bytes);
        if let Some((frames, stderr)) = tshark_read(&path) {
            assert_eq!(frames, records.len(), "tshark on {name}:\n{stderr}");
        }
    }

    let at = classic.record_offsets[cut - 1];
    let cases = [
        // Classic pcap cut in the middle of packet 13's data, then of its header.
        (
            "cut-in-data.pcap",
            &classic.bytes[..at + 16 + records[cut - 1].data.len() / 2],
            cut,
            at,
        ),
        ("cut-in-header.pcap", &classic.bytes[..at + 7], cut, at),
        // pcapng cut in the middle of packet 13's block (record 15: after SHB and IDB).
        (
            "cut-in-block.pcapng",
            &ng.bytes[..ng.record_offsets[cut - 1] + 40],
            cut + 2,
            ng.record_offsets[cut - 1],
        ),
    ];
    for (name, bytes, record, offset) in cases {
        let capture = dir.write(name, bytes);
        if let Some((frames, stderr)) = tshark_read(&capture) {
            assert_eq!(frames, cut - 1, "tshark on {name}:\n{stderr}");
            assert!(
                stderr.contains("cut short in the middle of a packet"),
                "tshark should find {name} cut short:\n{stderr}"
            );
        }
        let failure = run_expecting_failure(&dir, &capture);
        assert_located(&failure.line, record, offset);
        assert!(
            failure.line.contains("truncated"),
            "{name}: the error should say `truncated`:\n{}",
            failure.line
        );
        assert_eq!(
            counted(&failure.output),
            (cut as i64 - 1, wire_bytes(&records[..cut - 1])),
            "{name}: the packets before the cut should be counted, and only those"
        );
        std::fs::remove_file(&failure.output).expect("remove the output for the next case");
    }
}
