//! Event-time tumbling windows with allowed lateness, at 10 s, 1 min and 1 h.

use std::collections::BTreeMap;

use vigil_domain::distribution::DistributionError;
use vigil_domain::model::Rollup;

use crate::{IdMap, IdSet};

/// The window widths Vigil keeps, in seconds: each level is fed by the
/// closed windows of the one before, so a point is recorded once.
pub const RESOLUTIONS: [u64; 3] = [10, 60, 3600];

/// A window that will not change any more (or a correction to one that closed
/// before its late data came).
#[derive(Debug, Clone)]
pub struct Closed {
    pub series: u64,
    pub width_s: u64,
    pub start_s: u64,
    pub rollup: Rollup,
    /// Late data for a window closed earlier: add it to what was stored.
    pub correction: bool,
}

/// Whether a point landed in an open window or came too late for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    OnTime,
    /// Its window had closed; it will leave as a correction.
    Late,
}

/// The windows of one width.
#[derive(Debug)]
struct Level {
    width_s: u64,
    /// Open windows by start, then by series: closing pops from the front.
    open: BTreeMap<u64, IdMap<u64, Rollup>>,
    /// Late data by (series, window start), leaving at the next close.
    corrections: IdMap<(u64, u64), Rollup>,
}

impl Level {
    fn start_of(&self, time_s: u64) -> u64 {
        time_s - time_s % self.width_s
    }

    /// Whether the window starting at `start_s` has closed by `closed_through`.
    fn is_closed(&self, start_s: u64, lateness_s: u64, closed_through: u64) -> bool {
        start_s + self.width_s + lateness_s <= closed_through
    }

    fn rollup_for(&mut self, series: u64, start_s: u64, late: bool) -> &mut Rollup {
        if late {
            self.corrections.entry((series, start_s)).or_default()
        } else {
            self.open
                .entry(start_s)
                .or_default()
                .entry(series)
                .or_default()
        }
    }

    /// Removes the windows closed by `closed_through`, and the corrections.
    fn close(&mut self, lateness_s: u64, closed_through: u64) -> Vec<Closed> {
        let mut closed = Vec::new();
        let width_s = self.width_s;
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + width_s + lateness_s > closed_through {
                break;
            }
            let (start_s, series) = entry.remove_entry();
            closed.extend(series.into_iter().map(|(series, rollup)| Closed {
                series,
                width_s: self.width_s,
                start_s,
                rollup,
                correction: false,
            }));
        }
        closed.extend(
            self.corrections
                .drain()
                .map(|((series, start_s), rollup)| Closed {
                    series,
                    width_s: self.width_s,
                    start_s,
                    rollup,
                    correction: true,
                }),
        );
        closed
    }
}

/// Windows at every resolution of [`RESOLUTIONS`], for many series.
#[derive(Debug)]
pub struct Windows {
    lateness_s: u64,
    /// Windows ending (plus lateness) at or before this have closed.
    closed_through: u64,
    levels: Vec<Level>,
    late_points: u64,
}

impl Windows {
    /// Windows that wait `lateness_s` past their end for late points.
    pub fn new(lateness_s: u64) -> Self {
        Windows {
            lateness_s,
            closed_through: 0,
            levels: RESOLUTIONS
                .iter()
                .map(|&width_s| Level {
                    width_s,
                    open: BTreeMap::new(),
                    corrections: IdMap::default(),
                })
                .collect(),
            late_points: 0,
        }
    }

    /// Records one point of `series` at `time_s` (event time, seconds).
    pub fn record(
        &mut self,
        series: u64,
        time_s: u64,
        value: f64,
        error: bool,
    ) -> Result<Arrival, DistributionError> {
        // Refuse before any window is touched, so a bad value opens none.
        if !value.is_finite() {
            return Err(DistributionError::NotFinite { value });
        }
        let finest = &mut self.levels[0];
        let start_s = finest.start_of(time_s);
        let late = finest.is_closed(start_s, self.lateness_s, self.closed_through);
        finest
            .rollup_for(series, start_s, late)
            .record(value, error)?;
        if late {
            self.late_points += 1;
            Ok(Arrival::Late)
        } else {
            Ok(Arrival::OnTime)
        }
    }

    /// Adds the points of `rollup` (of `series`, at `time_s`).
    pub fn merge(&mut self, series: u64, time_s: u64, rollup: &Rollup) -> Arrival {
        let finest = &mut self.levels[0];
        let start_s = finest.start_of(time_s);
        let late = finest.is_closed(start_s, self.lateness_s, self.closed_through);
        finest.rollup_for(series, start_s, late).merge(rollup);
        if late {
            self.late_points += rollup.values.count();
            Arrival::Late
        } else {
            Arrival::OnTime
        }
    }

    /// Puts back what the store holds of the 10 s window of `series` starting
    /// at `start_s`, after [`Windows::resume_at`]: into that window if it is
    /// still open, else into the coarser windows it had rolled up into, if
    /// those are still open.
    pub fn restore(&mut self, series: u64, start_s: u64, rollup: &Rollup) {
        for level in &mut self.levels {
            let start_s = level.start_of(start_s);
            if !level.is_closed(start_s, self.lateness_s, self.closed_through) {
                level.rollup_for(series, start_s, false).merge(rollup);
                return;
            }
        }
    }

    /// Starts from a stored watermark: windows that had closed by then stay
    /// closed.
    pub fn resume_at(&mut self, watermark_s: u64) {
        self.closed_through = self.closed_through.max(watermark_s);
    }

    /// Windows ending (plus the lateness) at or before this have closed.
    pub fn watermark(&self) -> u64 {
        self.closed_through
    }

    /// Closes every window whose end plus the lateness is at or before the
    /// watermark (event time, seconds), at every resolution, and hands out the
    /// corrections gathered since the last close.
    pub fn close(&mut self, watermark_s: u64) -> Vec<Closed> {
        self.closed_through = self.closed_through.max(watermark_s);
        let mut all = Vec::new();
        for level in 0..self.levels.len() {
            let closed = self.levels[level].close(self.lateness_s, self.closed_through);
            if let Some(coarser) = self.levels.get_mut(level + 1) {
                for window in &closed {
                    let start_s = coarser.start_of(window.start_s);
                    let late = window.correction
                        && coarser.is_closed(start_s, self.lateness_s, self.closed_through);
                    coarser
                        .rollup_for(window.series, start_s, late)
                        .merge(&window.rollup);
                }
            }
            all.extend(closed);
        }
        all
    }

    /// Points that came after their window closed, since this began.
    pub fn late_points(&self) -> u64 {
        self.late_points
    }

    /// The series of every open window.
    pub fn series(&self) -> IdSet<u64> {
        self.levels
            .iter()
            .flat_map(|level| level.open.values())
            .flat_map(IdMap::keys)
            .copied()
            .collect()
    }

    /// Series-windows open at every resolution: the memory held.
    pub fn open_windows(&self) -> usize {
        self.levels
            .iter()
            .flat_map(|level| level.open.values())
            .map(IdMap::len)
            .sum()
    }
}

#[cfg(test)]
mod tests;
