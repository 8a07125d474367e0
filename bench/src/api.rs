//! `vigil bench api`: how fast the API answers over a loaded store.
//!
//! [`load`] writes, through [`Store::write`] as an aggregator would, the
//! rollups of `series` span series (spread over `services` services, 20
//! operations and 5 units each): 1 h windows over `days` days, 1 min windows
//! over the last 25 hours and 10 s windows over the last `raw_hours` hours —
//! every row a distribution of 30 latencies; the totals of the services and
//! of the tenant beside them, as 8 aggregator partitions write them; and the
//! series' catalogue.
//! [`measure`] then asks, over
//! HTTP, for one service's p99 over 24 h at a 1 min step (whole, and by
//! unit) and for `/api/v1/services` ([`Suite::Api`]), or for PromQL's request
//! rate and p99 by unit over 24 h at 1 min, of one service and of every
//! series (`/prometheus/api/v1/query_range`, [`Suite::Promql`]), and reports
//! the latencies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_config::{ApiToken, Config, Role, Secret};
use vigil_domain::model::RollupRow;
use vigil_domain::model::{Kind, Rollup, SeriesKey, service_total, tenant_total};
use vigil_domain::shutdown::Shutdown;
use vigil_domain::tenant::TenantId;
use vigil_store::{CatalogueEntry, Flush, RollupStore, Store};

use vigil_api::Api;

/// The shape of the loaded data.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Shape {
    /// Span series to load (0 measures what the store already holds).
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Services the series are spread over (20 operations, 5 units).
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Days of 1 h rollups; 1 min rollups cover the last 25 hours.
    #[arg(long, default_value_t = 7)]
    pub days: u64,
    /// Hours of 10 s rollups.
    #[arg(long, default_value_t = 2)]
    pub raw_hours: u64,
}

/// `vigil bench api`: the data loaded and the requests timed.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub shape: Shape,
    /// Requests timed per path.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
}

/// What was loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub rows: usize,
    pub took: Duration,
}

/// The latencies of one request path.
#[derive(Debug, Clone)]
pub struct Figure {
    pub what: &'static str,
    /// Whether the API kept closed windows between requests
    /// (`api.cache_bytes`): every request but the first of a path reads
    /// them from its cache.
    pub cached: bool,
    pub requests: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

const OPERATIONS: usize = 20;
const UNITS: usize = 5;
const ROWS_PER_FLUSH: usize = 50_000;
/// The bus's partitions, as `bus.partitions` has them by default.
const PARTITIONS: usize = 8;
const TOKEN: &str = "bench-token-0123456789";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Writes the rollups of `shape` into `store`.
pub async fn load(
    store: &dyn RollupStore,
    shape: Shape,
) -> Result<Loaded, Box<dyn std::error::Error>> {
    let tenant = TenantId::parse("bench")?;
    let series: Vec<Arc<SeriesKey>> = (0..shape.series)
        .map(|i| {
            let service = i % shape.services;
            let operation = (i / shape.services) % OPERATIONS;
            let unit = (i / shape.services / OPERATIONS) % UNITS;
            Arc::new(SeriesKey::new(
                tenant.clone(),
                Kind::Span,
                format!("service-{service}"),
                format!("GET /route/{operation}"),
                vec![
                    ("span.kind".into(), "server".into()),
                    ("vigil.unit".into(), format!("u{unit}")),
                    (
                        "series".into(),
                        format!("{}", i / (shape.services * OPERATIONS * UNITS)),
                    ),
                ],
            ))
        })
        .collect();
    // A few distributions of 30 latencies (lognormal-like, 2 ms to 2 s),
    // reused in turn.
    let templates: Vec<Rollup> = (0..16u64)
        .map(|t| {
            let mut rollup = Rollup::default();
            for i in 0..30u64 {
                let spread = ((i * 7919 + t * 104_729) % 1000) as f64 / 1000.0;
                let value = 2.0 * (1000f64).powf(spread * spread);
                let _ = rollup.record(value, (i + t) % 29 == 0);
            }
            rollup
        })
        .collect();
    let now = now_s();
    let mut windows: Vec<(u32, u64)> = Vec::new();
    let mut span = |width: u32, seconds: u64| {
        let w = u64::from(width);
        let end = now - now % w;
        let mut start = end.saturating_sub(seconds);
        while start < end {
            windows.push((width, start));
            start += w;
        }
    };
    span(3600, shape.days * 86_400);
    span(60, 25 * 3600);
    span(10, shape.raw_hours * 3600);
    let started = Instant::now();
    let mut rows = Vec::with_capacity(ROWS_PER_FLUSH);
    let mut written = 0;
    // The services' and the tenant's totals, as the aggregator writes them
    // beside the spans: each partition its own rows of a total, a service's
    // spans in one partition. `totals_of[i]` are those of `series[i]`.
    let partition_of = |i: usize| (i % shape.services % PARTITIONS) as i32;
    let mut totals: Vec<(Arc<SeriesKey>, i32)> = Vec::new();
    let mut index: HashMap<(SeriesKey, i32), usize> = HashMap::new();
    let totals_of: Vec<[usize; 2]> = series
        .iter()
        .enumerate()
        .map(|(i, span)| {
            [service_total(span), tenant_total(span)].map(|total| {
                *index
                    .entry((total.clone(), partition_of(i)))
                    .or_insert_with(|| {
                        totals.push((Arc::new(total), partition_of(i)));
                        totals.len() - 1
                    })
            })
        })
        .collect();
    for (n, &(width_s, start_s)) in windows.iter().enumerate() {
        let mut merged = vec![Rollup::default(); totals.len()];
        for (i, series) in series.iter().enumerate() {
            let rollup = &templates[(n + i) % templates.len()];
            for total in totals_of[i] {
                merged[total].merge(rollup);
            }
            rows.push(RollupRow {
                series: Arc::clone(series),
                partition: partition_of(i),
                width_s,
                start_s,
                rollup: rollup.clone(),
                correction: false,
            });
        }
        for ((total, partition), rollup) in totals.iter().zip(merged) {
            rows.push(RollupRow {
                series: Arc::clone(total),
                partition: *partition,
                width_s,
                start_s,
                rollup,
                correction: false,
            });
        }
        if rows.len() >= ROWS_PER_FLUSH {
            written += rows.len();
            store.write(&flush(std::mem::take(&mut rows), now)).await?;
        }
    }
    written += rows.len();
    store.write(&flush(rows, now)).await?;
    // The catalogue, as an aggregator keeps it: what the Prometheus API
    // resolves its selectors against.
    let first_seen_s = windows.iter().map(|&(_, start)| start).min().unwrap_or(now);
    let mut listed = HashSet::new();
    let entries: Vec<CatalogueEntry> = series
        .iter()
        .chain(totals.iter().map(|(total, _)| total))
        .filter(|series| listed.insert(Arc::clone(series)))
        .map(|series| CatalogueEntry {
            series: SeriesKey::clone(series),
            first_seen_s,
            last_seen_s: now,
        })
        .collect();
    store.record_series(&entries).await?;
    Ok(Loaded {
        rows: written,
        took: started.elapsed(),
    })
}

fn flush(rows: Vec<RollupRow>, now: u64) -> Flush {
    Flush {
        source: "bench".into(),
        time_s: now,
        checkpoints: Vec::new(),
        rows,
        cumulative: Vec::new(),
    }
}

/// Which requests are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `/api/v1/query` and `/api/v1/services`.
    Api,
    /// PromQL through `/prometheus/api/v1/query_range`: one service's
    /// series, and every series.
    Promql,
    /// `/api/v1/logs` and a trace's records (`vigil bench logs`).
    Logs,
    /// `/api/v1/crashes` and one group (`vigil bench crashes`).
    Crashes,
    /// The console's pages, rendered on the server (`vigil bench console`).
    Console,
}

impl Suite {
    fn paths(self) -> Vec<(&'static str, String)> {
        let day = "from=now-24h&to=now&step=1m&signal=p99&kind=span&service=service-7";
        // Start and end on whole steps, as Grafana aligns them: the 1 min
        // rollups tile every range.
        let promql = |query: &str| {
            let end = now_s() / 60 * 60;
            let query: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
            format!(
                "/prometheus/api/v1/query_range?query={query}&start={}&end={end}&step=60",
                end - 86_400
            )
        };
        match self {
            Suite::Api => vec![
                (
                    "query: one service, 24 h at 1 min, p99",
                    format!("/api/v1/query?{day}"),
                ),
                (
                    "query: the same by vigil.unit",
                    format!("/api/v1/query?{day}&group_by=vigil.unit"),
                ),
                (
                    "services: every service, last hour",
                    "/api/v1/services".to_owned(),
                ),
            ],
            Suite::Logs => vec![
                (
                    "logs: one service, newest 100 of the last hour",
                    "/api/v1/logs?service=service-7&from=now-1h".to_owned(),
                ),
                (
                    "logs: ERROR of every service, newest 100 of 24 h",
                    "/api/v1/logs?severity=error&from=now-24h".to_owned(),
                ),
                (
                    "logs: one trace's records over 24 h",
                    format!(
                        "/api/v1/logs?trace_id={}&from=now-24h",
                        crate::logs::trace_id(4_000_000)
                    ),
                ),
                (
                    "logs: text in 1 of a million bodies, 24 h",
                    "/api/v1/logs?q=NEEDLE&from=now-24h".to_owned(),
                ),
            ],
            Suite::Crashes => {
                let app = crate::crashes::APP;
                vec![
                    (
                        "crashes: an app's groups over 24 h",
                        format!("/api/v1/crashes?app={app}&from=now-24h"),
                    ),
                    (
                        "crashes: one version's groups over 24 h",
                        format!("/api/v1/crashes?app={app}&version=5.19&from=now-24h"),
                    ),
                    (
                        "crashes: native background groups, last hour",
                        format!(
                            "/api/v1/crashes?app={app}&kind=native&foreground=false&from=now-1h"
                        ),
                    ),
                    (
                        "crashes: the largest group over 24 h",
                        format!("/api/v1/crashes/group-000?app={app}&from=now-24h"),
                    ),
                ]
            }
            Suite::Console => vec![
                (
                    "console: overview, last hour",
                    "/console/?range=1h".to_owned(),
                ),
                ("console: overview, 24 h", "/console/?range=24h".to_owned()),
                (
                    "console: one service, last hour",
                    "/console/services/service-7?range=1h".to_owned(),
                ),
                (
                    "console: one service, 24 h",
                    "/console/services/service-7?range=24h".to_owned(),
                ),
                (
                    "console: one service by version, 24 h",
                    "/console/services/service-7?range=24h&by=service.version".to_owned(),
                ),
                ("console: alerts", "/console/alerts?range=1h".to_owned()),
                ("console: probes", "/console/probes?range=1h".to_owned()),
            ],
            Suite::Promql => vec![
                (
                    "one service: sum by unit of rate[5m]",
                    promql(
                        r#"sum by (vigil_unit) (rate(vigil_span_requests_total{service="service-7"}[5m]))"#,
                    ),
                ),
                (
                    "one service: p99 by unit over 5m",
                    promql(
                        r#"histogram_quantile(0.99, sum by (le, vigil_unit) (rate(vigil_span_duration_seconds_bucket{service="service-7"}[5m])))"#,
                    ),
                ),
                (
                    "every series: sum by unit of rate[5m]",
                    promql("sum by (vigil_unit) (rate(vigil_span_requests_total[5m]))"),
                ),
                (
                    "every series: p99 by unit over 5m",
                    promql(
                        "histogram_quantile(0.99, sum by (le, vigil_unit) (rate(vigil_span_duration_seconds_bucket[5m])))",
                    ),
                ),
            ],
        }
    }
}

/// Serves the API over `store` on a free port and times `requests`
/// requests of each path of `suite`, one at a time: for rollups, without
/// the cache of closed windows (each request as a first one), then with it
/// (as a dashboard's refreshes).
pub async fn measure(
    config: &Config,
    store: Arc<dyn Store>,
    requests: usize,
    suite: Suite,
) -> Result<Vec<Figure>, Box<dyn std::error::Error>> {
    // Only rollups are kept: logs and crashes are read alike either way.
    let settings = match suite {
        Suite::Api | Suite::Promql | Suite::Console => vec![0, config.api.cache_bytes],
        Suite::Logs | Suite::Crashes => vec![config.api.cache_bytes],
    };
    let mut figures = Vec::new();
    for cache_bytes in settings {
        let mut config = config.clone();
        config.api.cache_bytes = cache_bytes;
        figures.extend(measure_with(&config, Arc::clone(&store), requests, suite).await?);
    }
    Ok(figures)
}

async fn measure_with(
    config: &Config,
    store: Arc<dyn Store>,
    requests: usize,
    suite: Suite,
) -> Result<Vec<Figure>, Box<dyn std::error::Error>> {
    let mut config = config.clone();
    config.api.listen = ([127, 0, 0, 1], 0).into();
    config.api.tokens = vec![ApiToken {
        token: Secret::new(TOKEN),
        tenant: TenantId::parse("bench")?,
        role: Role::Viewer,
    }];
    let shutdown = Shutdown::new();
    let api = Api::start(&config, store, shutdown.clone()).await?;
    let client = reqwest::Client::new();
    let base = format!("http://{}", api.address());
    let mut figures = Vec::new();
    for (what, path) in suite.paths() {
        let mut took = Vec::with_capacity(requests);
        for _ in 0..requests {
            let start = Instant::now();
            let request = client.get(format!("{base}{path}"));
            // The console's pages read the token from their session cookie.
            let request = if suite == Suite::Console {
                request.header("cookie", format!("vigil_console={TOKEN}; vigil_csrf=bench"))
            } else {
                request.bearer_auth(TOKEN)
            };
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            took.push(start.elapsed());
            if !status.is_success() || body.len() < 100 {
                return Err(format!(
                    "{path} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )
                .into());
            }
        }
        let at = crate::nearest_rank(took);
        figures.push(Figure {
            what,
            cached: config.api.cache_bytes > 0,
            requests,
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        });
    }
    shutdown.trigger();
    api.wait().await?;
    Ok(figures)
}
