//! `vigil up`: the collector, aggregator, alerter, prober and API in one
//! process, on the configured bus and store (the embedded bus and SQLite
//! in `--data` unless the configuration says otherwise); `--demo` adds
//! what `vigil-demo` describes. Prints what runs where, then `ready`; SIGINT
//! or SIGTERM stops every part and waits for each to flush.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vigil_aggregator::Aggregator;
use vigil_alerter::Alerter;
use vigil_api::Api;
use vigil_bus::Bus;
use vigil_collector::Collector;
use vigil_config::{BusKind, Config, StoreKind, SyntheticConfig};
use vigil_domain::shutdown::Shutdown;
use vigil_store::{Retention, Store};
use vigil_synthetic::Synthetic;

use vigil_demo as demo;

type Error = Box<dyn std::error::Error>;

#[derive(Debug, Clone)]
pub struct Options {
    pub demo: bool,
    /// Where the SQLite store (unless configured elsewhere) and the demo's
    /// files go.
    pub data: PathBuf,
    /// The demo's first instance listens here, the others on the next
    /// ports; 0: any free ports.
    pub demo_port: u16,
}

/// The collector, an aggregator and the alerter on one bus and store, and
/// the store's retention schedule: what every way of running Vigil in one
/// process starts.
///
/// They stop in order: the collector first (no new data is acknowledged,
/// requests in flight finish), then the aggregator takes what the bus holds
/// and flushes it, and the alerter saves its state.
pub struct Pipeline {
    pub bus: Arc<dyn Bus>,
    pub collector: Collector,
    pub aggregator: Aggregator,
    pub alerter: Alerter,
    pub store: Arc<dyn Store>,
    pub retention: Retention,
    /// Stops the aggregator and the alerter once the collector has stopped.
    after_collector: Shutdown,
}

impl Pipeline {
    pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Pipeline, Error> {
        let bus = vigil_bus::connect(&config.bus)?;
        let store = vigil_store::open(&config.store).await?;
        let collector = Collector::start(config, Arc::clone(&bus), shutdown.clone()).await?;
        let after_collector = Shutdown::new();
        let aggregator = Aggregator::start(
            config,
            Arc::clone(&bus),
            store.clone(),
            after_collector.clone(),
        )
        .await?;
        let alerter = Alerter::start(
            config,
            Arc::clone(&bus),
            store.clone(),
            after_collector.clone(),
        )
        .await?;
        let retention = Retention::start(Arc::clone(&store), &config.store, shutdown.clone());
        Ok(Pipeline {
            after_collector,
            retention,
            bus,
            collector,
            aggregator,
            alerter,
            store,
        })
    }

    /// The collector's OTLP/HTTP address as a client reaches it.
    pub fn otlp(&self) -> SocketAddr {
        reachable(self.collector.http_address())
    }

    /// Returns once every part has stopped (after the shutdown) and
    /// flushed: whether the aggregator took everything the bus held.
    pub async fn wait(self) -> Result<bool, Error> {
        let stopped = self.collector.wait().await;
        self.after_collector.trigger();
        let drained = self.aggregator.wait().await?;
        self.alerter.wait().await;
        self.retention.wait().await;
        stopped?;
        Ok(drained)
    }
}

/// A wildcard address as a client reaches it: on loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    }
}

/// The URL scheme of a listener.
fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

#[allow(clippy::print_stdout, reason = "the CLI says what runs where")]
pub async fn run(mut config: Config, options: Options) -> Result<(), Error> {
    let shutdown = Shutdown::on_signals()?;
    std::fs::create_dir_all(&options.data)?;
    if config.store.kind == StoreKind::Sqlite
        && config.store.sqlite.path == Config::default().store.sqlite.path
    {
        config.store.sqlite.path = options.data.join("vigil.sqlite");
    }
    if config.bus.embedded.path.is_none() {
        config.bus.embedded.path = Some(options.data.join("bus"));
    }
    let mut sink = None;
    if options.demo {
        sink = Some(demo::configure(&mut config, &options.data, shutdown.clone()).await?);
    }

    // Links in pages and approval requests point at this process's API.
    if config.alerter.external_url.is_empty() && config.api.listen.port() != 0 {
        config.alerter.external_url = format!(
            "{}://{}",
            scheme(config.api.tls.is_some()),
            reachable(config.api.listen)
        );
    }
    let pipeline = Pipeline::start(&config, &shutdown).await?;
    let otlp = pipeline.otlp();
    let api = Api::start(&config, Arc::clone(&pipeline.store), shutdown.clone()).await?;
    let mut services = Vec::new();
    if let Some(sink) = &sink {
        let (started, scenario) = demo::start(
            &options.data,
            otlp,
            sink,
            options.demo_port,
            shutdown.clone(),
        )
        .await?;
        services = started;
        config.synthetic.scenarios.push(scenario);
    }
    let collector_scheme = scheme(config.collector.tls.is_some());
    if config.collector.tls.is_none()
        || config.synthetic.otlp_endpoint == SyntheticConfig::default().otlp_endpoint
    {
        // With TLS, a configured endpoint names the collector as its
        // certificate does.
        config.synthetic.otlp_endpoint = format!("{collector_scheme}://{otlp}");
    }
    let prober = Synthetic::start(&config, shutdown.clone()).await?;

    let api_url = format!(
        "{}://{}",
        scheme(config.api.tls.is_some()),
        reachable(api.address())
    );
    println!(
        "vigil: {:?} bus{}, {:?} store{}",
        config.bus.kind,
        match (&config.bus.kind, &config.bus.embedded.path) {
            (BusKind::Embedded, Some(path)) => format!(" in {}", path.display()),
            _ => String::new(),
        },
        config.store.kind,
        match config.store.kind {
            StoreKind::Sqlite => format!(" in {}", config.store.sqlite.path.display()),
            StoreKind::ClickHouse => format!(" at {}", config.store.clickhouse.url),
        }
    );
    println!(
        "  collector   OTLP/gRPC {collector_scheme}://{}  OTLP/HTTP {collector_scheme}://{otlp}  metrics http://{}/metrics",
        reachable(pipeline.collector.grpc_address()),
        reachable(pipeline.collector.metrics_address())
    );
    println!("  api         {api_url}/api/v1  (OpenAPI: {api_url}/api/v1/openapi.json)");
    println!("  console     {api_url}/console/  (sign in with an API token)");
    println!(
        "  alerter     {} rules; metrics http://{}/metrics",
        pipeline.alerter.metrics().rules.get(),
        reachable(pipeline.alerter.metrics_address())
    );
    println!(
        "  aggregator  metrics http://{}/metrics",
        reachable(pipeline.aggregator.metrics_address())
    );
    println!(
        "  prober      {} probe locations; metrics http://{}/metrics",
        prober.metrics().scheduled.get(),
        reachable(prober.metrics_address())
    );
    if let Some(sink) = sink.map(|sink| sink.address) {
        for service in &services {
            println!("  demo        payments on http://{}", service.address());
        }
        println!("  demo        webhook sink http://{sink} (alerts are printed here)");
        println!(
            "  demo        API token {} (tenant {}): curl -H 'Authorization: Bearer {}' {api_url}/api/v1/services",
            demo::API_TOKEN,
            demo::TENANT,
            demo::API_TOKEN
        );
        println!(
            "  demo        faults: vigil demo fault --data {} --unit unit-b --error-rate 0.5",
            options.data.display()
        );
    }
    println!("vigil is ready; Ctrl-C stops it");

    for service in services {
        service.wait().await;
    }
    prober.wait().await;
    api.wait().await?;
    if pipeline.wait().await? {
        println!("vigil stopped; everything was flushed");
    } else {
        println!("vigil stopped; what the bus still holds is in its log for the next start");
    }
    Ok(())
}
