//! Pinned links outlive a killed agent, resist detaching from inside the namespace, and are adopted by the next one.

use super::*;

const CHILD_NETNS: &str = "PERISCOPE_TEST_CHILD_NETNS";
const CHILD_ID: &str = "PERISCOPE_TEST_CHILD_ID";

/// Not a test of its own: the agent that `pinned_links_keep_counting_resist_detach_and_are_adopted`
/// runs in a child process and kills. Without the environment it sets, it does nothing.
#[test]
fn pinned_receiver_child() {
    let (Some(netns), Some(id)) = (std::env::var_os(CHILD_NETNS), std::env::var_os(CHILD_ID))
    else {
        return;
    };
    let netns = netns.to_string_lossy().into_owned();
    let id = id.to_string_lossy().into_owned();
    let running = Running::start_with(
        |ctx| {
            XdpConfig {
                pin: true,
                namespaces: periscope_receivers::netdev::NamespacesConfig::Listed(vec![
                    netns.clone()
                ]),
                ..XdpConfig::default()
            }
            .build_receiver(ctx)
        },
        &id,
        false,
    );
    // Not ours to delete: forget the handle.
    let ns = std::mem::ManuallyDrop::new(Netns::adopt(&netns));
    let n = namespace(&ns);
    for d in devices(&ns) {
        running.wait_for(n.id, d.ifindex);
    }
    println!("CHILD ATTACHED");
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn pinned_links_keep_counting_resist_detach_and_are_adopted() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "pinned_links_keep_counting_resist_detach_and_are_adopted",
    )) else {
        return;
    };
    let topo = Topology::new();
    let id = format!("xdp/pin{}", std::process::id());
    let pin_root = PathBuf::from("/sys/fs/bpf/periscope").join(id.replace('/', "_"));
    struct RemovePins(PathBuf);
    impl Drop for RemovePins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemovePins(pin_root.clone());
    let config = XdpConfig {
        pin: true,
        counters_interval: periscope_pipeline::config::ConfigDuration::from_millis(200),
        ..XdpConfig::default()
    };
    // The first agent runs in a child process (this test binary, running
    // `pinned_receiver_child`), attaches through its own namespace watcher, and is killed
    // with SIGKILL: nothing of it runs any cleanup.
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "pinning::pinned_receiver_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_NETNS, topo.pod2.name())
        .env(CHILD_ID, &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child receiver");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut out = child.stdout.take().expect("child stdout");
    let mut child = Kill(child);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while !seen.contains("CHILD ATTACHED") {
        assert!(
            Instant::now() < deadline,
            "child receiver never attached: {seen}"
        );
        match out.read(&mut buf) {
            Ok(0) => panic!("child receiver exited: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("child stdout: {e}"),
        }
    }
    let pod2 = namespace(&topo.pod2);
    let dir = pin_root.join(format!("{}-{}", pod2.id.inode, pod2.id.cookie));
    let eth0 = device(&topo.pod2, "eth0");
    let link_pin = dir.join(format!("link-xdp-{}", eth0.ifindex));
    assert!(link_pin.exists(), "{} pinned", link_pin.display());
    assert_eq!(udp(&topo, 50, 100), 50);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
    let _ = child.0.wait();

    // Traffic keeps being counted in the pinned maps.
    assert_eq!(udp(&topo, 70, 100), 70);
    let pinned_udp = {
        use aya::maps::{Map, MapData, PerCpuHashMap};
        use periscope_receivers::shared::ebpf::{DevCounters, DevKey};
        // One counters map for every namespace of the receiver, keyed by namespace.
        let data = MapData::from_pin(pin_root.join("maps/periscope_counters")).expect("pinned map");
        let map: PerCpuHashMap<MapData, DevKey, DevCounters> =
            PerCpuHashMap::try_from(Map::from_map_data(data).expect("map")).expect("counters");
        map.iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| {
                k.netns_cookie == pod2.id.cookie
                    && k.ifindex == eth0.ifindex
                    && k.l4_proto == 17
                    && k.direction == 0
            })
            .map(|(_, v)| v.iter().map(|c| c.packets).sum::<u64>())
            .sum::<u64>()
    };
    assert_eq!(
        pinned_udp, 120,
        "50 with the agent + 70 after SIGKILL, in the pinned map"
    );

    // Root inside the namespace cannot remove it.
    let off = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.pod2.name(),
            "ip",
            "link",
            "set",
            "dev",
            "eth0",
            "xdp",
            "off",
        ])
        .output()
        .expect("ip");
    assert!(
        !off.status.success(),
        "`ip link set dev eth0 xdp off` must fail on a pinned XDP link"
    );

    // A restarted receiver adopts the links: one periscope XDP link on the device, not two.
    let prog_id = bpftool_json(&[
        "prog",
        "show",
        "pinned",
        dir.join("prog-xdp").to_str().unwrap(),
    ])["id"]
        .as_u64()
        .expect("pinned program id");
    let links_before: Vec<_> = links().into_iter().filter(|(_, p)| *p == prog_id).collect();
    // Pins of a namespace that vanished while no agent ran are removed by the next one.
    let stale = pin_root.join("4026500000-12345");
    std::fs::create_dir_all(&stale).expect("stale pin dir");
    let second = Running::start(|ctx| config.build_receiver(ctx), &id);
    second.add(&topo.pod2);
    assert_eq!(udp(&topo, 30, 100), 30);
    std::thread::sleep(Duration::from_millis(300));
    let all_links = links();
    let xdp_links_on_ours: Vec<_> = all_links.iter().filter(|(_, p)| *p == prog_id).collect();
    let periscope = periscope_programs();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stale.exists() {
        assert!(Instant::now() < deadline, "stale pins never swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A namespace that goes away: its pins go too (its last counters are sent first).
    second
        .discovery
        .send(Discovery::NamespaceRemoved(pod2.id))
        .expect("receiver gone");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "pins of a removed namespace stay"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let events = second.stop();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !periscope_programs().contains(&prog_id),
        "the pinned program is gone with its pins and links"
    );
    // One link per device of pod2 (lo, eth0), before and after the restart.
    let devices = devices(&topo.pod2).len();
    assert_eq!(
        links_before.len(),
        devices,
        "one XDP link per device: {links_before:?}"
    );
    assert_eq!(
        xdp_links_on_ours.len(),
        devices,
        "still one per device after adoption: {all_links:?}"
    );
    // No second XDP program attached by the restarted receiver on that device: the only new
    // periscope programs would be a fresh load, which adoption does not do.
    let c = last_counters(&events);
    let (p, _) = c
        .get(&(
            DeviceRef {
                netns: pod2.id,
                ifindex: eth0.ifindex,
            },
            Direction::Ingress,
            Transport::Udp,
        ))
        .map(|c| (c.packets, c.bytes))
        .expect("counters after adoption");
    assert_eq!(
        p, 150,
        "50 + 70 while no agent ran + 30, all counted by the pinned link"
    );
    eprintln!(
        "pinned: counted across a restart ({p} UDP packets), `xdp off` refused, link adopted \
         (program {prog_id}, {} periscope programs loaded)",
        periscope.len()
    );
}
