//! `vigil bench synthetic`: how many probe steps per second one prober
//! runs, and how late runs start against their schedule.
//!
//! In one process: a demo payment service as the local target, an OTLP
//! sink that takes the runs' spans (so the export is part of the cost),
//! and a prober running `probes` copies of the four-step payment scenario
//! (create, pay, query, refund; templated requests, JSON assertions and an
//! extracted order id) every `interval_ms`, with a jitter of half the
//! interval, as a deployment spreads its probes. Lateness is measured from
//! the jittered start time, so it is the scheduler's own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use tokio::net::TcpListener;
use vigil_config::Config;
use vigil_domain::shutdown::Shutdown;

use vigil_demo::{DemoOptions, DemoService};
use vigil_synthetic::Synthetic;

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Copies of the four-step payment probe.
    #[arg(long, default_value_t = 100)]
    pub probes: usize,
    /// Milliseconds between runs of each probe.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

/// What one run of the benchmark measured.
#[derive(Debug)]
pub struct Figures {
    pub steps: u64,
    pub seconds: f64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    pub failed_steps: u64,
    /// CPU seconds of the whole process (prober, target and sink) per
    /// second of load.
    pub cores: f64,
}

impl Figures {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.seconds
    }
}

const SCENARIO: &str = r#"
  - name: pay-{n}
    interval: {interval}ms
    jitter: {jitter}ms
    timeout: 5s
    vars: { base: "http://{target}" }
    steps:
      - name: create
        http:
          method: POST
          url: "{{base}}/orders"
          json: { amount: 1250, currency: EUR }
        expect: { status: 201, json: [{ path: $.status, equals: created }] }
        extract: { order_id: $.id }
      - name: pay
        http:
          method: POST
          url: "{{base}}/orders/{{order_id}}/pay"
          headers: { idempotency-key: "{{run.idempotency_key}}" }
        expect: { json: [{ path: $.status, equals: paid }] }
      - name: query
        http: { url: "{{base}}/orders/{{order_id}}" }
        expect: { json: [{ path: $.id, equals: "{{order_id}}" }, { path: $.status, equals: paid }] }
      - name: refund
        always: true
        http: { method: POST, url: "{{base}}/orders/{{order_id}}/refund" }
        expect: { json: [{ path: $.status, equals: refunded }] }
"#;

/// Runs the benchmark with the prober settings of `config` (its
/// scenarios, endpoint and listen address are replaced).
pub async fn run(config: &Config, options: Options) -> Result<Figures, Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let target = DemoService::start(
        DemoOptions {
            listen: any_port,
            service_name: "payments".to_owned(),
            unit: "bench".to_owned(),
            version: "1.0.0".to_owned(),
            cohort: "stable".to_owned(),
            otlp_endpoint: None,
            token: None,
        },
        shutdown.clone(),
    )
    .await?;
    let sink = TcpListener::bind(any_port).await?;
    let sink_address = sink.local_addr()?;
    let sink_shutdown = shutdown.clone();
    let sink_task = tokio::spawn(async move {
        let router = Router::new().route("/v1/traces", post(|| async { "" }));
        let _ = axum::serve(sink, router)
            .with_graceful_shutdown(async move { sink_shutdown.wait().await })
            .await;
    });

    let folder = std::env::temp_dir().join(format!("vigil-bench-synthetic-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    let file = folder.join("bench.yaml");
    let mut text = "probes:".to_owned();
    for n in 0..options.probes {
        text.push_str(
            &SCENARIO
                .replace("{n}", &n.to_string())
                .replace("{interval}", &options.interval_ms.to_string())
                .replace("{jitter}", &(options.interval_ms / 2).to_string())
                .replace("{target}", &target.address().to_string()),
        );
    }
    std::fs::write(&file, text)?;
    let mut config = config.clone();
    config.synthetic.scenarios = vec![file];
    config.synthetic.otlp_endpoint = format!("http://{sink_address}");
    config.synthetic.metrics_listen = any_port;
    config.synthetic.watch_interval_ms = 0;

    // The prober stops first, so that no run meets a stopped target.
    let stop_prober = Shutdown::new();
    let prober = Synthetic::start(&config, stop_prober.clone()).await?;
    // A second to settle, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = prober.metrics();
    metrics.take_lateness_ms();
    let steps_before = metrics.steps_run();
    let failed_before = metrics.steps_failed();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let steps = metrics.steps_run() - steps_before;
    let lateness = metrics.take_lateness_ms();
    let failed_steps = metrics.steps_failed() - failed_before;
    stop_prober.trigger();
    prober.wait().await;
    shutdown.trigger();
    target.wait().await;
    let _ = sink_task.await;
    let _ = std::fs::remove_dir_all(&folder);
    Ok(Figures {
        steps,
        seconds,
        lateness_p50_ms: lateness.quantile(0.5).unwrap_or(0.0),
        lateness_p99_ms: lateness.quantile(0.99).unwrap_or(0.0),
        lateness_max_ms: lateness.max().unwrap_or(0.0),
        failed_steps,
        cores: cpu / seconds,
    })
}

/// CPU seconds this process has used (user and system), from
/// `/proc/self/stat` in clock ticks of 1/100 s; 0 where there is none.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
