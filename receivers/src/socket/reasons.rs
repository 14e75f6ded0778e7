//! Names of the kernel's drop reasons (`enum skb_drop_reason`), read from the `skb:kfree_skb`
//! tracepoint's format in tracefs, which lists them as `__print_symbolic` pairs. That is the
//! running kernel's own table, so reasons added by newer kernels are named too.

use std::collections::HashMap;
use std::path::Path;

/// Reason number → name (`NO_SOCKET`), leaked once per process so that events can carry
/// `&'static str` (the table is small and bounded, and read once per receiver build).
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, &'static str>,
}

/// The most reasons read (the kernel has ~100); more is garbage.
const MAX_REASONS: usize = 1024;

impl DropReasons {
    /// Reads the table from `<tracefs>/events/skb/kfree_skb/format`; empty if that is missing.
    pub fn load(tracefs: &Path) -> DropReasons {
        let path = tracefs.join("events/skb/kfree_skb/format");
        match std::fs::read_to_string(&path) {
            Ok(text) => DropReasons::parse(&text),
            Err(e) => {
                tracing::debug!(
                    "{}: {e}; drop reasons are reported by number",
                    path.display()
                );
                DropReasons::default()
            }
        }
    }

    /// Parses the `{ N, "NAME" }` pairs of the format's `__print_symbolic(REC->reason, ...)`.
    pub fn parse(format: &str) -> DropReasons {
        let mut names = HashMap::new();
        let Some(start) = format.find("__print_symbolic(REC->reason") else {
            return DropReasons { names };
        };
        let mut rest = &format[start..];
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else { break };
            let pair = &rest[..close];
            rest = &rest[close + 1..];
            let mut parts = pair.splitn(2, ',');
            let (Some(num), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(num) = num.trim().parse::<u32>() else {
                continue;
            };
            let name = name.trim().trim_matches('"');
            if name.is_empty() || names.len() >= MAX_REASONS {
                continue;
            }
            names.insert(num, &*Box::leak(name.to_string().into_boxed_str()));
        }
        DropReasons { names }
    }

    /// The reason's name, or `"unknown"` when the table does not have it.
    pub fn name(&self, reason: u32) -> &'static str {
        self.names.get(&reason).copied().unwrap_or("unknown")
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Every reason the table names: number and name.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &'static str)> + '_ {
        self.names.iter().map(|(n, s)| (*n, *s))
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let f = r#"print fmt: "reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 99, "MAX" })"#;
        let r = DropReasons::parse(f);
        assert_eq!(r.name(3), "NO_SOCKET");
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert_eq!(r.name(7), "unknown");
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn garbage_gives_an_empty_table() {
        assert!(DropReasons::parse("__print_symbolic(REC->reason, { x, }, {").is_empty());
        assert!(DropReasons::parse("").is_empty());
    }
}
