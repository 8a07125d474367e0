//! The `vigil` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn vigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIGIL_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// What a running child has printed so far, line by line.
type Printed = Arc<Mutex<Vec<String>>>;

/// Starts a long-running subcommand; the child and what it prints, read as
/// it comes.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, Printed) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIGIL_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = Printed::default();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines = Arc::clone(&printed);
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    (child, printed)
}

/// The first printed line that `wanted` accepts, waiting up to `timeout`.
fn line(printed: &Printed, wanted: impl Fn(&str) -> bool, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = printed.lock().unwrap().iter().find(|l| wanted(l)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not printed within {timeout:?}: {:?}",
            printed.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`-TERM`, `-INT`, `-HUP`) to the child.
fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn config_prints_the_example_with_overrides_applied() {
    let output = vigil(
        &["--config", "deploy/vigil.toml", "config"],
        &[
            ("VIGIL_BUS__KIND", "kafka"),
            ("VIGIL_BUS__PARTITIONS", "12"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("kind = \"kafka\""), "{printed}");
    assert!(printed.contains("partitions = 12"), "{printed}");
    assert!(
        printed.contains("brokers = \"127.0.0.1:9092\""),
        "{printed}"
    );
}

#[test]
fn the_example_config_holds_every_default() {
    let with_example = vigil(&["--config", "deploy/vigil.toml", "config"], &[]);
    let without = vigil(&["config"], &[]);
    assert!(with_example.status.success(), "{}", stderr(&with_example));
    assert_eq!(stdout(&with_example), stdout(&without));
}

#[test]
fn an_invalid_config_exits_2_naming_the_key() {
    let output = vigil(&["config"], &[("VIGIL_BUS__PARTITIONS", "0")]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "vigil: invalid configuration: bus.partitions: must be between 1 and 1024, got 0\n"
    );
    let output = vigil(&["--config", "no/such/file.toml", "config"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot read configuration file no/such/file.toml"));
}

#[test]
fn the_collector_serves_until_sigterm_then_exits_cleanly() {
    let (mut child, printed) = spawn(
        &["collector"],
        &[
            ("VIGIL_COLLECTOR__GRPC_LISTEN", "127.0.0.1:0"),
            ("VIGIL_COLLECTOR__HTTP_LISTEN", "127.0.0.1:0"),
            ("VIGIL_COLLECTOR__METRICS_LISTEN", "127.0.0.1:0"),
            ("VIGIL_COLLECTOR__ANONYMOUS_TENANT", "public"),
        ],
    );
    let line = line(&printed, |_| true, Duration::from_secs(30));
    let http = line
        .trim()
        .split_once("OTLP/HTTP on ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let response = reqwest::blocking::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/json")
        .body(r#"{"resourceSpans": []}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // Its own metrics (tenants and volumes) are not on the public port.
    let metrics = line
        .rsplit_once("metrics on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no metrics URL in {line:?}"));
    let scraped = reqwest::blocking::get(&metrics).unwrap().text().unwrap();
    assert!(
        scraped.contains(
            "vigil_collector_requests_total{protocol=\"http\",signal=\"traces\",code=\"OK\"} 1\n"
        ),
        "{scraped}"
    );
    let public = reqwest::blocking::get(format!("http://{http}/metrics")).unwrap();
    assert_eq!(public.status(), 404);

    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a clean shutdown exits 0");
}

/// `vigil synthetic` refuses a broken scenario at start, naming file and
/// line; running, it reads its scenarios again on SIGHUP, and exits 0 on
/// SIGTERM.
#[test]
fn the_prober_reloads_on_sighup() {
    let folder = std::env::temp_dir().join(format!("vigil-cli-synthetic-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let scenario = folder.join("probes.yaml");
    let config = folder.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[synthetic]\nscenarios = [{:?}]\nwatch_interval_ms = 0\nmetrics_listen = \"127.0.0.1:0\"\n",
            scenario.display().to_string()
        ),
    )
    .unwrap();
    let probe = |name: &str| {
        format!(
            "  - name: {name}\n    interval: 1h\n    steps:\n      - name: home\n        http: {{ url: \"http://127.0.0.1:9/\" }}\n"
        )
    };
    let config_arg = config.display().to_string();

    std::fs::write(&scenario, "probes:\n  - name: a\n    interval: soon\n").unwrap();
    let output = vigil(&["--config", &config_arg, "synthetic"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "vigil: invalid scenario: {}:3: probes[0].interval: invalid value: string \"soon\", expected a duration such as 250ms, 2s, 5m or 1h\n",
            scenario.display()
        )
    );

    std::fs::write(&scenario, format!("probes:\n{}", probe("a"))).unwrap();
    let (mut child, printed) = spawn(&["--config", &config_arg, "synthetic"], &[]);
    let line = line(&printed, |_| true, Duration::from_secs(30));
    let metrics = line
        .split_once("metrics on ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(url, _)| url.to_owned())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(
        line.starts_with("vigil synthetic: 1 scheduled probe locations"),
        "{line}"
    );
    let scrape = || reqwest::blocking::get(&metrics).unwrap().text().unwrap();

    std::fs::write(&scenario, format!("probes:\n{}{}", probe("a"), probe("b"))).unwrap();
    signal(&child, "-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape();
        if text.contains("vigil_synthetic_scheduled 2\n") {
            assert!(
                text.contains("vigil_synthetic_reloads_total{outcome=\"ok\"} 1\n"),
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a clean shutdown exits 0"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

/// `vigil up --demo` on free ports with its data in a folder of its own,
/// once ready: the child, what it prints, the folder and the API's
/// `/api/v1` URL.
fn up_demo(name: &str) -> (Child, Printed, std::path::PathBuf, String) {
    let data = std::env::temp_dir().join(format!("vigil-cli-{name}-{}", std::process::id()));
    let data_arg = data.display().to_string();
    let any = "127.0.0.1:0";
    let (child, printed) = spawn(
        &["up", "--demo", "--data", &data_arg, "--demo-port", "0"],
        &[
            ("VIGIL_COLLECTOR__GRPC_LISTEN", any),
            ("VIGIL_COLLECTOR__HTTP_LISTEN", any),
            ("VIGIL_COLLECTOR__METRICS_LISTEN", any),
            ("VIGIL_API__LISTEN", any),
            ("VIGIL_AGGREGATOR__METRICS_LISTEN", any),
            ("VIGIL_ALERTER__METRICS_LISTEN", any),
            ("VIGIL_SYNTHETIC__METRICS_LISTEN", any),
        ],
    );
    line(
        &printed,
        |l| l.starts_with("vigil is ready"),
        Duration::from_secs(60),
    );
    let api = line(
        &printed,
        |l| l.trim_start().starts_with("api "),
        Duration::ZERO,
    );
    let api = api
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no API address in {api:?}"))
        .to_owned();
    (child, printed, data, api)
}

/// `vigil up --demo`: every component and the demo in one process. The
/// API shows the demo's service and probe runs; after `vigil demo fault`
/// fails half of the requests of unit-b's canary (1.1.0), the alert fires
/// for unit-b alone, its first page locates the change in version 1.1.0 and
/// nothing else, and the demo's webhook sink prints it; SIGINT stops it
/// all, exiting 0.
#[test]
fn up_with_the_demo_shows_data_and_fires_an_alert_after_a_fault() {
    let (mut child, printed, data, api) = up_demo("alert");
    let data_arg = data.display().to_string();
    let get = |path: &str| -> Value {
        let response = reqwest::blocking::Client::new()
            .get(format!("{api}{path}"))
            .header("authorization", "Bearer demo-api-token")
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        serde_json::from_str(&response.text().unwrap()).unwrap()
    };
    let until = |what: &str, found: &dyn Fn() -> Option<Value>| -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = found() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not appear within 60 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let payments = until("the payments service", &|| {
        let body = get("/services");
        let service = body["services"][0].clone();
        (service["service"] == "payments" && service["requests"].as_u64() > Some(50))
            .then_some(service)
    });
    assert_eq!(payments["errors"], 0, "{payments}");
    let probe = until("runs of the pay-e2e probe from both units", &|| {
        let body = get("/probes");
        let probe = body["probes"][0].clone();
        (probe["name"] == "pay-e2e" && probe["locations"].as_array().map(Vec::len) == Some(2))
            .then_some(probe)
    });
    assert_eq!(probe["failed"], 0, "{probe}");

    let fault = vigil(
        &[
            "demo",
            "fault",
            "--data",
            &data_arg,
            "--unit",
            "unit-b",
            "--version",
            "1.1.0",
            "--error-rate",
            "0.5",
        ],
        &[],
    );
    assert!(fault.status.success(), "{}", stderr(&fault));
    assert_eq!(
        stdout(&fault).lines().count(),
        4,
        "sent to the four instances"
    );
    let alerts = until("the payments-errors alert of unit-b", &|| {
        let body = get("/alerts?state=firing&rule=payments-errors");
        (!body["alerts"].as_array().unwrap().is_empty()).then_some(body)
    });
    let units: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["vigil.unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, vec!["unit-b"]);
    let located = alerts["alerts"][0]["located"].as_array().unwrap();
    assert_eq!(
        located
            .iter()
            .map(|cause| cause["labels"].clone())
            .collect::<Vec<_>>(),
        vec![json!({"service.version": "1.1.0"})],
        "{alerts}"
    );
    line(
        &printed,
        |l| {
            l.starts_with("[webhook /alerts] firing payments-errors: ")
                && l.ends_with(" fail in unit-b")
        },
        Duration::from_secs(30),
    );

    signal(&child, "-INT");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a clean shutdown exits 0"
    );
    line(
        &printed,
        |l| l.starts_with("vigil stopped"),
        Duration::from_secs(5),
    );
    std::fs::remove_dir_all(&data).unwrap();
}

/// A YAML document as JSON.
fn yaml(text: &str) -> Value {
    vigil_domain::yaml::parse(text).unwrap_or_else(|(line, e)| panic!("line {line}: {e}"))
}

/// That `args` names a subcommand `vigil` has, and that `env` sets
/// configuration keys it knows, to values it accepts, over the example
/// configuration the image carries.
fn runs(what: &str, args: &[String], env: &[(String, String)]) {
    let mut help: Vec<&str> = args.iter().map(String::as_str).collect();
    help.push("--help");
    let output = vigil(&help, &[]);
    assert!(
        output.status.success(),
        "{what}: {args:?}: {}",
        stderr(&output)
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = vigil(&["--config", "deploy/vigil.toml", "config"], &env);
    assert!(output.status.success(), "{what}: {}", stderr(&output));
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `deploy/docker-compose.yml` and `deploy/kubernetes/vigil.yaml` parse,
/// and each Vigil container runs a subcommand that exists with
/// configuration keys that exist.
#[test]
fn the_deployment_files_name_real_subcommands_and_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = yaml(&std::fs::read_to_string(root.join("deploy/docker-compose.yml")).unwrap());
    let mut components = Vec::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        if service["image"] != "vigil:latest" {
            continue;
        }
        let env: Vec<(String, String)> = service["environment"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        runs(name, &strings(&service["command"]), &env);
        components.push(strings(&service["command"])[0].clone());
    }
    components.sort();
    let all = [
        "aggregator",
        "alerter",
        "api",
        "collector",
        "migrate",
        "synthetic",
    ];
    assert_eq!(components, all, "docker-compose.yml");

    let manifests = std::fs::read_to_string(root.join("deploy/kubernetes/vigil.yaml")).unwrap();
    let documents: Vec<Value> = manifests.split("\n---\n").map(yaml).collect();
    let shared: Vec<(String, String)> = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "vigil-env")
        .and_then(|d| d["data"].as_object())
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut components = Vec::new();
    for document in &documents {
        let Some(containers) = document["spec"]["template"]["spec"]["containers"].as_array() else {
            continue;
        };
        let container = &containers[0];
        assert_eq!(container["envFrom"][0]["configMapRef"]["name"], "vigil-env");
        let mut env = shared.clone();
        for var in container["env"].as_array().into_iter().flatten() {
            env.push((
                var["name"].as_str().unwrap().to_owned(),
                var["value"].as_str().unwrap().to_owned(),
            ));
        }
        let args = strings(&container["args"]);
        runs(document["metadata"]["name"].as_str().unwrap(), &args, &env);
        components.push(args[0].clone());
    }
    components.sort();
    assert_eq!(components, all, "kubernetes/vigil.yaml");
}

/// The README's walkthrough, line by line, against a running
/// `vigil up --demo`: every line succeeds and answers what the README says.
#[test]
fn the_readme_walkthrough_answers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split_once("<!-- walkthrough -->\n```sh\n")
        .and_then(|(_, rest)| rest.split_once("```\n<!-- /walkthrough -->"))
        .map(|(block, _)| block)
        .expect("the README's walkthrough block");
    let (mut child, printed, data, api) = up_demo("readme");
    let base = api.trim_end_matches("/api/v1").to_owned();
    // The reader takes a moment to switch terminals: the first probe runs
    // are in by then.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = reqwest::blocking::Client::new()
            .get(format!("{api}/probes/pay-e2e/runs"))
            .header("authorization", "Bearer demo-api-token")
            .send()
            .unwrap()
            .text()
            .unwrap();
        if runs.contains("trace_id") {
            break;
        }
        assert!(Instant::now() < deadline, "no probe run: {runs}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let fault = format!(
        "{} demo fault --data {}",
        env!("CARGO_BIN_EXE_vigil"),
        data.display()
    );
    let lines: Vec<String> = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.replace("http://127.0.0.1:8080", &base)
                .replace("cargo run --release -- demo fault", &fault)
        })
        .collect();
    // Each line, then its exit status on a line of its own.
    let script: String = lines
        .iter()
        .map(|l| format!("{l}\necho\necho \"@@@ $?\"\n"))
        .collect();
    let output = Command::new("timeout")
        .args(["240", "bash", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut current = String::new();
    for out in text.lines() {
        match out.strip_prefix("@@@ ") {
            Some(status) => answers.push((status.to_owned(), std::mem::take(&mut current))),
            None if out.is_empty() => {}
            None => {
                current.push_str(out);
                current.push('\n');
            }
        }
    }
    assert_eq!(
        answers.len(),
        lines.len(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for ((status, answer), line) in answers.iter().zip(&lines) {
        assert_eq!(status, "0", "{line}: {answer}");
    }
    let json = |i: usize| -> Value {
        serde_json::from_str(&answers[i].1)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", lines[i], answers[i].1))
    };
    assert_eq!(json(1)["services"][0]["service"], "payments");
    let query = json(2);
    let units: Vec<&str> = query["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["labels"]["vigil.unit"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(units, ["unit-a", "unit-b"], "p99 per unit: {query}");
    assert!(!json(3)["runs"].as_array().unwrap().is_empty());
    assert_eq!(answers[4].1, "", "TRACE is set quietly");
    let trace = json(5);
    assert!(
        trace["span_count"].as_u64() >= Some(4),
        "the run and its three steps: {trace}"
    );
    let release = json(6);
    assert!(
        ["promote", "hold", "rollback"].contains(&release["verdict"].as_str().unwrap()),
        "{release}"
    );
    assert_eq!(release["signals"][0]["signal"], "error_ratio");
    let app = json(7);
    let signals: Vec<&str> = app["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["signal"].as_str().unwrap())
        .collect();
    // Launch crashes and crash loops appear once 5.1's first loop came
    // (about 20 s after the start); the others from the first second.
    let always = [
        "crash_rate",
        "user_crash_rate",
        "app_start_p90",
        "battery_drain_p50",
        "bytes_sent_p90",
        "bytes_received_p90",
        "slow_frame_rate",
    ];
    let judged: Vec<&str> = signals
        .iter()
        .copied()
        .filter(|s| !["launch_crash_rate", "crash_loop_rate"].contains(s))
        .collect();
    assert_eq!(judged, always, "{app}");
    assert_eq!(
        answers[8].1.lines().count(),
        4,
        "the fault sent to four instances"
    );
    let alerts = json(10);
    assert_eq!(
        alerts["alerts"][0]["labels"]["vigil.unit"], "unit-b",
        "{alerts}"
    );
    // The demo recovered by itself: unit-b's traffic shifted, checked.
    let runs = json(12);
    let run = &runs["runs"][0];
    assert_eq!(run["state"], "recovered", "{runs}");
    assert_eq!(run["labels"]["vigil.unit"], "unit-b", "{runs}");
    assert_eq!(
        run["steps"][0]["detail"]["body"],
        json!({"service": "payments", "unit": "unit-b"}),
        "{runs}"
    );
    // The app's crash groups, one group's newest crash, its error logs.
    let crashes = json(13);
    let groups: Vec<&str> = crashes["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["fingerprint"].as_str().unwrap())
        .collect();
    assert!(groups.contains(&"wallet-checkout-1"), "{crashes}");
    let group = json(14);
    assert_eq!(
        group["group"]["fingerprint"], "wallet-checkout-1",
        "{group}"
    );
    assert_eq!(group["samples"].as_array().unwrap().len(), 1, "{group}");
    // The app logs an error before each crash: how many there are by now
    // depends on how soon the demo recovered; at most the 3 asked for,
    // newest first.
    let logs = json(15);
    let logs = logs["logs"].as_array().unwrap();
    assert!((1..=3).contains(&logs.len()), "{logs:?}");
    assert!(logs.iter().all(|l| l["severity"] == "ERROR"), "{logs:?}");
    let times: Vec<f64> = logs.iter().map(|l| l["time"].as_f64().unwrap()).collect();
    assert!(times.is_sorted_by(|a, b| a >= b), "{logs:?}");
    assert!(
        logs.iter().all(|l| [
            "checkout table update failed: 3 rows expected, 2 found",
            "ledger append failed: the entry was released"
        ]
        .contains(&l["body"].as_str().unwrap())),
        "{logs:?}"
    );
    assert_eq!(
        answers[16].1.lines().count(),
        5,
        "faults cleared on four instances, and the demo's routing restored"
    );

    line(
        &printed,
        |l| l.starts_with("[webhook /alerts] firing payments-errors"),
        Duration::from_secs(10),
    );
    signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    std::fs::remove_dir_all(&data).unwrap();
}
