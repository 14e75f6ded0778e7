//! Effective capabilities of this process, from `/proc/self/status`, and what each receiver
//! needs them for. The sets are measured per receiver by `scripts/measure-caps` (docs/deploy.md
//! has the table): a check asks for exactly those.

/// A Linux capability: its number and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub bit: u32,
    pub name: &'static str,
}

impl Capability {
    const fn new(bit: u32, name: &'static str) -> Self {
        Capability { bit, name }
    }
}

pub const CAP_NET_ADMIN: Capability = Capability::new(12, "CAP_NET_ADMIN");
pub const CAP_SYS_PTRACE: Capability = Capability::new(19, "CAP_SYS_PTRACE");
pub const CAP_SYS_ADMIN: Capability = Capability::new(21, "CAP_SYS_ADMIN");
pub const CAP_PERFMON: Capability = Capability::new(38, "CAP_PERFMON");
pub const CAP_BPF: Capability = Capability::new(39, "CAP_BPF");

/// Something a receiver does that the kernel allows only with a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    /// What it is for, as the error says it: "to …".
    pub purpose: &'static str,
}

/// Creating maps and loading programs (`bpf()`): every kernel receiver.
pub const NEED_BPF: Need = Need {
    capability: CAP_BPF,
    purpose: "to create eBPF maps and load programs",
};
/// Programs that read kernel memory (sockets, packets' kernel structs): the verifier refuses
/// them without it (`xdp`, `tcx`, `sockops`, `sk_msg`, `tcp_udp`; not `cgroup_skb`).
pub const NEED_PERFMON: Need = Need {
    capability: CAP_PERFMON,
    purpose: "to load programs that read kernel memory, which the verifier refuses without it",
};
/// Networking program types (XDP, TC, sockops, sk_msg, cgroup_skb): loading and attaching.
pub const NEED_NET_ADMIN: Need = Need {
    capability: CAP_NET_ADMIN,
    purpose: "to load and attach networking programs: XDP, TC, cgroup, sockops",
};
/// Entering a network namespace other than the agent's own (`setns`), to attach there.
pub const NEED_ENTER_NAMESPACES: Need = Need {
    capability: CAP_SYS_ADMIN,
    purpose: "to enter other network namespaces with setns and attach there; \
              `namespaces: [host]` does without",
};
/// Opening `/proc/PID/ns/net` of processes whose capabilities are not a subset of the
/// agent's (the kernel's ptrace access check): namespaces found through processes.
pub const NEED_OTHER_PROCESSES: Need = Need {
    capability: CAP_SYS_PTRACE,
    purpose: "to open other processes' namespaces at /proc/PID/ns/net, the way \
              `namespaces: all` and `{cgroup: …}` find them; listing /run/netns names does \
              without",
};

/// What every program-loading receiver needs, but `cgroup_skb` (no kernel-memory reads).
pub const LOAD_AND_ATTACH: [Need; 3] = [NEED_BPF, NEED_PERFMON, NEED_NET_ADMIN];

/// Set to `1`, the capability checks pass whatever this process holds, so that the kernel
/// refuses what it refuses (`scripts/measure-caps` measures the smallest sets that way).
pub const SKIP_CHECK_ENV: &str = "PERISCOPE_SKIP_CAPABILITY_CHECK";

/// The effective capability mask, or `None` if it cannot be read.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Which of `needed` this process lacks (all of them if the mask cannot be read).
pub fn missing_capabilities(needed: &[Capability]) -> Vec<Capability> {
    let mask = effective().unwrap_or(0);
    needed
        .iter()
        .copied()
        .filter(|c| mask & (1u64 << c.bit) == 0)
        .collect()
}

/// The kernel also accepts CAP_SYS_ADMIN wherever `bpf()` asks for CAP_BPF, CAP_PERFMON or
/// CAP_NET_ADMIN (kept from before those existed; measured: `scripts/measure-caps`).
fn sys_admin_stands_in(c: Capability) -> bool {
    c == CAP_BPF || c == CAP_PERFMON || c == CAP_NET_ADMIN
}

fn unmet(needs: &[Need], mask: u64) -> Vec<Need> {
    let has = |c: Capability| mask & (1u64 << c.bit) != 0;
    let mut out: Vec<Need> = Vec::new();
    for n in needs {
        let met = has(n.capability) || (sys_admin_stands_in(n.capability) && has(CAP_SYS_ADMIN));
        if !met && !out.iter().any(|o| o.capability == n.capability) {
            out.push(*n);
        }
    }
    out
}

/// The fewest capabilities that satisfy `needs` (what a deployment grants): each one once,
/// and CAP_SYS_ADMIN alone where it is needed anyway and stands in for the `bpf()` ones.
pub fn smallest_grant(needs: &[Need]) -> Vec<Capability> {
    let mut out: Vec<Capability> = Vec::new();
    for n in needs {
        if !out.contains(&n.capability) {
            out.push(n.capability);
        }
    }
    if out.contains(&CAP_SYS_ADMIN) {
        out.retain(|c| !sys_admin_stands_in(*c));
    }
    out
}

/// The error for `unmet` needs, naming each capability and what it is for.
fn message(unmet: &[Need]) -> String {
    let list: Vec<String> = unmet
        .iter()
        .map(|n| format!("{} ({})", n.capability.name, n.purpose))
        .collect();
    format!(
        "missing {}; grant {} (Kubernetes: securityContext.capabilities.add, see docs/deploy.md) \
         or run as root",
        list.join(", "),
        if unmet.len() == 1 { "it" } else { "them" }
    )
}

/// Checks that this process can do everything in `needs`; the error names every missing
/// capability and what it is for.
pub fn check(needs: &[Need]) -> Result<(), String> {
    if std::env::var_os(SKIP_CHECK_ENV).is_some_and(|v| v == "1") {
        return Ok(());
    }
    let unmet = unmet(needs, effective().unwrap_or(0));
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(message(&unmet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1u64 << c.bit)
    }

    #[test]
    fn reads_the_effective_mask() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let mask = parse_cap_eff(status).unwrap();
        assert_ne!(mask & (1 << CAP_BPF.bit), 0);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn names_each_missing_capability_and_its_purpose() {
        let needs = [
            NEED_BPF,
            NEED_PERFMON,
            NEED_NET_ADMIN,
            NEED_ENTER_NAMESPACES,
        ];
        let got = unmet(&needs, mask(&[CAP_BPF, CAP_NET_ADMIN]));
        assert_eq!(got, vec![NEED_PERFMON, NEED_ENTER_NAMESPACES]);
        let text = message(&got);
        assert!(
            text.starts_with("missing CAP_PERFMON (to load programs"),
            "{text}"
        );
        assert!(
            text.contains("CAP_SYS_ADMIN (to enter other network namespaces"),
            "{text}"
        );
        assert!(unmet(
            &needs,
            mask(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN])
        )
        .is_empty());
    }

    #[test]
    fn the_smallest_grant_lets_sys_admin_stand_in() {
        let host = [NEED_BPF, NEED_PERFMON, NEED_NET_ADMIN, NEED_BPF];
        assert_eq!(
            smallest_grant(&host),
            vec![CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
        );
        let all = [&host[..], &[NEED_ENTER_NAMESPACES, NEED_OTHER_PROCESSES]].concat();
        assert_eq!(smallest_grant(&all), vec![CAP_SYS_ADMIN, CAP_SYS_PTRACE]);
        assert!(unmet(&all, mask(&smallest_grant(&all))).is_empty());
    }

    #[test]
    fn sys_admin_stands_in_for_the_bpf_capabilities_only() {
        let needs = [NEED_BPF, NEED_PERFMON, NEED_NET_ADMIN, NEED_OTHER_PROCESSES];
        assert_eq!(
            unmet(&needs, mask(&[CAP_SYS_ADMIN])),
            vec![NEED_OTHER_PROCESSES]
        );
        assert_eq!(
            unmet(
                &[NEED_ENTER_NAMESPACES],
                mask(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN])
            ),
            vec![NEED_ENTER_NAMESPACES]
        );
    }
}
