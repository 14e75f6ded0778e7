//! Value types shared by component configs.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written with a unit: `10s`, `500ms`, `100us`, `1m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn from_secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        ConfigDuration(Duration::from_millis(ms))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = text.trim();
        if t.starts_with('-') {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is negative; expected a duration of zero or more, like 10s, 500ms or 100us"
            )));
        }
        humantime::parse_duration(t).map(ConfigDuration).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); expected a number with a unit, like 10s, 500ms or 100us"
            ))
        })
    }
}

impl schemars::JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Duration")
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with a unit: 10s, 500ms, 100us, 1m.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{de::from_node, yaml::parse};

    #[derive(Deserialize, Debug)]
    struct D {
        d: ConfigDuration,
    }

    #[test]
    fn durations_need_units_and_no_sign() {
        let ok: D = from_node(&parse("d: 250ms").unwrap(), &[]).unwrap();
        assert_eq!(ok.d.0, Duration::from_millis(250));
        let e = from_node::<D>(&parse("d: -5s").unwrap(), &[]).unwrap_err();
        assert!(e.message.contains("negative"), "{}", e.message);
        let e = from_node::<D>(&parse("d: 10").unwrap(), &[]).unwrap_err();
        assert!(e.message.contains("like 10s"), "{}", e.message);
    }
}
