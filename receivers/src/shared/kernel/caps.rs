//! Effective capabilities of this process, from `/proc/self/status`.

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
pub const CAP_SYS_ADMIN: Capability = Capability::new(21, "CAP_SYS_ADMIN");
pub const CAP_PERFMON: Capability = Capability::new(38, "CAP_PERFMON");
pub const CAP_BPF: Capability = Capability::new(39, "CAP_BPF");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_mask() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let mask = parse_cap_eff(status).unwrap();
        assert_ne!(mask & (1 << CAP_BPF.bit), 0);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
