//! periscope in a Docker container watching other Docker containers (issue 15).
//!
//! The agent runs from an image made of the test's periscope binary on a local Debian base
//! (no registry here: the base is `debootstrap --variant=minbase` + python3, imported once and
//! cached under [`BASE_IMAGE`]), with the demo's settings: `pid: host`, `network: host`, the
//! demo's mounts. Two containers of the base image on a user-defined network (10.231.x) send
//! UDP datagrams one way; the packets on the sender's and the receiver's `eth0` and on their
//! host-side veths must equal what the generator sent, the containers' series must carry
//! `container.name` and `container.image.name` of the real Docker state, and no device may be
//! named `if<N>`. Then churn: a container counted and removed at once (its final points under
//! its name), the next one counted on its own, the sender restarted into a new namespace; each
//! count again equals the generator's. Once privileged as in the demo (where the sandbox's
//! runc refuses `--privileged` because its bounding set lacks a capability, every capability
//! the machine has, unconfined), once with the Kubernetes DaemonSet's capabilities only
//! (cap_drop ALL, cap_add SYS_ADMIN + SYS_PTRACE, AppArmor and seccomp unconfined as there).
//!
//! Needs root, Docker and debootstrap; skips otherwise, except under CI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use periscope_testkit::otlp::metrics::Series;
use periscope_testkit::otlp::{read_metrics, sum_series};
use periscope_testkit::process::output_with_timeout;
use periscope_testkit::serial::Serial;
use periscope_testkit::{bpf_capable, require_tools, yaml_path, TestDir};

/// The local Debian base image, built once per machine (CI run) and reused.
const BASE_IMAGE: &str = "periscope-test-base:bookworm-python3";
const DATAGRAMS: i64 = 300;
/// What the removed container, the one after it, and the restarted sender send in the churn.
const GONE: i64 = 120;
const NEXT: i64 = 70;
const AGAIN: i64 = 50;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = output_with_timeout(Command::new("docker").args(args), Duration::from_secs(300));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The Debian mirror apt uses on this machine (the one reachable here).
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    for p in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        texts.push(std::fs::read_to_string(p).unwrap_or_default());
    }
    for t in texts {
        for line in t.lines() {
            let line = line.trim();
            let url = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
            });
            if let Some(u) = url {
                if !u.contains("security") {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Builds [`BASE_IMAGE`] with debootstrap unless it exists.
fn base_image() {
    if docker(&["image", "inspect", BASE_IMAGE]).is_ok() {
        return;
    }
    let dir = TestDir::new("docker_base");
    let root = dir.join("root");
    let out = output_with_timeout(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=python3", "bookworm"])
            .arg(&root)
            .arg(debian_mirror()),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "debootstrap failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_with_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "tar -C '{}' -c . | docker import - {BASE_IMAGE}",
            root.display()
        )),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes what a test made, even when it fails.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for i in &self.images {
            let _ = docker(&["image", "rm", "-f", i]);
        }
    }
}

/// An image with the test's periscope binary on the local base.
fn agent_image(dir: &TestDir, tag: &str) {
    let ctx = dir.join("agent-image");
    std::fs::create_dir_all(&ctx).expect("mkdir agent-image");
    std::fs::copy(env!("CARGO_BIN_EXE_periscope"), ctx.join("periscope")).expect("copy periscope");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\nCOPY periscope /usr/local/bin/periscope\nENTRYPOINT [\"periscope\"]\n"
        ),
    )
    .expect("write Dockerfile");
    docker_ok(&["build", "-q", "-t", tag, ctx.to_str().expect("utf-8 path")]);
}

fn agent_config(out_dir: &Path) -> String {
    format!(
        "receivers:\n  tcx: {{namespaces: all, direction: [ingress, egress], events: none, counters_interval: 250ms}}\n\
         processors:\n  flow: {{interval: 1s}}\n  identity: {{}}\n\
         exporters:\n  file: {{path: {}, flush_interval: 200ms}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow, identity], exporters: [file]}}\n  \
         telemetry: {{logs: {{level: 'info,periscope_receivers=debug'}}, metrics: {{enabled: false}}}}\n",
        yaml_path(&out_dir.join("metrics.jsonl"))
    )
}

/// How the agent's container gets its privileges.
#[derive(Clone, Copy, Debug)]
enum Privileges {
    /// As demo/docker-compose.yml: `privileged: true`.
    Privileged,
    /// As deploy/kubernetes: cap_drop ALL, cap_add SYS_ADMIN, SYS_PTRACE.
    DaemonSet,
}

/// Waits until the agent's metrics show `container`'s devices in at least `namespaces`
/// network namespaces (nudging each with a datagram on its `lo`).
fn wait_seen(test: &str, metrics: &Path, agent: &str, container: &str, namespaces: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: std::collections::BTreeSet<String> = if metrics.exists() {
            sum_series(&read_metrics(metrics), "periscope.network.packets")
                .iter()
                .filter(|s| s.attr("container.name") == Some(container))
                .filter_map(|s| s.attr("periscope.netns.cookie").map(str::to_string))
                .collect()
        } else {
            Default::default()
        };
        if seen.len() >= namespaces {
            return;
        }
        if Instant::now() > deadline {
            let log = output_with_timeout(
                Command::new("docker").args(["logs", agent]),
                Duration::from_secs(10),
            );
            // Which namespace it was in (inode), to find it in the agent's log.
            let inode = docker(&["inspect", "-f", "{{.State.Pid}}", container])
                .ok()
                .and_then(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            panic!(
                "{test}: the agent did not report {container}'s devices (netns inode {inode:?}) in \
                 {namespaces} namespaces within 90 s (saw {seen:?}); its log:\n{}{}",
                String::from_utf8_lossy(&log.stdout),
                String::from_utf8_lossy(&log.stderr)
            );
        }
        let _ = docker(&[
            "exec",
            container,
            "python3",
            "-c",
            "import socket;socket.socket(2,2).sendto(b'x',('127.0.0.1',9))",
        ]);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `from` sends `n` UDP datagrams to the receiver (the generator's count is `n`).
fn send(from: &str, to_ip: &str, n: i64) {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({n}): s.sendto(b'periscope'*10,('{to_ip}',9999))\n"
    );
    docker_ok(&["exec", from, "python3", "-c", &code]);
}

/// Whether this machine's Docker can start a privileged container at all.
fn privileged_works() -> bool {
    docker(&["run", "--rm", "--privileged", BASE_IMAGE, "true"]).is_ok()
}

/// Capability names by number (capability.h), for the ones a sandbox may lack.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `docker run` flags for every capability in this process's bounding set, unconfined.
fn privileged_equivalent() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("CapBnd in /proc/self/status");
    let mut flags = vec!["--cap-add=ALL".to_string()];
    for (bit, name) in CAPS.iter().enumerate() {
        if bnd & (1 << bit) == 0 {
            flags.push(format!("--cap-drop={name}"));
        }
    }
    flags.push("--security-opt=apparmor=unconfined".into());
    flags.push("--security-opt=seccomp=unconfined".into());
    flags
}

/// The host-side veth of `container`'s eth0 (its peer's ifindex, looked up on the host).
fn host_veth(container: &str) -> String {
    let idx = docker_ok(&["exec", container, "cat", "/sys/class/net/eth0/iflink"]);
    let idx: u32 = idx
        .parse()
        .unwrap_or_else(|e| panic!("iflink {idx:?}: {e}"));
    for e in std::fs::read_dir("/sys/class/net").expect("/sys/class/net") {
        let e = e.expect("entry");
        let p = e.path().join("ifindex");
        if std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(idx)
        {
            return e.file_name().to_string_lossy().into_owned();
        }
    }
    panic!("no host device with ifindex {idx} (the peer of {container}'s eth0)");
}

/// UDP packets in `direction` on `dev`, of series matching `filter`.
fn udp(series: &[Series], dev: &str, direction: &str, filter: impl Fn(&Series) -> bool) -> i64 {
    series
        .iter()
        .filter(|s| {
            s.attr("network.interface.name") == Some(dev)
                && s.attr("network.io.direction") == Some(direction)
                && s.attr("network.transport") == Some("udp")
                && filter(s)
        })
        .map(|s| s.value)
        .sum()
}

static SERIAL: Serial = Serial::new();

fn run(test: &str, privileges: Privileges, subnet: u8) {
    let Some(_serial) =
        SERIAL.lock_if(bpf_capable(test) && require_tools(test, &["docker", "debootstrap", "ip"]))
    else {
        return;
    };
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        periscope_testkit::skip(test, &format!("no Docker engine: {e}"));
        return;
    }
    base_image();
    let dir = TestDir::new(test);
    let mut clean = Cleanup::default();
    let tag = format!("periscope-test-agent:{}-{subnet}", std::process::id());
    clean.images.push(tag.clone());
    agent_image(&dir, &tag);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("mkdir out");
    let cfg = dir.write("agent.yaml", agent_config(&out));
    let suffix = format!("{}-{subnet}", std::process::id());
    let net = format!("pscope-net-{suffix}");
    let (agent, sender, receiver) = (
        format!("pscope-agent-{suffix}"),
        format!("pscope-sender-{suffix}"),
        format!("pscope-receiver-{suffix}"),
    );
    for c in [&agent, &sender, &receiver] {
        let _ = docker(&["rm", "-f", c]);
        clean.containers.push(c.clone());
    }
    let _ = docker(&["network", "rm", &net]);
    clean.networks.push(net.clone());
    docker_ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.{subnet}.0.0/24"),
        &net,
    ]);

    // The agent, with the demo's namespaces and mounts.
    let cfg_mount = format!("{}:/etc/periscope/config.yaml:ro", cfg.display());
    let out_mount = format!("{0}:{0}", out.display());
    let mut args: Vec<&str> = vec![
        "run",
        "-d",
        "--name",
        &agent,
        "--pid=host",
        "--network=host",
        "-v",
        "/sys/fs/bpf:/sys/fs/bpf",
        "-v",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "-v",
        "/run/netns:/run/netns:rslave",
        "-v",
        "/var/lib/docker/containers:/var/lib/docker/containers:ro",
        "-v",
        &cfg_mount,
        "-v",
        &out_mount,
    ];
    let all_caps;
    match privileges {
        Privileges::Privileged if privileged_works() => args.push("--privileged"),
        Privileges::Privileged => {
            // A sandbox whose bounding set lacks a capability refuses `--privileged` (runc
            // cannot grant it): the nearest is every capability this machine has, unconfined.
            all_caps = privileged_equivalent();
            eprintln!("{test}: --privileged is refused here; running with {all_caps:?}");
            args.extend(all_caps.iter().map(String::as_str));
        }
        Privileges::DaemonSet => args.extend([
            "--cap-drop=ALL",
            "--cap-add=SYS_ADMIN",
            "--cap-add=SYS_PTRACE",
            "--security-opt=apparmor=unconfined",
            "--security-opt=seccomp=unconfined",
        ]),
    }
    args.extend([tag.as_str(), "run", "-c", "/etc/periscope/config.yaml"]);
    // `rslave` needs /run/netns to be a shared mount: `ip netns add` makes it one.
    let probe = format!("pscope-probe-{suffix}");
    let _ = Command::new("ip").args(["netns", "add", &probe]).status();
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    docker_ok(&args);

    // Receiver reads datagrams; the sender sends them once the agent counts.
    docker_ok(&[
        "run", "-d", "--name", &receiver, "--network", &net, BASE_IMAGE, "python3", "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('',9999))\nwhile True: s.recv(4096)",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &sender,
        "--network",
        &net,
        BASE_IMAGE,
        "sleep",
        "3600",
    ]);
    let receiver_ip = docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &receiver,
    ]);
    let (sender_veth, receiver_veth) = (host_veth(&sender), host_veth(&receiver));

    // Ready when the agent's file shows the sender's namespace (found via /proc).
    let metrics = out.join("metrics.jsonl");
    wait_seen(test, &metrics, &agent, &sender, 1);

    send(&sender, &receiver_ip, DATAGRAMS);
    // Semantic conventions: `container.image.name` is the name without its tag.
    let image = BASE_IMAGE.split(':').next().unwrap_or(BASE_IMAGE);
    let want = [
        (sender.as_str(), "eth0", "transmit", true, DATAGRAMS),
        (sender_veth.as_str(), "", "receive", false, DATAGRAMS),
        (receiver_veth.as_str(), "", "transmit", false, DATAGRAMS),
        (receiver.as_str(), "eth0", "receive", true, DATAGRAMS),
    ];
    let series = expect(test, privileges, "two containers", &metrics, &want);
    for c in [&sender, &receiver] {
        let images: Vec<_> = series
            .iter()
            .filter(|s| s.attr("container.name") == Some(c.as_str()))
            .map(|s| s.attr("container.image.name").unwrap_or("").to_string())
            .collect();
        assert!(
            !images.is_empty() && images.iter().all(|i| i == image),
            "{test}: {c}'s series carry images {images:?}, want {image}"
        );
    }
    let if_n = if_n_names(&series);
    assert!(
        if_n.is_empty(),
        "{test}: devices without their names: {if_n:?}"
    );
    // A host-side veth is named after the container it serves, on every point of its series.
    for (veth, c) in [(&sender_veth, &sender), (&receiver_veth, &receiver)] {
        let peers: Vec<Option<&str>> = series
            .iter()
            .filter(|s| {
                s.attr("network.interface.name") == Some(veth.as_str())
                    && s.attr("network.transport") == Some("udp")
            })
            .map(|s| s.attr("periscope.peer.container.name"))
            .collect();
        assert!(
            !peers.is_empty() && peers.iter().all(|p| *p == Some(c.as_str())),
            "{test}: {veth}'s udp series carry periscope.peer.container.name {peers:?}, want {c}"
        );
    }

    // Churn: a container counted and removed at once (its final points under its name), the
    // next one (which may get its address) counted on its own, the sender restarted into a new
    // namespace (its counts add up across both).
    let (gone, next) = (
        format!("pscope-gone-{suffix}"),
        format!("pscope-next-{suffix}"),
    );
    for c in [&gone, &next] {
        let _ = docker(&["rm", "-f", c]);
        clean.containers.push(c.clone());
    }
    let sleeper = |name: &str| {
        docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &net,
            BASE_IMAGE,
            "sleep",
            "3600",
        ]);
    };
    sleeper(&gone);
    wait_seen(test, &metrics, &agent, &gone, 1);
    send(&gone, &receiver_ip, GONE);
    docker_ok(&["rm", "-f", &gone]);
    sleeper(&next);
    wait_seen(test, &metrics, &agent, &next, 1);
    send(&next, &receiver_ip, NEXT);
    docker_ok(&["restart", "-t", "0", &sender]);
    wait_seen(test, &metrics, &agent, &sender, 2);
    send(&sender, &receiver_ip, AGAIN);
    let all = DATAGRAMS + GONE + NEXT + AGAIN;
    let want = [
        (gone.as_str(), "eth0", "transmit", true, GONE),
        (next.as_str(), "eth0", "transmit", true, NEXT),
        (sender.as_str(), "eth0", "transmit", true, DATAGRAMS + AGAIN),
        (receiver_veth.as_str(), "", "transmit", false, all),
        (receiver.as_str(), "eth0", "receive", true, all),
    ];
    let series = expect(test, privileges, "after rm, run, restart", &metrics, &want);
    let if_n = if_n_names(&series);
    assert!(
        if_n.is_empty(),
        "{test}: devices without their names after churn: {if_n:?}"
    );
}

/// Polls the agent's file until the UDP packets of each (container or host device, device,
/// direction, in a container, want) match, or 30 s pass; prints the table, asserts.
fn expect(
    test: &str,
    privileges: Privileges,
    phase: &str,
    metrics: &Path,
    want: &[(&str, &str, &str, bool, i64)],
) -> Vec<Series> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let series = sum_series(&read_metrics(metrics), "periscope.network.packets");
        let mut table = String::new();
        let mut ok = true;
        for &(who, dev, dir, in_container, n) in want {
            let got = if in_container {
                udp(&series, dev, dir, |s| s.attr("container.name") == Some(who))
            } else {
                udp(&series, who, dir, |s| s.attr("container.name").is_none())
            };
            ok &= got == n;
            table += &format!("  {who:<28} {dev:<5} {dir:<8} udp: generator {n}, agent {got}\n");
        }
        if ok || Instant::now() > deadline {
            eprintln!("{test} ({privileges:?}, {phase}):\n{table}");
            assert!(
                ok,
                "{test}: {phase}: UDP packets differ from the generator's:\n{table}"
            );
            return series;
        }
    }
}

/// Device names the agent could not resolve (`if<N>`).
fn if_n_names(series: &[Series]) -> Vec<String> {
    series
        .iter()
        .filter_map(|s| s.attr("network.interface.name"))
        .filter(|n| {
            n.strip_prefix("if")
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn agent_container_privileged_counts_other_containers() {
    run(periscope_testkit::test_name!(), Privileges::Privileged, 231);
}

#[test]
fn agent_container_with_daemonset_capabilities_counts_other_containers() {
    run(periscope_testkit::test_name!(), Privileges::DaemonSet, 232);
}

/// The docker-compose demo end to end: `demo/docker-compose.yml` with an override that builds
/// its images from the local base (the agent from the test's binary, Prometheus from the
/// host's Debian `prometheus`), puts a sleeping container where Jaeger was and sends the
/// agent's spans to the testkit's OTLP sink on the host. The frontend's calls to the backend
/// must arrive as connection spans from both sides: the client's with the frontend's
/// `container.name` and the backend's DNS name, the server's (port 8080) with the backend's
/// `container.name` and namespace name; Prometheus must return per-container traffic.
#[test]
fn compose_demo_end_to_end() {
    let test = periscope_testkit::test_name!();
    let Some(_serial) = SERIAL.lock_if(
        bpf_capable(test)
            && require_tools(
                test,
                &[
                    "docker",
                    "docker-compose",
                    "debootstrap",
                    "ip",
                    "prometheus",
                ],
            ),
    ) else {
        return;
    };
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        periscope_testkit::skip(test, &format!("no Docker engine: {e}"));
        return;
    }
    base_image();
    let dir = TestDir::new(test);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let project = format!("pscope-demo-{}", std::process::id());
    let compose = |args: &[&str]| -> Result<String, String> {
        let out = output_with_timeout(
            Command::new("docker-compose")
                .arg("-p")
                .arg(&project)
                .arg("-f")
                .arg(repo.join("demo/docker-compose.yml"))
                .arg("-f")
                .arg(dir.join("override.yml"))
                .args(args),
            Duration::from_secs(300),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "docker-compose {}: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    /// Takes the project down and removes the images it built (tagged, so `--rmi local`
    /// would keep them; `--rmi all` would take the shared base too).
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Result<String, String>, Vec<String>);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-v", "-t", "0"]);
            for image in &self.1 {
                let _ = docker(&["image", "rm", "-f", image]);
            }
        }
    }

    let sink = periscope_testkit::otlp::Sink::start(periscope_testkit::otlp::free_port());
    let prom_port = periscope_testkit::otlp::free_port();
    // The demo's config, its spans to the sink, its intervals short.
    let cfg = std::fs::read_to_string(repo.join("demo/periscope.yaml")).expect("demo config");
    let cfg = cfg
        .replace(
            "http://127.0.0.1:4317",
            &format!("http://127.0.0.1:{}", sink.port),
        )
        .replace("interval: 10s", "interval: 2s")
        .replace("report_open_after: 30s", "report_open_after: 2s");
    assert!(
        cfg.contains(&format!("127.0.0.1:{}", sink.port)),
        "the demo's otlp endpoint moved"
    );
    let cfg = dir.write("periscope.yaml", cfg);
    let agent_ctx = dir.join("agent-image");
    std::fs::create_dir_all(&agent_ctx).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_periscope"), agent_ctx.join("periscope")).expect("copy");
    std::fs::write(
        agent_ctx.join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCOPY periscope /usr/local/bin/periscope\nENTRYPOINT [\"periscope\"]\n"),
    )
    .expect("Dockerfile");
    let prom_ctx = dir.join("prometheus-image");
    std::fs::create_dir_all(&prom_ctx).expect("mkdir");
    std::fs::copy("/usr/bin/prometheus", prom_ctx.join("prometheus")).expect("copy prometheus");
    std::fs::write(
        prom_ctx.join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCOPY prometheus /usr/bin/prometheus\nENTRYPOINT [\"/usr/bin/prometheus\", \"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/tmp/prometheus\"]\n"),
    )
    .expect("Dockerfile");
    // The services' `python` (python:3.12-slim in the demo) from the base's python3.
    let svc_ctx = dir.join("python-image");
    std::fs::create_dir_all(&svc_ctx).expect("mkdir");
    std::fs::write(
        svc_ctx.join("Dockerfile"),
        format!("FROM {BASE_IMAGE}\nRUN ln -s /usr/bin/python3 /usr/local/bin/python\n"),
    )
    .expect("Dockerfile");
    let tag = |what: &str| format!("{project}-{what}:test");
    // Where runc cannot grant every capability, the demo's `privileged: true` is refused: the
    // nearest is every capability the machine has, unconfined (see `privileged_equivalent`).
    let privileges = if privileged_works() {
        String::new()
    } else {
        let flags = privileged_equivalent();
        let list = |prefix: &str| {
            flags
                .iter()
                .filter_map(|f| f.strip_prefix(prefix))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!("{test}: privileged is refused here; running with {flags:?}");
        format!(
            "    privileged: false\n    cap_add: [{}]\n    cap_drop: [{}]\n    security_opt: [{}]\n",
            list("--cap-add="),
            list("--cap-drop="),
            list("--security-opt=")
        )
    };
    let override_yml = format!(
        "version: \"3.8\"\n\
         services:\n\
         \x20 periscope:\n    build: {{context: {agent}}}\n    image: {agent_tag}\n\
         \x20   volumes: [\"{cfg}:/etc/periscope/config.yaml:ro\"]\n{privileges}\
         \x20 jaeger:\n    image: {BASE_IMAGE}\n    entrypoint: [sleep, infinity]\n\
         \x20 prometheus:\n    build: {{context: {prom}}}\n    image: {prom_tag}\n\
         \x20   command: [\"--web.listen-address=127.0.0.1:{prom_port}\"]\n\
         \x20 backend:\n    build: {{context: {svc}}}\n    image: {svc_tag}\n\
         \x20 frontend:\n    build: {{context: {svc}}}\n    image: {svc_tag}\n\
         networks:\n  default:\n    ipam:\n      config: [{{subnet: 10.233.0.0/24}}]\n",
        agent = agent_ctx.display(),
        agent_tag = tag("agent"),
        cfg = cfg.display(),
        prom = prom_ctx.display(),
        prom_tag = tag("prometheus"),
        svc = svc_ctx.display(),
        svc_tag = tag("python"),
    );
    dir.write("override.yml", override_yml);
    let _ = compose(&["down", "-v", "-t", "0"]);
    let _down = Down(
        &compose,
        ["agent", "prometheus", "python"].map(tag).to_vec(),
    );
    compose(&["build", "-q"]).unwrap_or_else(|e| panic!("{e}"));
    compose(&["up", "-d"]).unwrap_or_else(|e| panic!("{e}"));
    let name = |svc: &str| {
        let id = compose(&["ps", "-q", svc]).unwrap_or_else(|e| panic!("{e}"));
        docker_ok(&["inspect", "-f", "{{.Name}}", id.trim()])
            .trim_start_matches('/')
            .to_string()
    };
    let (frontend, backend) = (name("frontend"), name("backend"));

    // Spans of the frontend's connections, named after the backend; and the backend's side.
    let ok = sink.wait_for(Duration::from_secs(120), |r| {
        let spans = r.all_spans();
        let attr = |rs: &opentelemetry_proto::tonic::trace::v1::ResourceSpans,
                    sp: &opentelemetry_proto::tonic::trace::v1::Span,
                    k: &str| {
            periscope_testkit::otlp::sink::str_attr(&sp.attributes, k).or_else(|| {
                rs.resource
                    .as_ref()
                    .and_then(|res| periscope_testkit::otlp::sink::str_attr(&res.attributes, k))
            })
        };
        let client = spans.iter().any(|(rs, sp)| {
            attr(rs, sp, "container.name").as_deref() == Some(frontend.as_str())
                && attr(rs, sp, "dns.question.name").as_deref() == Some("backend")
        });
        // The accepted side has no process (sockops runs in softirq) and, on a cgroup
        // v1/hybrid host, a cgroup id that does not resolve in the agent's container (no
        // unified hierarchy inside): it is named by its namespace's container.
        let server = spans.iter().any(|(rs, sp)| {
            attr(rs, sp, "periscope.connection.role").as_deref() == Some("server")
                && attr(rs, sp, "periscope.netns.name").as_deref() == Some(backend.as_str())
                && attr(rs, sp, "container.name").as_deref() == Some(backend.as_str())
                && attr(rs, sp, "network.local.port").as_deref() == Some("8080")
        });
        client && server
    });
    let summary = {
        let r = sink.received.lock().unwrap_or_else(|p| p.into_inner());
        let spans = r.all_spans();
        let mut seen = std::collections::BTreeSet::new();
        for (_, sp) in &spans {
            let a = |k: &str| {
                periscope_testkit::otlp::sink::str_attr(&sp.attributes, k).unwrap_or_default()
            };
            seen.insert(format!(
                "{} container.name={} dns.question.name={}",
                sp.name,
                a("container.name"),
                a("dns.question.name")
            ));
        }
        if let Some((_, sp)) = spans.iter().find(|(_, sp)| {
            periscope_testkit::otlp::sink::str_attr(&sp.attributes, "container.name").is_none()
        }) {
            let kv: Vec<String> = sp
                .attributes
                .iter()
                .map(|a| format!("{}={}", a.key, periscope_testkit::otlp::value_text(a)))
                .collect();
            seen.insert(format!("(unnamed) {}", kv.join(" ")));
        }
        format!(
            "{} spans; kinds:\n  {}",
            spans.len(),
            seen.into_iter().take(20).collect::<Vec<_>>().join("\n  ")
        )
    };
    eprintln!("{test}: {summary}");
    if !ok {
        let logs = compose(&["logs", "--tail", "40", "periscope"]).unwrap_or_else(|e| e);
        eprintln!("{test}: the agent's log:\n{logs}");
    }
    assert!(
        ok,
        "{test}: no client connection span from {frontend} named `backend` and server span in {backend} within 120 s: {summary}"
    );

    // Prometheus scraped the agent: per-container packets of the backend.
    let query = format!(
        "/api/v1/query?query={}",
        periscope_testkit::http::urlencode(&format!(
            "sum(periscope_network_packets_total{{container_name=\"{backend}\"}})"
        ))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body =
            std::panic::catch_unwind(|| periscope_testkit::http::http_get(prom_port, &query, None))
                .map(|(_, b)| b)
                .unwrap_or_default();
        if body.contains("\"result\":[{") {
            eprintln!("{test}: prometheus: {body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{test}: Prometheus returned no per-container packets of {backend} within 60 s: {body}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}
