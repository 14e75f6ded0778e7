//! `periscope doctor` probes the kernel; compared with what this machine is known to allow
//! when run as root (CI), and with what an unprivileged user lacks.

use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn doctor_probes_hooks_as_root() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root; this test must not skip there"
        );
        eprintln!("skipped: doctor_probes_hooks_as_root needs root to load probe programs");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .arg("doctor")
        .output()
        .expect("run periscope doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Any kernel periscope supports loads these; a probe that is broken says "no".
    for hook in [
        "kernel BTF",
        "ring buffer map",
        "xdp",
        "tc classifier",
        "sockops",
        "tracepoint",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(hook))
            .unwrap_or_else(|| panic!("no line for {hook}:\n{stdout}"));
        assert!(
            line.trim_end().ends_with("yes"),
            "{hook} should load as root: {line}"
        );
    }
    assert!(stdout.contains("CAP_BPF           yes"), "{stdout}");
}

#[test]
fn doctor_names_missing_capabilities_for_an_unprivileged_user() {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if !is_root() || setpriv.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root with util-linux; must not skip"
        );
        eprintln!("skipped: needs root and setpriv to become an unprivileged user");
        return;
    }
    let out = Command::new(setpriv.unwrap_or_default())
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_periscope"))
        .arg("doctor")
        .output()
        .expect("run periscope doctor as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("user id           65534"), "{stdout}");
    assert!(stdout.contains("CAP_BPF           MISSING"), "{stdout}");
    let xdp = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("xdp"))
        .expect("xdp line");
    assert!(xdp.contains("no: Operation not permitted"), "{xdp}");
}

#[test]
fn doctor_shows_how_the_socket_receivers_would_hook_the_kernel() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root; this test must not skip there"
        );
        eprintln!(
            "skipped: doctor_shows_how_the_socket_receivers_would_hook_the_kernel needs root"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("periscope-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("sockets.yaml");
    std::fs::write(
        &config,
        "receivers:\n  sockops: {}\n  tcp_udp: {}\n  sk_msg: {}\n  cgroup_skb: {}\n\
         processors:\n  connections: {}\n\
         exporters:\n  debug: {}\n\
         service:\n  pipelines:\n    metrics: {receivers: [sockops, tcp_udp, sk_msg, cgroup_skb], processors: [connections], exporters: [debug]}\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["doctor", "-c"])
        .arg(&config)
        .output()
        .expect("run periscope doctor");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for t in ["sockops", "tcp_udp", "sk_msg", "cgroup_skb"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(t) && l.contains(" ok (")),
            "{t} not reported as able to run:\n{stdout}"
        );
    }
    // The mechanism line agrees with the fentry probe.
    let fentry = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("fentry"))
        .unwrap_or_else(|| panic!("no fentry probe line:\n{stdout}"));
    if fentry.trim_end().ends_with("yes") {
        assert!(stdout.contains("mode auto uses fentry/fexit"), "{stdout}");
    } else {
        assert!(
            stdout.contains("mode auto falls back to tracepoints"),
            "{stdout}"
        );
    }
}
