//! Components under test: build contexts, and whether their configs are documented.

use periscope_pipeline::component::{BuildContext, ComponentId};

/// A build context for component `id` (`type` or `type/name`) with fresh, empty tables.
pub fn context(id: &str) -> BuildContext {
    BuildContext::standalone(ComponentId::parse(id).expect("component id"))
}

/// What a component config's JSON schema leaves undocumented: `(the component)` when the type
/// has no (or an empty) description, and every option without a description. The doc comments
/// are the user documentation (`periscope components`), so a test wants this empty.
pub fn undocumented(schema: &schemars::Schema) -> Vec<String> {
    let root = schema.as_value();
    let mut missing = Vec::new();
    let description = root.get("description").and_then(|d| d.as_str());
    if description.is_none_or(str::is_empty) {
        missing.push("(the component)".to_string());
    }
    let props = root.get("properties").and_then(|p| p.as_object());
    for (name, prop) in props.into_iter().flatten() {
        if prop.get("description").and_then(|d| d.as_str()).is_none() {
            missing.push(name.clone());
        }
    }
    missing
}
