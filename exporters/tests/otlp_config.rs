//! The `otlp` and `prometheus` exporter configs: defaults, YAML, `configs/otlp.yaml`, and the
//! problems `periscope validate` reports (all at once, with the key path).

use std::time::Duration;

use periscope_exporters::otlp::{Compression, OtlpConfig, Protocol};
use periscope_exporters::prometheus::PrometheusConfig;
use periscope_pipeline::component::ComponentConfig;
use periscope_pipeline::config::{de::from_node, env, problems, yaml::parse};

fn otlp(yaml: &str) -> OtlpConfig {
    from_node(&parse(yaml).expect("yaml"), &[]).expect("config")
}

#[test]
fn otlp_defaults() {
    let c = otlp("{}");
    assert_eq!(c.endpoint, "http://127.0.0.1:4317");
    assert_eq!(c.protocol, Protocol::Grpc);
    assert_eq!(c.compression, Compression::Gzip);
    assert_eq!(c.timeout.get(), Duration::from_secs(10));
    assert_eq!(c.sending_queue.queue_size.get(), 1000);
    assert!(c.retry_on_failure.enabled);
    assert_eq!(
        c.retry_on_failure.initial_interval.0,
        Duration::from_secs(5)
    );
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn otlp_from_yaml() {
    let c = otlp(
        "endpoint: https://otlp.example.com:4318\n\
         protocol: http/json\n\
         headers: {authorization: Bearer x}\n\
         tls: {ca_file: /etc/ca.pem, cert_file: c.pem, key_file: k.pem}\n\
         compression: none\n\
         timeout: 3s\n\
         sending_queue: {queue_size: 10}\n\
         batch: {max_size: 100, timeout: 0s}\n\
         retry_on_failure: {enabled: false, initial_interval: 1s, max_interval: 2s, max_elapsed_time: 0s}\n",
    );
    assert_eq!(c.protocol, Protocol::HttpJson);
    assert_eq!(c.headers["authorization"], "Bearer x");
    assert!(c.uses_tls());
    assert_eq!(c.compression, Compression::None);
    assert_eq!(c.batch.max_size.get(), 100);
    assert!(!c.retry_on_failure.enabled);
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        otlp("protocol: http/protobuf").protocol,
        Protocol::HttpProtobuf
    );

    let e = from_node::<OtlpConfig>(&parse("{endpont: x}").unwrap(), &[]).unwrap_err();
    assert!(e.message.contains("endpont"), "{}", e.message);
    let e = from_node::<OtlpConfig>(&parse("protocol: http").unwrap(), &[]).unwrap_err();
    assert!(e.message.contains("http/protobuf"), "{}", e.message);
    let e = from_node::<OtlpConfig>(&parse("tls: {insecur: true}").unwrap(), &[]).unwrap_err();
    assert!(e.message.contains("insecur"), "{}", e.message);
}

#[test]
fn otlp_validate_reports_every_problem() {
    // As `periscope validate` reads it: `validate`'s problems and the values the option types
    // refuse, all at once, in the order of the text.
    let problems = problems::<OtlpConfig>(
        "endpoint: 127.0.0.1:4317\n\
         headers: {'bad header': x}\n\
         tls: {cert_file: c.pem}\n\
         timeout: 0s\n\
         sending_queue: {queue_size: 0}\n\
         batch: {max_size: 0}\n\
         retry_on_failure: {initial_interval: 10s, max_interval: 1s}\n",
    );
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "endpoint",
            "headers.bad header",
            "tls",
            "timeout",
            "sending_queue.queue_size",
            "batch.max_size",
            "retry_on_failure.max_interval"
        ]
    );
    assert!(
        problems[0].message.contains("http://127.0.0.1:4317"),
        "{}",
        problems[0].message
    );
}

#[test]
fn shipped_otlp_yaml_has_a_valid_otlp_exporter() {
    let text = include_str!("../../configs/otlp.yaml");
    let mut root = parse(text).expect("yaml");
    let problems = env::substitute(&mut root, &|_| None);
    assert!(problems.is_empty(), "{problems:?}");
    let node = root
        .get("exporters")
        .and_then(|e| e.get("otlp"))
        .expect("exporters.otlp");
    let c: OtlpConfig = from_node(node, &["exporters".into(), "otlp".into()]).expect("config");
    assert_eq!(c.endpoint, "http://127.0.0.1:4317");
    assert_eq!(c.protocol, Protocol::Grpc);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn prometheus_config() {
    let c: PrometheusConfig = from_node(&parse("{}").unwrap(), &[]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9464");
    assert_eq!(c.validate(), Ok(()));
    let problems = problems::<PrometheusConfig>("{listen: 'localhost:9464', series_limit: 0}");
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].path, "listen");
    let e = from_node::<PrometheusConfig>(&parse("{port: 1}").unwrap(), &[]).unwrap_err();
    assert!(e.message.contains("port"), "{}", e.message);
}

#[test]
fn prometheus_port_in_use_is_a_build_error_naming_the_address() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let c = PrometheusConfig {
        listen: addr.to_string(),
        ..PrometheusConfig::default()
    };
    let ctx = periscope_testkit::context("prometheus");
    let err = format!("{:#}", c.build_exporter(&ctx).err().expect("port in use"));
    assert!(err.contains(&addr.to_string()), "{err}");
}

/// Registers like the CLI does, and checks that every option (nested ones too) has a doc
/// comment: those are the user documentation (`periscope components`).
#[test]
fn registered_and_every_option_documented() {
    use periscope_pipeline::component::{Kind, Registry};
    let registry = Registry::new()
        .exporter::<OtlpConfig>()
        .exporter::<PrometheusConfig>();
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{path}.{k}"));
                }
            }
        }
        if let Some(obj) = v.as_object() {
            for (k, child) in obj {
                walk(child, &format!("{path}/{k}"), missing);
            }
        }
    }
    for name in ["otlp", "prometheus"] {
        let t = registry.get(Kind::Exporter, name).expect("registered");
        let schema = serde_json::to_value(t.schema()).unwrap();
        assert!(
            schema.get("description").is_some(),
            "{name} has no description"
        );
        let mut missing = Vec::new();
        walk(&schema, name, &mut missing);
        assert!(missing.is_empty(), "undocumented options: {missing:?}");
    }
}
