//! The config options the `xdp` and `tcx` receivers share, and what they resolve to.

use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use periscope_pipeline::component::Invalid;
use periscope_pipeline::config::ConfigDuration;

use super::flows::FlowOptions;
use crate::shared::ebpf::records::{
    PERISCOPE_CFG_BURSTS, PERISCOPE_CFG_DNS, PERISCOPE_CFG_FLOWS, PERISCOPE_CFG_LOCALITY,
    PERISCOPE_CFG_RECORDS,
};
use crate::shared::netns::NamespaceScope;

/// Which network namespaces to attach in: `all`, a list of `/run/netns` names or nsfs paths
/// (`host` is the host namespace), or `{cgroup: PATH}` for the namespaces of every process in
/// that cgroup v2 subtree.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum NamespacesConfig {
    /// `all`: every namespace on the host, as they come and go.
    All(AllNamespaces),
    /// `[name-or-path, ...]`: these namespaces only.
    Listed(Vec<String>),
    /// `{cgroup: /sys/fs/cgroup/...}`: the namespaces of the processes in a cgroup subtree.
    Cgroup(CgroupNamespaces),
}

impl Default for NamespacesConfig {
    fn default() -> Self {
        NamespacesConfig::All(AllNamespaces::All)
    }
}

/// The keyword `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllNamespaces {
    /// Every namespace.
    All,
}

/// `{cgroup: PATH}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CgroupNamespaces {
    /// A cgroup v2 directory (`/sys/fs/cgroup/unified/kubepods`); its whole subtree counts.
    pub cgroup: PathBuf,
}

impl NamespacesConfig {
    /// What the namespace watcher takes.
    pub fn scope(&self) -> NamespaceScope {
        match self {
            NamespacesConfig::All(_) => NamespaceScope::All,
            NamespacesConfig::Listed(l) => NamespaceScope::Listed(l.clone()),
            NamespacesConfig::Cgroup(c) => NamespaceScope::Cgroup(c.cgroup.clone()),
        }
    }

    fn validate(&self, errors: &mut Vec<Invalid>) {
        match self {
            NamespacesConfig::All(_) => {}
            NamespacesConfig::Listed(l) => {
                if l.is_empty() {
                    errors.push(Invalid::new(
                        "namespaces",
                        "an empty list attaches nowhere; write `all`, or list namespace names \
                         or paths (e.g. [host, /run/netns/pod1])",
                    ));
                }
                for (i, n) in l.iter().enumerate() {
                    if n.trim().is_empty() {
                        errors.push(Invalid::new(
                            format!("namespaces.{i}"),
                            "must not be empty; give a /run/netns name or an nsfs path",
                        ));
                    }
                }
            }
            NamespacesConfig::Cgroup(c) => {
                if !c.cgroup.is_absolute() {
                    errors.push(Invalid::new(
                        "namespaces.cgroup",
                        format!(
                            "`{}` is not an absolute path; give a cgroup v2 directory such as \
                             /sys/fs/cgroup/unified/kubepods",
                            c.cgroup.display()
                        ),
                    ));
                }
            }
        }
    }
}

/// Which devices to attach to, by interface name (shell globs: `eth*`, `veth?`, `lo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfacesConfig {
    /// Attach only to devices whose name matches one of these; empty (the default) means every
    /// device.
    #[serde(default)]
    pub include: Vec<String>,
    /// Never attach to devices whose name matches one of these (applied after `include`);
    /// nothing is excluded by default.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl InterfacesConfig {
    /// Adds an error per invalid glob (paths `interfaces.include.N`, `interfaces.exclude.N`).
    pub fn check(&self, errors: &mut Vec<Invalid>) {
        self.validate(errors)
    }

    fn validate(&self, errors: &mut Vec<Invalid>) {
        for (key, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, g) in list.iter().enumerate() {
                if let Err(e) = Glob::new(g) {
                    errors.push(Invalid::new(
                        format!("interfaces.{key}.{i}"),
                        format!("`{g}` is not a valid glob ({e}); e.g. eth*, veth?, lo"),
                    ));
                }
            }
        }
    }

    /// The compiled filter.
    pub fn filter(&self) -> anyhow::Result<InterfaceFilter> {
        let set = |globs: &[String]| -> anyhow::Result<Option<GlobSet>> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g)?);
            }
            Ok(Some(b.build()?))
        };
        Ok(InterfaceFilter {
            include: set(&self.include)?,
            exclude: set(&self.exclude)?,
        })
    }
}

/// Compiled `interfaces` globs.
#[derive(Clone, Debug, Default)]
pub struct InterfaceFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl InterfaceFilter {
    /// Every device.
    pub fn all() -> Self {
        InterfaceFilter::default()
    }

    /// Whether a device of this name is attached to.
    pub fn matches(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(name))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(name))
    }
}

/// Which packets get a record in the ring buffer (every packet is always counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventsMode {
    /// A record per packet.
    #[default]
    All,
    /// A record for 1 in `sample_rate` packets (chosen at random).
    Sample,
    /// No records: exact counters only.
    None,
}

/// Per-flow (5-tuple) counters in the kernel: per-CPU slots that the programs update per
/// packet (no record per packet), drained every `counters_interval` into at most
/// `table_size` flows in user space; flows idle for `idle_timeout` end. Packets of flows that
/// find no slot, or no room among the flows, are counted in their device's overflow
/// counters. Off by default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowsConfig {
    /// Count flows in the kernel (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Most flows tracked at once (default 16384; about 200 bytes each in user space). A
    /// flow is tracked from its first packet until it ends.
    #[serde(default = "default_flow_table_size")]
    pub table_size: u32,
    /// Slots per CPU in the kernel, a power of two (default 8192): about the most distinct
    /// flows (per device and direction) one CPU counts in one `counters_interval` is three
    /// quarters of it. Preallocated when loaded: two tables of 104 bytes per slot per possible
    /// CPU (8192 slots: 1.7 MB per CPU, 109 MB on 64).
    #[serde(default = "default_flow_slots")]
    pub slots: u32,
    /// A flow without a packet for this long ends (its entry is evicted); default 60s, at
    /// least 1s.
    #[serde(default = "default_flow_idle_timeout")]
    pub idle_timeout: ConfigDuration,
}

/// Largest flow table accepted (16 Mi entries).
pub const MAX_FLOW_TABLE: u32 = 1 << 24;

/// Most kernel slots per CPU accepted (1 Mi: 218 MB per CPU).
pub const MAX_FLOW_SLOTS: u32 = 1 << 20;

fn default_flow_slots() -> u32 {
    8192
}

fn default_flow_table_size() -> u32 {
    16384
}

fn default_flow_idle_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            enabled: false,
            table_size: default_flow_table_size(),
            slots: default_flow_slots(),
            idle_timeout: default_flow_idle_timeout(),
        }
    }
}

impl FlowsConfig {
    fn validate(&self, errors: &mut Vec<Invalid>) {
        if !(1..=MAX_FLOW_TABLE).contains(&self.table_size) {
            errors.push(Invalid::new(
                "flows.table_size",
                format!(
                    "{}: must be from 1 to {MAX_FLOW_TABLE} entries (e.g. 16384)",
                    self.table_size
                ),
            ));
        }
        if !self.slots.is_power_of_two() || self.slots > MAX_FLOW_SLOTS {
            errors.push(Invalid::new(
                "flows.slots",
                format!(
                    "{}: must be a power of two from 1 to {MAX_FLOW_SLOTS} (e.g. 4096)",
                    self.slots
                ),
            ));
        }
        if self.idle_timeout.0 < Duration::from_secs(1) {
            errors.push(Invalid::new(
                "flows.idle_timeout",
                format!("{}: must be at least 1s (e.g. 60s)", self.idle_timeout),
            ));
        }
    }

    /// What the loader and the harvest take, if on.
    pub fn resolve(&self) -> Option<FlowOptions> {
        self.enabled.then_some(FlowOptions {
            table_size: self.table_size,
            slots: self.slots,
            idle_timeout: self.idle_timeout.0,
        })
    }
}

/// What the shared options resolve to, for the attachment manager.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// `PERISCOPE_CFG_*` bits for the programs.
    pub flags: u32,
    /// 1 in N when sampling, else 0.
    pub sample_rate: u32,
    /// Burst detection parameters ([`PERISCOPE_CFG_BURSTS`] is in `flags` with them).
    pub bursts: Option<crate::shared::ebpf::BurstConfig>,
    /// Ports that are DNS besides 53 (0: unused).
    pub dns_ports: [u16; 4],
    /// The kernel flow table ([`PERISCOPE_CFG_FLOWS`] is in `flags` with it).
    pub flows: Option<FlowOptions>,
}

/// The options both receivers have (each config repeats them with its own docs; this is
/// what they check and resolve to).
#[derive(Clone, Debug)]
pub struct Shared<'a> {
    pub namespaces: &'a NamespacesConfig,
    pub interfaces: &'a InterfacesConfig,
    pub events: EventsMode,
    pub sample_rate: u32,
    pub always_emit_dns: bool,
    pub dns_ports: &'a [u16],
    /// Classify packets local/forwarded ([`PERISCOPE_CFG_LOCALITY`]).
    pub locality: bool,
    pub ring_buffer_size: u32,
    pub poll_interval: ConfigDuration,
    pub counters_interval: ConfigDuration,
    pub bursts: &'a super::bursts::BurstsConfig,
    pub flows: &'a FlowsConfig,
}

/// Smallest ring buffer: one page.
pub const MIN_RING_BYTES: u32 = 4096;
/// Largest ring buffer accepted (per namespace).
pub const MAX_RING_BYTES: u32 = 1 << 30;

impl Shared<'_> {
    /// Pure checks.
    pub fn validate(&self, errors: &mut Vec<Invalid>) {
        self.namespaces.validate(errors);
        self.interfaces.validate(errors);
        self.bursts.validate(errors);
        self.flows.validate(errors);
        if self.events == EventsMode::Sample && self.sample_rate < 2 {
            errors.push(Invalid::new(
                "sample_rate",
                format!(
                    "{} with `events: sample` keeps every packet; give 2 or more (1 in N \
                     packets), or write `events: all`",
                    self.sample_rate
                ),
            ));
        }
        let r = self.ring_buffer_size;
        if !r.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&r) {
            errors.push(Invalid::new(
                "ring_buffer_size",
                format!(
                    "{r} bytes: must be a power of two from {MIN_RING_BYTES} to \
                     {MAX_RING_BYTES} (e.g. 1048576 for 1 MiB)"
                ),
            ));
        }
        validate_dns_ports(self.dns_ports, errors);
        if self.poll_interval.0.is_zero() || self.poll_interval.0 > Duration::from_secs(10) {
            errors.push(Invalid::new(
                "poll_interval",
                format!(
                    "{}: must be above zero and at most 10s (e.g. 10ms)",
                    self.poll_interval
                ),
            ));
        }
        if self.counters_interval.0 < Duration::from_millis(10) {
            errors.push(Invalid::new(
                "counters_interval",
                format!(
                    "{}: must be at least 10ms (e.g. 10s)",
                    self.counters_interval
                ),
            ));
        }
    }

    /// The program flags and sampling rate.
    pub fn records(&self) -> RecordOptions {
        // Each packet classified local or forwarded: one hash lookup (docs/metrics.md).
        let mut flags = if self.locality {
            PERISCOPE_CFG_LOCALITY
        } else {
            0
        };
        flags |= match self.events {
            EventsMode::All | EventsMode::Sample => PERISCOPE_CFG_RECORDS,
            EventsMode::None => 0,
        };
        if self.always_emit_dns {
            flags |= PERISCOPE_CFG_DNS;
        }
        let bursts = self.bursts.resolve();
        if bursts.is_some() {
            flags |= PERISCOPE_CFG_BURSTS;
        }
        let flows = self.flows.resolve();
        if flows.is_some() {
            flags |= PERISCOPE_CFG_FLOWS;
        }
        let mut dns_ports = [0u16; 4];
        for (slot, port) in dns_ports.iter_mut().zip(self.dns_ports) {
            *slot = *port;
        }
        RecordOptions {
            bursts,
            flows,
            dns_ports,
            flags,
            sample_rate: if self.events == EventsMode::Sample {
                self.sample_rate
            } else {
                0
            },
        }
    }
}

/// Most ports that can be DNS besides 53 (the programs compare each packet with them).
pub const MAX_DNS_PORTS: usize = 4;

/// Checks a `dns_ports` option: at most [`MAX_DNS_PORTS`], none of them 0.
pub fn validate_dns_ports(ports: &[u16], errors: &mut Vec<Invalid>) {
    if ports.len() > MAX_DNS_PORTS {
        errors.push(Invalid::new(
            "dns_ports",
            format!(
                "{} ports: at most {MAX_DNS_PORTS} besides 53 (e.g. [5353, 8053])",
                ports.len()
            ),
        ));
    }
    for (i, p) in ports.iter().enumerate() {
        if *p == 0 {
            errors.push(Invalid::new(
                format!("dns_ports.{i}"),
                "port 0 cannot carry DNS; give a port from 1 to 65535",
            ));
        }
    }
}

pub(crate) fn default_sample_rate() -> u32 {
    100
}

pub(crate) fn default_ring_buffer_size() -> u32 {
    1 << 20
}

pub(crate) fn default_poll_interval() -> ConfigDuration {
    ConfigDuration::from_millis(10)
}

pub(crate) fn default_counters_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_program_flags() {
        let ns = NamespacesConfig::default();
        let ifs = InterfacesConfig::default();
        let bursts = super::super::bursts::BurstsConfig::default();
        let flows = FlowsConfig::default();
        let shared = |events, always_emit_dns| Shared {
            namespaces: &ns,
            interfaces: &ifs,
            events,
            sample_rate: 50,
            always_emit_dns,
            dns_ports: &[5353],
            locality: true,
            ring_buffer_size: 1 << 20,
            poll_interval: default_poll_interval(),
            counters_interval: default_counters_interval(),
            bursts: &bursts,
            flows: &flows,
        };
        let records = |events, dns| {
            let mut r = shared(events, dns).records();
            assert_ne!(r.flags & PERISCOPE_CFG_LOCALITY, 0, "always classified");
            r.flags &= !PERISCOPE_CFG_LOCALITY;
            r
        };
        let r = records(EventsMode::All, false);
        assert_eq!((r.flags, r.sample_rate), (PERISCOPE_CFG_RECORDS, 0));
        assert_eq!(r.dns_ports, [5353, 0, 0, 0]);
        let r = records(EventsMode::Sample, true);
        assert_eq!(
            (r.flags, r.sample_rate),
            (PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_DNS, 50)
        );
        let r = records(EventsMode::None, true);
        assert_eq!((r.flags, r.sample_rate), (PERISCOPE_CFG_DNS, 0));
        let r = records(EventsMode::None, false);
        assert_eq!(r.flags, 0);
        assert_eq!(r.flows, None);
    }

    #[test]
    fn flows_turn_the_flag_on_and_are_checked() {
        let ns = NamespacesConfig::default();
        let ifs = InterfacesConfig::default();
        let bursts = super::super::bursts::BurstsConfig::default();
        let check = |flows: FlowsConfig| {
            let shared = Shared {
                namespaces: &ns,
                interfaces: &ifs,
                events: EventsMode::None,
                sample_rate: 0,
                always_emit_dns: false,
                dns_ports: &[],
                locality: true,
                ring_buffer_size: 1 << 20,
                poll_interval: default_poll_interval(),
                counters_interval: default_counters_interval(),
                bursts: &bursts,
                flows: &flows,
            };
            let mut errors = Vec::new();
            shared.validate(&mut errors);
            let fields: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            (shared.records(), fields)
        };
        let (r, errors) = check(FlowsConfig {
            enabled: true,
            ..FlowsConfig::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.flags, PERISCOPE_CFG_FLOWS | PERISCOPE_CFG_LOCALITY);
        assert_eq!(
            r.flows,
            Some(FlowOptions {
                table_size: 16384,
                slots: 8192,
                idle_timeout: Duration::from_secs(60)
            })
        );
        let (_, errors) = check(FlowsConfig {
            enabled: true,
            table_size: 0,
            slots: 3000,
            idle_timeout: ConfigDuration::from_millis(10),
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0], "flows.table_size");
        assert_eq!(errors[1], "flows.slots");
        assert_eq!(errors[2], "flows.idle_timeout");
    }

    #[test]
    fn filters_by_include_then_exclude() {
        let f = InterfacesConfig {
            include: vec!["veth*".into(), "eth0".into()],
            exclude: vec!["veth-x*".into()],
        }
        .filter()
        .unwrap();
        assert!(f.matches("veth1"));
        assert!(f.matches("eth0"));
        assert!(!f.matches("eth1"));
        assert!(!f.matches("veth-x1"));
        let all = InterfaceFilter::all();
        assert!(all.matches("lo"));
        let no_lo = InterfacesConfig {
            include: vec![],
            exclude: vec!["lo".into()],
        }
        .filter()
        .unwrap();
        assert!(!no_lo.matches("lo") && no_lo.matches("eth0"));
    }
}
