//! `--attach-latency N`: how long after a namespace or device appears the receiver has
//! attached it, with a breakdown (discovery, load, attach).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use periscope_bench::{ip, joined};
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::EventOutput;
use periscope_pipeline::model::NetnsId;
use periscope_receivers::netdev::{AttachOptions, Attacher, Hook, InterfaceFilter, RecordOptions};
use periscope_receivers::shared::netns::{list_devices, run_in, Namespace, NetnsHandle};

use crate::interrupted;
use crate::report::utc_now;
use crate::topology::{namespace, remove_stale, Topology, PREFIX};

/// `ip netns del` on drop, for every name (those that do not exist fail quietly).
struct DeleteNamespaces(Vec<String>);

impl Drop for DeleteNamespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            if Topology::path(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

fn percentiles(v: &mut [Duration]) -> String {
    v.sort();
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    format!(
        "p50 {:>6.1} ms  p90 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  (n={})",
        q(0.5).as_secs_f64() * 1e3,
        q(0.9).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

/// `--attach-latency N`: how long after a device appears its links exist, through the
/// receiver as the agent runs it (its own namespace watcher, `events: none`), N samples of
/// each case:
///
/// - `new namespace`: from `ip netns add` returning to the namespace's `lo` attached (the
///   namespace is discovered, its programs loaded, `lo` listed and attached);
/// - `device in an attached namespace`: from `ip link add` (a veth pair inside it) returning
///   to both ends attached;
/// - `namespace + veth at once`: `ip netns add` and `ip link add` back to back; from the
///   latter returning to lo and both veth ends attached.
///
/// Then, through [`Attacher`] directly, where the time of a new namespace goes: loading the
/// object and its programs (`add_namespace`) and creating the first device's links.
pub(crate) fn attach_latency(samples: usize, xdp: bool, pause: Duration) -> Result<()> {
    use periscope_pipeline::component::{BuildContext, ComponentId};
    use periscope_pipeline::edge::StopSignal;
    use periscope_pipeline::model::DeviceRef;
    use periscope_receivers::netdev::{EventsMode, NamespacesConfig};
    use periscope_receivers::tcx::TcxConfig;
    use periscope_receivers::xdp::XdpConfig;

    remove_stale();
    let pid = std::process::id();
    let names: Vec<String> = (0..3 * samples)
        .map(|i| format!("{PREFIX}{pid}-lat{i}"))
        .collect();
    let _cleanup = DeleteNamespaces(names.clone());
    let what = if xdp { "xdp" } else { "tcx" };
    let ctx = BuildContext::standalone(
        ComponentId::parse(&format!("{what}/latency")).map_err(anyhow::Error::msg)?,
    );
    let listed = NamespacesConfig::Listed(names[..2 * samples].to_vec());
    let receiver = if xdp {
        XdpConfig {
            namespaces: listed,
            events: EventsMode::None,
            ..XdpConfig::default()
        }
        .build_receiver(&ctx)?
    } else {
        TcxConfig {
            namespaces: listed,
            events: EventsMode::None,
            ..TcxConfig::default()
        }
        .build_receiver(&ctx)?
    };
    let (mut output, events, _) = EventOutput::for_test(1024);
    let stop = StopSignal::default();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        periscope_pipeline::component::Receiver::run(Box::new(receiver), &mut output, &s)
    });
    let sink = std::thread::spawn(move || for _ in events.iter() {});
    let devices = ctx.devices.clone();
    // When each of `ifindexes` was first seen attached (registered in the device table).
    let wait = |netns: NetnsId, ifindexes: &[u32]| -> Result<Vec<Instant>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen: Vec<Option<Instant>> = vec![None; ifindexes.len()];
        loop {
            let now = Instant::now();
            for (i, &ifindex) in ifindexes.iter().enumerate() {
                if seen[i].is_none() && devices.get(&DeviceRef { netns, ifindex }).is_some() {
                    seen[i] = Some(now);
                }
            }
            if seen.iter().all(Option::is_some) {
                return Ok(seen.into_iter().flatten().collect());
            }
            if now > deadline {
                bail!(
                    "devices {ifindexes:?} of namespace {} not attached within 5 s",
                    netns.inode
                );
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    };
    let veth = |name: &str| {
        ip(&[
            "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ])
    };
    // lo is 1 in a new namespace; the veth pair's ends are 2 and 3.
    let check = |name: &str, ns: &Namespace| -> Result<()> {
        let handle = NetnsHandle::open(ns)?;
        let mut got: Vec<u32> = run_in(&handle, list_devices)??
            .iter()
            .map(|d| d.ifindex)
            .collect();
        got.sort();
        if got != [1, 2, 3] {
            bail!("{name}: ifindexes {got:?}, expected [1, 2, 3]");
        }
        Ok(())
    };
    let (mut new_ns, mut known, mut known_both, mut together) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    eprintln!("attach latency ({what}, release build): {samples} samples per case");
    for i in 0..samples {
        interrupted()?;
        let name = &names[2 * i];
        ip(&["netns", "add", name])?;
        let t = Instant::now();
        let (ns, _) = namespace(name)?;
        new_ns.push(wait(ns.id, &[1])?[0] - t);
        std::thread::sleep(Duration::from_millis(20));
        veth(name)?;
        let t = Instant::now();
        let at = wait(ns.id, &[2, 3])?;
        known.extend(at.iter().map(|a| *a - t));
        known_both.push(at.iter().max().copied().unwrap_or(t) - t);
        check(name, &ns)?;

        let name = &names[2 * i + 1];
        ip(&["netns", "add", name])?;
        veth(name)?;
        let t = Instant::now();
        let (ns, _) = namespace(name)?;
        let at = wait(ns.id, &[1, 2, 3])?;
        together.push(at.iter().max().copied().unwrap_or(t) - t);
        check(name, &ns)?;
        std::thread::sleep(Duration::from_millis(20));
        for n in [&names[2 * i], &names[2 * i + 1]] {
            ip(&["netns", "del", n])?;
        }
        std::thread::sleep(pause);
    }
    stop.raise();
    joined(thread.join(), "the receiver")??;
    let _ = sink.join();

    // Where a new namespace's time goes, through the attachment manager itself.
    let mut attacher = Attacher::new(
        AttachOptions {
            hooks: if xdp {
                vec![Hook::Xdp]
            } else {
                vec![Hook::TcxIngress, Hook::TcxEgress]
            },
            tcx_fallback: xdp,
            records: RecordOptions {
                flows: None,
                dns_ports: [0; 4],
                flags: 0,
                sample_rate: 0,
                bursts: None,
            },
            ring_bytes: 1 << 20,
            pin_root: None,
            interfaces: InterfaceFilter::all(),
        },
        DeviceTable::default(),
    )?;
    let (mut loads, mut firsts) = (Vec::new(), Vec::new());
    for i in 0..samples {
        interrupted()?;
        let name = &names[2 * samples + i];
        ip(&["netns", "add", name])?;
        let (ns, handle) = namespace(name)?;
        let lo = run_in(&handle, list_devices)??
            .into_iter()
            .find(|d| d.loopback)
            .context("no lo")?;
        let t = Instant::now();
        attacher
            .add_namespace(&ns)
            .map_err(|e| anyhow::anyhow!("loading for {name}: {e:#}"))?;
        let loaded = Instant::now();
        attacher
            .add_device(ns.id, &lo)
            .map_err(|e| anyhow::anyhow!("attaching lo: {e:#}"))?;
        firsts.push(loaded.elapsed());
        loads.push(loaded - t);
        attacher.remove_namespace(ns.id);
        drop(handle);
        ip(&["netns", "del", name])?;
    }
    attacher.shutdown();

    // Discovery alone: the watcher's events, timed from the `ip` command returning.
    let later: Vec<String> = (0..samples)
        .map(|i| format!("{PREFIX}{pid}-disc{i}"))
        .collect();
    let _cleanup_later = DeleteNamespaces(later.clone());
    let (tx, rx) = crossbeam_channel::unbounded();
    let watcher = periscope_receivers::shared::netns::watch(
        periscope_receivers::shared::netns::NamespaceScope::Listed(later.clone()),
        tx,
    )?;
    let (mut disc_ns, mut disc_lo, mut disc_dev) = (Vec::new(), Vec::new(), Vec::new());
    let until = |t: Instant,
                 f: &dyn Fn(&periscope_receivers::shared::netns::Discovery) -> bool|
     -> Result<Duration> {
        loop {
            let d = rx
                .recv_timeout(Duration::from_secs(5))
                .context("no discovery event within 5 s")?;
            if f(&d) {
                return Ok(t.elapsed());
            }
        }
    };
    for name in &later {
        interrupted()?;
        use periscope_receivers::shared::netns::Discovery as D;
        ip(&["netns", "add", name])?;
        let t = Instant::now();
        disc_ns.push(until(
            t,
            &|d| matches!(d, D::NamespaceAdded(n) if n.name.as_deref() == Some(name.as_str())),
        )?);
        disc_lo.push(until(
            t,
            &|d| matches!(d, D::DeviceAdded { device, .. } if device.loopback),
        )?);
        veth(name)?;
        let t = Instant::now();
        disc_dev.push(until(
            t,
            &|d| matches!(d, D::DeviceAdded { device, .. } if device.name == "v0"),
        )?);
        ip(&["netns", "del", name])?;
    }
    drop(watcher);
    // Every sample, in ms, for whoever wants to merge runs.
    let ms = |v: &[Duration]| -> Vec<String> {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64() * 1e3))
            .collect()
    };
    for (k, v) in [
        ("new_ns", &new_ns),
        ("each", &known),
        ("both", &known_both),
        ("together", &together),
    ] {
        eprintln!("RAW {k} {}", ms(v).join(" "));
    }
    println!(
        "attach latency ({what}), {} UTC, kernel {}",
        utc_now(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  new namespace (`ip netns add` → lo attached):        {}",
        percentiles(&mut new_ns)
    );
    println!(
        "  device in an attached namespace (`ip link add` → each end): {}",
        percentiles(&mut known)
    );
    println!(
        "  veth pair in an attached namespace (`ip link add` → both ends): {}",
        percentiles(&mut known_both)
    );
    println!(
        "  namespace + veth at once (`ip link add` → lo and both ends): {}",
        percentiles(&mut together)
    );
    println!(
        "  breakdown, Attacher: namespace load {}",
        percentiles(&mut loads)
    );
    println!(
        "  breakdown, Attacher: first device's links {}",
        percentiles(&mut firsts)
    );
    println!(
        "  breakdown, watcher: `ip netns add` → NamespaceAdded {}",
        percentiles(&mut disc_ns)
    );
    println!(
        "  breakdown, watcher: `ip netns add` → DeviceAdded lo {}",
        percentiles(&mut disc_lo)
    );
    println!(
        "  breakdown, watcher: `ip link add` → DeviceAdded v0 {}",
        percentiles(&mut disc_dev)
    );
    Ok(())
}
