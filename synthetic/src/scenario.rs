//! Scenario files: probes, their schedules and locations, and the steps of
//! one run, read from YAML and checked before anything runs.
//!
//! ```yaml
//! locations:                      # optional; vars per location
//!   unit-a: { vars: { base: "http://10.0.1.5:8081" } }
//! probes:
//!   - name: pay-e2e
//!     interval: 30s               # or cron: "*/5 * * * *" (UTC)
//!     jitter: 2s                  # each run starts up to this much later
//!     timeout: 20s                # the whole run
//!     concurrency: 2              # runs of this probe at once (over locations)
//!     locations: [unit-a]         # default: every location of the file
//!     vars: { amount: 1250 }
//!     insecure_skip_verify: false # true: trust any https certificate (test
//!                                 # environments only; default false)
//!     steps:
//!       - name: create-order
//!         http:
//!           method: POST
//!           url: "{{base}}/orders"
//!           headers: { authorization: "Bearer {{secret.PAY_TOKEN}}" }
//!           json: { amount: "{{amount}}", idempotency_key: "{{run.idempotency_key}}" }
//!         timeout: 2s
//!         retries: 1
//!         expect:
//!           status: 201           # or a list; default any 2xx
//!           json: [{ path: $.status, equals: created }]
//!           latency: 300ms        # the step fails when slower
//!         extract: { order_id: $.id }
//!       - name: refund
//!         always: true            # runs even after a failure
//!         http: { method: POST, url: "{{base}}/orders/{{order_id}}/refund" }
//! ```
//!
//! A gRPC step names a unary method in a descriptor set (`protoc
//! --include_imports --descriptor_set_out`), its message as JSON, and
//! expects a status `code` (default `OK`):
//! `grpc: { target: "http://host:4317", descriptors: api.pb, method:
//! pkg.Service/Method, message: {...}, metadata: {...} }`.
//!
//! `https://` targets are checked against the system's roots and
//! `synthetic.ca_file`; each HTTP step records when the target's
//! certificate expires (`tls.server.not_after`), which the aggregator turns
//! into the `vigil.probe.certificate.days_left` series.
//!
//! Every error names the file, the line and the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde::Deserialize;
use serde_json::Value;
use vigil_domain::time::{Cron, DurationSpec};
use vigil_domain::yaml::{self, FileError};

use crate::json_path::JsonPath;
use vigil_domain::template::{JsonTemplate, SECRET, Template, Vars, is_name};

/// The variables every run has, besides its probe's and location's.
pub const BUILTINS: [&str; 4] = [
    "run.id",
    "run.idempotency_key",
    "run.location",
    "probe.name",
];

/// The location of probes that name none, in a file that names none.
pub const DEFAULT_LOCATION: &str = "default";

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(3_600);
const MAX_STEPS: usize = 100;
const MAX_RETRIES: u32 = 10;
/// A step's timeout when it sets none (or the probe's, if shorter).
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A probe, checked and ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub name: String,
    pub schedule: Schedule,
    /// Each run starts up to this much after its scheduled time.
    pub jitter: Duration,
    /// Deadline of the whole run; `always` steps still run after it.
    pub timeout: Duration,
    /// Runs of this probe at once, over its locations.
    pub concurrency: usize,
    pub locations: Vec<Location>,
    pub steps: Vec<Step>,
    /// Whether https targets' certificates are trusted unchecked.
    pub insecure_skip_verify: bool,
    /// The file it came from.
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Every(Duration),
    Cron(Cron),
}

/// Where a probe runs from, with the variables of a run there (the probe's,
/// the location's over them, and the secrets its templates read).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub name: String,
    pub vars: Vars,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub timeout: Duration,
    /// Attempts after the first when the request fails or its status is
    /// not the expected one.
    pub retries: u32,
    pub expect: Expect,
    /// Variables for later steps, read from the response.
    pub extract: Vec<(String, JsonPath)>,
    /// Runs even after an earlier step failed (cleanup, compensation).
    pub always: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Http(HttpRequest),
    Grpc(GrpcRequest),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(JsonTemplate),
    Text(Template),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrpcRequest {
    /// `http://host:port` of the server.
    pub target: Template,
    pub method: MethodDescriptor,
    pub metadata: Vec<(String, Template)>,
    /// The request message as JSON (protobuf's JSON mapping).
    pub message: JsonTemplate,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expect {
    /// HTTP statuses that pass; empty: any 2xx.
    pub status: Vec<u16>,
    /// The gRPC status code that passes.
    pub code: i32,
    pub json: Vec<Assertion>,
    /// A slower step fails.
    pub latency: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub path: JsonPath,
    pub check: Check,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The value at the path equals this one (a template: `"{{order_id}}"`
    /// compares with what an earlier step extracted).
    Equals(JsonTemplate),
    NotEquals(JsonTemplate),
    Exists(bool),
}

/// The gRPC status codes by name, as `expect.code` takes them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Reads every probe of `paths` (files, or folders of `*.yaml` / `*.yml`
/// files), with secrets from this process's environment. Probe names are
/// unique over all files.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Probe>, FileError> {
    let files = yaml::files(paths).map_err(|(file, source)| FileError::Read { file, source })?;
    let mut probes: Vec<Probe> = Vec::new();
    let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| FileError::Read {
            file: file.clone(),
            source,
        })?;
        for probe in parse(&file, &text, &|name| std::env::var(name).ok())? {
            let line = line_of(&text, &probe.name, None);
            if let Some((other, other_line)) = seen.get(&probe.name) {
                return Err(FileError::Invalid {
                    file,
                    line,
                    message: format!(
                        "probe {}: the name is taken by {}:{other_line}",
                        probe.name,
                        other.display()
                    ),
                });
            }
            seen.insert(probe.name.clone(), (file.clone(), line));
            probes.push(probe);
        }
    }
    Ok(probes)
}

/// The probes of one scenario file's `text`; `env` reads secrets.
pub fn parse(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Probe>, FileError> {
    let invalid = |line: usize, message: String| FileError::Invalid {
        file: file.to_owned(),
        line,
        message,
    };
    let spec: FileSpec = yaml::parse(text).map_err(|(line, message)| invalid(line, message))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    let mut probes = Vec::new();
    for probe in spec.probes {
        let name = probe.name.clone();
        let mut checked = check_probe(probe, &spec.locations, base, env).map_err(|error| {
            let line = line_of(text, &name, error.step.as_deref());
            let step = error
                .step
                .map(|step| format!(", step {step}"))
                .unwrap_or_default();
            invalid(line, format!("probe {name}{step}: {}", error.message))
        })?;
        if !names.insert(name.clone()) {
            return Err(invalid(
                line_of(text, &name, None),
                format!("probe {name}: another probe of this file has the name"),
            ));
        }
        checked.file = file.to_owned();
        probes.push(checked);
    }
    Ok(probes)
}

/// The line of probe `probe`'s `name:` (and of its step `step`'s, after
/// it): where a problem found after parsing is reported.
fn line_of(text: &str, probe: &str, step: Option<&str>) -> usize {
    let Some(probe_line) = yaml::name_line(text, probe, 0) else {
        return 1;
    };
    let line = step
        .and_then(|step| yaml::name_line(text, step, probe_line + 1))
        .unwrap_or(probe_line);
    line + 1
}

/// What is wrong with a probe, and in which step.
struct Problem {
    step: Option<String>,
    message: String,
}

fn problem(message: impl Into<String>) -> Problem {
    Problem {
        step: None,
        message: message.into(),
    }
}

fn in_step(step: &str) -> impl Fn(String) -> Problem + '_ {
    move |message| Problem {
        step: Some(step.to_owned()),
        message,
    }
}

/// HTTP methods are tokens (RFC 9110), written in capitals here.
fn is_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= 32
        && method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
}

// The checks that need more than one field.

fn check_probe(
    mut spec: ProbeSpec,
    locations: &BTreeMap<String, LocationSpec>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Probe, Problem> {
    if !is_name(&spec.name) {
        return Err(problem(
            "the name must be 1 to 128 letters, digits, '_', '-' or '.'",
        ));
    }
    let schedule = match (spec.interval, spec.cron.take()) {
        (Some(DurationSpec(every)), None) if every >= MIN_INTERVAL => Schedule::Every(every),
        (Some(DurationSpec(every)), None) => {
            return Err(problem(format!(
                "interval must be at least 100ms, got {}ms",
                every.as_millis()
            )));
        }
        (None, Some(cron)) => {
            Schedule::Cron(Cron::parse(&cron).map_err(|e| problem(format!("cron: {e}")))?)
        }
        _ => {
            return Err(problem(
                "give exactly one of `interval` (e.g. 30s) or `cron` (e.g. \"*/5 * * * *\")",
            ));
        }
    };
    let period = match &schedule {
        Schedule::Every(every) => *every,
        Schedule::Cron(_) => Duration::from_secs(60),
    };
    let jitter = spec.jitter.0;
    if jitter >= period {
        return Err(problem(format!(
            "jitter ({} ms) must be shorter than the time between runs ({} ms)",
            jitter.as_millis(),
            period.as_millis()
        )));
    }
    let timeout = spec.timeout.0;
    if timeout.is_zero() || timeout > MAX_RUN_TIMEOUT {
        return Err(problem("timeout must be between 1ms and 1h"));
    }
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(problem(format!(
            "a probe has 1 to {MAX_STEPS} steps, got {}",
            spec.steps.len()
        )));
    }
    let mut steps = Vec::new();
    let mut step_names = BTreeSet::new();
    for step in std::mem::take(&mut spec.steps) {
        let name = step.name.clone();
        let fail = in_step(&name);
        if !is_name(&name) {
            return Err(fail(
                "the name must be 1 to 128 letters, digits, '_', '-' or '.'".into(),
            ));
        }
        if !step_names.insert(name.clone()) {
            return Err(fail("another step of this probe has the name".into()));
        }
        steps.push(check_step(step, timeout, base).map_err(&fail)?);
    }
    let secrets = read_secrets(&steps, env)?;
    let locations = check_locations(&spec, locations, &secrets)?;
    let concurrency = spec.concurrency.unwrap_or(locations.len());
    if concurrency == 0 {
        return Err(problem("concurrency must be at least 1"));
    }
    // What every location of the probe defines, and what steps extract.
    let mut defined: BTreeSet<String> = BUILTINS.iter().map(|&b| b.to_owned()).collect();
    defined.extend(
        locations
            .iter()
            .map(|l| l.vars.keys().cloned().collect::<BTreeSet<_>>())
            .reduce(|all, these| all.intersection(&these).cloned().collect())
            .unwrap_or_default(),
    );
    for step in &steps {
        if let Some(used) = step
            .variables()
            .into_iter()
            .find(|used| !defined.contains(*used))
        {
            return Err(in_step(&step.name)(format!(
                "`{{{{{used}}}}}` is not defined: use the probe's or every location's vars, \
                     secret.NAME, {}, or a value an earlier step extracts",
                BUILTINS.join(", ")
            )));
        }
        defined.extend(step.extract.iter().map(|(var, _)| var.clone()));
    }
    Ok(Probe {
        name: spec.name,
        schedule,
        jitter,
        timeout,
        concurrency,
        locations,
        steps,
        insecure_skip_verify: spec.insecure_skip_verify,
        file: PathBuf::new(),
    })
}

/// The `secret.NAME` variables the steps use, read from the environment.
fn read_secrets(steps: &[Step], env: &dyn Fn(&str) -> Option<String>) -> Result<Vars, Problem> {
    let mut secrets = Vars::new();
    for var in steps.iter().flat_map(Step::variables) {
        if let Some(name) = var.strip_prefix(SECRET) {
            let value = env(name).ok_or_else(|| {
                problem(format!(
                    "`{{{{{var}}}}}` reads the environment variable {name}, which is not set"
                ))
            })?;
            secrets.insert(var.to_owned(), Value::String(value));
        }
    }
    Ok(secrets)
}

/// The probe's locations with their variables: the probe's, the
/// location's over them, and the secrets.
fn check_locations(
    spec: &ProbeSpec,
    file_locations: &BTreeMap<String, LocationSpec>,
    secrets: &Vars,
) -> Result<Vec<Location>, Problem> {
    let names: Vec<String> = match &spec.locations {
        Some(names) if names.is_empty() => {
            return Err(problem("locations, when given, must name at least one"));
        }
        Some(names) => names.clone(),
        None if file_locations.is_empty() => vec![DEFAULT_LOCATION.to_owned()],
        None => file_locations.keys().cloned().collect(),
    };
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .map(|name| {
            if !is_name(&name) {
                return Err(problem(format!(
                    "location {name:?}: a name is 1 to 128 letters, digits, '_', '-' or '.'"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(problem(format!("location {name} is listed twice")));
            }
            let own = match file_locations.get(&name) {
                Some(location) => &location.vars,
                None if file_locations.is_empty() => &Vars::new(),
                None => {
                    return Err(problem(format!(
                        "location {name} is not among the file's locations ({})",
                        file_locations
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            };
            let mut vars = spec.vars.clone();
            vars.extend(own.clone());
            vars.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(Location { name, vars })
        })
        .collect()
}

fn check_step(spec: StepSpec, run_timeout: Duration, base: &Path) -> Result<Step, String> {
    let timeout = spec
        .timeout
        .map_or(DEFAULT_STEP_TIMEOUT.min(run_timeout), |t| t.0);
    if timeout.is_zero() || timeout > run_timeout {
        return Err(format!(
            "timeout must be between 1ms and the probe's timeout ({} ms), got {} ms",
            run_timeout.as_millis(),
            timeout.as_millis()
        ));
    }
    if spec.retries > MAX_RETRIES {
        return Err(format!(
            "retries must be at most {MAX_RETRIES}, got {}",
            spec.retries
        ));
    }
    let action = match (spec.http, spec.grpc) {
        (Some(http), None) => {
            if spec.expect.code.is_some() {
                return Err("expect.code is for gRPC steps; HTTP steps expect `status`".into());
            }
            Action::Http(check_http(http)?)
        }
        (None, Some(grpc)) => {
            if spec.expect.status.is_some() {
                return Err("expect.status is for HTTP steps; gRPC steps expect `code`".into());
            }
            Action::Grpc(check_grpc(grpc, base)?)
        }
        _ => return Err("give exactly one of `http` or `grpc`".into()),
    };
    let status: Vec<u16> = match spec.expect.status {
        None => Vec::new(),
        Some(StatusSpec::One(status)) => vec![status],
        Some(StatusSpec::Many(statuses)) => statuses,
    };
    if let Some(bad) = status.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(format!("expect.status: {bad} is not an HTTP status"));
    }
    let code = match spec.expect.code {
        None => 0,
        Some(name) => GRPC_CODES
            .iter()
            .position(|&code| code == name)
            .and_then(|code| i32::try_from(code).ok())
            .ok_or_else(|| {
                format!(
                    "expect.code: {name:?} is not a gRPC status (one of {})",
                    GRPC_CODES.join(", ")
                )
            })?,
    };
    let json = spec
        .expect
        .json
        .into_iter()
        .map(|assertion| {
            let path = assertion.path;
            let check = match (assertion.equals, assertion.not_equals, assertion.exists) {
                (Some(value), None, None) => Check::Equals(JsonTemplate::parse(&value)?),
                (None, Some(value), None) => Check::NotEquals(JsonTemplate::parse(&value)?),
                (None, None, Some(exists)) => Check::Exists(exists),
                _ => {
                    return Err(format!(
                        "expect.json {path}: give exactly one of `equals`, `not_equals` or `exists`"
                    ));
                }
            };
            Ok(Assertion { path, check })
        })
        .collect::<Result<_, String>>()?;
    for var in spec.extract.keys() {
        if !is_name(var)
            || var.starts_with("run.")
            || var.starts_with("probe.")
            || var.starts_with(SECRET)
        {
            return Err(format!(
                "extract: {var:?} cannot be a variable's name (letters, digits, '_', '-', '.'; not run.*, probe.* or secret.*)"
            ));
        }
    }
    Ok(Step {
        name: spec.name,
        action,
        timeout,
        retries: spec.retries,
        expect: Expect {
            status,
            code,
            json,
            latency: spec.expect.latency.map(|l| l.0),
        },
        extract: spec.extract.into_iter().collect(),
        always: spec.always,
    })
}

fn check_http(spec: HttpSpec) -> Result<HttpRequest, String> {
    let method = spec.method.unwrap_or_else(|| "GET".to_owned());
    if !is_method(&method) {
        return Err(format!(
            "http.method: {method:?} is not an HTTP method (GET, POST, …, in capitals)"
        ));
    }
    if spec.url.variables().next().is_none() {
        let url = spec.url.render(&Vars::new()).unwrap_or_default();
        check_url("http.url", &url)?;
    }
    let body = match (spec.json, spec.body) {
        (None, None) => Body::None,
        (Some(json), None) => Body::Json(JsonTemplate::parse(&json)?),
        (None, Some(text)) => Body::Text(text),
        (Some(_), Some(_)) => return Err("give `json` or `body`, not both".into()),
    };
    Ok(HttpRequest {
        method,
        url: spec.url,
        headers: check_headers("http.headers", spec.headers)?,
        body,
    })
}

fn check_grpc(spec: GrpcSpec, base: &Path) -> Result<GrpcRequest, String> {
    let file = base.join(&spec.descriptors);
    let bytes = std::fs::read(&file)
        .map_err(|e| format!("grpc.descriptors: cannot read {}: {e}", file.display()))?;
    let pool = DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
        format!(
            "grpc.descriptors: {} is not a protobuf descriptor set ({e})",
            file.display()
        )
    })?;
    let (service, method) = spec.method.split_once('/').ok_or_else(|| {
        format!(
            "grpc.method: {:?} must be package.Service/Method",
            spec.method
        )
    })?;
    let service = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("grpc.method: no service {service} in {}", file.display()))?;
    let method = service
        .methods()
        .find(|m| m.name() == method)
        .ok_or_else(|| {
            format!(
                "grpc.method: {} has no method {method}",
                service.full_name()
            )
        })?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(format!(
            "grpc.method: {} streams; only unary methods are probed",
            method.full_name()
        ));
    }
    let message = JsonTemplate::parse(&spec.message)?;
    if message.variables().is_empty() {
        DynamicMessage::deserialize(method.input(), spec.message)
            .map_err(|e| format!("grpc.message: not a {}: {e}", method.input().full_name()))?;
    }
    if spec.target.variables().next().is_none() {
        let target = spec.target.render(&Vars::new()).unwrap_or_default();
        check_url("grpc.target", &target)?;
    }
    Ok(GrpcRequest {
        target: spec.target,
        method,
        metadata: check_headers("grpc.metadata", spec.metadata)?,
        message,
    })
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("{key}: {url:?} is not an http:// or https:// URL")),
        Err(e) => Err(format!("{key}: {url:?} is not a URL ({e})")),
    }
}

fn check_headers(
    key: &str,
    headers: BTreeMap<String, Template>,
) -> Result<Vec<(String, Template)>, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let token = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if token {
                Ok((lower, value))
            } else {
                Err(format!("{key}: {name:?} is not a header name"))
            }
        })
        .collect()
}

impl Step {
    /// The variables its request and assertions use.
    pub fn variables(&self) -> Vec<&str> {
        let mut used = Vec::new();
        match &self.action {
            Action::Http(http) => {
                used.extend(http.url.variables());
                for (_, value) in &http.headers {
                    used.extend(value.variables());
                }
                match &http.body {
                    Body::None => {}
                    Body::Json(json) => used.extend(json.variables()),
                    Body::Text(text) => used.extend(text.variables()),
                }
            }
            Action::Grpc(grpc) => {
                used.extend(grpc.target.variables());
                for (_, value) in &grpc.metadata {
                    used.extend(value.variables());
                }
                used.extend(grpc.message.variables());
            }
        }
        for assertion in &self.expect.json {
            if let Check::Equals(value) | Check::NotEquals(value) = &assertion.check {
                used.extend(value.variables());
            }
        }
        used
    }
}

// What the YAML holds, before the checks that need more than one field.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    locations: BTreeMap<String, LocationSpec>,
    probes: Vec<ProbeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationSpec {
    #[serde(default)]
    vars: Vars,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    name: String,
    #[serde(default)]
    interval: Option<DurationSpec>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    jitter: DurationSpec,
    #[serde(default = "default_run_timeout")]
    timeout: DurationSpec,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    locations: Option<Vec<String>>,
    #[serde(default)]
    vars: Vars,
    #[serde(default)]
    insecure_skip_verify: bool,
    steps: Vec<StepSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    name: String,
    #[serde(default)]
    http: Option<HttpSpec>,
    #[serde(default)]
    grpc: Option<GrpcSpec>,
    #[serde(default)]
    timeout: Option<DurationSpec>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    expect: ExpectSpec,
    #[serde(default)]
    extract: BTreeMap<String, JsonPath>,
    #[serde(default)]
    always: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    #[serde(default)]
    method: Option<String>,
    url: Template,
    #[serde(default)]
    headers: BTreeMap<String, Template>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    body: Option<Template>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSpec {
    target: Template,
    descriptors: PathBuf,
    method: String,
    #[serde(default)]
    metadata: BTreeMap<String, Template>,
    #[serde(default = "empty_message")]
    message: Value,
}

fn empty_message() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    #[serde(default)]
    status: Option<StatusSpec>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    json: Vec<AssertionSpec>,
    #[serde(default)]
    latency: Option<DurationSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusSpec {
    One(u16),
    Many(Vec<u16>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionSpec {
    path: JsonPath,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    not_equals: Option<Value>,
    #[serde(default)]
    exists: Option<bool>,
}

fn default_run_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PAY_TOKEN").then(|| "tok-123".to_owned())
    }

    fn error(text: &str) -> String {
        parse(Path::new("probes/pay.yaml"), text, &env)
            .unwrap_err()
            .to_string()
    }

    const GOOD: &str = r#"
locations:
  unit-a: { vars: { base: "http://a:8081" } }
  unit-b: { vars: { base: "http://b:8081" } }
probes:
  - name: pay-e2e
    interval: 30s
    jitter: 2s
    vars: { amount: 1250, base: "http://unused" }
    steps:
      - name: create-order
        http:
          method: POST
          url: "{{base}}/orders"
          headers: { Authorization: "Bearer {{secret.PAY_TOKEN}}" }
          json: { amount: "{{amount}}", key: "{{run.idempotency_key}}" }
        expect:
          status: [200, 201]
          json: [{ path: $.status, equals: created }]
          latency: 300ms
        extract: { order_id: $.id }
      - name: refund
        always: true
        retries: 2
        timeout: 1500
        http: { method: POST, url: "{{base}}/orders/{{order_id}}/refund" }
  - name: nightly
    cron: "0 3 * * *"
    locations: [unit-b]
    steps:
      - name: ping
        http: { url: "http://b:8081/healthz" }
"#;

    #[test]
    fn a_scenario_reads_into_checked_probes() {
        let probes = parse(Path::new("probes/pay.yaml"), GOOD, &env).unwrap();
        assert_eq!(probes.len(), 2);
        let pay = &probes[0];
        assert_eq!(pay.schedule, Schedule::Every(Duration::from_secs(30)));
        assert_eq!(pay.jitter, Duration::from_secs(2));
        assert_eq!(pay.timeout, Duration::from_secs(30));
        assert_eq!(pay.concurrency, 2);
        let names: Vec<_> = pay.locations.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["unit-a", "unit-b"]);
        // The location's vars win over the probe's; secrets are read.
        assert_eq!(pay.locations[0].vars["base"], "http://a:8081");
        assert_eq!(pay.locations[0].vars["amount"], 1250);
        assert_eq!(pay.locations[1].vars["secret.PAY_TOKEN"], "tok-123");
        let create = &pay.steps[0];
        assert_eq!(create.expect.status, [200, 201]);
        assert_eq!(create.expect.latency, Some(Duration::from_millis(300)));
        assert_eq!(create.extract[0].0, "order_id");
        let Action::Http(http) = &create.action else {
            panic!("an http step")
        };
        assert_eq!(http.headers[0].0, "authorization");
        let refund = &pay.steps[1];
        assert!(refund.always);
        assert_eq!(refund.retries, 2);
        assert_eq!(refund.timeout, Duration::from_millis(1500));
        let nightly = &probes[1];
        assert_eq!(
            nightly.schedule,
            Schedule::Cron(Cron::parse("0 3 * * *").unwrap())
        );
        assert_eq!(nightly.locations[0].name, "unit-b");
        assert_eq!(nightly.steps[0].timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_secret_used_only_in_an_assertion_is_read() {
        let text = r#"
probes:
  - name: whoami
    interval: 1m
    steps:
      - name: me
        http: { url: "http://a:8081/me" }
        expect: { json: [{ path: $.token, not_equals: "{{secret.PAY_TOKEN}}" }] }
"#;
        let probes = parse(Path::new("probes/me.yaml"), text, &env).unwrap();
        assert_eq!(probes[0].locations[0].vars["secret.PAY_TOKEN"], "tok-123");
    }

    #[test]
    fn bad_scenarios_name_the_file_line_and_reason() {
        let with = |from: &str, to: &str| {
            assert!(GOOD.contains(from), "{from}");
            error(&GOOD.replacen(from, to, 1))
        };
        assert_eq!(
            with("interval: 30s", "interval: 30 s"),
            "probes/pay.yaml:7: probes[0].interval: invalid value: string \"30 s\", expected a duration such as 250ms, 2s, 5m or 1h"
        );
        assert_eq!(
            with("interval: 30s", "interval: 30s\n    cron: \"* * * * *\""),
            "probes/pay.yaml:6: probe pay-e2e: give exactly one of `interval` (e.g. 30s) or `cron` (e.g. \"*/5 * * * *\")"
        );
        assert_eq!(
            with("cron: \"0 3 * * *\"", "cron: \"0 25 * * *\""),
            "probes/pay.yaml:27: probe nightly: cron: hour: 25 is outside 0-23"
        );
        assert_eq!(
            with("{{order_id}}/refund", "{{order}}/refund"),
            "probes/pay.yaml:22: probe pay-e2e, step refund: `{{order}}` is not defined: use the probe's or every location's vars, secret.NAME, run.id, run.idempotency_key, run.location, probe.name, or a value an earlier step extracts"
        );
        assert_eq!(
            with("secret.PAY_TOKEN", "secret.NO_SUCH"),
            "probes/pay.yaml:6: probe pay-e2e: `{{secret.NO_SUCH}}` reads the environment variable NO_SUCH, which is not set"
        );
        assert_eq!(
            with("equals: created", "equals: created, exists: true"),
            "probes/pay.yaml:11: probe pay-e2e, step create-order: expect.json $.status: give exactly one of `equals`, `not_equals` or `exists`"
        );
        assert_eq!(
            with("equals: created", "equals: \"{{order_id}}\""),
            "probes/pay.yaml:11: probe pay-e2e, step create-order: `{{order_id}}` is not defined: use the probe's or every location's vars, secret.NAME, run.id, run.idempotency_key, run.location, probe.name, or a value an earlier step extracts"
        );
        assert_eq!(
            with("path: $.status", "path: status"),
            "probes/pay.yaml:19: probes[0].steps[0].expect.json[0]: JSON path \"status\": must start with `$`"
        );
        assert_eq!(
            with("locations: [unit-b]", "locations: [unit-c]"),
            "probes/pay.yaml:27: probe nightly: location unit-c is not among the file's locations (unit-a, unit-b)"
        );
        assert_eq!(
            with("timeout: 1500", "timeout: 31s"),
            "probes/pay.yaml:22: probe pay-e2e, step refund: timeout must be between 1ms and the probe's timeout (30000 ms), got 31000 ms"
        );
        assert_eq!(
            with("url: \"http://b:8081/healthz\"", "url: \"ftp://b/healthz\""),
            "probes/pay.yaml:31: probe nightly, step ping: http.url: \"ftp://b/healthz\" is not an http:// or https:// URL"
        );
        assert_eq!(
            with("jitter: 2s", "jitter: 30s"),
            "probes/pay.yaml:6: probe pay-e2e: jitter (30000 ms) must be shorter than the time between runs (30000 ms)"
        );
        assert_eq!(
            with("always: true", "allways: true"),
            "probes/pay.yaml:23: probes[0].steps[1]: unknown field `allways`, expected one of `name`, `http`, `grpc`, `timeout`, `retries`, `expect`, `extract`, `always`"
        );
        assert_eq!(
            with("- name: refund", "- name: create-order"),
            "probes/pay.yaml:11: probe pay-e2e, step create-order: another step of this probe has the name"
        );
        assert_eq!(
            with("method: POST\n          url", "method: post\n          url"),
            "probes/pay.yaml:11: probe pay-e2e, step create-order: http.method: \"post\" is not an HTTP method (GET, POST, …, in capitals)"
        );
        assert_eq!(
            error("probes: {"),
            "probes/pay.yaml:1: probes: invalid type: map, expected a sequence"
        );
    }

    mod fuzz {
        //! Scenario files as they could arrive: the good file above mutated
        //! (see `vigil_testing::fuzz`), cron expressions likewise, and each
        //! loaded probe's templates rendered. Property: no panic; a schedule
        //! that loads finds its next run after any time, or says there is none.

        use proptest::prelude::*;
        use vigil_testing::fuzz::{config, mutations};

        use super::*;

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn fuzz_scenario_files(bytes in mutations(vec![GOOD.as_bytes().to_vec()])) {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let Ok(probes) = parse(Path::new("probes/pay.yaml"), &text, &env) else {
                    return Ok(());
                };
                for probe in &probes {
                    for location in &probe.locations {
                        for step in &probe.steps {
                            if let Action::Http(http) = &step.action {
                                let _ = http.url.render(&location.vars);
                                let _ = http.url.render_masked(&location.vars);
                            }
                        }
                    }
                }
            }

            #[test]
            fn fuzz_cron(
                bytes in mutations(vec![b"*/5 1-3,7 * JAN-MAR mon-fri".to_vec(), b"0 3 * * *".to_vec()]),
                after_s in any::<u32>(),
            ) {
                if let Ok(cron) = Cron::parse(&String::from_utf8_lossy(&bytes)) {
                    let after_s = u64::from(after_s);
                    if let Some(next) = cron.next_after(after_s) {
                        prop_assert!(next > after_s);
                    }
                }
            }
        }
    }
}
