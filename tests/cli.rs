//! The `vigil` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

fn vigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIGIL_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// Starts a long-running subcommand; the child and the first line it
/// prints (where it listens).
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("VIGIL_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
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
    let (mut child, line) = spawn(
        &["collector"],
        &[
            ("VIGIL_COLLECTOR__GRPC_LISTEN", "127.0.0.1:0"),
            ("VIGIL_COLLECTOR__HTTP_LISTEN", "127.0.0.1:0"),
            ("VIGIL_COLLECTOR__ANONYMOUS_TENANT", "public"),
        ],
    );
    let http = line
        .trim()
        .rsplit_once("OTLP/HTTP on ")
        .map(|(_, address)| address.to_owned())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let response = reqwest::blocking::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/json")
        .body(r#"{"resourceSpans": []}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
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
    let (mut child, line) = spawn(&["--config", &config_arg, "synthetic"], &[]);
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
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-HUP");
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
    signal("-TERM");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a clean shutdown exits 0"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}
