//! The registry: every component type periscope knows, with its config parser and docs.
//! The binary builds the one list (`periscope::components::registry`); adding a component
//! touches its own file and one line there.

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::{
    BuildContext, ComponentConfig, Exporter, ExporterConfig, Hook, Invalid, Kind, Processor,
    ProcessorConfig, Receiver, ReceiverConfig,
};
use crate::config::de::{from_node, DeError};
use crate::config::yaml::Node;

/// A parsed receiver config, behind dynamic dispatch.
pub trait AnyReceiverConfig: Debug + Send + Sync {
    fn validate(&self) -> Result<(), Vec<Invalid>>;
    fn is_finite(&self) -> bool;
    /// See [`ReceiverConfig::required_hooks`].
    fn required_hooks(&self) -> &'static [Hook];
    /// See [`ReceiverConfig::hook_choice`].
    fn hook_choice(&self, probe: &dyn Fn(Hook) -> Result<(), String>) -> Option<String>;
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>>;
}

impl<T: ReceiverConfig> AnyReceiverConfig for T {
    fn validate(&self) -> Result<(), Vec<Invalid>> {
        ComponentConfig::validate(self)
    }
    fn is_finite(&self) -> bool {
        ReceiverConfig::is_finite(self)
    }
    fn required_hooks(&self) -> &'static [Hook] {
        ReceiverConfig::required_hooks(self)
    }
    fn hook_choice(&self, probe: &dyn Fn(Hook) -> Result<(), String>) -> Option<String> {
        ReceiverConfig::hook_choice(self, probe)
    }
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        ReceiverConfig::build(self, ctx)
    }
}

/// A parsed processor config, behind dynamic dispatch.
pub trait AnyProcessorConfig: Debug + Send + Sync {
    fn validate(&self) -> Result<(), Vec<Invalid>>;
    /// See [`ProcessorConfig::must_precede`].
    fn must_precede(&self) -> &'static [&'static str];
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>>;
}

impl<T: ProcessorConfig> AnyProcessorConfig for T {
    fn validate(&self) -> Result<(), Vec<Invalid>> {
        ComponentConfig::validate(self)
    }
    fn must_precede(&self) -> &'static [&'static str] {
        ProcessorConfig::must_precede(self)
    }
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        ProcessorConfig::build(self, ctx)
    }
}

/// A parsed exporter config, behind dynamic dispatch.
pub trait AnyExporterConfig: Debug + Send + Sync {
    fn validate(&self) -> Result<(), Vec<Invalid>>;
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>>;
}

impl<T: ExporterConfig> AnyExporterConfig for T {
    fn validate(&self) -> Result<(), Vec<Invalid>> {
        ComponentConfig::validate(self)
    }
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        ExporterConfig::build(self, ctx)
    }
}

/// A parsed config of any kind.
#[derive(Debug)]
pub enum AnyConfig {
    Receiver(Box<dyn AnyReceiverConfig>),
    Processor(Box<dyn AnyProcessorConfig>),
    Exporter(Box<dyn AnyExporterConfig>),
}

impl AnyConfig {
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        match self {
            AnyConfig::Receiver(c) => c.validate(),
            AnyConfig::Processor(c) => c.validate(),
            AnyConfig::Exporter(c) => c.validate(),
        }
    }
}

/// One registered component type.
#[derive(Clone, Copy)]
pub struct ComponentType {
    pub kind: Kind,
    pub type_name: &'static str,
    schema: fn() -> schemars::Schema,
    parse: fn(&Node, &[String]) -> Result<AnyConfig, DeError>,
}

impl ComponentType {
    /// The JSON schema of the config, with the doc comments of the struct and its fields.
    pub fn schema(&self) -> schemars::Schema {
        (self.schema)()
    }

    /// Names of the config's top-level options.
    pub fn option_names(&self) -> Vec<String> {
        self.schema()
            .as_value()
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Reads the config of one component from its YAML node.
    pub fn parse(&self, node: &Node, path: &[String]) -> Result<AnyConfig, DeError> {
        (self.parse)(node, path)
    }
}

/// Every known component type, by kind and type name.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<(Kind, &'static str), ComponentType>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, t: ComponentType) -> Self {
        // A duplicate is a programming error in the one registry list; fail loudly at startup.
        let key = (t.kind, t.type_name);
        assert!(
            self.types.insert(key, t).is_none(),
            "{} type `{}` registered twice",
            t.kind,
            t.type_name
        );
        self
    }

    /// Registers a receiver type.
    pub fn receiver<C: ReceiverConfig>(self) -> Self {
        self.add(ComponentType {
            kind: Kind::Receiver,
            type_name: C::TYPE,
            schema: || schemars::schema_for!(C),
            parse: |node, path| Ok(AnyConfig::Receiver(Box::new(from_node::<C>(node, path)?))),
        })
    }

    /// Registers a processor type.
    pub fn processor<C: ProcessorConfig>(self) -> Self {
        self.add(ComponentType {
            kind: Kind::Processor,
            type_name: C::TYPE,
            schema: || schemars::schema_for!(C),
            parse: |node, path| Ok(AnyConfig::Processor(Box::new(from_node::<C>(node, path)?))),
        })
    }

    /// Registers an exporter type.
    pub fn exporter<C: ExporterConfig>(self) -> Self {
        self.add(ComponentType {
            kind: Kind::Exporter,
            type_name: C::TYPE,
            schema: || schemars::schema_for!(C),
            parse: |node, path| Ok(AnyConfig::Exporter(Box::new(from_node::<C>(node, path)?))),
        })
    }

    /// The type named `type_name` of `kind`.
    pub fn get(&self, kind: Kind, type_name: &str) -> Option<&ComponentType> {
        self.types
            .iter()
            .find(|((k, t), _)| *k == kind && *t == type_name)
            .map(|(_, v)| v)
    }

    /// Type names of one kind, sorted.
    pub fn type_names(&self, kind: Kind) -> Vec<&'static str> {
        self.types
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Every type, by kind then name.
    pub fn iter(&self) -> impl Iterator<Item = &ComponentType> {
        self.types.values()
    }
}
