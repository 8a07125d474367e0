//! TLS on both listeners, with certificates made by a CA of the test's own
//! (`vigil_testing::pki`): the real SDK exports over OTLP/gRPC with TLS, an
//! HTTPS client posts OTLP/HTTP; a renewed certificate is served without a
//! restart; with a client CA, a client without a certificate is refused in
//! the handshake.

use super::*;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use vigil_testing::pki::Pki;

/// A collector serving TLS with `pki`'s certificate, as `configure` says.
async fn tls_collector(pki: &Pki, configure: impl FnOnce(&mut Config)) -> Harness {
    let bus = Arc::new(EmbeddedBus::new(&embedded_bus_config(), Duration::from_secs(5)).unwrap());
    let tls = pki.server_tls();
    Harness::start_configured(bus, |config| {
        config.collector.tls = Some(tls);
        configure(config);
    })
    .await
}

/// An HTTPS client that trusts `pki`'s CA (and, with `identity`, presents a
/// client certificate); a new connection for every client.
fn https_client(pki: &Pki, identity: Option<&vigil_testing::pki::Issued>) -> reqwest::Client {
    let ca = std::fs::read(&pki.ca_file).unwrap();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_info(true);
    if let Some(issued) = identity {
        let mut pem = std::fs::read(&issued.cert_file).unwrap();
        pem.extend(std::fs::read(&issued.key_file).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn https_url(harness: &Harness, path: &str) -> String {
    format!(
        "https://localhost:{}{path}",
        harness.collector.http_address().port()
    )
}

/// One gauge point of `service`, as OTLP/HTTP protobuf.
fn gauge_body(service: &str) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: otlp_resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".to_owned(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns(),
                            value: Some(number_data_point::Value::AsInt(42)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post_gauge(
    client: &reqwest::Client,
    url: &str,
    service: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-protobuf")
        .body(gauge_body(service))
        .send()
        .await
}

/// The DER of the certificate the server presented.
fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>();
    info.and_then(|info| info.peer_certificate())
        .expect("a TLS response carries the server's certificate")
        .to_vec()
}

fn der_of(pem_file: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_over_grpc_with_tls_and_https_posts_are_taken() {
    let pki = Pki::new();
    let harness = tls_collector(&pki, |_| {}).await;

    // The real SDK over OTLP/gRPC with TLS, trusting the test CA.
    let ca = std::fs::read(&pki.ca_file).unwrap();
    let endpoint = format!(
        "https://localhost:{}",
        harness.collector.grpc_address().port()
    );
    tokio::task::spawn_blocking(move || {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .with_metadata(metadata)
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource("checkout-tls"))
            .with_batch_exporter(exporter)
            .build();
        provider.tracer("vigil-test").start("POST /pay").end();
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
    let topics = harness.config.bus.topics();
    let spans = harness.read(&topics.traces, |m| !m.is_empty()).await;
    let names: Vec<String> = decode::<ExportTraceServiceRequest>(&spans)
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["POST /pay"]);

    // OTLP/HTTP over HTTPS.
    let url = https_url(&harness, "/v1/metrics");
    let response = post_gauge(&https_client(&pki, None), &url, "billing-tls")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = harness.read(&topics.metrics, |m| !m.is_empty()).await;
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].key, "acme/billing-tls");

    // Plain HTTP to a TLS port gets no answer; a client that does not trust
    // the CA does not connect.
    let plain = reqwest::Client::new();
    let plain_url = format!("http://{}/v1/metrics", harness.collector.http_address());
    assert!(post_gauge(&plain, &plain_url, "x").await.is_err());
    let untrusting = post_gauge(&reqwest::Client::new(), &url, "x").await;
    let error = untrusting.expect_err("the test CA is not a system root");
    assert!(error.is_connect(), "{error:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let harness = tls_collector(&pki, |_| {}).await;
    let tls = harness.config.collector.tls.clone().unwrap();
    let url = https_url(&harness, "/v1/metrics");
    let first = post_gauge(&https_client(&pki, None), &url, "renewal")
        .await
        .unwrap();
    assert_eq!(peer_certificate(&first), der_of(&tls.cert_file));

    let renewed = pki.server("renewed", 90);
    std::fs::copy(&renewed.key_file, &tls.key_file).unwrap();
    std::fs::copy(&renewed.cert_file, &tls.cert_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = post_gauge(&https_client(&pki, None), &url, "renewal")
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        if peer_certificate(&response) == der_of(&renewed.cert_file) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Files that do not make a certificate leave the last good one served.
    std::fs::write(&tls.cert_file, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = post_gauge(&https_client(&pki, None), &url, "renewal")
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), der_of(&renewed.cert_file));
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new();
    let ca_file = pki.ca_file.clone();
    let harness = tls_collector(&pki, |config| {
        config.collector.tls.as_mut().unwrap().client_ca_file = Some(ca_file);
    })
    .await;
    let url = https_url(&harness, "/v1/metrics");
    let anonymous = post_gauge(&https_client(&pki, None), &url, "mtls").await;
    assert!(anonymous.is_err(), "served without a client certificate");

    let other_ca = Pki::new();
    let stranger = other_ca.client("stranger");
    let foreign = post_gauge(&https_client(&pki, Some(&stranger)), &url, "mtls").await;
    assert!(
        foreign.is_err(),
        "served with another CA's client certificate"
    );

    let client = pki.client("payments");
    let response = post_gauge(&https_client(&pki, Some(&client)), &url, "mtls")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = harness
        .read(&harness.config.bus.topics().metrics, |m| !m.is_empty())
        .await;
    assert_eq!(metrics.len(), 1);
    harness.stop().await;
}
