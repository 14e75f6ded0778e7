//! OTLP/HTTP with reqwest (rustls): `POST /v1/metrics` and `/v1/traces` with protobuf or JSON
//! bodies, gzip-compressed on request.

use std::io::Write;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};

use super::config::{Compression, OtlpConfig, Protocol};
use super::retry::{http_status_retryable, parse_retry_after, Outcome};
use crate::otlp_json;

/// An HTTP client and the two signal URLs.
pub struct HttpTransport {
    client: reqwest::Client,
    metrics_url: String,
    traces_url: String,
    json: bool,
    gzip: bool,
    body: Vec<u8>,
}

/// The URLs for metrics and traces: `/v1/metrics` and `/v1/traces` appended to a base URL, or
/// the URL as it is when it has a path of its own.
pub fn signal_urls(endpoint: &str) -> (String, String) {
    let after_scheme = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let has_path = after_scheme
        .find('/')
        .map(|i| !after_scheme[i..].trim_end_matches('/').is_empty())
        .unwrap_or(false);
    if has_path {
        (endpoint.to_string(), endpoint.to_string())
    } else {
        let base = endpoint.trim_end_matches('/');
        (format!("{base}/v1/metrics"), format!("{base}/v1/traces"))
    }
}

impl HttpTransport {
    pub fn new(config: &OtlpConfig) -> anyhow::Result<Self> {
        let mut endpoint = config.endpoint.clone();
        if config.tls.insecure && endpoint.starts_with("https://") {
            endpoint = endpoint.replacen("https://", "http://", 1);
        }
        let json = config.protocol == Protocol::HttpJson;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header `{k}`"))?,
                HeaderValue::from_str(v).with_context(|| format!("header `{k}` value"))?,
            );
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json {
                "application/json"
            } else {
                "application/x-protobuf"
            }),
        );
        if config.compression == Compression::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .timeout(config.timeout.get())
            .user_agent(concat!("periscope/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if config.uses_tls() {
            if let Some(ca) = &config.tls.ca_file {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read tls.ca_file `{}`", ca.display()))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("tls.ca_file `{}`", ca.display()))?
                {
                    builder = builder.add_root_certificate(cert);
                }
                builder = builder.tls_built_in_root_certs(false);
            }
            if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
                let mut pem = std::fs::read(cert)
                    .with_context(|| format!("cannot read tls.cert_file `{}`", cert.display()))?;
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key)
                        .with_context(|| format!("cannot read tls.key_file `{}`", key.display()))?,
                );
                builder = builder.identity(
                    reqwest::Identity::from_pem(&pem).context("client certificate and key")?,
                );
            }
        }
        let client = builder.build().context("cannot set up the HTTP client")?;
        let (metrics_url, traces_url) = signal_urls(&endpoint);
        Ok(HttpTransport {
            client,
            metrics_url,
            traces_url,
            json,
            gzip: config.compression == Compression::Gzip,
            body: Vec::new(),
        })
    }

    fn encode(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        self.body.clear();
        write(&mut self.body);
        if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(&self.body);
            enc.finish().unwrap_or_default()
        } else {
            self.body.clone()
        }
    }

    pub async fn send_metrics(&mut self, req: &ExportMetricsServiceRequest) -> Outcome {
        let url = self.metrics_url.clone();
        self.send(
            &url,
            req,
            otlp_json::write_metrics_request,
            "rejectedDataPoints",
            |body| Outcome::of_metrics(Message::decode(body).unwrap_or_default()),
        )
        .await
    }

    pub async fn send_traces(&mut self, req: &ExportTraceServiceRequest) -> Outcome {
        let url = self.traces_url.clone();
        self.send(
            &url,
            req,
            otlp_json::write_traces_request,
            "rejectedSpans",
            |body| Outcome::of_traces(Message::decode(body).unwrap_or_default()),
        )
        .await
    }

    /// One signal's request: encoded as JSON (`write_json`) or protobuf, posted to `url`; the
    /// partial success read from the response, JSON by its `rejected` field name, protobuf by
    /// `accepted`.
    async fn send<R: Message>(
        &mut self,
        url: &str,
        req: &R,
        write_json: fn(&mut Vec<u8>, &R),
        rejected: &str,
        accepted: fn(&[u8]) -> Outcome,
    ) -> Outcome {
        let json = self.json;
        let body = self.encode(|b| {
            if json {
                write_json(b, req)
            } else {
                req.encode(b).expect("a Vec grows as needed")
            }
        });
        match self.post(url, body).await {
            Ok(bytes) => {
                if json {
                    return json_partial_success(&bytes, rejected);
                }
                accepted(bytes.as_ref())
            }
            Err(o) => o,
        }
    }

    /// Posts `body`; the response body on 2xx, the outcome otherwise.
    async fn post(&self, url: &str, body: Vec<u8>) -> Result<bytes::Bytes, Outcome> {
        let resp = match self.client.post(url).body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                // Connection refused, reset, timed out: the backend may come back.
                let reason = format!("POST {url}: {}", error_chain(&e));
                return Err(if e.is_builder() {
                    Outcome::Permanent { reason }
                } else {
                    Outcome::Retryable {
                        reason,
                        after: None,
                    }
                });
            }
        };
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(bytes);
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let reason = format!("POST {url}: HTTP {status}: {}", text.trim());
        Err(if http_status_retryable(status.as_u16()) {
            Outcome::Retryable { reason, after }
        } else {
            Outcome::Permanent { reason }
        })
    }
}

/// The partial success of an OTLP/JSON response. The count is an int64, which OTLP/JSON
/// writes as a string but some servers write as a number: both are read.
fn json_partial_success(body: &[u8], field: &str) -> Outcome {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let p = &v["partialSuccess"];
    let rejected = match &p[field] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Outcome::Accepted {
        rejected,
        message: p["errorMessage"].as_str().unwrap_or_default().to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_partial_success_as_string_or_number() {
        let o = json_partial_success(
            br#"{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"bad"}}"#,
            "rejectedDataPoints",
        );
        assert_eq!(
            o,
            Outcome::Accepted {
                rejected: 3,
                message: "bad".into()
            }
        );
        let o = json_partial_success(
            br#"{"partialSuccess":{"rejectedSpans":2}}"#,
            "rejectedSpans",
        );
        assert!(matches!(o, Outcome::Accepted { rejected: 2, .. }));
        let o = json_partial_success(b"{}", "rejectedSpans");
        assert!(matches!(o, Outcome::Accepted { rejected: 0, .. }));
        let o = json_partial_success(b"", "rejectedSpans");
        assert!(matches!(o, Outcome::Accepted { rejected: 0, .. }));
    }

    #[test]
    fn urls_get_signal_paths_unless_they_have_one() {
        assert_eq!(
            signal_urls("http://127.0.0.1:4318"),
            (
                "http://127.0.0.1:4318/v1/metrics".into(),
                "http://127.0.0.1:4318/v1/traces".into()
            )
        );
        assert_eq!(
            signal_urls("https://otlp.example.com/"),
            (
                "https://otlp.example.com/v1/metrics".into(),
                "https://otlp.example.com/v1/traces".into()
            )
        );
        assert_eq!(
            signal_urls("http://gw:4318/custom/ingest").0,
            "http://gw:4318/custom/ingest"
        );
    }
}
