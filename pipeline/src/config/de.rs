//! A serde `Deserializer` over [`Node`]s: component configs are typed structs, and every error
//! serde raises while filling them is tagged with the line, column and key path of the node
//! that caused it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::error::suggestion;
use super::yaml::{Location, Node, NodeValue};

/// A deserialization error, located at the innermost node that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub path: Vec<String>,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: Vec::new(),
            location: None,
            message: msg.to_string(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "unknown option `{field}`; {}",
            suggestion(field, expected, "options")
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "unknown value `{variant}`; {}",
            suggestion(variant, expected, "values")
        ))
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        // The std `NonZero*` types expect "a nonzero u32": say it as a limit is said.
        if matches!(unexp, de::Unexpected::Unsigned(0)) && exp.to_string().starts_with("a nonzero")
        {
            return Self::custom("must be at least 1");
        }
        Self::custom(format!(
            "invalid value {}: expected {exp}",
            describe(&unexp)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!("missing required option `{field}`"))
    }
}

fn describe(u: &de::Unexpected) -> String {
    match u {
        de::Unexpected::Str(s) => format!("`{s}`"),
        de::Unexpected::Signed(i) => format!("`{i}`"),
        de::Unexpected::Unsigned(i) => format!("`{i}`"),
        de::Unexpected::Float(f) => format!("`{f}`"),
        de::Unexpected::Bool(b) => format!("`{b}`"),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Unit => "an empty value".into(),
        other => other.to_string(),
    }
}

/// Deserializes `T` from `node`, whose key path is `path`.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &[String],
) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer {
        node,
        path: path.to_vec(),
    })
}

/// Deserializer of one node.
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<String>,
}

impl<'a> NodeDeserializer<'a> {
    fn locate(&self, mut e: DeError) -> DeError {
        if e.location.is_none() {
            e.location = Some(self.node.location);
            e.path = self.path.clone();
        }
        e
    }

    fn scalar(&self) -> Result<&'a str, DeError> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } => Ok(text),
            _ => Err(self.locate(de::Error::custom(format!(
                "expected a single value, found {}",
                self.node.kind_name()
            )))),
        }
    }

    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, DeError> {
        let text = self.scalar()?;
        text.trim().parse::<T>().map_err(|_| {
            self.locate(de::Error::custom(format!(
                "expected {what}, found `{text}`"
            )))
        })
    }

    fn plain(&self) -> bool {
        matches!(self.node.value, NodeValue::Scalar { quoted: false, .. })
    }
}

macro_rules! number {
    ($method:ident, $visit:ident, $ty:ty, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v: $ty = self.parse($what)?;
            visitor.$visit(v).map_err(|e| self.locate(e))
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            NodeValue::Sequence(_) => return self.deserialize_seq(visitor),
            NodeValue::Mapping(_) => return self.deserialize_map(visitor),
            _ if self.node.is_null() => visitor.visit_unit(),
            NodeValue::Scalar { text, quoted } => {
                if *quoted {
                    visitor.visit_borrowed_str(text)
                } else if let Ok(b) = text.parse::<bool>() {
                    visitor.visit_bool(b)
                } else if let Ok(i) = text.parse::<u64>() {
                    visitor.visit_u64(i)
                } else if let Ok(i) = text.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(f) = text.parse::<f64>() {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_borrowed_str(text)
                }
            }
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.scalar()?;
        let b = match text {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            _ => {
                return Err(self.locate(de::Error::custom(format!(
                    "expected `true` or `false`, found `{text}`"
                ))))
            }
        };
        visitor.visit_bool(b).map_err(|e| self.locate(e))
    }

    number!(deserialize_i8, visit_i8, i8, "an integer (-128 to 127)");
    number!(
        deserialize_i16,
        visit_i16,
        i16,
        "an integer (-32768 to 32767)"
    );
    number!(deserialize_i32, visit_i32, i32, "a 32-bit integer");
    number!(deserialize_i64, visit_i64, i64, "an integer");
    number!(deserialize_u8, visit_u8, u8, "a whole number from 0 to 255");
    number!(
        deserialize_u16,
        visit_u16,
        u16,
        "a whole number from 0 to 65535"
    );
    number!(
        deserialize_u32,
        visit_u32,
        u32,
        "a whole number from 0 to 4294967295"
    );
    number!(
        deserialize_u64,
        visit_u64,
        u64,
        "a whole number (0 or more)"
    );
    number!(deserialize_f32, visit_f32, f32, "a number");
    number!(deserialize_f64, visit_f64, f64, "a number");

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.scalar()?;
        visitor.visit_borrowed_str(text).map_err(|e| self.locate(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.plain() && self.node.is_null() {
            visitor.visit_none().map_err(|e| self.locate(e))
        } else {
            let node = self.node;
            let path = self.path.clone();
            visitor
                .visit_some(NodeDeserializer { node, path })
                .map_err(|e| self.locate(e))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit().map_err(|e| self.locate(e))
        } else {
            Err(self.locate(de::Error::custom(format!(
                "expected an empty value, found {}",
                self.node.kind_name()
            ))))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.node;
        let path = self.path.clone();
        visitor
            .visit_newtype_struct(NodeDeserializer { node, path })
            .map_err(|e| self.locate(e))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Sequence(items) => {
                let access = SeqAccess {
                    items: items.iter().enumerate(),
                    path: &self.path,
                };
                visitor.visit_seq(access).map_err(|e| self.locate(e))
            }
            _ => Err(self.locate(de::Error::custom(format!(
                "expected a list, found {}",
                self.node.kind_name()
            )))),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        static EMPTY: Vec<(Node, Node)> = Vec::new();
        let entries = match &self.node.value {
            NodeValue::Mapping(entries) => entries,
            // `receiver:` with nothing after it means "all defaults".
            _ if self.node.is_null() => &EMPTY,
            _ => {
                return Err(self.locate(de::Error::custom(format!(
                    "expected a mapping of options, found {}",
                    self.node.kind_name()
                ))))
            }
        };
        let access = MapAccess {
            entries: entries.iter(),
            value: None,
            path: &self.path,
        };
        visitor.visit_map(access).map_err(|e| self.locate(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor
                .visit_enum(text.as_str().into_deserializer())
                .map_err(|e: DeError| self.locate(e)),
            NodeValue::Mapping(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let mut path = self.path.clone();
                path.push(key.as_str().unwrap_or("?").to_string());
                visitor
                    .visit_enum(EnumAccess { key, value, path })
                    .map_err(|e| self.locate(e))
            }
            _ => Err(self.locate(de::Error::custom(format!(
                "expected a name or a mapping with one key, found {}",
                self.node.kind_name()
            )))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'a, I> {
    items: I,
    path: &'a [String],
}

impl<'de, I: Iterator<Item = (usize, &'de Node)>> de::SeqAccess<'de> for SeqAccess<'_, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                let mut path = self.path.to_vec();
                path.push(i.to_string());
                let at = NodeDeserializer {
                    node,
                    path: path.clone(),
                };
                seed.deserialize(NodeDeserializer { node, path })
                    .map(Some)
                    .map_err(|e| at.locate(e))
            }
            None => Ok(None),
        }
    }
}

struct MapAccess<'a, 'de, I> {
    entries: I,
    value: Option<(&'de Node, Vec<String>)>,
    path: &'a [String],
}

impl<'de, I: Iterator<Item = &'de (Node, Node)>> de::MapAccess<'de> for MapAccess<'_, 'de, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                let mut path = self.path.to_vec();
                path.push(key.as_str().unwrap_or("?").to_string());
                self.value = Some((value, path.clone()));
                let at = NodeDeserializer {
                    node: key,
                    path: path.clone(),
                };
                seed.deserialize(NodeDeserializer { node: key, path })
                    .map(Some)
                    .map_err(|e| at.locate(e))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without a key"))?;
        let at = NodeDeserializer {
            node,
            path: path.clone(),
        };
        seed.deserialize(NodeDeserializer { node, path })
            .map_err(|e| at.locate(e))
    }
}

struct EnumAccess<'de> {
    key: &'de Node,
    value: &'de Node,
    path: Vec<String>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = NodeDeserializer<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let v = seed.deserialize(NodeDeserializer {
            node: self.key,
            path: self.path.clone(),
        })?;
        Ok((
            v,
            NodeDeserializer {
                node: self.value,
                path: self.path,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::yaml::parse;
    use serde::Deserialize;

    /// A component-like config; `read_all`'s tests use it too.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Inner {
        pub(crate) speed: u32,
        #[serde(default)]
        pub(crate) name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        list: Vec<u16>,
    }

    #[test]
    fn reads_nested_structs() {
        let doc = parse("inner: {speed: 3, name: x}\nlist: [1, 2]\n").unwrap();
        let v: Outer = from_node(&doc, &[]).unwrap();
        assert_eq!(v.inner.speed, 3);
        assert_eq!(v.list, vec![1, 2]);
    }

    #[test]
    fn unknown_field_is_located_with_a_suggestion() {
        let doc = parse("inner:\n  sped: 3\nlist: []\n").unwrap();
        let e = from_node::<Outer>(&doc, &[]).unwrap_err();
        assert_eq!(e.location, Some(Location { line: 2, column: 3 }));
        assert_eq!(e.path, vec!["inner".to_string(), "sped".to_string()]);
        assert!(e.message.contains("did you mean `speed`"), "{}", e.message);
    }

    #[test]
    fn wrong_type_names_what_was_expected() {
        let doc = parse("inner: {speed: fast}\nlist: [1, 70000]\n").unwrap();
        let e = from_node::<Outer>(&doc, &[]).unwrap_err();
        assert_eq!(e.path, vec!["inner".to_string(), "speed".to_string()]);
        assert!(
            e.message.contains("expected a whole number"),
            "{}",
            e.message
        );
        let doc = parse("inner: {speed: 1}\nlist: [1, 70000]\n").unwrap();
        let e = from_node::<Outer>(&doc, &[]).unwrap_err();
        assert_eq!(e.path, vec!["list".to_string(), "1".to_string()]);
        assert_eq!(e.location.map(|l| l.line), Some(2));
    }
}
