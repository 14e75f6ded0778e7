//! The YAML config: `receivers`, `processors`, `exporters` and `service` (pipelines and the
//! agent's own telemetry), in the shape of an OpenTelemetry Collector config.
//!
//! Loading is pure: it reads the file, substitutes `${env:VAR}`, parses every component's typed
//! config, runs each `validate`, and checks the pipelines' references. It collects every error
//! it finds, each naming file, line, column, key path and what would be valid.

mod check;
pub mod de;
pub mod env;
pub mod error;
pub mod read_all;
mod service;
pub mod types;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use check::problems;
pub use error::{ConfigError, ConfigErrors};
pub use service::{EdgeConfig, EdgesConfig, LogsConfig, SelfMetricsConfig, TelemetryConfig};
pub use types::{default_true, Boundaries, ConfigDuration, PositiveDuration};

use crate::component::registry::{
    AnyConfig, AnyExporterConfig, AnyProcessorConfig, AnyReceiverConfig,
};
use crate::component::{ComponentId, Kind, Registry};
use crate::model::Signal;
use error::suggestion;
use yaml::{Location, Node, NodeValue};

/// One configured component.
#[derive(Debug)]
pub struct Configured<C: ?Sized> {
    pub id: ComponentId,
    pub config: Box<C>,
}

/// One pipeline: receivers → processors (in order) → exporters.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// `metrics`, `traces`, or `metrics/NAME`.
    pub id: ComponentId,
    pub signal: Signal,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
    pub edges: EdgesConfig,
}

/// A loaded, validated config.
#[derive(Debug)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub receivers: Vec<Configured<dyn AnyReceiverConfig>>,
    pub processors: Vec<Configured<dyn AnyProcessorConfig>>,
    pub exporters: Vec<Configured<dyn AnyExporterConfig>>,
    pub pipelines: Vec<PipelineConfig>,
    pub telemetry: TelemetryConfig,
    /// How long a shutdown may take to drain and flush before the agent gives up.
    pub shutdown_timeout: ConfigDuration,
    /// Things that are allowed but probably not meant (a component no pipeline uses).
    pub warnings: Vec<String>,
}

const TOP_LEVEL: &[&str] = &["receivers", "processors", "exporters", "service"];
const SERVICE_KEYS: &[&str] = &["pipelines", "telemetry", "shutdown_timeout"];

/// Loads and validates a config file.
pub fn load_file(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: Some(path.to_path_buf()),
            location: None,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    load_str(&text, Some(path), registry, &|name| {
        std::env::var(name).ok()
    })
}

/// Loads and validates a config from text; `file` is used in messages.
pub fn load_str(
    text: &str,
    file: Option<&Path>,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut loader = Loader {
        file: file.map(Path::to_path_buf),
        errors: Vec::new(),
    };
    let mut root = yaml::parse(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.map(Path::to_path_buf),
            location: Some(e.location),
            path: String::new(),
            message: format!("invalid YAML: {}", e.message),
        }])
    })?;
    for (location, message) in env::substitute(&mut root, env) {
        loader.error(Some(location), "", message);
    }
    let config = loader.config(&root, registry);
    if loader.errors.is_empty() {
        Ok(config)
    } else {
        loader
            .errors
            .sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
        Err(ConfigErrors(loader.errors))
    }
}

struct Loader {
    file: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

fn join(path: &[String]) -> String {
    path.join(".")
}

impl Loader {
    fn error(&mut self, location: Option<Location>, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            location,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn de_error(&mut self, e: de::DeError) {
        let path = join(&e.path);
        self.error(e.location, &path, e.message);
    }

    /// The entries of a mapping node; an error (and nothing) if it is something else.
    fn entries<'a>(&mut self, node: &'a Node, path: &str, what: &str) -> &'a [(Node, Node)] {
        match &node.value {
            NodeValue::Mapping(entries) => entries,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    Some(node.location),
                    path,
                    format!("expected a mapping of {what}, found {}", node.kind_name()),
                );
                &[]
            }
        }
    }

    fn config(&mut self, root: &Node, registry: &Registry) -> Config {
        for (key, _) in self.entries(root, "", "sections").to_vec() {
            let name = key.as_str().unwrap_or("");
            if !TOP_LEVEL.contains(&name) {
                self.error(
                    Some(key.location),
                    name,
                    format!(
                        "unknown section `{name}`; {}",
                        suggestion(name, TOP_LEVEL, "sections")
                    ),
                );
            }
        }
        let mut receivers = Vec::new();
        let mut processors = Vec::new();
        let mut exporters = Vec::new();
        for kind in [Kind::Receiver, Kind::Processor, Kind::Exporter] {
            let Some(section) = root.get(kind.section()) else {
                continue;
            };
            for (key, value) in self.entries(section, kind.section(), "components").to_vec() {
                let Some(parsed) = self.component(kind, &key, &value, registry) else {
                    continue;
                };
                match parsed {
                    (id, AnyConfig::Receiver(config)) => receivers.push(Configured { id, config }),
                    (id, AnyConfig::Processor(config)) => {
                        processors.push(Configured { id, config })
                    }
                    (id, AnyConfig::Exporter(config)) => exporters.push(Configured { id, config }),
                }
            }
        }

        let defined = |kind: Kind| -> Vec<String> {
            root.get(kind.section())
                .and_then(|s| match &s.value {
                    NodeValue::Mapping(e) => Some(
                        e.iter()
                            .filter_map(|(k, _)| k.as_str().map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let defined_ids = [
            (Kind::Receiver, defined(Kind::Receiver)),
            (Kind::Processor, defined(Kind::Processor)),
            (Kind::Exporter, defined(Kind::Exporter)),
        ];

        let mut telemetry = TelemetryConfig::default();
        let mut shutdown_timeout = ConfigDuration::from_secs(10);
        let mut pipelines = Vec::new();
        match root.get("service") {
            None => self.error(
                Some(root.location),
                "service",
                "missing section `service`; add `service.pipelines` naming the receivers, processors and exporters to run",
            ),
            Some(service) => {
                for (key, value) in self.entries(service, "service", "options").to_vec() {
                    let name = key.as_str().unwrap_or("");
                    let path = vec!["service".to_string(), name.to_string()];
                    match name {
                        "pipelines" => pipelines = self.pipelines(&value, &defined_ids),
                        "telemetry" => match de::from_node::<TelemetryConfig>(&value, &path) {
                            Ok(t) => {
                                for (problem_path, message) in t.problems() {
                                    let mut full = path.clone();
                                    full.extend(problem_path.split('.').map(str::to_string));
                                    let node = value.locate(&full[2..]);
                                    self.error(Some(node.location), &join(&full), message);
                                }
                                telemetry = t
                            }
                            Err(e) => self.de_error(e),
                        },
                        "shutdown_timeout" => match de::from_node::<ConfigDuration>(&value, &path) {
                            Ok(t) => shutdown_timeout = t,
                            Err(e) => self.de_error(e),
                        },
                        _ => self.error(
                            Some(key.location),
                            &join(&path),
                            format!("unknown option `{name}`; {}", suggestion(name, SERVICE_KEYS, "options")),
                        ),
                    }
                }
                if service.get("pipelines").is_none() {
                    self.error(
                        Some(service.location),
                        "service.pipelines",
                        "missing `pipelines`; add at least one, e.g. `metrics: {receivers: [...], processors: [...], exporters: [...]}`",
                    );
                }
            }
        }

        self.check_order(root, &pipelines, &processors);

        let mut warnings = Vec::new();
        for (kind, ids) in &defined_ids {
            for id in ids {
                let used = pipelines.iter().any(|p: &PipelineConfig| {
                    let list = match kind {
                        Kind::Receiver => &p.receivers,
                        Kind::Processor => &p.processors,
                        Kind::Exporter => &p.exporters,
                    };
                    list.iter().any(|r| r.to_string() == *id)
                });
                let feeds_self_metrics = *kind == Kind::Exporter
                    && telemetry
                        .metrics
                        .exporters
                        .as_ref()
                        .is_some_and(|l| l.contains(id));
                if !used && !feeds_self_metrics {
                    warnings.push(format!("{kind} `{id}` is defined but no pipeline uses it"));
                }
            }
        }
        if let Some(list) = &telemetry.metrics.exporters {
            for (i, e) in list.iter().enumerate() {
                if !defined_ids[2].1.contains(e) {
                    let node = root.locate(&[
                        "service".into(),
                        "telemetry".into(),
                        "metrics".into(),
                        "exporters".into(),
                        i.to_string(),
                    ]);
                    let candidates: Vec<&str> =
                        defined_ids[2].1.iter().map(String::as_str).collect();
                    self.error(
                        Some(node.location),
                        &format!("service.telemetry.metrics.exporters.{i}"),
                        format!(
                            "exporter `{e}` is not defined under `exporters`; {}",
                            suggestion(e, &candidates, "exporters")
                        ),
                    );
                }
            }
        }

        Config {
            source: self.file.clone(),
            receivers,
            processors,
            exporters,
            pipelines,
            telemetry,
            shutdown_timeout,
            warnings,
        }
    }

    /// Refuses a pipeline that lists a processor after one it must precede (one that
    /// consumes the events it reads: see [`ProcessorConfig::must_precede`]).
    ///
    /// [`ProcessorConfig::must_precede`]: crate::component::ProcessorConfig::must_precede
    fn check_order(
        &mut self,
        root: &Node,
        pipelines: &[PipelineConfig],
        processors: &[Configured<dyn AnyProcessorConfig>],
    ) {
        for p in pipelines {
            for (i, id) in p.processors.iter().enumerate() {
                let Some(c) = processors.iter().find(|c| c.id == *id) else {
                    continue;
                };
                let before = c.config.must_precede();
                let Some(earlier) = p.processors[..i]
                    .iter()
                    .find(|e| before.iter().any(|b| *b == e.type_name()))
                else {
                    continue;
                };
                let path = [
                    "service".to_string(),
                    "pipelines".to_string(),
                    p.id.to_string(),
                    "processors".to_string(),
                    i.to_string(),
                ];
                let location = root.locate(&path).location;
                self.error(
                    Some(location),
                    &path.join("."),
                    format!(
                        "processor `{id}` must come before `{earlier}`, which consumes the events `{id}` reads; list `{id}` earlier in this pipeline",
                    ),
                );
            }
        }
    }

    fn component(
        &mut self,
        kind: Kind,
        key: &Node,
        value: &Node,
        registry: &Registry,
    ) -> Option<(ComponentId, AnyConfig)> {
        let text = key.as_str().unwrap_or("");
        let path = vec![kind.section().to_string(), text.to_string()];
        let id = match ComponentId::parse(text) {
            Ok(id) => id,
            Err(e) => {
                self.error(Some(key.location), &join(&path), e);
                return None;
            }
        };
        let Some(component_type) = registry.get(kind, id.type_name()) else {
            let names = registry.type_names(kind);
            self.error(
                Some(key.location),
                &join(&path),
                format!(
                    "unknown {kind} type `{}`; {}",
                    id.type_name(),
                    suggestion(id.type_name(), &names, &format!("{kind} types"))
                ),
            );
            return None;
        };
        // Report every unknown option at once (serde stops at the first), then parse the rest.
        let known = component_type.option_names();
        let mut value = value.clone();
        if let NodeValue::Mapping(entries) = &mut value.value {
            entries.retain(|(k, _)| {
                let name = k.as_str().unwrap_or("");
                if known.iter().any(|o| o == name) {
                    return true;
                }
                let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
                let message = if candidates.is_empty() {
                    format!(
                        "unknown option `{name}`; {kind} `{}` takes no options",
                        id.type_name()
                    )
                } else {
                    format!(
                        "unknown option `{name}`; {}",
                        suggestion(name, &candidates, "options")
                    )
                };
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    location: Some(k.location),
                    path: format!("{}.{name}", join(&path)),
                    message,
                });
                false
            });
        }
        let checked = check::read_checked(
            &value,
            &path,
            |node, path| component_type.parse(node, path),
            |config| config.validate(),
        );
        match checked {
            Ok(config) => Some((id, config)),
            Err(errors) => {
                for e in errors {
                    self.de_error(e);
                }
                None
            }
        }
    }

    fn pipelines(
        &mut self,
        node: &Node,
        defined: &[(Kind, Vec<String>); 3],
    ) -> Vec<PipelineConfig> {
        let mut out = Vec::new();
        let entries = self
            .entries(node, "service.pipelines", "pipelines")
            .to_vec();
        if entries.is_empty() {
            self.error(Some(node.location), "service.pipelines", "no pipelines defined; add e.g. `metrics: {receivers: [...], processors: [...], exporters: [...]}`");
        }
        for (key, value) in entries {
            let text = key.as_str().unwrap_or("");
            let path = vec![
                "service".to_string(),
                "pipelines".to_string(),
                text.to_string(),
            ];
            let id = match ComponentId::parse(text) {
                Ok(id) => id,
                Err(e) => {
                    self.error(Some(key.location), &join(&path), e);
                    continue;
                }
            };
            let signal = match id.type_name() {
                "metrics" => Signal::Metrics,
                "traces" => Signal::Traces,
                other => {
                    self.error(
                        Some(key.location),
                        &join(&path),
                        format!(
                            "unknown pipeline type `{other}`; {}",
                            suggestion(other, &["metrics", "traces"], "pipeline types")
                        ),
                    );
                    continue;
                }
            };
            // Every refused value at once; the references are checked with the rest.
            let read = read_all::from_node_all(&value, &path, |node, path| {
                de::from_node::<service::PipelineSpec>(node, path)
            });
            for e in read.errors {
                self.de_error(e);
            }
            let Some(spec) = read.value else {
                continue;
            };
            let mut lists = Vec::new();
            for (kind, field, names) in [
                (Kind::Receiver, "receivers", &spec.receivers),
                (Kind::Processor, "processors", &spec.processors),
                (Kind::Exporter, "exporters", &spec.exporters),
            ] {
                let known = &defined
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
                let mut ids = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let item_path = format!("{}.{field}.{i}", join(&path));
                    let location = value.locate(&[field.to_string(), i.to_string()]).location;
                    if !known.contains(name) {
                        self.error(
                            Some(location),
                            &item_path,
                            format!(
                                "{kind} `{name}` is not defined under `{}`; {}",
                                kind.section(),
                                suggestion(name, &candidates, kind.section())
                            ),
                        );
                    } else if names[..i].contains(name) {
                        self.error(
                            Some(location),
                            &item_path,
                            format!("{kind} `{name}` is listed twice"),
                        );
                    } else if let Ok(id) = ComponentId::parse(name) {
                        ids.push(id);
                    }
                }
                if names.is_empty() && kind != Kind::Processor {
                    let location = value
                        .get(field)
                        .map(|n| n.location)
                        .unwrap_or(value.location);
                    self.error(
                        Some(location),
                        &format!("{}.{field}", join(&path)),
                        format!("a pipeline needs at least one {kind}"),
                    );
                }
                lists.push(ids);
            }
            let exporters = lists.pop().unwrap_or_default();
            let processors = lists.pop().unwrap_or_default();
            let receivers = lists.pop().unwrap_or_default();
            out.push(PipelineConfig {
                id,
                signal,
                receivers,
                processors,
                exporters,
                edges: spec.edges,
            });
        }
        out
    }
}
