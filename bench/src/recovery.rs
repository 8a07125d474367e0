//! `vigil bench recovery`: from a fault in the demo to a playbook run that
//! ends `recovered`, with no human, through every component: the demo's
//! OpenTelemetry SDK → collector → bus → aggregator → alerter → the
//! playbook's call → the demo's routing → the check on the data that
//! follows.
//!
//! One process runs `vigil up --demo`'s pipeline, instances and playbooks
//! on the configured bus and store. Each trial waits a random part of a
//! 10 s window, makes half of unit-b's requests fail (`vigil demo fault
//! --unit unit-b --error-rate 0.5`), and reads from the store when the
//! page was accepted, when the `unit-drain` run started (its first call)
//! and when it ended; then it clears the fault (the demo's routing too)
//! and waits for the alert to resolve before the next.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::time::{Instant, sleep};
use vigil_config::Config;
use vigil_demo as demo;
use vigil_domain::alert::{Alert, Collection, State};
use vigil_domain::playbook::{Run, RunState};
use vigil_domain::shutdown::Shutdown;
use vigil_store::Store;
use vigil_up::Pipeline;

type Error = Box<dyn std::error::Error>;

/// `vigil bench recovery`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Faults injected and timed, one after the other (each ~90 s).
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
}

/// How long a trial may wait for its run to end, or its alert to resolve.
const PATIENCE: Duration = Duration::from_secs(240);
const PLAYBOOK: &str = "unit-drain";

/// One trial's times from the fault, and how its run ended.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub paged: Duration,
    pub acted: Duration,
    pub ended: Duration,
    pub recovered: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The trials, in order.
pub async fn run(mut config: Config, trials: usize) -> Result<Vec<Trial>, Error> {
    let shutdown = Shutdown::new();
    let data = std::env::temp_dir().join(format!("vigil-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    config.store.sqlite.path = data.join("vigil.sqlite");
    config.bus.embedded.path = Some(data.join("bus"));
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.collector.grpc_listen = any_port;
    config.collector.http_listen = any_port;
    config.collector.metrics_listen = any_port;
    config.aggregator.metrics_listen = any_port;
    config.alerter.metrics_listen = any_port;
    // Groups of this run only: it reads nothing an earlier run left.
    config.aggregator.group = format!("vigil-recovery-{}", now_ms());
    config.alerter.group = format!("vigil-recovery-alerter-{}", now_ms());
    // The same unit fails every trial: flap detection would rightly hold
    // the pages from the fourth on.
    config.alerter.flap_changes = 0;
    let sink = demo::configure(&mut config, &data, shutdown.clone()).await?;
    let pipeline = Pipeline::start(&config, &shutdown).await?;
    let (services, _) = demo::start(&data, pipeline.otlp(), &sink, 0, shutdown.clone()).await?;
    let store = std::sync::Arc::clone(&pipeline.store);
    // The first windows: the alerter's consumer joins and the error ratio
    // is known to be 0.
    sleep(Duration::from_secs(30)).await;
    let mut results = Vec::with_capacity(trials);
    for trial in 0..trials {
        sleep(Duration::from_millis(rand::random_range(0..10_000))).await;
        let fault = json!({"unit": "unit-b", "error_rate": 0.5});
        demo::fault(&data, Some(fault)).await?;
        let injected_ms = now_ms();
        let (run, paged_ms) = ended_run(&*store, injected_ms).await?;
        let paged_ms = paged_ms.ok_or("the run's alert was not seen paged")?;
        let since = |at_ms: u64| Duration::from_millis(at_ms.saturating_sub(injected_ms));
        let result = Trial {
            paged: since(paged_ms),
            acted: since(run.started_ms),
            ended: since(run.ended_ms.unwrap_or(run.started_ms)),
            recovered: run.state == RunState::Recovered,
        };
        tracing::info!(trial, ?result, reason = run.reason, "run ended");
        results.push(result);
        demo::fault(&data, None).await?;
        resolved(&*store, &run.alert).await?;
    }
    shutdown.trigger();
    for service in services {
        service.wait().await;
    }
    pipeline.wait().await?;
    remove(&data);
    Ok(results)
}

fn remove(data: &Path) {
    if let Err(error) = std::fs::remove_dir_all(data) {
        tracing::warn!(%error, "the benchmark's data was not removed");
    }
}

/// The first run of [`PLAYBOOK`] started after `after_ms`, once it ended,
/// and when its alert's page was accepted (read while the alert is kept:
/// a resolved one is forgotten once its resolution was sent).
async fn ended_run(store: &dyn Store, after_ms: u64) -> Result<(Run, Option<u64>), Error> {
    let deadline = Instant::now() + PATIENCE;
    let mut paged_ms = None;
    loop {
        let run = store
            .state(Collection::Run)
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_str::<Run>(&r.body).ok())
            .find(|r| r.playbook == PLAYBOOK && r.started_ms >= after_ms);
        if let Some(run) = &run
            && paged_ms.is_none()
        {
            paged_ms = alert_of(store, &run.alert)
                .await?
                .and_then(|alert| alert.notified_ms);
        }
        if let Some(run) = run.filter(|r| r.state.is_over()) {
            return Ok((run, paged_ms));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {PLAYBOOK} run ended within {} s; see the log",
                PATIENCE.as_secs()
            )
            .into());
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn alert_of(store: &dyn Store, fingerprint: &str) -> Result<Option<Alert>, Error> {
    Ok(store
        .state(Collection::Alert)
        .await?
        .into_iter()
        .find(|r| r.key == fingerprint)
        .and_then(|r| serde_json::from_str(&r.body).ok()))
}

/// Waits until the alert `fingerprint` no longer fires.
async fn resolved(store: &dyn Store, fingerprint: &str) -> Result<(), Error> {
    let deadline = Instant::now() + PATIENCE;
    while alert_of(store, fingerprint)
        .await?
        .is_some_and(|alert| alert.state != State::Resolved)
    {
        if Instant::now() > deadline {
            return Err("the alert did not resolve after the fault was cleared".into());
        }
        sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
