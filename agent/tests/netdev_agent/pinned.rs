//! Pinned XDP and TCX links: they count on after SIGKILL, resist `xdp off` from inside the namespace, and a restarted agent adopts them and reports totals across both runs.

use super::*;

/// Removes a receiver's pins (and so its pinned links) on drop.
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The pinned counters of the namespace with `inode` under `root`: udp packets on `ifindex`
/// at `hook` (1 XDP, 2 TC) in `direction` (0 ingress, 1 egress), summed over CPUs.
fn pinned_udp_packets(root: &Path, inode: &str, ifindex: u32, hook: u8, direction: u8) -> u64 {
    // Pinned by the namespace, and counted in the receiver's one counters map.
    let held = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{inode}-"))
        });
    assert!(
        held,
        "no pins of namespace {inode} under {}",
        root.display()
    );
    let inode: u32 = inode.parse().expect("an inode number");
    let map = root.join("maps/periscope_counters");
    let dump = bpftool_json(&["map", "dump", "pinned", map.to_str().expect("utf-8")]);
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .filter_map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .collect()
    };
    let mut total = 0;
    for entry in dump.as_array().into_iter().flatten() {
        // struct periscope_dev_key: u64 cookie, u32 inode, u32 ifindex, u8 direction, hook,
        // l4_proto; struct periscope_dev_counters: u64 packets, bytes, records_lost.
        let key = bytes(&entry["key"]);
        if key.len() < 19 {
            continue;
        }
        let k_inode = u32::from_le_bytes(key[8..12].try_into().expect("4 bytes"));
        let k_ifindex = u32::from_le_bytes(key[12..16].try_into().expect("4 bytes"));
        if k_inode != inode
            || k_ifindex != ifindex
            || key[16] != direction
            || key[17] != hook
            || key[18] != 17
        {
            continue;
        }
        for cpu in entry["values"].as_array().into_iter().flatten() {
            let v = bytes(&cpu["value"]);
            if v.len() >= 8 {
                total += u64::from_le_bytes(v[0..8].try_into().expect("8 bytes"));
            }
        }
    }
    total
}

#[test]
fn pinned_links_keep_counting_after_sigkill_resist_detach_and_are_adopted() {
    let Some(_serial) = SERIAL.lock_if(ready(
        "pinned_links_keep_counting_after_sigkill_resist_detach_and_are_adopted",
    )) else {
        return;
    };
    let dir = TestDir::new("netdev-pin");
    let pods = Pods::new();
    let (a, b) = (pods.a.name(), pods.b.name());
    let pid = std::process::id();
    let (xdp_id, tcx_id) = (format!("xdp/it{pid}"), format!("tcx/it{pid}"));
    let xdp_root = Path::new("/sys/fs/bpf/periscope").join(xdp_id.replace('/', "_"));
    let tcx_root = Path::new("/sys/fs/bpf/periscope").join(tcx_id.replace('/', "_"));
    let pins = Pins(vec![xdp_root.clone(), tcx_root.clone()]);
    // XDP counts ingress and TCX egress: each packet is counted once per device.
    let receivers = format!(
        "  {xdp_id}:\n    namespaces: [{a}, {b}]\n    pin: true\n    events: none\n    counters_interval: 100ms\n\
         \x20 {tcx_id}:\n    namespaces: [{a}, {b}]\n    direction: [egress]\n    pin: true\n    events: none\n    counters_interval: 100ms\n"
    );
    let pipeline = format!("{xdp_id}, {tcx_id}");
    let (config1, out1) = agent_config(&dir, "pin-1", &receivers, &pipeline);
    let (config2, out2) = agent_config(&dir, "pin-2", &receivers, &pipeline);
    let (ia, ib) = (inode(&pods.a), inode(&pods.b));
    let want = [
        ("pa0", "transmit", ia.as_str()),
        ("pb0", "receive", ib.as_str()),
    ];
    let baseline = periscope_programs().last().copied().unwrap_or(0);

    let mut first = start_agent(&config1, "periscope run (pinned, first)");
    wait_attached(&mut first, &out1, a, B_ADDR, &want);
    let size = 80usize;
    let (n1, _) = udp(a, A_ADDR, b, B_ADDR, 200, size);
    let links_before = new_periscope_links(baseline);
    let killed = stop(first, libc::SIGKILL);
    assert!(!killed.status.success());

    // The agent is gone: the pinned links keep counting.
    let (n2, _) = udp(a, A_ADDR, b, B_ADDR, 300, size);
    let pb0 = pods.b.ifindex("pb0");
    let pa0 = pods.a.ifindex("pa0");
    let in_kernel = pinned_udp_packets(&xdp_root, &ib, pb0, 1, 0);
    assert_eq!(
        in_kernel,
        n1 + n2,
        "pinned XDP counters of pb0 after SIGKILL"
    );
    let egress = pinned_udp_packets(&tcx_root, &ia, pa0, 2, 1);
    assert_eq!(
        egress,
        n1 + n2,
        "pinned TCX egress counters of pa0 after SIGKILL"
    );

    // Root inside the namespace cannot remove the pinned XDP link.
    let off = output_with_timeout(
        Command::new("ip").args([
            "netns", "exec", b, "ip", "link", "set", "dev", "pb0", "xdp", "off",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        !off.status.success(),
        "`ip link set dev pb0 xdp off` must fail on a pinned XDP link"
    );
    eprintln!(
        "pinned: after SIGKILL {} more datagrams counted in the pinned maps; `xdp off` refused: {}",
        n2,
        String::from_utf8_lossy(&off.stderr).trim()
    );

    // A restarted agent adopts: the same programs, one link per hook, no new ones.
    let mut second = start_agent(&config2, "periscope run (pinned, restarted)");
    wait_attached(&mut second, &out2, a, B_ADDR, &want);
    let links_after = new_periscope_links(baseline);
    assert_eq!(
        links_after, links_before,
        "links by program before the kill and after the restart (prog id → links)"
    );
    assert!(
        links_after.values().all(|&k| k <= 2),
        "a program with more links than its namespace has devices: {links_after:?}"
    );
    let (n3, _) = udp(a, A_ADDR, b, B_ADDR, 100, size);
    let ended = stop_agent(second, STOP_TIMEOUT);
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(
        stderr.contains("adopted"),
        "the restarted agent says nothing of adoption:\n{stderr}"
    );
    let packets = totals(&series_now(&out2, "periscope.network.packets"));
    let total = (n1 + n2 + n3) as i64;
    assert_eq!(
        get(&packets, "pb0", "receive", "udp", &ib),
        total,
        "{packets:#?}"
    );
    assert_eq!(
        get(&packets, "pa0", "transmit", "udp", &ia),
        total,
        "{packets:#?}"
    );
    // Pinned: a clean stop leaves the links attached.
    assert_eq!(new_periscope_links(baseline), links_before);
    eprintln!(
        "pinned: restarted agent adopted {} links and reported {total} datagrams across both runs",
        links_before.values().sum::<usize>()
    );

    // Removing the pins releases everything.
    drop(pins);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !new_periscope_links(baseline).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        new_periscope_links(baseline).is_empty(),
        "links left after the pins were removed"
    );
}
