//! `vigil bench aggregator`: how fast rollup rows reach the configured store
//! (flushes of 10k, 50k and 100k rows over 10k series, each row a
//! distribution of 20 latencies, as one atomic flush with its checkpoint).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_core::model::{Kind, Rollup, SeriesKey};
use vigil_core::store::{Checkpoint, Flush, RollupRow, Store, StoreError};
use vigil_core::tenant::TenantId;

/// One measured flush size.
#[derive(Debug, Clone)]
pub struct WriteFigure {
    pub rows_per_flush: usize,
    pub flushes: usize,
    pub rows_per_second: f64,
    /// Slowest flush.
    pub max_flush: Duration,
}

/// Writes `total_rows` rows for each flush size and reports the rates.
pub async fn store_writes(
    store: &dyn Store,
    total_rows: usize,
) -> Result<Vec<WriteFigure>, StoreError> {
    let tenant = TenantId::parse("bench").map_err(|e| StoreError::Fatal {
        reason: e.to_string(),
    })?;
    let series: Vec<Arc<SeriesKey>> = (0..10_000)
        .map(|i| {
            Arc::new(SeriesKey::new(
                tenant.clone(),
                Kind::Span,
                format!("service-{}", i % 50),
                format!("GET /route/{}", i / 50),
                vec![
                    ("vigil.unit".into(), format!("u{}", i % 4)),
                    ("service.version".into(), "1.4.2".into()),
                    ("span.kind".into(), "server".into()),
                    ("status".into(), "ok".into()),
                ],
            ))
        })
        .collect();
    let mut rollup = Rollup::default();
    for ms in 1..=20 {
        rollup
            .record(f64::from(ms) * 3.7, ms == 20)
            .map_err(|e| StoreError::Fatal {
                reason: e.to_string(),
            })?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut figures = Vec::new();
    let mut seq = 0;
    for rows_per_flush in [10_000, 50_000, 100_000] {
        let flushes = total_rows.div_ceil(rows_per_flush);
        let mut max_flush = Duration::ZERO;
        let started = Instant::now();
        for flush_index in 0..flushes {
            seq += 1;
            let rows = (0..rows_per_flush)
                .map(|i| RollupRow {
                    series: Arc::clone(&series[i % series.len()]),
                    partition: 0,
                    width_s: 10,
                    start_s: now - now % 10 - 10 * (i / series.len()) as u64,
                    rollup: rollup.clone(),
                    correction: false,
                })
                .collect();
            let flush = Flush {
                source: "bench".into(),
                time_s: now,
                checkpoints: vec![Checkpoint {
                    seq,
                    partition: 0,
                    next_offset: i64::try_from(flush_index).unwrap_or(0),
                    replay_from: 0,
                    watermark_s: now,
                }],
                rows,
            };
            let one = Instant::now();
            store.write(&flush).await?;
            max_flush = max_flush.max(one.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        figures.push(WriteFigure {
            rows_per_flush,
            flushes,
            rows_per_second: (flushes * rows_per_flush) as f64 / elapsed,
            max_flush,
        });
    }
    Ok(figures)
}
