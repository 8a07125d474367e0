//! The state of one bus partition: its open windows, the rows not yet
//! written, and its cumulative series. A partition is the unit of
//! exactly-once: its rows and its checkpoint leave together in one flush.
//!
//! Every flush writes the 10 s windows' points gathered since the previous
//! flush (partial rows: rollups add up) and the 1 min and 1 h windows that
//! closed, with the partition's offsets. After a restart the partition goes
//! on from the checkpoint: open windows are rebuilt from the 10 s rows the
//! store holds, messages from `replay_from` to `next_offset` rebuild the
//! cumulative series without being counted, and counting resumes at
//! `next_offset`. So a crash anywhere neither loses nor double-counts.

use std::collections::HashMap;
use std::sync::Arc;

use vigil_domain::model::{Checkpoint, RollupRow};
use vigil_domain::model::{Rollup, SeriesKey};
use vigil_store::StoredRollup;

use crate::cumulative::Cumulative;
use crate::points::{Amount, Mode, Observation};
use crate::window::{Arrival, Windows};

/// Width of the windows written as they fill.
const FINEST_S: u64 = 10;

/// One partition's state.
#[derive(Debug)]
pub struct Partition {
    pub id: i32,
    windows: Windows,
    series: HashMap<u64, Arc<SeriesKey>>,
    /// 10 s rows since the last flush, by (series, window start, late).
    pending: HashMap<(u64, u64, bool), Rollup>,
    pub cumulative: Cumulative,
    seq: u64,
    /// The next offset to take; earlier ones are done with.
    next_offset: i64,
    /// Offsets before this were counted before the restart.
    counted_before: i64,
    /// Offsets taken since the last flush.
    dirty: bool,
}

impl Partition {
    /// A partition resuming from `checkpoint` (or, without one, from the
    /// start of the topic with windows closed up to `now_s`), with the 10 s
    /// rows the store holds for its open windows.
    pub fn resume(
        id: i32,
        lateness_s: u64,
        checkpoint: Option<Checkpoint>,
        stored: Vec<StoredRollup>,
        now_s: u64,
    ) -> Self {
        let mut windows = Windows::new(lateness_s);
        let mut series = HashMap::new();
        let (seq, next_offset, counted_before) = match checkpoint {
            Some(c) => {
                windows.resume_at(c.watermark_s);
                (c.seq, c.replay_from, c.next_offset)
            }
            None => {
                windows.resume_at(now_s);
                (0, 0, 0)
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
            pending: HashMap::new(),
            cumulative: Cumulative::default(),
            seq,
            next_offset,
            counted_before,
            dirty: false,
        }
    }

    /// The earliest window start the store must give back on resuming at
    /// `watermark_s`: the oldest 1 h window that may still be open.
    pub fn restore_from(watermark_s: u64, lateness_s: u64) -> u64 {
        let oldest_open = watermark_s.saturating_sub(3600 + lateness_s);
        oldest_open - oldest_open % 3600
    }

    /// What the message at `offset` is for: `None` if it was taken before
    /// (or precedes the replay), [`Mode::Replay`] if it only rebuilds
    /// cumulative state, [`Mode::Count`] if it is counted. Taking it moves the
    /// partition past it.
    pub fn take(&mut self, offset: i64) -> Option<Mode> {
        if offset < self.next_offset {
            return None;
        }
        self.next_offset = offset + 1;
        self.dirty = true;
        Some(if offset < self.counted_before {
            Mode::Replay
        } else {
            Mode::Count
        })
    }

    /// Counts one observation. A value that is not a number is refused.
    pub fn observe(
        &mut self,
        observation: Observation,
    ) -> Result<(), vigil_domain::distribution::DistributionError> {
        let id = observation.series.id();
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
        self.series
            .entry(id)
            .or_insert_with(|| Arc::new(observation.series));
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
    /// rows and the checkpoint. `None` when nothing changed since the last
    /// flush. Closed 10 s windows are not written again: their points left
    /// as partial rows.
    pub fn flush(&mut self, now_s: u64, staleness_s: u64) -> Option<(Vec<RollupRow>, Checkpoint)> {
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
            next_offset: self.next_offset.max(self.counted_before),
            replay_from: self.cumulative.replay_from(self.next_offset),
            watermark_s,
        };
        Some((rows, checkpoint))
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

    /// The series behind an id seen in this partition.
    pub fn series(&self, id: u64) -> Option<&Arc<SeriesKey>> {
        self.series.get(&id)
    }
}
