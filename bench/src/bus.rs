//! `vigil bench bus`: what the durable embedded bus costs, and how long it
//! takes to come back.
//!
//! 1. Ingest: `vigil up` (this binary, one child process per fsync policy,
//!    each on a data directory of its own) driven over loopback OTLP/gRPC
//!    as `vigil bench collector` drives a collector, with
//!    `bus.embedded.fsync` = `always`, `interval` and `off`: metric points
//!    and spans per second and per CPU-second of the whole process
//!    (collector, bus, aggregator, SQLite). The policies run one after the
//!    other in one invocation, so they share the machine's state.
//! 2. Recovery: a log of `--recovery-mib` MiB written by a bus in this
//!    process and dropped unconsumed (what a SIGKILL leaves: records in
//!    the files, no orderly close), then opened again: the time until its
//!    records are readable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_bus::{Bus, EmbeddedBus, Record};
use vigil_config::{BusKind, Config, EmbeddedBusConfig, Fsync, StoreKind};

use crate::collector::{self, BenchReport, VigilProcess};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub load: collector::Options,
    /// Size of the log whose recovery is timed, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub recovery_mib: u64,
    /// Where the data directories go (default: the system's temporary
    /// directory); the disk under it is what is measured.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Debug)]
pub struct Figures {
    pub ingest: Vec<(Fsync, BenchReport)>,
    pub recovery: Recovery,
}

#[derive(Debug)]
pub struct Recovery {
    pub bytes: u64,
    pub records: u64,
    pub seconds: f64,
}

type Error = Box<dyn std::error::Error>;

pub async fn run(exe: &Path, config: &Config, options: &Options) -> Result<Figures, Error> {
    let dir = options
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("vigil-bench-bus-{}", std::process::id()));
    let mut ingest = Vec::new();
    for fsync in [Fsync::Always, Fsync::Interval, Fsync::Off] {
        let data = dir.join(format!("{fsync:?}").to_lowercase());
        std::fs::create_dir_all(&data)?;
        let mut config = config.clone();
        config.bus.kind = BusKind::Embedded;
        config.bus.embedded.path = Some(data.join("bus"));
        config.bus.embedded.fsync = fsync;
        config.store.kind = StoreKind::Sqlite;
        config.store.sqlite.path = data.join("vigil.sqlite");
        let data_arg = data.display().to_string();
        let mut up = VigilProcess::start(exe, &config, &["up", "--data", &data_arg])?;
        let report = collector::load(&mut up, &options.load).await;
        up.stop();
        ingest.push((fsync, report?));
    }
    let recovery = recovery(&dir.join("recovery"), options.recovery_mib << 20).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Figures { ingest, recovery })
}

/// Writes `bytes` of 1 KiB records to a log nobody consumes, drops the bus,
/// and times opening it again.
async fn recovery(path: &Path, bytes: u64) -> Result<Recovery, Error> {
    let config = EmbeddedBusConfig {
        path: Some(path.to_owned()),
        fsync: Fsync::Off,
        max_bytes_per_topic: bytes + (64 << 20),
        ..EmbeddedBusConfig::default()
    };
    let timeout = Duration::from_secs(60);
    let payload = vec![0x5a_u8; 1024];
    let per_publish = 1_000;
    let records = bytes / payload.len() as u64;
    {
        let bus = EmbeddedBus::new(&config, timeout)?;
        bus.create_topic("bench", 8).await?;
        let mut written = 0;
        while written < records {
            let batch = (written..(written + per_publish).min(records))
                .map(|i| Record::new(i.to_le_bytes().to_vec(), payload.clone()))
                .collect();
            bus.publish("bench", batch).await?;
            written += per_publish;
        }
    }
    let start = Instant::now();
    let bus = EmbeddedBus::new(&config, timeout)?;
    bus.create_topic("bench", 8).await?;
    let mut consumer = bus.subscribe("bench", "reader").await?;
    let first = consumer.poll(1, timeout).await?;
    let seconds = start.elapsed().as_secs_f64();
    if first.is_empty() {
        return Err("the recovered log held nothing".into());
    }
    Ok(Recovery {
        bytes: records * payload.len() as u64,
        records,
        seconds,
    })
}
