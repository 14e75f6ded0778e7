//! The `prometheus` exporter: serves the latest value of every series on `/metrics` for
//! Prometheus to scrape, in the text format 0.0.4, or OpenMetrics 1.0 when the scraper's
//! `Accept` header asks for `application/openmetrics-text`.
//!
//! Names and labels are translated as the OpenTelemetry → Prometheus compatibility
//! specification says ([`names`]); resource attributes go on `target_info`, `service.name`
//! and `service.instance.id` become `job` and `instance` on every series, the scope becomes
//! `otel_scope_name`/`otel_scope_version`. Delta sums and histograms are added up into
//! cumulative series; exponential histograms are served as explicit-bucket histograms with
//! their own bucket boundaries. Spans are not served (Prometheus has no traces).

pub mod names;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Exporter, ExporterConfig, Invalid,
};
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::model::Telemetry;
use periscope_pipeline::telemetry::ComponentCounters;

use store::Store;

/// Serves metrics on `http://LISTEN/metrics` for Prometheus to scrape (text format 0.0.4, or
/// OpenMetrics 1.0 on request), with names, units and labels translated as the OpenTelemetry
/// → Prometheus compatibility specification says and resource attributes on `target_info`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The address to listen on, `host:port`. The default keeps the endpoint on this host;
    /// `0.0.0.0:9464` makes it reachable from elsewhere.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The most series held at once (`target_info` aside); points of new series past it are
    /// dropped and counted, so the memory the exporter uses stays bounded.
    #[serde(default = "default_series_limit")]
    pub series_limit: NonZeroUsize,
    /// A series not updated for this long is removed from the exposition. `0s` keeps series
    /// forever. Independently of it, a cumulative sum or histogram (which processors emit at
    /// every interval) is removed once it has missed 2.5 of its own intervals (at least 1s
    /// each): its source is gone and had its final point (docs/metrics.md, "When things go
    /// away").
    #[serde(default = "default_expire_after")]
    pub expire_after: ConfigDuration,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_series_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(10_000).unwrap() }
}
fn default_expire_after() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            listen: default_listen(),
            series_limit: default_series_limit(),
            expire_after: default_expire_after(),
        }
    }
}

impl ComponentConfig for PrometheusConfig {
    const TYPE: &'static str = "prometheus";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(vec![Invalid::new(
                "listen",
                format!(
                    "`{}` is not an address with a port; expected e.g. 127.0.0.1:9464 or \
                     0.0.0.0:9464 (an IP address, not a host name)",
                    self.listen
                ),
            )]);
        }
        Ok(())
    }
}

impl ExporterConfig for PrometheusConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        Ok(Box::new(self.build_exporter(ctx)?))
    }
}

impl PrometheusConfig {
    /// Binds the listening socket (a port in use fails here) and starts the server thread.
    pub fn build_exporter(&self, ctx: &BuildContext) -> anyhow::Result<PrometheusExporter> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .with_context(|| format!("`{}` is not an address with a port", self.listen))?;
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("prometheus exporter `{}`: cannot listen on {addr}", ctx.id)
        })?;
        listener
            .set_nonblocking(true)
            .context("cannot make the listening socket non-blocking")?;
        let local = listener.local_addr().context("listening address")?;
        let store = Arc::new(Mutex::new(Store::new(
            self.series_limit.get(),
            self.expire_after.0,
        )));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the prometheus exporter's runtime")?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = store.clone();
        let id = ctx.id.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{}-http", ctx.id))
            .spawn(move || runtime.block_on(serve(listener, served, stop_rx, id)))
            .context("cannot start the prometheus exporter's thread")?;
        tracing::info!(exporter = %ctx.id, "prometheus: serving http://{local}/metrics");
        Ok(PrometheusExporter {
            id: ctx.id.to_string(),
            store,
            counters: ctx.counters.clone(),
            local,
            stop: Some(stop_tx),
            thread: Some(thread),
            last_log: None,
        })
    }
}

/// The running `prometheus` exporter.
pub struct PrometheusExporter {
    id: String,
    store: Arc<Mutex<Store>>,
    counters: Arc<ComponentCounters>,
    local: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    last_log: Option<Instant>,
}

impl PrometheusExporter {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The exposition as a scrape would get it.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut s = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        s.expire();
        s.render(openmetrics)
    }
}

impl Exporter for PrometheusExporter {
    fn export(&mut self, telemetry: Telemetry) -> anyhow::Result<()> {
        self.export_shared(std::sync::Arc::new(telemetry))
    }

    /// Reads the batch only: no copy of a batch other exporters get too.
    fn export_shared(&mut self, telemetry: std::sync::Arc<Telemetry>) -> anyhow::Result<()> {
        let Telemetry::Metrics(batch) = &*telemetry else {
            anyhow::bail!("the prometheus exporter serves metrics only; spans are dropped");
        };
        let refused = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ingest(batch);
        let n = refused.over_limit + refused.type_conflict;
        if n > 0 {
            self.counters.add_dropped(n);
            let now = Instant::now();
            if self
                .last_log
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                self.last_log = Some(now);
                tracing::warn!(
                    exporter = %self.id,
                    over_limit = refused.over_limit,
                    type_conflict = refused.type_conflict,
                    "prometheus: data points dropped (series_limit reached, or a name already \
                     used by a metric of another type)"
                );
            }
        }
        Ok(())
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn serve(
    listener: std::net::TcpListener,
    store: Arc<Mutex<Store>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    id: String,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(exporter = %id, error = %e, "prometheus: cannot serve");
            return;
        }
    };
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(exporter = %id, error = %e, "prometheus: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(respond(&req, &store)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

fn respond(req: &Request<Incoming>, store: &Mutex<Store>) -> Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/metrics") => {
            let openmetrics = req
                .headers()
                .get_all("accept")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let body = {
                let mut s = store.lock().unwrap_or_else(PoisonError::into_inner);
                s.expire();
                s.render(openmetrics)
            };
            reply(200, if openmetrics { OPENMETRICS } else { TEXT }, body)
        }
        ("GET" | "HEAD", "/") => reply(
            200,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n".into(),
        ),
        (_, "/metrics") => reply(405, "text/plain", "use GET\n".into()),
        _ => reply(404, "text/plain", "not found; try /metrics\n".into()),
    }
}
