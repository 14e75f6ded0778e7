//! bench-progrun: what one run of periscope's TC program costs in the kernel, per mode, as
//! `BPF_PROG_TEST_RUN` measures it (the kernel runs the program `--repeat` times on one
//! frame and reports the mean time per run): no veth, no scheduler accounting, so a few ns
//! are visible that `bench-netdev`'s per-packet ratios drown in their run-to-run noise.
//!
//! The frame is a 106-byte Ethernet/IPv4/UDP datagram (64-byte payload, 10.231.0.1:40000 →
//! 10.231.0.2:5001); every run of a mode counts the same flow, as `bench-netdev`'s flood
//! does. Modes (`periscope_tc_egress` loaded with these `PERISCOPE_CFG_*` flags, no
//! records): `counters`, `locality`, `flows` (the flow slots), `flows+locality`. Each round
//! runs every mode once, in an order rotated per round, on CPU 1; the table shows the median
//! ns per run over the rounds and the ratio to `counters` (the test-run harness's own
//! overhead, tens of ns, is in every mode alike, so the ratio understates a program's cost:
//! the difference in ns is the measure).
//!
//! Needs root. Reproduce: `cargo run --release -p periscope-bench --bin bench-progrun --
//! [--rounds 11] [--repeat 5000000]`

use anyhow::{bail, Context, Result};
use aya::programs::SchedClassifier;

use periscope_receivers::netdev::load_packet;
use periscope_receivers::shared::ebpf::records::{PERISCOPE_CFG_FLOWS, PERISCOPE_CFG_LOCALITY};
use periscope_receivers::shared::ebpf::{names, Config};

/// The object's flow tables keep their compiled size (4096 slots) in `load_packet`.
const OBJECT_SLOTS: u32 = 4096;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const CPU: usize = 1;

const MODES: [(&str, u32); 4] = [
    ("counters", 0),
    ("locality", PERISCOPE_CFG_LOCALITY),
    ("flows", PERISCOPE_CFG_FLOWS),
    (
        "flows+locality",
        PERISCOPE_CFG_FLOWS | PERISCOPE_CFG_LOCALITY,
    ),
];

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn frame() -> Vec<u8> {
    let payload = [0x78u8; 64];
    let udp_len = 8 + payload.len() as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len as usize);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 231, 0, 1, 10, 231, 0, 2]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5001u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

/// Mean ns per run of `fd` over `repeat` runs on `data`.
fn test_run(fd: i32, data: &[u8], repeat: u32) -> Result<u32> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a laid-out `union bpf_attr` prefix; its pointers are to live buffers
    // of the sizes given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr as *mut libc::c_void,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    Ok(attr.duration)
}

fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn arg(args: &[String], name: &str, default: u32) -> Result<u32> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} takes a positive number")),
    }
}

fn median(v: &mut [u32]) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("bench-progrun [--rounds N (11)] [--repeat N (5000000)]: needs root");
        return Ok(());
    }
    let rounds = arg(&args, "--rounds", 11)?.max(1) as usize;
    let repeat = arg(&args, "--repeat", 5_000_000)?.max(1);
    pin_to(CPU)?;
    let data = frame();
    let mut loaded = Vec::new();
    for (name, flags) in MODES {
        let config = Config {
            netns_cookie: 1,
            netns_inode: 1,
            flags,
            sample_rate: 0,
            dns_ports: [0; 4],
            flow_slot_mask: OBJECT_SLOTS - 1,
        };
        let mut bpf = load_packet(&config, None).with_context(|| format!("loading {name}"))?;
        let prog: &mut SchedClassifier = bpf
            .program_mut(names::TC_EGRESS)
            .context("no TC egress program")?
            .try_into()?;
        prog.load().with_context(|| format!("verifying {name}"))?;
        loaded.push(bpf);
    }
    let fds: Vec<i32> = loaded
        .iter()
        .map(|bpf| -> Result<i32> {
            let prog: &SchedClassifier = bpf
                .program(names::TC_EGRESS)
                .context("no TC egress program")?
                .try_into()?;
            use std::os::fd::{AsFd, AsRawFd};
            Ok(prog.fd()?.as_fd().as_raw_fd())
        })
        .collect::<Result<_>>()?;
    let mut samples: Vec<Vec<u32>> = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        for k in 0..MODES.len() {
            let m = (round + k) % MODES.len();
            samples[m].push(test_run(fds[m], &data, repeat)?);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let medians: Vec<u32> = samples.iter_mut().map(|s| median(s)).collect();
    println!(
        "bench-progrun: BPF_PROG_TEST_RUN of {} on a 106-byte UDP frame, {rounds} rounds × \
         {repeat} runs on CPU {CPU}; medians of the per-round mean ns per run",
        names::TC_EGRESS
    );
    println!(
        "{:<16} {:>8} {:>11} {:>12}",
        "mode", "ns/run", "×counters", "+ns"
    );
    for (i, (name, _)) in MODES.iter().enumerate() {
        println!(
            "{name:<16} {:>8} {:>11.3} {:>12}",
            medians[i],
            f64::from(medians[i]) / f64::from(medians[0].max(1)),
            i64::from(medians[i]) - i64::from(medians[0])
        );
    }
    println!(
        "reproduce: cargo run --release -p periscope-bench --bin bench-progrun -- --rounds \
         {rounds} --repeat {repeat}"
    );
    Ok(())
}
