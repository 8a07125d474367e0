//! The state of one bus partition: its open windows, the rows not yet
//! written, and its cumulative series. A partition is the unit of
//! exactly-once: its rows and its checkpoint leave together in one flush.
//!
//! Every flush writes the 10 s windows' points gathered since the previous
//! flush (partial rows: rollups add up), the 1 min and 1 h windows that
//! closed, and the cumulative series' changed last points, with the
//! partition's offsets. After a restart the partition goes on from the
//! checkpoint: open windows are rebuilt from the 10 s rows the store holds,
//! the cumulative series from their stored last points, and counting
//! resumes at `next_offset`. So a crash anywhere neither loses nor
//! double-counts.

use std::sync::Arc;

use vigil_domain::model::{Checkpoint, CumulativeState, RollupRow};
use vigil_domain::model::{Rollup, SeriesKey};
use vigil_store::StoredRollup;

use crate::IdMap;
use crate::cumulative::Cumulative;
use crate::points::{Amount, Observation};
use crate::window::{Arrival, Windows};

/// Width of the windows written as they fill.
const FINEST_S: u64 = 10;

/// What one flush of a partition writes.
#[derive(Debug)]
pub struct Written {
    pub rows: Vec<RollupRow>,
    pub checkpoint: Checkpoint,
    pub cumulative: Vec<CumulativeState>,
}

/// One partition's state.
#[derive(Debug)]
pub struct Partition {
    pub id: i32,
    windows: Windows,
    series: IdMap<u64, Arc<SeriesKey>>,
    /// 10 s rows since the last flush, by (series, window start, late).
    pending: IdMap<(u64, u64, bool), Rollup>,
    pub cumulative: Cumulative,
    seq: u64,
    /// The next offset to take; earlier ones are done with.
    next_offset: i64,
    /// Offsets taken since the last flush.
    dirty: bool,
}

impl Partition {
    /// A partition resuming from `checkpoint` (or, without one, from the
    /// start of the topic with windows closed up to `now_s`), with the 10 s
    /// rows the store holds for its open windows and the stored state of its
    /// cumulative series.
    pub fn resume(
        id: i32,
        lateness_s: u64,
        checkpoint: Option<Checkpoint>,
        stored: Vec<StoredRollup>,
        cumulative: Vec<CumulativeState>,
        now_s: u64,
    ) -> Self {
        let mut windows = Windows::new(lateness_s);
        let mut series = IdMap::default();
        let (seq, next_offset) = match checkpoint {
            Some(c) => {
                windows.resume_at(c.watermark_s);
                (c.seq, c.next_offset)
            }
            None => {
                windows.resume_at(now_s);
                (0, 0)
            }
        };
        for row in stored {
            let id = row.series.id();
            windows.restore(id, row.start_s, &row.rollup);
            series.entry(id).or_insert_with(|| Arc::new(row.series));
        }
        Partition {
            id,
            windows,
            series,
            pending: IdMap::default(),
            cumulative: Cumulative::restore(cumulative),
            seq,
            next_offset,
            dirty: false,
        }
    }

    /// The earliest window start the store must give back on resuming at
    /// `watermark_s`: the oldest 1 h window that may still be open.
    pub fn restore_from(watermark_s: u64, lateness_s: u64) -> u64 {
        let oldest_open = watermark_s.saturating_sub(3600 + lateness_s);
        oldest_open - oldest_open % 3600
    }

    /// Whether the message at `offset` is new (not counted before the
    /// checkpoint or already); taking it moves the partition past it.
    pub fn take(&mut self, offset: i64) -> bool {
        if offset < self.next_offset {
            return false;
        }
        self.next_offset = offset + 1;
        self.dirty = true;
        true
    }

    /// Counts one observation. A value that is not a number is refused.
    pub fn observe(
        &mut self,
        observation: Observation,
    ) -> Result<(), vigil_domain::distribution::DistributionError> {
        let id = observation.id;
        let start_s = observation.time_s - observation.time_s % FINEST_S;
        match &observation.amount {
            Amount::Point { value, error } => {
                let arrival = self
                    .windows
                    .record(id, observation.time_s, *value, *error)?;
                let late = arrival == Arrival::Late;
                self.pending
                    .entry((id, start_s, late))
                    .or_default()
                    .record(*value, *error)?;
            }
            Amount::Many(rollup) => {
                let arrival = self.windows.merge(id, observation.time_s, rollup);
                let late = arrival == Arrival::Late;
                self.pending
                    .entry((id, start_s, late))
                    .or_default()
                    .merge(rollup);
            }
        }
        self.series.entry(id).or_insert(observation.series);
        Ok(())
    }

    /// Points that came after their window closed, since this resumed.
    pub fn late_points(&self) -> u64 {
        self.windows.late_points()
    }

    /// Rows waiting for the next flush.
    pub fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    /// Closes the windows due by `now_s` and takes everything to write: the
    /// rows, the checkpoint and the cumulative series' changed state. `None`
    /// when nothing changed since the last flush. Closed 10 s windows are
    /// not written again: their points left as partial rows.
    pub fn flush(&mut self, now_s: u64, staleness_s: u64) -> Option<Written> {
        let closed = self.windows.close(now_s);
        if !self.dirty && self.pending.is_empty() && closed.is_empty() {
            return None;
        }
        let mut rows = Vec::with_capacity(self.pending.len() + closed.len());
        for window in closed.into_iter().filter(|w| w.width_s != FINEST_S) {
            rows.push(self.row(
                window.series,
                window.width_s,
                window.start_s,
                window.rollup,
                window.correction,
            ));
        }
        for ((series, start_s, late), rollup) in std::mem::take(&mut self.pending) {
            rows.push(self.row(series, FINEST_S, start_s, rollup, late));
        }
        let watermark_s = self.windows.watermark();
        self.cumulative
            .forget_before(watermark_s.saturating_sub(staleness_s) * 1_000_000_000);
        self.seq += 1;
        self.dirty = false;
        let checkpoint = Checkpoint {
            seq: self.seq,
            partition: self.id,
            next_offset: self.next_offset,
            watermark_s,
        };
        Some(Written {
            rows,
            checkpoint,
            cumulative: self.cumulative.changed(self.id),
        })
    }

    fn row(
        &self,
        series: u64,
        width_s: u64,
        start_s: u64,
        rollup: Rollup,
        correction: bool,
    ) -> RollupRow {
        RollupRow {
            series: Arc::clone(&self.series[&series]),
            partition: self.id,
            width_s: u32::try_from(width_s).unwrap_or(u32::MAX),
            start_s,
            rollup,
            correction,
        }
    }

    /// Forgets the series that no open window holds, after a flush (which
    /// took every pending row).
    pub fn forget_closed_series(&mut self) {
        let held = self.windows.series();
        self.series.retain(|id, _| held.contains(id));
    }

    /// The series behind an id seen in this partition.
    pub fn series(&self, id: u64) -> Option<&Arc<SeriesKey>> {
        self.series.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::model::Kind;
    use vigil_domain::tenant::TenantId;

    fn point(name: &str, time_s: u64) -> (Observation, u64) {
        let series = SeriesKey::new(
            TenantId::parse("acme").unwrap(),
            Kind::Span,
            "pay",
            name,
            Vec::new(),
        );
        let id = series.id();
        let amount = Amount::Point {
            value: 1.0,
            error: false,
        };
        (Observation::new(series, time_s, amount), id)
    }

    #[test]
    fn series_are_forgotten_once_their_windows_closed_and_were_written() {
        let now = 10_000;
        let mut partition = Partition::resume(0, 30, None, Vec::new(), Vec::new(), now);
        assert!(partition.take(0));
        let (open, open_id) = point("open", now);
        let (late, late_id) = point("late", now - 5_000);
        partition.observe(open).unwrap();
        partition.observe(late).unwrap();
        let written = partition.flush(now, 300).unwrap();
        assert_eq!(
            written.rows.len(),
            4,
            "the open one's 10 s row; the late one's corrections at 10 s, 1 min and 1 h"
        );
        partition.forget_closed_series();
        assert!(partition.series(open_id).is_some(), "its windows are open");
        assert!(partition.series(late_id).is_none(), "its row was written");
        // Two hours on, every window of "open" has closed and been written.
        let written = partition.flush(now + 7_200, 300).unwrap();
        assert_eq!(written.rows.len(), 2, "its 1 min and 1 h windows");
        partition.forget_closed_series();
        assert!(partition.series(open_id).is_none());
    }
}
