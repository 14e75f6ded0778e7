//! What a cgroup path says about the workload in it: the innermost container (Docker,
//! containerd/CRI, CRI-O and Podman layouts; systemd and cgroupfs drivers) and the pod.
//! Pure parsing, shared by the namespace watcher (is a namespace's process a container's?)
//! and `identity`.

/// What a cgroup path says about the workload in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The container id (64 lowercase hex digits) and, where the layout tells, its runtime.
    pub container: Option<(String, Option<&'static str>)>,
    /// The pod uid (with dashes) and its QoS class.
    pub pod: Option<(String, &'static str)>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        self.container.is_none() && self.pod.is_none()
    }
}

pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container in one path component: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` (systemd driver), `crio-<id>`, `libpod-<id>` or a
/// bare `<id>` (cgroupfs driver; the runtime then comes from the parent: `/docker/<id>`).
fn container_in(component: &str, parent: Option<&str>) -> Option<(String, Option<&'static str>)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, &str); 5] = [
        ("cri-containerd-", "containerd"),
        ("docker-", "docker"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("nerdctl-", "containerd"),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_hex_id(id) {
                return Some((id.to_ascii_lowercase(), Some(runtime)));
            }
        }
    }
    if is_hex_id(name) && name.len() == component.len() {
        let runtime = match parent {
            Some("docker") => Some("docker"),
            Some("libpod_parent") => Some("podman"),
            _ => None,
        };
        return Some((name.to_ascii_lowercase(), runtime));
    }
    None
}

pub fn is_pod_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

/// A pod in one path component: `kubepods-<qos>-pod<uid with _>.slice` / `kubepods-pod<uid>.slice`
/// (systemd driver) or `pod<uid>` under `kubepods[/<qos>]` (cgroupfs driver).
fn pod_in(component: &str, ancestors: &[&str]) -> Option<(String, &'static str)> {
    if let Some(name) = component.strip_suffix(".slice") {
        let rest = name.strip_prefix("kubepods")?;
        let (qos, uid) = if let Some(u) = rest.strip_prefix("-burstable-pod") {
            ("burstable", u)
        } else if let Some(u) = rest.strip_prefix("-besteffort-pod") {
            ("besteffort", u)
        } else if let Some(u) = rest.strip_prefix("-pod") {
            ("guaranteed", u)
        } else {
            return None;
        };
        let uid = uid.replace('_', "-").to_ascii_lowercase();
        return is_pod_uid(&uid).then_some((uid, qos));
    }
    let uid = component.strip_prefix("pod")?;
    let k = ancestors.iter().rposition(|a| *a == "kubepods")?;
    let qos = match ancestors.get(k + 1) {
        Some(&"burstable") => "burstable",
        Some(&"besteffort") => "besteffort",
        _ => "guaranteed",
    };
    let uid = uid.to_ascii_lowercase();
    is_pod_uid(&uid).then_some((uid, qos))
}

/// What a cgroup path (v2, or the path of a v1 line) says: the innermost container, and the
/// pod. Anything unrecognised gives an empty workload.
pub fn parse_cgroup_path(path: &str) -> Workload {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut w = Workload::default();
    for (i, c) in components.iter().enumerate().rev() {
        if w.container.is_none() {
            w.container = container_in(c, i.checked_sub(1).map(|p| components[p]));
        }
        if w.pod.is_none() {
            w.pod = pod_in(c, &components[..i]);
        }
    }
    w
}
