//! One run of a probe at a location: its steps in order, each request
//! carrying the run's trace context, and the run as OTLP spans (a root span
//! for the run, a client span per step that ran).
//!
//! A step is tried again (after 100 ms, doubling) when the request fails,
//! times out or answers an unexpected status, up to its `retries`; a wrong
//! body, a missing extraction or a blown latency budget fails it at once.
//! After a failure only `always` steps run, and one whose variables an
//! earlier failure left unset is skipped: it has nothing to act on.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::Value;
use vigil_domain::error_chain;
use vigil_domain::model::{TLS_NOT_AFTER, hex};
use vigil_domain::time::rfc3339;
use vigil_tls as tls;
use vigil_tls::client::Verification;

use crate::grpc::Clients;
use crate::scenario::{Action, Body, Check, GRPC_CODES, HttpRequest, Location, Probe, Step};
use vigil_domain::template::{JsonTemplate, Missing, Vars};

/// The most of a response body read for assertions.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one run did.
#[derive(Debug)]
pub struct Run {
    /// The first failure, as `step <name>: <reason>`.
    pub failure: Option<String>,
    /// Steps that ran and failed.
    pub failed_steps: usize,
    /// Steps that did not run because of an earlier failure.
    pub skipped_steps: usize,
    /// The root span first, then one per step that ran.
    pub spans: Vec<Span>,
}

impl Run {
    /// Steps that ran: one span each after the root's.
    pub fn steps(&self) -> usize {
        self.spans.len() - 1
    }
}

/// Runs probes; shares connections between runs.
pub struct Runner {
    /// For probes that check their targets' certificates (all by default).
    verifying: Transport,
    /// For probes that ask for `insecure_skip_verify`.
    trusting: Transport,
}

/// The HTTP and gRPC clients of a run, with one TLS configuration.
struct Transport {
    http: reqwest::Client,
    grpc: Clients,
}

impl Runner {
    /// Runners trust the system's roots and `ca_file`'s CAs.
    pub fn new(ca_file: Option<&Path>) -> Result<Runner, String> {
        let transport = |tls: rustls::ClientConfig| {
            let http = reqwest::Client::builder()
                .user_agent(concat!("vigil-synthetic/", env!("CARGO_PKG_VERSION")))
                .tls_backend_preconfigured(tls.clone())
                .tls_info(true)
                .build()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Transport {
                http,
                grpc: Clients::new(tls),
            })
        };
        let config = |ca_file, verification| {
            tls::client::config(ca_file, verification).map_err(|e| e.to_string())
        };
        Ok(Runner {
            verifying: transport(config(ca_file, Verification::Verify)?)?,
            trusting: transport(config(None, Verification::Skip)?)?,
        })
    }

    /// The HTTP client of probes that verify certificates, for exporting
    /// runs to the collector (which `ca_file` may have signed).
    pub fn http_client(&self) -> reqwest::Client {
        self.verifying.http.clone()
    }
}

/// Why a step failed, and whether trying again may help.
struct Failure {
    reason: String,
    retry: bool,
}

/// What came back from one attempt that reached the target.
#[derive(Default)]
struct Response {
    http_status: Option<u16>,
    grpc_code: Option<tonic::Code>,
    grpc_message: String,
    body: Option<Value>,
}

/// What a step records on its span, whatever its outcome.
#[derive(Default)]
struct Facts {
    attributes: Vec<KeyValue>,
}

impl Facts {
    fn text(&mut self, key: &str, value: impl Into<String>) {
        self.attributes.push(text(key, value));
    }

    fn int(&mut self, key: &str, value: i64) {
        self.attributes
            .push(attribute(key, any_value::Value::IntValue(value)));
    }
}

/// A span or resource attribute.
pub(crate) fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub(crate) fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Random ids never all zero (which W3C trace context forbids).
fn id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|&b| b != 0) {
            return id;
        }
    }
}

/// A version 4 UUID, as idempotency keys usually are.
fn uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Runner {
    /// Runs `probe` at `location` once.
    pub async fn run(&self, probe: &Probe, location: &Location) -> Run {
        let trace_id = id::<16>();
        let trace_hex = hex(&trace_id);
        let root_id = id::<8>();
        let started_at = SystemTime::now();
        let deadline = Instant::now() + probe.timeout;
        let mut vars = location.vars.clone();
        for (name, value) in [
            ("run.id", trace_hex.clone()),
            ("run.idempotency_key", uuid()),
            ("run.location", location.name.clone()),
            ("probe.name", probe.name.clone()),
        ] {
            vars.insert(name.to_owned(), Value::String(value));
        }
        let common = [
            text("vigil.probe.name", &probe.name),
            text("vigil.probe.location", &location.name),
            attribute("vigil.synthetic", any_value::Value::BoolValue(true)),
        ];
        let mut run = Run {
            failure: None,
            failed_steps: 0,
            skipped_steps: 0,
            spans: Vec::with_capacity(probe.steps.len() + 1),
        };
        for step in &probe.steps {
            if run.failure.is_some() && !step.always {
                run.skipped_steps += 1;
                continue;
            }
            let span_id = id::<8>();
            let traceparent = format!("00-{trace_hex}-{}-01", hex(&span_id));
            let step_start = SystemTime::now();
            let transport = if probe.insecure_skip_verify {
                &self.trusting
            } else {
                &self.verifying
            };
            let Some((failure, mut facts)) = transport
                .step(step, &mut vars, &traceparent, deadline)
                .await
            else {
                run.skipped_steps += 1;
                continue;
            };
            let mut attributes = common.to_vec();
            attributes.push(text("vigil.probe.step", &step.name));
            attributes.append(&mut facts.attributes);
            if let Some(reason) = &failure {
                run.failed_steps += 1;
                attributes.push(text("vigil.probe.failure", reason));
                run.failure
                    .get_or_insert_with(|| format!("step {}: {reason}", step.name));
            }
            run.spans.push(span(
                &trace_id,
                span_id,
                root_id.to_vec(),
                &step.name,
                SpanKind::Client,
                (step_start, SystemTime::now()),
                attributes,
                failure,
            ));
        }
        let mut attributes = common.to_vec();
        attributes.push(text(
            "vigil.probe.idempotency_key",
            vars.get("run.idempotency_key")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ));
        if let Some(failure) = &run.failure {
            attributes.push(text("vigil.probe.failure", failure));
        }
        if run.skipped_steps > 0 {
            let skipped = i64::try_from(run.skipped_steps).unwrap_or(i64::MAX);
            attributes.push(attribute(
                "vigil.probe.skipped_steps",
                any_value::Value::IntValue(skipped),
            ));
        }
        let root = span(
            &trace_id,
            root_id,
            Vec::new(),
            &probe.name,
            SpanKind::Internal,
            (started_at, SystemTime::now()),
            attributes,
            run.failure.clone(),
        );
        run.spans.insert(0, root);
        run
    }
}

impl Transport {
    /// Runs one step with its retries: its failure (`None`: it passed) and
    /// what its span records; `None` when its variables are not all set.
    async fn step(
        &self,
        step: &Step,
        vars: &mut Vars,
        traceparent: &str,
        run_deadline: Instant,
    ) -> Option<(Option<String>, Facts)> {
        let mut facts = Facts::default();
        // An always step gets its own time after the run's deadline.
        let run_deadline = if step.always {
            run_deadline.max(Instant::now() + step.timeout)
        } else {
            run_deadline
        };
        let mut attempts = 0;
        let mut backoff = FIRST_BACKOFF;
        let outcome = loop {
            attempts += 1;
            let started = Instant::now();
            let limit = (started + step.timeout).min(run_deadline);
            let attempt = tokio::time::timeout_at(
                limit.into(),
                self.attempt(step, vars, traceparent, &mut facts),
            )
            .await;
            let latency = started.elapsed();
            let checked = match attempt {
                Ok(Err(Missing(var))) => {
                    tracing::debug!(step = %step.name, %var, "step skipped: a variable is not set");
                    return None;
                }
                Ok(Ok(Ok(response))) => check(step, &response, latency, vars),
                Ok(Ok(Err(failure))) => Err(failure),
                Err(_) if limit < started + step.timeout => Err(Failure {
                    reason: format!("the run's timeout passed after {} ms", latency.as_millis()),
                    retry: false,
                }),
                Err(_) => Err(Failure {
                    reason: format!("timeout after {} ms", step.timeout.as_millis()),
                    retry: true,
                }),
            };
            match checked {
                Err(failure)
                    if failure.retry
                        && attempts <= step.retries
                        && Instant::now() + backoff < run_deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    facts = Facts::default();
                }
                other => break other,
            }
        };
        facts.int("vigil.probe.attempts", i64::from(attempts));
        Some((outcome.err().map(|failure| failure.reason), facts))
    }

    /// One request; the outer `Err` is a variable that is not set.
    async fn attempt(
        &self,
        step: &Step,
        vars: &Vars,
        traceparent: &str,
        facts: &mut Facts,
    ) -> Result<Result<Response, Failure>, Missing> {
        match &step.action {
            Action::Http(http) => self.http(http, vars, traceparent, facts).await,
            Action::Grpc(grpc) => {
                let target = grpc.target.render(vars)?;
                let message = grpc.message.render(vars)?;
                let mut metadata = vec![("traceparent".to_owned(), traceparent.to_owned())];
                for (name, value) in &grpc.metadata {
                    metadata.push((name.clone(), value.render(vars)?));
                }
                facts.text("rpc.system", "grpc");
                facts.text("rpc.service", grpc.method.parent_service().full_name());
                facts.text("rpc.method", grpc.method.name());
                facts.text("server.address", &target);
                let reply = self
                    .grpc
                    .call(&target, &grpc.method, message, &metadata)
                    .await;
                Ok(reply
                    .map(|reply| {
                        facts.int("rpc.grpc.status_code", reply.code as i64);
                        Response {
                            grpc_code: Some(reply.code),
                            grpc_message: reply.message,
                            body: reply.body,
                            ..Response::default()
                        }
                    })
                    .map_err(|reason| Failure {
                        reason,
                        retry: false,
                    }))
            }
        }
    }

    async fn http(
        &self,
        http: &HttpRequest,
        vars: &Vars,
        traceparent: &str,
        facts: &mut Facts,
    ) -> Result<Result<Response, Failure>, Missing> {
        let url = http.url.render(vars)?;
        let mut headers = Vec::with_capacity(http.headers.len());
        for (name, value) in &http.headers {
            headers.push((name.as_str(), value.render(vars)?));
        }
        let body = match &http.body {
            Body::None => None,
            Body::Json(json) => Some(("application/json", json.render(vars)?.to_string())),
            Body::Text(text) => Some(("text/plain; charset=utf-8", text.render(vars)?)),
        };
        facts.text("http.request.method", &http.method);
        facts.text("url.full", http.url.render_masked(vars)?);
        let method = match reqwest::Method::from_bytes(http.method.as_bytes()) {
            Ok(method) => method,
            Err(e) => {
                return Ok(Err(Failure {
                    reason: e.to_string(),
                    retry: false,
                }));
            }
        };
        let mut request = self
            .http
            .request(method, &url)
            .header("traceparent", traceparent);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Ok(Err(Failure {
                    reason: format!("request failed: {}", error_chain(&error)),
                    retry: true,
                }));
            }
        };
        let status = response.status().as_u16();
        facts.int("http.response.status_code", i64::from(status));
        let certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|tls| tls.peer_certificate());
        if let Some(not_after_s) = certificate.and_then(tls::not_after_unix_s) {
            facts.text(TLS_NOT_AFTER, rfc3339(not_after_s.saturating_mul(1_000)));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_BODY_BYTES => {
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return Ok(Err(Failure {
                        reason: format!("the response body is over {MAX_BODY_BYTES} bytes"),
                        retry: false,
                    }));
                }
                Ok(None) => break,
                Err(error) => {
                    return Ok(Err(Failure {
                        reason: format!("reading the response failed: {}", error_chain(&error)),
                        retry: true,
                    }));
                }
            }
        }
        Ok(Ok(Response {
            http_status: Some(status),
            body: serde_json::from_slice(&bytes).ok(),
            ..Response::default()
        }))
    }
}

/// Whether a response is what the step expects; fills in what it
/// extracts.
fn check(
    step: &Step,
    response: &Response,
    latency: Duration,
    vars: &mut Vars,
) -> Result<(), Failure> {
    let expect = &step.expect;
    if let Some(status) = response.http_status {
        let passes = if expect.status.is_empty() {
            (200..300).contains(&status)
        } else {
            expect.status.contains(&status)
        };
        if !passes {
            let wanted = match &expect.status[..] {
                [] => "2xx".to_owned(),
                [one] => one.to_string(),
                many => format!("one of {many:?}"),
            };
            return Err(Failure {
                reason: format!("expected status {wanted}, got {status}"),
                retry: true,
            });
        }
    }
    if let Some(code) = response.grpc_code
        && code as i32 != expect.code
    {
        let name = |code: i32| {
            usize::try_from(code)
                .ok()
                .and_then(|i| GRPC_CODES.get(i))
                .copied()
                .unwrap_or("UNKNOWN")
        };
        let mut reason = format!(
            "expected gRPC status {}, got {}",
            name(expect.code),
            name(code as i32)
        );
        if !response.grpc_message.is_empty() {
            reason = format!("{reason}: {}", response.grpc_message);
        }
        return Err(Failure {
            reason,
            retry: true,
        });
    }
    let no_retry = |reason: String| Failure {
        reason,
        retry: false,
    };
    let needs_body = !expect.json.is_empty() || !step.extract.is_empty();
    let body = match &response.body {
        Some(body) => body,
        None if needs_body => return Err(no_retry("the response is not JSON".to_owned())),
        None => &Value::Null,
    };
    for assertion in &expect.json {
        let found = assertion.path.find(body);
        let path = &assertion.path;
        let shown = |value: Option<&Value>| value.map_or("nothing".to_owned(), Value::to_string);
        let render = |value: &JsonTemplate| {
            value
                .render(vars)
                .map_err(|Missing(var)| no_retry(format!("{path}: `{{{{{var}}}}}` is not set")))
        };
        match &assertion.check {
            Check::Equals(wanted) => {
                let wanted = render(wanted)?;
                if found != Some(&wanted) {
                    return Err(no_retry(format!(
                        "{path}: expected {wanted}, got {}",
                        shown(found)
                    )));
                }
            }
            Check::NotEquals(unwanted) => {
                let unwanted = render(unwanted)?;
                if found == Some(&unwanted) {
                    return Err(no_retry(format!(
                        "{path}: expected anything but {unwanted}"
                    )));
                }
            }
            Check::Exists(exists) if found.is_some() != *exists => {
                return Err(no_retry(match exists {
                    true => format!("{path}: expected a value, got nothing"),
                    false => format!("{path}: expected nothing, got {}", shown(found)),
                }));
            }
            _ => {}
        }
    }
    if let Some(budget) = expect.latency
        && latency > budget
    {
        return Err(no_retry(format!(
            "latency {} ms over the budget of {} ms",
            latency.as_millis(),
            budget.as_millis()
        )));
    }
    for (var, path) in &step.extract {
        let value = path
            .find(body)
            .ok_or_else(|| no_retry(format!("extract {var}: nothing at {path}")))?;
        vars.insert(var.clone(), value.clone());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "the fields of one span")]
fn span(
    trace_id: &[u8; 16],
    span_id: [u8; 8],
    parent_span_id: Vec<u8>,
    name: &str,
    kind: SpanKind,
    (start, end): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    failure: Option<String>,
) -> Span {
    let status = match failure {
        Some(message) => Status {
            code: StatusCode::Error as i32,
            message,
        },
        None => Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        },
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id,
        name: name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: unix_ns(start),
        end_time_unix_nano: unix_ns(end),
        attributes,
        status: Some(status),
        ..Span::default()
    }
}
