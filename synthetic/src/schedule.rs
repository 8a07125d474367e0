//! When runs start: one task per probe and location, each waiting for its
//! next scheduled time (interval or cron) plus a random jitter, then
//! running the probe once its probe's and the process's concurrency allow.
//!
//! A probe never overlaps itself at one location: the task runs the probe
//! to the end before it waits again, and the scheduled times that passed
//! meanwhile are skipped and counted (`vigil_synthetic_missed_runs`).
//! Interval schedules count from the start of the task, without drift;
//! cron schedules follow the wall clock (UTC).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::export::Exporter;
use crate::metrics::Metrics;
use crate::run::Runner;
use crate::scenario::{Probe, Schedule};

/// What every slot shares.
pub struct Shared {
    pub runner: Runner,
    pub exporter: Exporter,
    pub metrics: Arc<Metrics>,
    /// Runs in flight over the whole process.
    pub runs: Arc<Semaphore>,
}

/// A probe at one location, on its schedule until stopped.
pub struct Slot {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Slot {
    /// Starts the schedule of `probe` at its location `location`; runs of
    /// the probe at all its locations share `concurrency`.
    pub fn start(
        probe: Arc<Probe>,
        location: usize,
        concurrency: Arc<Semaphore>,
        shared: Arc<Shared>,
    ) -> Slot {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(schedule(probe, location, concurrency, shared, stopped));
        Slot { stop, task }
    }

    /// Stops before the next run; a run in flight finishes and is exported.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The first scheduled time strictly after `after`, for a schedule whose
/// interval runs count from `origin`.
fn next_time(schedule: &Schedule, origin: Instant, after: Instant) -> Option<Instant> {
    match schedule {
        Schedule::Every(every) => {
            let since = after.saturating_duration_since(origin);
            let periods = since.as_nanos() / every.as_nanos() + 1;
            Some(origin + every.mul_f64(periods as f64))
        }
        Schedule::Cron(cron) => {
            let now_wall = SystemTime::now();
            let now = Instant::now();
            let after_wall = now_wall - now.saturating_duration_since(after);
            let after_s = after_wall.duration_since(UNIX_EPOCH).ok()?.as_secs();
            let next_s = cron.next_after(after_s)?;
            let until = UNIX_EPOCH + Duration::from_secs(next_s);
            Some(now + until.duration_since(now_wall).unwrap_or_default())
        }
    }
}

async fn schedule(
    probe: Arc<Probe>,
    location: usize,
    concurrency: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let place = &probe.locations[location];
    let origin = Instant::now();
    // An interval probe runs first right away (plus jitter), then on its
    // interval; a cron probe at its next matching minute.
    let mut due = match probe.schedule {
        Schedule::Every(_) => Some(origin),
        Schedule::Cron(_) => next_time(&probe.schedule, origin, origin),
    };
    while let Some(scheduled) = due {
        let jitter = if probe.jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..probe.jitter)
        };
        let start_at = scheduled + jitter;
        tokio::select! {
            () = tokio::time::sleep_until(start_at) => {}
            _ = stopped.changed() => return,
        }
        let permits = tokio::select! {
            permits = async {
                let probe_permit = Arc::clone(&concurrency).acquire_owned().await;
                let run_permit = Arc::clone(&shared.runs).acquire_owned().await;
                (probe_permit, run_permit)
            } => permits,
            _ = stopped.changed() => return,
        };
        shared
            .metrics
            .lateness(Instant::now().saturating_duration_since(start_at));
        let run = shared.runner.run(&probe, place).await;
        drop(permits);
        let ok = run.failure.is_none();
        shared.metrics.run(&probe.name, &place.name, ok);
        shared.metrics.steps(
            run.steps() - run.failed_steps,
            run.failed_steps,
            run.skipped_steps,
        );
        if let Some(failure) = &run.failure {
            tracing::info!(probe = %probe.name, location = %place.name, %failure, "probe run failed");
        }
        shared.exporter.send(run.spans);
        if *stopped.borrow() {
            return;
        }
        // The next time after now; the ones the run overlapped are missed.
        let now = Instant::now();
        let mut next = next_time(&probe.schedule, origin, scheduled);
        let mut missed = 0;
        while let Some(time) = next
            && time <= now
        {
            missed += 1;
            next = next_time(&probe.schedule, origin, time);
        }
        if missed > 0 {
            shared.metrics.missed(&probe.name, missed);
        }
        due = next;
    }
    tracing::warn!(probe = %probe.name, "the probe's cron schedule matches no time in the next five years");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_count_from_the_origin_without_drift() {
        let origin = Instant::now();
        let every = Schedule::Every(Duration::from_millis(250));
        let next = |after_ms: u64| {
            next_time(&every, origin, origin + Duration::from_millis(after_ms))
                .map(|t| t.duration_since(origin).as_millis())
        };
        assert_eq!(next(0), Some(250));
        assert_eq!(next(249), Some(250));
        assert_eq!(next(250), Some(500));
        assert_eq!(next(1_001), Some(1_250));
    }

    #[test]
    fn cron_times_land_on_the_wall_clock_minute() {
        let every_5 = Schedule::Cron(vigil_domain::time::Cron::parse("*/5 * * * *").unwrap());
        let now = Instant::now();
        let wall = SystemTime::now();
        let next = next_time(&every_5, now, now).unwrap();
        let at = wall + next.duration_since(now);
        let ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis();
        // Within a few ms of a multiple of five minutes, at most five ahead.
        let off = ms % 300_000;
        assert!(!(50..=299_950).contains(&off), "{off} ms off");
        assert!(next.duration_since(now) <= Duration::from_secs(300));
    }
}
