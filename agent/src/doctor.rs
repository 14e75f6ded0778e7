//! `periscope doctor`: what this machine lets periscope do — privileges, mounts, and which
//! hooks the kernel accepts (by probing) — and, given a config, whether its receivers can run.

use std::fmt::Write;

use periscope_pipeline::component::registry::AnyReceiverConfig;
use periscope_pipeline::config::Configured;
use periscope_receivers::shared::kernel::{self, Hook, Support};

/// The configured receivers `doctor` and `run` look at.
pub type Receivers = [Configured<dyn AnyReceiverConfig>];

/// The report, and whether everything the config needs is there.
pub fn report(receivers: Option<&Receivers>) -> (String, bool) {
    let mut out = String::new();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let _ = writeln!(out, "process");
    let _ = writeln!(
        out,
        "  user id           {euid}{}",
        if euid == 0 { " (root)" } else { "" }
    );
    // What each is for (the receivers ask for exactly what their config needs: docs/deploy.md).
    let needed = [
        kernel::NEED_BPF,
        kernel::NEED_NET_ADMIN,
        kernel::NEED_PERFMON,
        kernel::NEED_ENTER_NAMESPACES,
        kernel::NEED_OTHER_PROCESSES,
    ];
    let caps: Vec<kernel::Capability> = needed.iter().map(|n| n.capability).collect();
    let missing = kernel::missing_capabilities(&caps);
    for n in needed {
        let has = !missing.contains(&n.capability);
        let _ = writeln!(
            out,
            "  {:<17} {:<7} {}",
            n.capability.name,
            if has { "yes" } else { "MISSING" },
            n.purpose
        );
    }
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|l| {
            l.split('[')
                .nth(1)
                .and_then(|r| r.split(']').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(out, "kernel");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        out,
        "  release           {} (informational; hooks below are probed)",
        release.trim()
    );
    let _ = writeln!(out, "  lockdown          {lockdown}");
    let mounted = |yes: bool, path: &str| {
        if yes {
            format!("mounted at {path}")
        } else {
            format!("not mounted at {path} (periscope run mounts it)")
        }
    };
    let _ = writeln!(
        out,
        "  bpffs             {}",
        mounted(kernel::bpffs_mounted(), kernel::BPFFS_PATH)
    );
    let _ = writeln!(
        out,
        "  tracefs           {}",
        mounted(kernel::tracefs_mounted(), kernel::TRACEFS_PATH)
    );
    let cgroup2 = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    let _ = writeln!(
        out,
        "  cgroup v2         {}",
        cgroup2.as_deref().unwrap_or("not mounted")
    );

    let probes = kernel::probe_all();
    let _ = writeln!(
        out,
        "hooks (probed by loading a minimal program of each kind)"
    );
    for p in &probes {
        let status = match &p.support {
            Support::Yes => "yes".to_string(),
            Support::No(why) => format!("no: {why}"),
        };
        let _ = writeln!(out, "  {:<17} {status}", p.hook.name());
    }
    let supported = |h: Hook| probes.iter().any(|p| p.hook == h && p.support.is_yes());
    if !supported(Hook::Fentry) && supported(Hook::TpBtf) {
        let _ = writeln!(
            out,
            "  note: fentry is refused; TCP/UDP hooks fall back to tp_btf/tracepoints"
        );
    }

    let mut ok = true;
    if let Some(receivers) = receivers {
        let _ = writeln!(out, "this config's receivers");
        let probe = |h: Hook| match probes.iter().find(|p| p.hook == h).map(|p| &p.support) {
            Some(Support::Yes) => Ok(()),
            Some(Support::No(why)) => Err(why.clone()),
            None => Err("not probed".to_string()),
        };
        for r in receivers {
            let t = r.id.type_name();
            let hooks = r.config.required_hooks();
            if hooks.is_empty() {
                let _ = writeln!(out, "  {t:<17} needs no kernel hooks");
                continue;
            }
            let missing: Vec<&str> = hooks
                .iter()
                .filter(|h| !supported(**h))
                .map(|h| h.name())
                .collect();
            if missing.is_empty() {
                let names: Vec<&str> = hooks.iter().map(|h| h.name()).collect();
                let _ = writeln!(out, "  {t:<17} ok ({})", names.join(", "));
                if let Some(m) = r.config.hook_choice(&probe) {
                    let _ = writeln!(out, "  {:<17} {m}", "");
                }
            } else {
                ok = false;
                let _ = writeln!(out, "  {t:<17} CANNOT RUN: missing {}", missing.join(", "));
            }
        }
    }
    (out, ok)
}

/// Before `run`: receivers that need kernel hooks need bpffs. Returns a one-line error naming
/// what is missing. The capabilities are each receiver's own check at build (what they need
/// depends on the receiver and its namespaces: docs/deploy.md); tracefs only `tcp_udp` and
/// `qdisc` read, and they mount it themselves.
pub fn preflight(receivers: &Receivers) -> Result<(), String> {
    let Some(first_id) = receivers
        .iter()
        .find(|r| !r.config.required_hooks().is_empty())
        .map(|r| &r.id)
    else {
        return Ok(());
    };
    kernel::ensure_bpffs().map_err(|e| format!("receiver `{first_id}`: {e}"))?;
    Ok(())
}
