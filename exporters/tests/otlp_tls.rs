//! OTLP/gRPC over TLS (rustls): a custom CA and a client certificate (mutual TLS) against a
//! sink that requires one; without the client certificate the request fails and its items
//! are counted as dropped; `insecure: true` talks plaintext to an `https://` endpoint.
//! Certificates are made by `openssl` for this test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use periscope_exporters::otlp::{OtlpConfig, Protocol};
use periscope_pipeline::component::{ComponentConfig, Exporter};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};
use periscope_pipeline::model::Telemetry;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use periscope_testkit::otlp::sink::{free_port, Sink};
use periscope_testkit::{context, require_tools, telemetry, TestDir};

fn openssl(dir: &Path, args: &str) {
    let ok = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl {args} failed");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_certs(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        dir,
        &format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=periscope-test-ca"),
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        openssl(
            dir,
            &format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
            ),
        );
    }
}

fn config(port: u16, dir: &Path, client_cert: bool) -> OtlpConfig {
    let mut c = OtlpConfig {
        endpoint: format!("https://127.0.0.1:{port}"),
        protocol: Protocol::Grpc,
        ..OtlpConfig::default()
    };
    c.tls.ca_file = Some(dir.join("ca.pem"));
    if client_cert {
        c.tls.cert_file = Some(dir.join("client.pem"));
        c.tls.key_file = Some(dir.join("client.key"));
    }
    c.batch.timeout = ConfigDuration::from_millis(0);
    c.timeout = PositiveDuration::from_secs(3);
    c.retry_on_failure.enabled = false;
    c.validate().expect("valid");
    c
}

#[test]
fn grpc_mutual_tls_with_a_custom_ca() {
    if !require_tools("grpc_mutual_tls_with_a_custom_ca", &["openssl"]) {
        return;
    }
    let dir = TestDir::new("tls");
    make_certs(dir.path());
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let port = free_port();
    let sink = Sink::start_tls(port, Arc::default(), Some(tls));

    // With the client certificate: delivered.
    let ctx = context("otlp/mtls");
    let mut exporter = config(port, dir.path(), true).build_exporter(&ctx).unwrap();
    telemetry::send_metrics(&mut exporter);
    assert!(
        sink.wait_for(Duration::from_secs(10), |r| r.all_metrics().len() == 4),
        "nothing arrived over mutual TLS"
    );
    assert_eq!(exporter.stats().totals(), (6, 0, 6, 0, 0));

    // Without it the server refuses the handshake: dropped and counted.
    let ctx = context("otlp/no-client-cert");
    let mut exporter = config(port, dir.path(), false)
        .build_exporter(&ctx)
        .unwrap();
    telemetry::send_metrics(&mut exporter);
    assert_eq!(exporter.stats().totals(), (6, 0, 0, 6, 0));
    assert_eq!(ctx.counters.values().dropped, 6);
    assert_eq!(sink.received.lock().unwrap().all_metrics().len(), 4);
    drop(sink);

    // `insecure: true`: plaintext even though the endpoint says https.
    let port = free_port();
    let plain = Sink::start(port);
    let mut c = config(port, dir.path(), false);
    c.tls.insecure = true;
    let mut exporter = c.build_exporter(&context("otlp/insecure")).unwrap();
    telemetry::send_metrics(&mut exporter);
    assert!(plain.wait_for(Duration::from_secs(10), |r| r.all_metrics().len() == 4));
}

/// OTLP/HTTP over TLS: an HTTPS server (rustls) that requires a client certificate signed by
/// the test CA; the exporter trusts the server through `tls.ca_file` and presents
/// `tls.cert_file`/`tls.key_file`.
#[test]
fn http_mutual_tls_with_a_custom_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    if !require_tools("http_mutual_tls_with_a_custom_ca", &["openssl"]) {
        return;
    }
    let dir = TestDir::new("htls");
    make_certs(dir.path());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                // Read the head and the body, answer 200 with an empty response message.
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len = periscope_testkit::http::content_length(&text[..i]);
                        if raw.len() >= i + 4 + len {
                            log.lock().unwrap().push(text[..i].to_string());
                            break;
                        }
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            }
        });
    });

    let mut c = config(port, dir.path(), true);
    c.protocol = Protocol::HttpProtobuf;
    let ctx = context("otlp/https");
    let mut exporter = c.build_exporter(&ctx).unwrap();
    exporter
        .export(Telemetry::Metrics(telemetry::metrics()))
        .unwrap();
    exporter
        .export(Telemetry::Traces(telemetry::traces()))
        .unwrap();
    exporter.flush().unwrap();
    assert_eq!(exporter.stats().totals(), (8, 0, 8, 0, 0));
    let seen = seen.lock().unwrap();
    let paths: Vec<_> = seen
        .iter()
        .map(|h| h.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(paths, ["/v1/metrics", "/v1/traces"]);

    // Without the client certificate the handshake fails: dropped and counted.
    drop(seen);
    let mut c = config(port, dir.path(), false);
    c.protocol = Protocol::HttpProtobuf;
    let ctx = context("otlp/https-no-cert");
    let mut exporter = c.build_exporter(&ctx).unwrap();
    telemetry::send_metrics(&mut exporter);
    assert_eq!(exporter.stats().totals(), (6, 0, 0, 6, 0));
    assert_eq!(ctx.counters.values().dropped, 6);
}
