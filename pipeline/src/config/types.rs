//! Value types shared by component configs.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `#[serde(default = "periscope_pipeline::config::default_true")]`: an option that is on
/// unless turned off.
pub fn default_true() -> bool {
    true
}

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

/// A duration longer than zero (`interval: 10s`), checked when the config is read: `0s` is
/// refused, located at the option, with "must be longer than zero, e.g. 10s".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveDuration(Duration);

impl PositiveDuration {
    /// `s` seconds (more than 0: a zero fails to compile where it is a constant).
    pub const fn from_secs(s: u64) -> Self {
        assert!(s > 0, "a PositiveDuration is longer than zero");
        PositiveDuration(Duration::from_secs(s))
    }

    /// `ms` milliseconds (more than 0).
    pub const fn from_millis(ms: u64) -> Self {
        assert!(ms > 0, "a PositiveDuration is longer than zero");
        PositiveDuration(Duration::from_millis(ms))
    }

    /// `d`, if it is longer than zero.
    pub fn new(d: Duration) -> Option<Self> {
        (!d.is_zero()).then_some(PositiveDuration(d))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<PositiveDuration> for ConfigDuration {
    fn from(d: PositiveDuration) -> Self {
        ConfigDuration(d.0)
    }
}

impl fmt::Display for PositiveDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ConfigDuration::from(*self).fmt(f)
    }
}

impl serde::Serialize for PositiveDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ConfigDuration(d) = ConfigDuration::deserialize(d)?;
        PositiveDuration::new(d)
            .ok_or_else(|| serde::de::Error::custom("must be longer than zero, e.g. 10s"))
    }
}

/// A [`ConfigDuration`] with a non-zero digit: longer than zero.
impl schemars::JsonSchema for PositiveDuration {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("PositiveDuration")
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = generator.subschema_for::<ConfigDuration>();
        schema.insert("pattern".into(), "[1-9]".into());
        schema
    }
}

/// Histogram bucket boundaries, in seconds: finite, at least 0, strictly increasing (an empty
/// list is one bucket). Checked when the config is read; a bad bound is located at its index
/// (`boundaries.2`).
#[derive(Clone, Debug, PartialEq)]
pub struct Boundaries(Vec<f64>);

impl Boundaries {
    /// `bounds`, or the first bad one: its index and what is wrong.
    pub fn new(bounds: Vec<f64>) -> Result<Self, (usize, String)> {
        let mut previous = None;
        for (i, b) in bounds.iter().enumerate() {
            check_bound(previous, *b).map_err(|m| (i, m))?;
            previous = Some(*b);
        }
        Ok(Boundaries(bounds))
    }

    /// The bounds.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }
}

impl std::ops::Deref for Boundaries {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        &self.0
    }
}

/// Whether `b` may follow `previous` in [`Boundaries`].
fn check_bound(previous: Option<f64>, b: f64) -> Result<(), String> {
    if !b.is_finite() || b < 0.0 {
        return Err(format!("`{b}` is not a duration in seconds (finite, ≥ 0)"));
    }
    match previous {
        Some(p) if b <= p => Err(format!(
            "`{b}` does not increase (after `{p}`): bounds must be strictly increasing"
        )),
        _ => Ok(()),
    }
}

impl serde::Serialize for Boundaries {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Boundaries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(BoundariesVisitor)
    }
}

struct BoundariesVisitor;

impl<'de> serde::de::Visitor<'de> for BoundariesVisitor {
    type Value = Boundaries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of bounds in seconds")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Boundaries, A::Error> {
        let mut bounds = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        // Each bound is checked as it is read, so that an error names its index.
        while let Some(b) = seq.next_element_seed(Bound(bounds.last().copied()))? {
            bounds.push(b);
        }
        Ok(Boundaries(bounds))
    }
}

/// One bound, after the one before it.
struct Bound(Option<f64>);

impl<'de> serde::de::DeserializeSeed<'de> for Bound {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        let b = f64::deserialize(d)?;
        check_bound(self.0, b).map_err(serde::de::Error::custom)?;
        Ok(b)
    }
}

/// A list of numbers of at least 0 (strictly increasing, which a schema cannot say).
impl schemars::JsonSchema for Boundaries {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Boundaries")
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "items": {"type": "number", "minimum": 0},
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

    #[derive(Deserialize, Debug, schemars::JsonSchema)]
    struct Limits {
        #[serde(default)]
        interval: Option<PositiveDuration>,
        #[serde(default)]
        count: Option<std::num::NonZeroUsize>,
        #[serde(default)]
        bounds: Option<Boundaries>,
    }

    fn refused(yaml: &str) -> (Vec<String>, String) {
        let e = from_node::<Limits>(&parse(yaml).unwrap(), &[]).unwrap_err();
        (e.path, e.message)
    }

    #[test]
    fn positive_durations_refuse_zero_where_it_is_written() {
        let ok: Limits = from_node(&parse("interval: 1ms").unwrap(), &[]).unwrap();
        assert_eq!(
            ok.interval.map(PositiveDuration::get),
            Some(Duration::from_millis(1))
        );
        let (path, message) = refused("interval: 0s");
        assert_eq!(path, ["interval"]);
        assert_eq!(message, "must be longer than zero, e.g. 10s");
        assert!(refused("interval: -1s").1.contains("negative"));
    }

    #[test]
    fn counts_must_be_at_least_one() {
        let ok: Limits = from_node(&parse("count: 3").unwrap(), &[]).unwrap();
        assert_eq!(ok.count.map(|c| c.get()), Some(3));
        let (path, message) = refused("count: 0");
        assert_eq!(path, ["count"]);
        assert_eq!(message, "must be at least 1");
        assert!(refused("count: -3").1.contains("expected a whole number"));
    }

    #[test]
    fn boundaries_are_finite_and_increasing_each_named_by_its_index() {
        let ok: Limits = from_node(&parse("bounds: [0, 0.5, 1]").unwrap(), &[]).unwrap();
        assert_eq!(ok.bounds.as_deref(), Some(&[0.0, 0.5, 1.0][..]));
        let (path, message) = refused("bounds: [0.1, 0.05]");
        assert_eq!(path, ["bounds", "1"]);
        assert_eq!(
            message,
            "`0.05` does not increase (after `0.1`): bounds must be strictly increasing"
        );
        let (path, message) = refused("bounds: [1, NaN]");
        assert_eq!(path, ["bounds", "1"]);
        assert_eq!(message, "`NaN` is not a duration in seconds (finite, ≥ 0)");
        assert_eq!(refused("bounds: [-1]").0, ["bounds", "0"]);
        assert_eq!(Boundaries::new(vec![1.0, 1.0]).unwrap_err().0, 1);
    }

    #[test]
    fn the_schema_says_the_constraints() {
        let schema = schemars::schema_for!(Limits);
        let text = schema.as_value().to_string();
        assert!(text.contains(r#""pattern":"[1-9]""#), "{text}");
        assert!(text.contains(r#""minimum":1"#), "{text}");
        assert!(text.contains(r#""minimum":0"#), "{text}");
    }
}
