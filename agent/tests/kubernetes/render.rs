//! Rendering the kustomizations with `kubectl kustomize` (offline) and reading the objects as
//! the Kubernetes API types.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use periscope_testkit::skip;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The base (every namespace) and its overlays.
pub const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/kubernetes",
    "deploy/kubernetes/overlays/host-only",
    "deploy/kubernetes/overlays/all-namespaces",
];

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// One rendered kustomization: every object, as JSON values.
pub struct Rendered {
    pub dir: &'static str,
    pub objects: Vec<Value>,
}

/// Renders `dir` (relative to the repository), or `None` after a skip message when kubectl is
/// missing (a failure under CI).
pub fn render(test: &str, dir: &'static str) -> Option<Rendered> {
    if !skip::require_tools(test, &["kubectl"]) {
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
    let objects = text
        .split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| {
            serde_saphyr::from_str::<Value>(doc)
                .unwrap_or_else(|e| panic!("{dir}: an object is not YAML ({e}):\n{doc}"))
        })
        .collect();
    Some(Rendered { dir, objects })
}

/// `v` as the API type `K`, which must keep every field: a field the type does not know (a
/// typo, a wrong level) would be lost on the way back, and fails here.
pub fn typed<K: DeserializeOwned + Serialize>(dir: &str, v: &Value) -> K {
    let what = format!(
        "{dir}: {} {}",
        v["kind"].as_str().unwrap_or("?"),
        v["metadata"]["name"].as_str().unwrap_or("?")
    );
    let k: K = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what} is not a valid object of its kind: {e}"));
    let back = serde_json::to_value(&k).expect("serialize");
    let mut want = v.clone();
    drop_nulls(&mut want);
    assert_eq!(
        back, want,
        "{what}: fields the API type does not know were dropped (typo or wrong nesting?)"
    );
    k
}

/// Empty maps and lists and nulls serialize away in the API types: compare without them.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.values_mut().for_each(drop_nulls);
            m.retain(|_, v| {
                !(v.is_null()
                    || v.as_object().is_some_and(|o| o.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

impl Rendered {
    /// The one object of `kind` named `name` (ConfigMaps: the generated name starts with it).
    pub fn object(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .filter(|o| {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                n == name || (kind == "ConfigMap" && n.starts_with(&format!("{name}-")))
            })
            .collect();
        assert_eq!(found.len(), 1, "{}: one {kind} {name}", self.dir);
        found[0]
    }

    pub fn daemonset(&self) -> DaemonSet {
        typed(self.dir, self.object("DaemonSet", "periscope-agent"))
    }

    /// The agent's container.
    pub fn agent(&self) -> Container {
        let ds = self.daemonset();
        let pod = ds.spec.template.spec.expect("a pod spec");
        pod.containers
            .into_iter()
            .find(|c| c.name == "agent")
            .expect("a container named agent")
    }

    /// The capabilities the agent's container adds (`SYS_ADMIN`, …), as the kernel names them
    /// (`CAP_SYS_ADMIN`).
    pub fn capabilities(&self) -> Vec<String> {
        let caps = self
            .agent()
            .security_context
            .and_then(|s| s.capabilities)
            .expect("the agent's securityContext.capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}: drop ALL, then add what is measured",
            self.dir
        );
        caps.add
            .unwrap_or_default()
            .iter()
            .map(|c| format!("CAP_{}", c.trim_start_matches("CAP_")))
            .collect()
    }

    /// The agent's config, from its ConfigMap.
    pub fn agent_config(&self) -> String {
        let cm: ConfigMap = typed(self.dir, self.object("ConfigMap", "periscope-agent"));
        cm.data
            .and_then(|d| d.get("config.yaml").cloned())
            .expect("the ConfigMap has config.yaml")
    }
}
