//! A YAML document as a tree of nodes that remember where they were written, so that every
//! later error (unknown key, wrong type, failed validation) can name the line and column.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the source: line and column, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn of(span: &Span) -> Self {
        Location {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A YAML node with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub location: Location,
    pub value: NodeValue,
}

/// The content of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// A scalar; `quoted` scalars are always strings (`"10"` is not a number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Sequence(Vec<Node>),
    /// Keys in the order written; duplicates are rejected while parsing.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// True for `~`, `null`, an empty value, or a missing document.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's kind for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "an empty value",
            NodeValue::Scalar { .. } => "a scalar",
            NodeValue::Sequence(_) => "a list",
            NodeValue::Mapping(_) => "a mapping",
        }
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Follows a dotted key path (`receivers.pcap.speed`, list items as numbers) to the
    /// deepest node that exists, for locating errors.
    pub fn locate<'a>(&'a self, path: &[String]) -> &'a Node {
        let mut node = self;
        for part in path {
            let next = match &node.value {
                NodeValue::Mapping(entries) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(part.as_str()))
                    .map(|(_, v)| v),
                NodeValue::Sequence(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                NodeValue::Scalar { .. } => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub location: Location,
    pub message: String,
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    builder.document()
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(SyntaxError {
                location: Location {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: e.info().to_string(),
            }),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn document(&mut self) -> Result<Node, SyntaxError> {
        let empty = |span: &Span| Node {
            location: Location::of(span),
            value: NodeValue::Mapping(Vec::new()),
        };
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::Nothing => continue,
                Event::StreamEnd => return Ok(empty(&span)),
                Event::DocumentStart(_) => break,
                _ => {
                    return Err(SyntaxError {
                        location: Location::of(&span),
                        message: "unexpected content before the document".into(),
                    })
                }
            }
        }
        let (ev, span) = self.next()?;
        let root = match ev {
            Event::DocumentEnd | Event::StreamEnd => return Ok(empty(&span)),
            ev => self.node(ev, span)?,
        };
        // Only one document is allowed: a second one is almost always a mistake.
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::DocumentEnd | Event::Nothing => continue,
                Event::StreamEnd => break,
                _ => {
                    return Err(SyntaxError {
                        location: Location::of(&span),
                        message: "a config file holds one YAML document; found a second (`---`)"
                            .into(),
                    })
                }
            }
        }
        Ok(root)
    }

    fn node(&mut self, ev: Event<'a>, span: Span) -> Result<Node, SyntaxError> {
        let location = Location::of(&span);
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => (
                Node {
                    location,
                    value: NodeValue::Scalar {
                        text: text.into_owned(),
                        quoted: !matches!(style, ScalarStyle::Plain),
                    },
                },
                anchor,
            ),
            Event::Alias(id) => {
                return self.anchors.get(&id).cloned().ok_or(SyntaxError {
                    location,
                    message: "alias refers to an anchor that is not defined before it".into(),
                })
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    match ev {
                        Event::SequenceEnd => break,
                        ev => items.push(self.node(ev, span)?),
                    }
                }
                (
                    Node {
                        location,
                        value: NodeValue::Sequence(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    let key = match ev {
                        Event::MappingEnd => break,
                        ev => self.node(ev, span)?,
                    };
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span)?;
                    if let Some(name) = key.as_str() {
                        if let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.as_str() == Some(name))
                        {
                            return Err(SyntaxError {
                                location: key.location,
                                message: format!(
                                    "duplicate key `{name}` (first defined at line {})",
                                    first.location.line
                                ),
                            });
                        }
                    }
                    entries.push((key, value));
                }
                (
                    Node {
                        location,
                        value: NodeValue::Mapping(entries),
                    },
                    anchor,
                )
            }
            other => {
                return Err(SyntaxError {
                    location,
                    message: format!("unexpected YAML event {other:?}"),
                })
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_remember_their_location() {
        let doc = parse("a:\n  b: 1\n  c: [x, \"y\"]\n").unwrap();
        let b = doc.locate(&["a".into(), "b".into()]);
        assert_eq!(b.location, Location { line: 2, column: 6 });
        let y = doc.locate(&["a".into(), "c".into(), "1".into()]);
        assert_eq!(
            y.value,
            NodeValue::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.location.line, 3);
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }

    #[test]
    fn empty_document_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().value, NodeValue::Mapping(vec![]));
        assert_eq!(
            parse("# only a comment\n").unwrap().value,
            NodeValue::Mapping(vec![])
        );
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.location.line >= 1);
    }

    #[test]
    fn aliases_expand() {
        let doc = parse("x: &a {k: 1}\ny: *a\n").unwrap();
        assert_eq!(
            doc.get("y").and_then(|y| y.get("k")).and_then(Node::as_str),
            Some("1")
        );
    }
}
