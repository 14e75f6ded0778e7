//! `${env:VAR}` substitution in scalar values (`${env:VAR:-default}` gives a fallback, `$$`
//! writes a literal `$`), done on the parsed tree so that locations stay right.

use super::yaml::{Location, Node, NodeValue};

/// Replaces references in every scalar; returns the problems found (unset variables without
/// a default, malformed references), each with its location.
pub fn substitute(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(Location, String)> {
    let mut errors = Vec::new();
    walk(node, lookup, &mut errors);
    errors
}

fn walk(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(Location, String)>,
) {
    match &mut node.value {
        NodeValue::Scalar { text, .. } => {
            if text.contains('$') {
                match expand(text, lookup) {
                    Ok(new) => *text = new,
                    Err(e) => errors.push((node.location, e)),
                }
            }
        }
        NodeValue::Sequence(items) => items.iter_mut().for_each(|n| walk(n, lookup, errors)),
        NodeValue::Mapping(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| walk(v, lookup, errors)),
    }
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
            let reference = &body[..end];
            let spec = reference.strip_prefix("env:").ok_or_else(|| {
                format!("unsupported reference `${{{reference}}}`; write `${{env:NAME}}` (or `$$` for a literal `$`)")
            })?;
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            let valid_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!(
                    "`{name}` is not a valid environment variable name (letters, digits and `_`)"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it or give a default: `${{env:{name}:-VALUE}}`"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/x".to_string())
    }

    #[test]
    fn expands_references() {
        assert_eq!(expand("${env:HOME_DIR}/a", &env).unwrap(), "/home/x/a");
        assert_eq!(expand("${env:NOPE:-d}", &env).unwrap(), "d");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        assert!(expand("${env:NOPE}", &env).unwrap_err().contains("not set"));
        assert!(expand("${file:x}", &env)
            .unwrap_err()
            .contains("unsupported"));
        assert!(expand("${env:A", &env).unwrap_err().contains("closing"));
    }
}
