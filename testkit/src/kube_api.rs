//! A small Kubernetes API server for tests: plain HTTP on 127.0.0.1, pods and Services only,
//! but the real list/watch protocol, so clients are tested against what a kube-apiserver
//! does rather than against a mock of their own code:
//!
//! - `GET /api/v1/{pods,services}` lists with a `resourceVersion`, `limit` and `continue`
//!   (pages), `fieldSelector=spec.nodeName=<node>` for pods;
//! - `?watch=true&resourceVersion=N` streams chunked JSON lines (`ADDED`, `MODIFIED`,
//!   `DELETED`, `BOOKMARK` when `allowWatchBookmarks=true`) of every change after `N`, ends
//!   after `timeoutSeconds`, and answers a version older than the kept history with an
//!   `ERROR` event carrying a `Status` of code 410 (`Expired`), as the API server does;
//! - modes: down (the port refuses connections, open ones are cut) and slow (every answer
//!   waits).
//!
//! [`FakeKubeApi::kubeconfig`] writes a kubeconfig that points at it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// What the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Pods,
    Services,
}

impl Resource {
    fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Services => "Service",
        }
    }
}

struct Watcher {
    id: u64,
    resource: Resource,
    node: Option<String>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Resource, String, String), Value>,
    /// Every change: (resourceVersion, resource, type, object).
    history: Vec<(u64, Resource, &'static str, Value)>,
    /// Watches from a version below this get 410 Gone.
    compacted: u64,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    down: bool,
    slow: Duration,
    requests: Vec<String>,
    lists: BTreeMap<Resource, u64>,
    watches: BTreeMap<Resource, u64>,
    connections: Vec<tokio::task::AbortHandle>,
}

/// A running fake; stops when dropped.
pub struct FakeKubeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    up: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubeApi {
    /// Listens on a free port of 127.0.0.1, with nothing stored (resourceVersion 1).
    pub fn start() -> FakeKubeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            rv: 1,
            ..State::default()
        }));
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(serve(listener, addr, served, up_rx));
            })
            .expect("spawn the fake API");
        FakeKubeApi {
            addr,
            state,
            up,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\n",
                self.url()
            ),
        )
        .expect("write the kubeconfig");
        path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces an object (`ADDED` or `MODIFIED` to watchers); returns its version.
    pub fn apply(&self, resource: Resource, mut object: Value) -> u64 {
        let mut s = self.state();
        s.rv += 1;
        let rv = s.rv;
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("an object with metadata.name")
            .to_string();
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(resource.kind());
        object["metadata"]["namespace"] = json!(ns);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if s
            .objects
            .insert((resource, ns, name), object.clone())
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.publish(rv, resource, kind, object);
        rv
    }

    /// Deletes an object (`DELETED` to watchers); false if there was none.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> bool {
        let mut s = self.state();
        let Some(mut object) =
            s.objects
                .remove(&(resource, namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.publish(rv, resource, "DELETED", object);
        true
    }

    /// Sends a `BOOKMARK` at the current version to every watch that asked for them.
    pub fn bookmark(&self) {
        let mut s = self.state();
        let rv = s.rv;
        s.watchers.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(line(&json!({"type": "BOOKMARK", "object": {
                        "kind": w.resource.kind(), "apiVersion": "v1",
                        "metadata": {"resourceVersion": rv.to_string()}}})))
                    .is_ok()
        });
    }

    /// Forgets the history: a watch from any version before now gets 410 Gone.
    pub fn compact(&self) {
        let mut s = self.state();
        s.compacted = s.rv;
        s.history.clear();
    }

    /// Ends every watch cleanly, as a `timeoutSeconds` does.
    pub fn close_watches(&self) {
        self.state().watchers.clear();
    }

    /// Ends every watch with an `ERROR` event of code 410 (the API server's "too old resource
    /// version" when its watch cache moved on), and forgets the history.
    pub fn expire_watches(&self) {
        let mut s = self.state();
        let rv = s.rv;
        for w in s.watchers.drain(..) {
            let _ = w.tx.send(gone(rv.saturating_sub(1), rv));
        }
        s.compacted = rv;
        s.history.clear();
    }

    /// Down: the port refuses connections and open ones are cut. Up: it listens again.
    pub fn set_down(&self, down: bool) {
        {
            let mut s = self.state();
            s.down = down;
            if down {
                s.watchers.clear();
                for c in s.connections.drain(..) {
                    c.abort();
                }
            }
        }
        let _ = self.up.send(!down);
        // The listener is dropped or bound again by the server's task: wait for it.
        for _ in 0..200 {
            let refused =
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(50))
                    .is_err();
            if refused == down {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the fake API did not go {}",
            if down { "down" } else { "up" }
        );
    }

    /// Every answer waits this long before its headers (lists and watches alike).
    pub fn set_slow(&self, delay: Duration) {
        self.state().slow = delay;
    }

    /// Lists served of `resource` (each page counts).
    pub fn lists(&self, resource: Resource) -> u64 {
        self.state().lists.get(&resource).copied().unwrap_or(0)
    }

    /// Watches started of `resource`.
    pub fn watches(&self, resource: Resource) -> u64 {
        self.state().watches.get(&resource).copied().unwrap_or(0)
    }

    /// Open watch streams.
    pub fn open_watches(&self) -> usize {
        let mut s = self.state();
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }

    /// Path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        {
            let mut s = self.state();
            s.watchers.clear();
            for c in s.connections.drain(..) {
                c.abort();
            }
        }
        // A closed channel stops the server's loop.
        let (closed, _) = tokio::sync::watch::channel(false);
        let _ = std::mem::replace(&mut self.up, closed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    fn publish(&mut self, rv: u64, resource: Resource, kind: &'static str, object: Value) {
        let event = line(&json!({"type": kind, "object": object}));
        self.watchers.retain(|w| {
            w.resource != resource
                || !matches_node(&object, w.node.as_deref())
                || w.tx.send(event.clone()).is_ok()
        });
        self.history.push((rv, resource, kind, object));
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("JSON");
    b.push(b'\n');
    Bytes::from(b)
}

fn gone(asked: u64, now: u64) -> Bytes {
    line(&json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({now})"),
        "reason": "Expired", "code": 410}}))
}

fn matches_node(object: &Value, node: Option<&str>) -> bool {
    node.is_none_or(|n| object["spec"]["nodeName"].as_str() == Some(n))
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mut up: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = Some(tokio::net::TcpListener::from_std(listener).expect("tokio listener"));
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                let is_up = *up.borrow_and_update();
                if is_up && listener.is_none() {
                    listener = Some(bind_again(addr).await);
                } else if !is_up {
                    listener = None;
                }
            }
            Some((stream, _)) = accept => {
                let state2 = state.clone();
                let task = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state2.clone();
                        async move { Ok::<_, Infallible>(handle(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                s.connections.retain(|c| !c.is_finished());
                s.connections.push(task.abort_handle());
            }
        }
    }
}

async fn bind_again(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot listen on {addr} again");
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// `%XX` and `+` decoded.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    let uri = req.uri().clone();
    let slow = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.requests.push(uri.to_string());
        s.slow
    };
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let resource = match uri.path() {
        "/api/v1/pods" => Resource::Pods,
        "/api/v1/services" => Resource::Services,
        p => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the fake API serves /api/v1/pods and /api/v1/services, not {p}"),
            )
        }
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    let node = match query.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(f) => match f
            .strip_prefix("spec.nodeName==")
            .or_else(|| f.strip_prefix("spec.nodeName="))
        {
            Some(n) if resource == Resource::Pods => Some(n.to_string()),
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("field selector {f:?} not supported by the fake API"),
                )
            }
        },
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if s.down {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "down".into(),
        );
    }
    if !watch {
        *s.lists.entry(resource).or_default() += 1;
        return list(&s, resource, node.as_deref(), &query);
    }
    *s.watches.entry(resource).or_default() += 1;
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let from = query.get("resourceVersion").map(String::as_str);
    match from.and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0) {
        Some(v) if v < s.compacted => {
            let _ = tx.send(gone(v, s.rv));
            drop(tx);
        }
        Some(v) => {
            for (rv, r, kind, object) in &s.history {
                if *rv > v && *r == resource && matches_node(object, node.as_deref()) {
                    let _ = tx.send(line(&json!({"type": kind, "object": object})));
                }
            }
            add_watcher(&mut s, &state, resource, node, &query, tx);
        }
        // No version (or 0): every object as ADDED first, then changes.
        None => {
            for ((r, _, _), object) in &s.objects {
                if *r == resource && matches_node(object, node.as_deref()) {
                    let _ = tx.send(line(&json!({"type": "ADDED", "object": object})));
                }
            }
            add_watcher(&mut s, &state, resource, node, &query, tx);
        }
    }
    drop(s);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

fn add_watcher(
    s: &mut State,
    state: &Arc<Mutex<State>>,
    resource: Resource,
    node: Option<String>,
    query: &BTreeMap<String, String>,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    let id = s.next_watcher;
    s.next_watcher += 1;
    s.watchers.push(Watcher {
        id,
        resource,
        node,
        bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
        tx,
    });
    if let Some(secs) = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
    {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            s.watchers.retain(|w| w.id != id);
        });
    }
}

fn list(
    s: &State,
    resource: Resource,
    node: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let items: Vec<&Value> = s
        .objects
        .iter()
        .filter(|((r, _, _), o)| *r == resource && matches_node(o, node))
        .map(|(_, o)| o)
        .collect();
    // A continue token is "<version of the first page>/<offset>".
    let (rv, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let parsed = c
                .split_once('/')
                .and_then(|(v, o)| Some((v.parse::<u64>().ok()?, o.parse::<usize>().ok()?)));
            match parsed {
                Some((v, _)) if v < s.compacted => {
                    return status(
                        StatusCode::GONE,
                        "Expired",
                        "the provided continue parameter is too old".into(),
                    )
                }
                Some(p) => p,
                None => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("continue token {c:?} is not one of the fake API's"),
                    )
                }
            }
        }
        None => (s.rv, 0),
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<&Value> = items.iter().skip(offset).take(limit).copied().collect();
    let next = offset.saturating_add(page.len());
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(format!("{rv}/{next}"));
    }
    full(
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": format!("{}List", resource.kind()),
                "metadata": metadata, "items": page}),
    )
}

/// A running pod's JSON as the API returns it: `owner` is (kind, name) of its controller,
/// `containers` the ids of its containers (`containerd://` added).
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    ip: Option<&str>,
    owner: Option<(&str, &str)>,
    containers: &[&str],
) -> Value {
    let mut p = json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "labels": {"app": name},
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": containers.iter().enumerate().map(|(i, id)| json!({
                "name": format!("c{i}"), "image": "busybox", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": format!("containerd://{id}")})).collect::<Vec<_>>(),
        },
    });
    if let Some(ip) = ip {
        p["status"]["podIP"] = json!(ip);
        p["status"]["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some((kind, owner)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
            "name": owner, "uid": format!("{owner}-uid"), "controller": true}]);
    }
    p
}

/// A Service's JSON with its ClusterIP.
pub fn service(namespace: &str, name: &str, uid: &str, cluster_ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}
