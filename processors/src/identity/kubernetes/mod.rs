//! The identity processor's Kubernetes source: watches the API's pods (of this node, or with
//! `peers` of the whole cluster, and then its Services too) on a thread of its own and keeps
//! what the processor adds in a [`Store`] it reads per series.
//!
//! kube-rs's watcher does the protocol: a paged list, then a watch from its
//! `resourceVersion` with bookmarks requested (a resumed watch starts from the last
//! bookmark), a relist after `410 Gone`, retries with exponential backoff (0.8 s to 30 s)
//! while the API is unreachable. The store is filled while the API answers; until then (or
//! when a pod is not known yet) series keep the ids their cgroup path gave them.

pub mod store;

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::thread::JoinHandle;

use anyhow::Context;
use futures_util::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;

use periscope_pipeline::telemetry::ComponentCounters;

use super::config::KubernetesOptions;
pub use store::{Extras, Peer, PodMeta, Relist, Store};

/// The environment variable `node_name` defaults to (the DaemonSet sets it from
/// `spec.nodeName` through the downward API).
pub const NODE_NAME_ENV: &str = "K8S_NODE_NAME";

/// What the watches did so far (for logs and tests).
#[derive(Debug, Default)]
pub struct Status {
    /// Lists started: the first, and a relist after each `410 Gone` or lost watch.
    pub lists: AtomicU64,
    /// Lists completed: the store holds what the API had then.
    pub synced: AtomicU64,
    /// Objects added, changed or deleted by watch events.
    pub events: AtomicU64,
    /// Requests or watches that failed (the API unreachable, an error event, `410 Gone`).
    pub errors: AtomicU64,
}

/// A running source; stops its thread when dropped.
pub struct KubernetesSource {
    store: Arc<RwLock<Store>>,
    status: Arc<Status>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The sources running, by their options: the identity processor is built once per
/// pipeline, and pipelines with the same options share one watch (and one store).
fn running() -> &'static Mutex<HashMap<String, Weak<KubernetesSource>>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, Weak<KubernetesSource>>>> = OnceLock::new();
    RUNNING.get_or_init(Mutex::default)
}

impl KubernetesSource {
    /// The source for `options`: the one already running with the same options, else a new
    /// one ([`KubernetesSource::start`]).
    pub fn shared(
        options: &KubernetesOptions,
        id: &str,
        counters: Arc<ComponentCounters>,
    ) -> anyhow::Result<Arc<Self>> {
        let key = format!("{options:?}");
        let mut running = running().lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|_, s| s.strong_count() > 0);
        if let Some(s) = running.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(Self::start(options, id, counters)?);
        running.insert(key, Arc::downgrade(&s));
        Ok(s)
    }

    /// Finds the API's address and credentials and starts watching. Fails only on what
    /// the configuration got wrong (no node name, no kubeconfig, a bad glob); an API that is
    /// down is retried in the background.
    pub fn start(
        options: &KubernetesOptions,
        id: &str,
        counters: Arc<ComponentCounters>,
    ) -> anyhow::Result<Self> {
        let node = match &options.node_name {
            Some(n) => n.clone(),
            None => std::env::var(NODE_NAME_ENV).map_err(|_| {
                anyhow::anyhow!(
                    "identity `{id}`: kubernetes.node_name is not set and neither is \
                     ${NODE_NAME_ENV}; set it from the downward API (fieldRef: spec.nodeName) \
                     or name the node in the config"
                )
            })?,
        };
        let extras = Extras {
            labels: globs(&options.labels).context("kubernetes.labels")?,
            annotations: globs(&options.annotations).context("kubernetes.annotations")?,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the Kubernetes watch's runtime")?;
        let config = runtime
            .block_on(load_config(options.kubeconfig.as_deref()))
            .with_context(|| format!("identity `{id}`: kubernetes"))?;
        let server = config.cluster_url.to_string();
        let client = {
            let _in_runtime = runtime.enter();
            Client::try_from(config).context("cannot make a Kubernetes API client")?
        };
        let store = Arc::new(RwLock::new(Store::new(&node, extras)));
        let status = Arc::new(Status::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watch = Watch {
            client,
            node: node.clone(),
            peers: options.peers,
            store: store.clone(),
            status: status.clone(),
            counters,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{id}-k8s"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stop_rx => {}
                        () = watch.run() => {}
                    }
                });
            })
            .context("cannot start the Kubernetes watch's thread")?;
        tracing::info!(
            processor = id,
            %server,
            node = %node,
            peers = options.peers,
            "identity: watching Kubernetes pods"
        );
        Ok(KubernetesSource {
            store,
            status,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The tables, for a lookup (a read lock the watch takes for writing per event).
    pub fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn status(&self) -> &Status {
        &self.status
    }
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn globs(list: &[String]) -> anyhow::Result<Option<GlobSet>> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in list {
        b.add(Glob::new(g).with_context(|| format!("`{g}` is not a key or glob"))?);
    }
    Ok(Some(b.build()?))
}

/// The API's address and credentials: `kubeconfig` if given, else the standard way (the
/// pod's service account in a cluster, else `KUBECONFIG`, else `~/.kube/config`).
async fn load_config(kubeconfig: Option<&Path>) -> anyhow::Result<Config> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| {
                    format!("the kubeconfig {} names no usable cluster", path.display())
                })
        }
        None => Config::infer().await.context(
            "no Kubernetes API found: not in a pod with a service account, and no KUBECONFIG \
             or ~/.kube/config; set kubernetes.kubeconfig",
        ),
    }
}

/// The watches of one source.
struct Watch {
    client: Client,
    node: String,
    peers: bool,
    store: Arc<RwLock<Store>>,
    status: Arc<Status>,
    counters: Arc<ComponentCounters>,
}

/// How one kind of object goes into the store.
struct Kind<K> {
    what: &'static str,
    apply: fn(&mut Store, &K, bool) -> Option<Arc<str>>,
    delete: fn(&mut Store, &str),
    finish: fn(&mut Store, Relist) -> usize,
}

impl Watch {
    async fn run(self) {
        // Without peers only this node's pods; with them every pod (this node's among them).
        let mut pods = watcher::Config::default();
        if !self.peers {
            pods = pods.fields(&format!("spec.nodeName={}", self.node));
        }
        let pod_kind = Kind::<Pod> {
            what: "pods",
            apply: Store::apply_pod,
            delete: Store::delete_pod,
            finish: Store::finish_pod_relist,
        };
        let pod_watch = self.watch(Api::<Pod>::all(self.client.clone()), pods, pod_kind);
        if self.peers {
            let service_kind = Kind::<Service> {
                what: "services",
                apply: |s, svc, _| s.apply_service(svc),
                delete: Store::delete_service,
                finish: Store::finish_service_relist,
            };
            let services = self.watch(
                Api::<Service>::all(self.client.clone()),
                watcher::Config::default(),
                service_kind,
            );
            tokio::join!(pod_watch, services);
        } else {
            pod_watch.await;
        }
    }

    async fn watch<K>(&self, api: Api<K>, config: watcher::Config, kind: Kind<K>)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut relist: Option<Relist> = None;
        let mut failing = false;
        let write = || self.store.write().unwrap_or_else(PoisonError::into_inner);
        let uid = |o: &K| o.meta().uid.clone();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters.add_errors(1);
                    if !failing {
                        tracing::warn!(
                            "identity: the Kubernetes API's {} are not watched ({e}); pods are \
                             named by their uid until it answers, retrying with backoff",
                            kind.what
                        );
                        failing = true;
                    } else {
                        tracing::debug!(error = %e, "identity: Kubernetes watch still failing");
                    }
                    continue;
                }
            };
            match event {
                Event::Init => {
                    self.status.lists.fetch_add(1, Ordering::Relaxed);
                    relist = Some(Relist::default());
                }
                Event::InitApply(o) => {
                    let seen = (kind.apply)(&mut write(), &o, self.peers);
                    if let (Some(r), Some(u)) = (relist.as_mut(), seen) {
                        r.saw(&u);
                    }
                }
                Event::InitDone => {
                    let mut store = write();
                    let gone = relist.take().map_or(0, |r| (kind.finish)(&mut store, r));
                    let (pods, peers) = (store.pods(), store.peers());
                    drop(store);
                    self.status.synced.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        tracing::info!(
                            "identity: the Kubernetes API answers again; {} relisted",
                            kind.what
                        );
                        failing = false;
                    }
                    tracing::debug!(
                        what = kind.what,
                        pods,
                        peers,
                        gone,
                        "identity: Kubernetes list done"
                    );
                }
                Event::Apply(o) => {
                    self.status.events.fetch_add(1, Ordering::Relaxed);
                    (kind.apply)(&mut write(), &o, self.peers);
                    failing = false;
                }
                Event::Delete(o) => {
                    self.status.events.fetch_add(1, Ordering::Relaxed);
                    if let Some(u) = uid(&o) {
                        (kind.delete)(&mut write(), &u);
                    }
                    failing = false;
                }
            }
        }
    }
}
