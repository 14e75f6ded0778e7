//! Component ids: `type` or `type/name`, as in the OpenTelemetry Collector.

use std::fmt;

/// The id of a configured component (`pcap`, `pcap/uplink`) or pipeline (`metrics/xdp`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    type_name: String,
    name: Option<String>,
}

impl ComponentId {
    /// Parses `type` or `type/name`. The type is lowercase letters, digits and `_`, starting
    /// with a letter; the name is letters, digits, `_`, `-` and `.`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (type_name, name) = match text.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (text, None),
        };
        let type_ok = type_name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
            && type_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !type_ok {
            return Err(format!(
                "`{text}` is not a valid id: the type (before `/`) must be lowercase letters, digits or `_`, starting with a letter"
            ));
        }
        if let Some(n) = name {
            let ok = !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(format!(
                    "`{text}` is not a valid id: the name (after `/`) must be non-empty letters, digits, `_`, `-` or `.`"
                ));
            }
        }
        Ok(ComponentId {
            type_name: type_name.to_string(),
            name: name.map(str::to_string),
        })
    }

    /// The component type (`pcap`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The instance name after `/`, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

/// The three kinds of components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }

    /// The top-level config section of this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_id_grammar() {
        let id = ComponentId::parse("pcap/uplink-1").unwrap();
        assert_eq!((id.type_name(), id.name()), ("pcap", Some("uplink-1")));
        assert_eq!(id.to_string(), "pcap/uplink-1");
        assert!(ComponentId::parse("Pcap").is_err());
        assert!(ComponentId::parse("pcap/").is_err());
        assert!(ComponentId::parse("pcap/a b").is_err());
        assert!(ComponentId::parse("").is_err());
    }
}
