//! The `xdp` and `tcx` configs: every option documented, YAML forms accepted, bad values
//! rejected by `validate` with the key that is wrong. No kernel needed.

use periscope_pipeline::component::ComponentConfig;
use periscope_pipeline::config::{de, yaml};
use periscope_receivers::netdev::{EventsMode, NamespacesConfig};
use periscope_receivers::shared::netns::NamespaceScope;
use periscope_receivers::tcx::{TcxConfig, TcxDirection};
use periscope_receivers::xdp::XdpConfig;
use periscope_testkit::component::undocumented;

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let node = yaml::parse(text).map_err(|e| e.message)?;
    de::from_node::<T>(&node, &[]).map_err(|e| format!("{e:?}"))
}

fn invalid_paths<C: ComponentConfig>(c: &C) -> Vec<String> {
    match c.validate() {
        Ok(()) => Vec::new(),
        Err(v) => v.into_iter().map(|i| i.path).collect(),
    }
}

#[test]
fn every_option_is_documented() {
    let xdp = schemars::schema_for!(XdpConfig);
    let tcx = schemars::schema_for!(TcxConfig);
    if std::env::var_os("SHOW_SCHEMAS").is_some() {
        eprintln!("{}", xdp.as_value());
        eprintln!("{}", tcx.as_value());
    }
    assert_eq!(undocumented(&xdp), Vec::<String>::new());
    assert_eq!(undocumented(&tcx), Vec::<String>::new());
}

#[test]
fn the_defaults_are_valid_and_observe_everything() {
    let x: XdpConfig = parse("{}").unwrap();
    assert_eq!(invalid_paths(&x), Vec::<String>::new());
    assert_eq!(x.namespaces.scope(), NamespaceScope::All);
    assert_eq!(x.events, EventsMode::All);
    assert!(!x.pin);
    let t: TcxConfig = parse("{}").unwrap();
    assert_eq!(invalid_paths(&t), Vec::<String>::new());
    assert_eq!(
        t.direction,
        vec![TcxDirection::Ingress, TcxDirection::Egress]
    );
}

#[test]
fn namespaces_take_all_a_list_or_a_cgroup() {
    let x: XdpConfig = parse("namespaces: all").unwrap();
    assert_eq!(x.namespaces, NamespacesConfig::default());
    let x: XdpConfig = parse("namespaces: [host, /run/netns/pod1]").unwrap();
    assert_eq!(
        x.namespaces.scope(),
        NamespaceScope::Listed(vec!["host".into(), "/run/netns/pod1".into()])
    );
    let x: XdpConfig = parse("namespaces: {cgroup: /sys/fs/cgroup/unified/k8s}").unwrap();
    assert_eq!(
        x.namespaces.scope(),
        NamespaceScope::Cgroup("/sys/fs/cgroup/unified/k8s".into())
    );
    assert!(parse::<XdpConfig>("namespaces: some").is_err());
    let x: XdpConfig = parse("namespaces: {cgroup: relative/path}").unwrap();
    assert_eq!(invalid_paths(&x), vec!["namespaces.cgroup"]);
    let x: XdpConfig = parse("namespaces: []").unwrap();
    assert_eq!(invalid_paths(&x), vec!["namespaces"]);
}

#[test]
fn unknown_keys_and_bad_values_are_rejected() {
    assert!(parse::<XdpConfig>("pinn: true").is_err());
    assert!(parse::<TcxConfig>("direction: [sideways]").is_err());
    assert!(parse::<XdpConfig>("interfaces: {includ: [eth0]}").is_err());
    let t: TcxConfig = parse("direction: []").unwrap();
    assert_eq!(invalid_paths(&t), vec!["direction"]);
    let x: XdpConfig = parse(
        "{events: sample, sample_rate: 1, ring_buffer_size: 5000, poll_interval: 0s, \
         counters_interval: 1ms, interfaces: {include: ['eth[']}}",
    )
    .unwrap();
    let mut paths = invalid_paths(&x);
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "counters_interval",
            "interfaces.include.0",
            "poll_interval",
            "ring_buffer_size",
            "sample_rate"
        ]
    );
}

#[test]
fn a_full_config_parses() {
    let t: TcxConfig = parse(
        "direction: [egress]\nnamespaces: all\ninterfaces: {include: ['veth*', eth0], exclude: [lo]}\n\
         events: sample\nsample_rate: 10\nalways_emit_dns: true\npin: true\n\
         ring_buffer_size: 262144\npoll_interval: 5ms\ncounters_interval: 1s\n",
    )
    .unwrap();
    assert_eq!(invalid_paths(&t), Vec::<String>::new());
    assert_eq!(t.direction, vec![TcxDirection::Egress]);
    assert_eq!(t.sample_rate, 10);
    assert!(t.always_emit_dns && t.pin);
}

const CHILD: &str = "PERISCOPE_TEST_NO_CAPS_CHILD";

/// Not a test of its own: what `without_capabilities_build_fails_with_one_line` runs in a
/// child process without capabilities.
#[test]
fn no_caps_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let ctx = periscope_testkit::context("xdp");
    match XdpConfig::default().build_receiver(&ctx) {
        Ok(_) => println!("RESULT built"),
        Err(e) => println!("RESULT {e:#}"),
    }
}

#[test]
fn without_capabilities_build_fails_with_one_line() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: the build itself must say what is missing.
        let ctx = periscope_testkit::context("xdp");
        let e = XdpConfig::default()
            .build_receiver(&ctx)
            .err()
            .expect("build fails without privileges");
        assert!(e.to_string().contains("missing CAP_BPF"), "{e}");
        return;
    }
    // Root: drop every capability (bounding set too) for a child run of this binary.
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "no_caps_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("setpriv (util-linux) is needed: {e}");
            }
            eprintln!("skipping: setpriv (util-linux) not available: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child said nothing: {stdout}"));
    // `namespaces: all` (the default): the hooks' three, entering namespaces, and other
    // processes' namespaces, each with what it is for.
    for (cap, purpose) in [
        ("CAP_BPF", "(to create eBPF maps"),
        ("CAP_PERFMON", "(to load programs that read kernel memory"),
        ("CAP_NET_ADMIN", "(to load and attach networking programs"),
        ("CAP_SYS_ADMIN", "(to enter other network namespaces"),
        ("CAP_SYS_PTRACE", "(to open other processes' namespaces"),
    ] {
        assert!(line.contains(&format!("{cap} {purpose}")), "{cap}: {line}");
    }
    assert!(!line.contains('\n'));
    eprintln!("without capabilities: {line}");
}
