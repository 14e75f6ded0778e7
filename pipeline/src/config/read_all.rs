//! Reading a node so that every refused value is reported, not only the first serde meets.

use super::de::DeError;
use super::yaml::{Node, NodeValue};

/// What [`from_node_all`] read.
#[derive(Debug)]
pub struct ReadAll<T> {
    /// The value, read with every refused option left out (so that its default applies);
    /// `None` when even that failed (a required option was refused or missing).
    pub value: Option<T>,
    /// Every refusal, in the order met.
    pub errors: Vec<DeError>,
    /// The key paths of the options left out.
    pub left_out: Vec<Vec<String>>,
}

impl<T> ReadAll<T> {
    /// Whether the option at `path` (of the node read at `base`) was left out: a check of it
    /// would judge a default, not what was written.
    pub fn left_out(&self, base: &[String], path: &[String]) -> bool {
        let option = |p: &[String]| p.get(base.len()).cloned();
        self.left_out
            .iter()
            .any(|l| option(l).is_some() && option(l) == option(path))
    }
}

/// Reads `node` (at key path `path`) with `parse`, reporting every value refused rather than
/// only the first (serde stops at the first): each refused option, or list item, is left out —
/// an option as if it were not written, so that its default applies — and the rest read again.
pub fn from_node_all<T>(
    node: &Node,
    path: &[String],
    parse: impl Fn(&Node, &[String]) -> Result<T, DeError>,
) -> ReadAll<T> {
    let mut node = node.clone();
    let mut read = ReadAll {
        value: None,
        errors: Vec::new(),
        left_out: Vec::new(),
    };
    // List items left out, (list path, index) as written: later errors name items as written.
    let mut items: Vec<(Vec<String>, usize)> = Vec::new();
    loop {
        let mut e = match parse(&node, path) {
            Ok(v) => {
                read.value = Some(v);
                return read;
            }
            Err(e) => e,
        };
        let removed = leave_out(&mut node, path, &e.path);
        e.path = as_written(&e.path, &items);
        // Leaving an option out can make its parent incomplete (a required option missing):
        // that follows from an error already reported.
        if !read.left_out.iter().any(|l| l.starts_with(&e.path)) {
            read.errors.push(e);
        }
        match removed {
            None => return read,
            Some(Removed::Entry(entry)) => read.left_out.push(as_written(&entry, &items)),
            Some(Removed::Item(list, index)) => {
                let list = as_written(&list, &items);
                let index = written_index(&list, index, &items);
                let mut item = list.clone();
                item.push(index.to_string());
                items.push((list, index));
                read.left_out.push(item);
            }
        }
    }
}

/// What [`leave_out`] removed, by its path in the node as it was then.
enum Removed {
    /// A mapping's entry.
    Entry(Vec<String>),
    /// A list's item: the list's path, the item's index.
    Item(Vec<String>, usize),
}

/// Removes the entry or item deepest along `error_path` from the node read at `base`.
fn leave_out(root: &mut Node, base: &[String], error_path: &[String]) -> Option<Removed> {
    let relative = error_path.strip_prefix(base)?;
    // How deep the path leads through existing entries and items.
    let mut depth = 0;
    let mut node = &*root;
    for part in relative {
        match child(node, part) {
            Some(c) => node = c,
            None => break,
        }
        depth += 1;
    }
    let (last, parents) = relative[..depth].split_last()?;
    let mut parent = root;
    for part in parents {
        parent = child_mut(parent, part)?;
    }
    let list = error_path[..base.len() + parents.len()].to_vec();
    match &mut parent.value {
        NodeValue::Mapping(entries) => {
            entries.retain(|(k, _)| k.as_str() != Some(last.as_str()));
            let mut entry = list;
            entry.push(last.clone());
            Some(Removed::Entry(entry))
        }
        NodeValue::Sequence(items) => {
            let index = last.parse::<usize>().ok()?;
            items.remove(index);
            Some(Removed::Item(list, index))
        }
        NodeValue::Scalar { .. } => None,
    }
}

/// The child of a mapping (by key) or list (by index).
fn child<'a>(node: &'a Node, part: &str) -> Option<&'a Node> {
    match &node.value {
        NodeValue::Mapping(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(part))
            .map(|(_, v)| v),
        NodeValue::Sequence(items) => items.get(part.parse::<usize>().ok()?),
        NodeValue::Scalar { .. } => None,
    }
}

fn child_mut<'a>(node: &'a mut Node, part: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        NodeValue::Mapping(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(part))
            .map(|(_, v)| v),
        NodeValue::Sequence(items) => items.get_mut(part.parse::<usize>().ok()?),
        NodeValue::Scalar { .. } => None,
    }
}

/// `path` in a node whose list `items` were removed, as it was written.
fn as_written(path: &[String], items: &[(Vec<String>, usize)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(path.len());
    for part in path {
        let written = match part.parse::<usize>() {
            Ok(i) if items.iter().any(|(list, _)| *list == out) => {
                written_index(&out, i, items).to_string()
            }
            _ => part.clone(),
        };
        out.push(written);
    }
    out
}

/// The index, as written, of item `index` of `list` (written path) after `items` were removed.
fn written_index(list: &[String], index: usize, items: &[(Vec<String>, usize)]) -> usize {
    let mut gone: Vec<usize> = items
        .iter()
        .filter(|(l, _)| l == list)
        .map(|(_, i)| *i)
        .collect();
    gone.sort_unstable();
    gone.into_iter()
        .fold(index, |i, g| if g <= i { i + 1 } else { i })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::config::de::from_node;
    use crate::config::de::tests::Inner;
    use crate::config::yaml::{parse, Location};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Many {
        #[serde(default)]
        a: u8,
        #[serde(default)]
        b: Vec<u8>,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        c: u8,
    }

    fn read_all<T: serde::de::DeserializeOwned>(yaml: &str) -> ReadAll<T> {
        let doc = parse(yaml).unwrap();
        from_node_all(&doc, &[], |n, p| from_node::<T>(n, p))
    }

    #[test]
    fn every_refused_option_is_reported_and_the_rest_read() {
        let read = read_all::<Many>("a: x\nb: [300, 1, 400]\ninner: {speed: -1}\nc: 7\n");
        let paths: Vec<String> = read.errors.iter().map(|e| e.path.join(".")).collect();
        // Each bad item of a list, named as written.
        assert_eq!(paths, ["a", "b.0", "b.2", "inner.speed"]);
        assert_eq!(
            read.errors[3].location,
            Some(Location {
                line: 3,
                column: 16
            })
        );
        // `inner` lost its required `speed`: that follows from the error above, and is not
        // reported again.
        assert!(read.left_out(&[], &["b".to_string(), "0".to_string()]));
        assert!(!read.left_out(&[], &["c".to_string()]));
        let value = read.value.expect("read without the refused options");
        assert_eq!((value.a, value.c, value.inner), (0, 7, None));
        assert_eq!(value.b, [1]);
    }

    #[test]
    fn a_missing_required_option_is_reported_once() {
        let read = read_all::<Inner>("name: x\n");
        assert_eq!(read.errors.len(), 1);
        assert!(read.errors[0]
            .message
            .contains("missing required option `speed`"));
        assert!(read.value.is_none());
    }
}
