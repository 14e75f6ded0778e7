//! One component's options checked the way `periscope validate` checks them: every value
//! refused as it is read (the constraint types, [`super::types`]), then the component's own
//! `validate` (checks across options), each problem located at the option it names.

use serde::de::DeserializeOwned;

use super::de::{self, DeError};
use super::read_all::from_node_all;
use super::yaml::{self, Node};
use crate::component::{ComponentConfig, Invalid};

/// Reads one component's options at key path `path` with `parse`, then checks them with
/// `validate`: every problem found, located, or the options.
pub(crate) fn read_checked<T>(
    node: &Node,
    path: &[String],
    parse: impl Fn(&Node, &[String]) -> Result<T, DeError>,
    validate: impl FnOnce(&T) -> Result<(), Vec<Invalid>>,
) -> Result<T, Vec<DeError>> {
    let read = from_node_all(node, path, parse);
    let mut errors = read.errors.clone();
    let Some(value) = read.value.as_ref() else {
        return Err(errors);
    };
    if let Err(problems) = validate(value) {
        for p in problems {
            let mut full = path.to_vec();
            full.extend(
                p.path
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            // Judged on the default of an option whose written value was refused.
            if read.left_out(path, &full) {
                continue;
            }
            let location = node.locate(&full[path.len()..]).location;
            errors.push(DeError {
                path: full,
                location: Some(location),
                message: p.message,
            });
        }
    }
    match read.value {
        Some(value) if errors.is_empty() => Ok(value),
        _ => Err(errors),
    }
}

/// Every problem `periscope validate` finds in the options of one component of type `C`
/// written as `yaml` (key paths relative to the component), in the order of the text: for
/// tests of a component's config.
pub fn problems<C: ComponentConfig + DeserializeOwned>(yaml: &str) -> Vec<Invalid> {
    let node = match yaml::parse(yaml) {
        Ok(node) => node,
        Err(e) => return vec![Invalid::new("", e.message)],
    };
    let Err(mut errors) = read_checked(&node, &[], |n, p| de::from_node::<C>(n, p), C::validate)
    else {
        return Vec::new();
    };
    errors.sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
    errors
        .into_iter()
        .map(|e| Invalid::new(e.path.join("."), e.message))
        .collect()
}
