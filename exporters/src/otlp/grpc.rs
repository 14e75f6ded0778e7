//! OTLP/gRPC with tonic: `MetricsService/Export` and `TraceService/Export`.

use std::time::Duration;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::config::{Compression, OtlpConfig};
use super::retry::{grpc_code_retryable, Outcome};

/// A lazily connecting gRPC channel with both service clients.
pub struct GrpcTransport {
    metrics: MetricsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
    headers: MetadataMap,
}

impl GrpcTransport {
    /// Reads TLS files and prepares the channel; connects on the first request (must be
    /// called inside a tokio runtime... it is not: `connect_lazy` needs none until used).
    pub fn new(config: &OtlpConfig) -> anyhow::Result<Self> {
        let mut endpoint_url = config.endpoint.clone();
        if config.tls.insecure && endpoint_url.starts_with("https://") {
            endpoint_url = endpoint_url.replacen("https://", "http://", 1);
        }
        let mut endpoint = Endpoint::from_shared(endpoint_url)
            .context("invalid endpoint")?
            .timeout(config.timeout.get())
            .connect_timeout(config.timeout.get().min(Duration::from_secs(10)))
            .tcp_nodelay(true);
        if config.uses_tls() {
            let mut tls = ClientTlsConfig::new();
            match &config.tls.ca_file {
                Some(ca) => {
                    let pem = std::fs::read(ca)
                        .with_context(|| format!("cannot read tls.ca_file `{}`", ca.display()))?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                None => tls = tls.with_native_roots(),
            }
            if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
                let cert = std::fs::read(cert)
                    .with_context(|| format!("cannot read tls.cert_file `{}`", cert.display()))?;
                let key = std::fs::read(key)
                    .with_context(|| format!("cannot read tls.key_file `{}`", key.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        let channel = endpoint.connect_lazy();
        let mut headers = MetadataMap::new();
        for (k, v) in &config.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .with_context(|| format!("header name `{k}`"))?;
            let value = MetadataValue::try_from(v.as_str())
                .with_context(|| format!("header `{k}` value"))?;
            headers.insert(key, value);
        }
        let mut metrics = MetricsServiceClient::new(channel.clone())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX);
        let mut traces = TraceServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX);
        if config.compression == Compression::Gzip {
            metrics = metrics.send_compressed(CompressionEncoding::Gzip);
            traces = traces.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(GrpcTransport {
            metrics,
            traces,
            headers,
        })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        *r.metadata_mut() = self.headers.clone();
        r
    }

    pub async fn send_metrics(&mut self, req: ExportMetricsServiceRequest) -> Outcome {
        let r = self.request(req);
        match self.metrics.export(r).await {
            Ok(resp) => Outcome::of_metrics(resp.into_inner()),
            Err(status) => classify(&status),
        }
    }

    pub async fn send_traces(&mut self, req: ExportTraceServiceRequest) -> Outcome {
        let r = self.request(req);
        match self.traces.export(r).await {
            Ok(resp) => Outcome::of_traces(resp.into_inner()),
            Err(status) => classify(&status),
        }
    }
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The server's `RetryInfo.retry_delay`, if it sent one.
fn retry_info(status: &tonic::Status) -> Option<Duration> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let s = RpcStatus::decode(details).ok()?;
    s.details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .map(|r| {
            let d = r.retry_delay.unwrap_or_default();
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        })
}

/// Sorts a failed call into retryable or permanent, as the OTLP specification says.
pub fn classify(status: &tonic::Status) -> Outcome {
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    let info = retry_info(status);
    match status.code() {
        tonic::Code::ResourceExhausted if info.is_some() => Outcome::Retryable {
            reason,
            after: info,
        },
        code if grpc_code_retryable(code) => Outcome::Retryable {
            reason,
            after: info,
        },
        _ => Outcome::Permanent { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_info(code: tonic::Code, secs: i64) -> tonic::Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: secs,
                nanos: 0,
            }),
        };
        let st = RpcStatus {
            code: code as i32,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, "slow down", st.encode_to_vec().into())
    }

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        assert!(matches!(
            classify(&tonic::Status::resource_exhausted("full")),
            Outcome::Permanent { .. }
        ));
        assert_eq!(
            classify(&with_retry_info(tonic::Code::ResourceExhausted, 3)),
            Outcome::Retryable {
                reason: "gRPC ResourceExhausted: slow down".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            classify(&tonic::Status::unavailable("down")),
            Outcome::Retryable { after: None, .. }
        ));
        assert!(matches!(
            classify(&tonic::Status::invalid_argument("bad")),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            classify(&tonic::Status::unauthenticated("who")),
            Outcome::Permanent { .. }
        ));
    }
}
