//! Canary versus baseline: is a new version worse than the one it
//! replaces? Shared by `GET /api/v1/releases/{service}/health` and the
//! alerter's `canary` rules, so both give the same verdict on the same data.
//!
//! The groups of a release's series (by version, unit and cohort) are split
//! into the canary (the new version) and the baseline (the other versions
//! in the canary's units that are not canaries themselves; only the
//! `vigil.cohort=baseline` ones when there are any, as a baseline deployed
//! beside the canary compares best). Each
//! signal is then judged with a one-sided test of "the canary is worse":
//!
//! - ratios (error ratio, crashes per session, slow frames): the
//!   two-proportion z-test;
//! - values (latency, app start): the Mann–Whitney U test, computed from
//!   the merged distributions (their buckets are the ranks' ties), with the
//!   tie correction and a continuity correction.
//!
//! A signal fails when the difference is significant and the canary is
//! worse by more than the tolerance; it is inconclusive while a cohort has
//! fewer events than the minimum, and passes otherwise. The release is
//! rolled back when a signal fails, held while one is inconclusive, and
//! promoted when all pass.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::distribution::Distribution;
use crate::model::Rollup;

/// A latency or start time worse by this little fails no canary however
/// significant: below what a user notices or the timer of a busy host
/// tells apart (a sub-millisecond service's p50 differs by tenths of a
/// millisecond between instances), in ms.
pub const MIN_WORSE_MS: f64 = 1.0;

/// How signals are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Events (requests, sessions, frames, runs) each cohort needs before a
    /// signal is judged.
    pub min_samples: u64,
    /// A difference is significant when its p-value is below this.
    pub significance: f64,
    /// A significant difference fails only when the canary is worse than
    /// the baseline by more than this fraction of it (0.1: 10 %).
    pub tolerance: f64,
}

/// What one signal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

/// The release as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Promote,
    Hold,
    Rollback,
}

/// One signal of the canary against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub signal: String,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// Canary minus baseline.
    pub difference: Option<f64>,
    pub canary_samples: u64,
    pub baseline_samples: u64,
    /// `two_proportion` or `mann_whitney`.
    pub test: &'static str,
    /// Of "the canary is worse" arising by chance; none while inconclusive.
    pub p_value: Option<f64>,
    pub result: Outcome,
    /// Events the canary and the baseline still need (inconclusive only).
    pub needed: Option<Needed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Needed {
    pub canary: u64,
    pub baseline: u64,
}

/// Which groups are the canary and which the baseline.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The canary's version.
    pub version: &'a str,
    /// The baseline's version; any other version when unset.
    pub baseline: Option<&'a str>,
    /// Only this unit.
    pub unit: Option<&'a str>,
}

/// The labels a release's span series are grouped by: version, unit and
/// cohort, in [`Member`]'s order.
pub const SPAN_GROUP: [&str; 3] = ["service.version", "vigil.unit", "vigil.cohort"];

/// The labels an app release's client series are grouped by: version,
/// unit and cohort in [`Member`]'s order, then the series' name and
/// whether a power sample was taken in the foreground.
pub const CLIENT_GROUP: [&str; 5] = [
    "app.version",
    "vigil.unit",
    "vigil.cohort",
    "name",
    "power.foreground",
];

/// The client series a [`CLIENT_GROUP`] group's name may be and the
/// signals of [`Criteria::client`] read.
pub const CLIENT_SERIES: [&str; 11] = [
    "client.sessions",
    "client.crashes",
    "client.app_start",
    "client.crashes.launch",
    "client.anrs",
    "client.crash_loops",
    "client.power.drain",
    "client.http.bytes_sent",
    "client.http.bytes_received",
    "client.frames",
    "client.frames.slow",
];

/// The sum of a rollup's values (sessions, frames) as a count.
pub fn total(rollup: &Rollup) -> u64 {
    rollup.values.sum().max(0.0).round() as u64
}

/// A group of a release's series: its version, `vigil.unit` and
/// `vigil.cohort`.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub version: &'a str,
    pub unit: &'a str,
    pub cohort: &'a str,
}

impl<'a> Member<'a> {
    /// The member of a group's label values in [`SPAN_GROUP`]'s order.
    pub fn of(group: &'a [String]) -> Self {
        let label = |i: usize| group.get(i).map_or("", String::as_str);
        Member {
            version: label(0),
            unit: label(1),
            cohort: label(2),
        }
    }
}

impl<'a> Release<'a> {
    /// The release resolved against every group of its data: the canary's
    /// units and whether a baseline runs beside it are decided once, so
    /// each signal (each series, each crash type) splits alike.
    pub fn cohorts<'m>(self, members: impl IntoIterator<Item = Member<'m>>) -> Cohorts<'a> {
        let members: Vec<Member<'m>> = members.into_iter().collect();
        let mut cohorts = Cohorts {
            release: self,
            units: members
                .iter()
                .filter(|m| m.version == self.version && self.in_unit(m))
                .map(|m| m.unit.to_owned())
                .collect(),
            beside: false,
        };
        cohorts.beside = members
            .iter()
            .any(|m| cohorts.is_baseline_candidate(m) && m.cohort == "baseline");
        cohorts
    }

    fn in_unit(&self, member: &Member<'_>) -> bool {
        self.unit.is_none_or(|unit| member.unit == unit)
    }
}

/// A release resolved against its data (see [`Release::cohorts`]).
#[derive(Debug, Clone)]
pub struct Cohorts<'a> {
    release: Release<'a>,
    /// The units the canary runs in; the baseline is read there only.
    pub units: BTreeSet<String>,
    /// A `vigil.cohort=baseline` group exists: only those are the baseline.
    beside: bool,
}

/// Which side of the comparison a group is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Canary,
    Baseline,
}

impl Cohorts<'_> {
    fn is_baseline_candidate(&self, m: &Member<'_>) -> bool {
        let release = &self.release;
        m.version != release.version
            && m.cohort != "canary"
            && release.baseline.is_none_or(|b| m.version == b)
            && release.in_unit(m)
            && (self.units.is_empty() || self.units.contains(m.unit))
    }

    /// The side of a group; `None`: neither.
    pub fn side(&self, m: &Member<'_>) -> Option<Side> {
        if m.version == self.release.version {
            self.release.in_unit(m).then_some(Side::Canary)
        } else {
            (self.is_baseline_candidate(m) && (!self.beside || m.cohort == "baseline"))
                .then_some(Side::Baseline)
        }
    }

    /// The canary's and the baseline's rollups of `groups`, merged.
    pub fn merge<'g>(
        &self,
        groups: impl IntoIterator<Item = (Member<'g>, &'g Rollup)>,
    ) -> (Rollup, Rollup) {
        let (mut canary, mut baseline) = (Rollup::default(), Rollup::default());
        for (member, rollup) in groups {
            match self.side(&member) {
                Some(Side::Canary) => canary.merge(rollup),
                Some(Side::Baseline) => baseline.merge(rollup),
                None => {}
            }
        }
        (canary, baseline)
    }
}

impl Criteria {
    /// Why these criteria cannot judge: the field and the reason.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.min_samples == 0 {
            return Err(("min_samples", "must be at least 1"));
        }
        if !(self.significance > 0.0 && self.significance <= 0.5) {
            return Err((
                "significance",
                "must be above 0 and at most 0.5 (0.05 is usual)",
            ));
        }
        if !(0.0..=10.0).contains(&self.tolerance) {
            return Err((
                "tolerance",
                "must be between 0 and 10 times the baseline (0.1: 10 %)",
            ));
        }
        Ok(())
    }

    /// A ratio of bad events: `(bad, events)` of each cohort.
    pub fn ratio(&self, signal: &str, canary: (u64, u64), baseline: (u64, u64)) -> Judgement {
        let rate = |(bad, n): (u64, u64)| (n > 0).then(|| bad as f64 / n as f64);
        let (c, b) = (rate(canary), rate(baseline));
        let p_value = two_proportion(canary, baseline);
        self.judge(
            signal,
            "two_proportion",
            (c, b),
            (canary.1, baseline.1),
            p_value,
            0.0,
        )
    }

    /// The `q`-quantile of values where higher is worse (latency, start
    /// time), tested on the whole distributions.
    pub fn values(
        &self,
        signal: &str,
        q: f64,
        canary: &Distribution,
        baseline: &Distribution,
    ) -> Judgement {
        self.amounts(signal, q, canary, baseline, MIN_WORSE_MS)
    }

    /// Like [`Criteria::values`] for amounts other than durations (battery
    /// drained, bytes): worse by any amount past the tolerance fails.
    pub fn amounts(
        &self,
        signal: &str,
        q: f64,
        canary: &Distribution,
        baseline: &Distribution,
        min_worse: f64,
    ) -> Judgement {
        let p_value = mann_whitney(canary, baseline);
        self.judge(
            signal,
            "mann_whitney",
            (canary.quantile(q), baseline.quantile(q)),
            (canary.count(), baseline.count()),
            p_value,
            min_worse,
        )
    }

    /// An app release's signals from its client series, `series(name)`
    /// giving the canary's and the baseline's merged rollups of each of
    /// [`CLIENT_SERIES`] (battery drain: foreground samples only): crashes
    /// per session, the share of users with a crash (1 − crash-free users,
    /// from the users' sketches), app-start p90, launch crashes per launch (a launch
    /// that crashes never starts), ANRs and crash loops per session,
    /// battery drained per hour (p50), bytes per request (p90), slow
    /// frames per frame. Each once either cohort has data for it.
    pub fn client(&self, series: impl Fn(&str) -> (Rollup, Rollup)) -> Vec<Judgement> {
        let count = |name: &str| {
            let (canary, baseline) = series(name);
            (canary.values.count(), baseline.values.count())
        };
        let sum = |name: &str| {
            let (canary, baseline) = series(name);
            (total(&canary), total(&baseline))
        };
        let some = |(canary, baseline): (u64, u64)| canary + baseline > 0;
        let mut judgements = Vec::new();
        let (canary_sessions, baseline_sessions) = series("client.sessions");
        let (canary_crashes, baseline_crashes) = series("client.crashes");
        let sessions = (total(&canary_sessions), total(&baseline_sessions));
        if some(sessions) {
            judgements.push(self.ratio(
                "crash_rate",
                (canary_crashes.values.count(), sessions.0),
                (baseline_crashes.values.count(), sessions.1),
            ));
        }
        // Users: those of the sessions and the crashes, from their sketches.
        let users = |crashed: &Rollup, sessions: &Rollup| {
            let mut all = crashed.users.clone();
            all.merge(&sessions.users);
            (crashed.users.count(), all.count())
        };
        let canary_users = users(&canary_crashes, &canary_sessions);
        let baseline_users = users(&baseline_crashes, &baseline_sessions);
        if canary_users.1 + baseline_users.1 > 0 {
            judgements.push(self.ratio("user_crash_rate", canary_users, baseline_users));
        }
        let (canary_starts, baseline_starts) = series("client.app_start");
        let starts = (canary_starts.values.count(), baseline_starts.values.count());
        if some(starts) {
            judgements.push(self.values(
                "app_start_p90",
                0.9,
                &canary_starts.values,
                &baseline_starts.values,
            ));
        }
        let launch_crashes = count("client.crashes.launch");
        if some(launch_crashes) {
            judgements.push(self.ratio(
                "launch_crash_rate",
                (launch_crashes.0, starts.0 + launch_crashes.0),
                (launch_crashes.1, starts.1 + launch_crashes.1),
            ));
        }
        for (signal, name) in [
            ("anr_rate", "client.anrs"),
            ("crash_loop_rate", "client.crash_loops"),
        ] {
            let events = count(name);
            if some(events) {
                judgements.push(self.ratio(signal, (events.0, sessions.0), (events.1, sessions.1)));
            }
        }
        for (signal, q, name) in [
            ("battery_drain_p50", 0.5, "client.power.drain"),
            ("bytes_sent_p90", 0.9, "client.http.bytes_sent"),
            ("bytes_received_p90", 0.9, "client.http.bytes_received"),
        ] {
            let (canary, baseline) = series(name);
            if canary.values.count() + baseline.values.count() > 0 {
                judgements.push(self.amounts(signal, q, &canary.values, &baseline.values, 0.0));
            }
        }
        let frames = sum("client.frames");
        if some(frames) {
            let slow = sum("client.frames.slow");
            judgements.push(self.ratio("slow_frame_rate", (slow.0, frames.0), (slow.1, frames.1)));
        }
        judgements
    }

    /// The server signals of a service's spans: error ratio, p50 and p99
    /// latency.
    pub fn spans(&self, canary: &Rollup, baseline: &Rollup) -> Vec<Judgement> {
        let requests = |r: &Rollup| (r.errors, r.values.count());
        let mut judgements = vec![self.ratio("error_ratio", requests(canary), requests(baseline))];
        for (signal, q) in [("latency_p50", 0.5), ("latency_p99", 0.99)] {
            judgements.push(self.values(signal, q, &canary.values, &baseline.values));
        }
        judgements
    }

    fn judge(
        &self,
        signal: &str,
        test: &'static str,
        (canary, baseline): (Option<f64>, Option<f64>),
        (canary_samples, baseline_samples): (u64, u64),
        p_value: Option<f64>,
        min_worse: f64,
    ) -> Judgement {
        let needed = Needed {
            canary: self.min_samples.saturating_sub(canary_samples),
            baseline: self.min_samples.saturating_sub(baseline_samples),
        };
        let enough = needed.canary == 0 && needed.baseline == 0;
        let worse = match (canary, baseline) {
            (Some(c), Some(b)) => c > b && c - b > (self.tolerance * b.abs()).max(min_worse),
            _ => false,
        };
        let result = if !enough {
            Outcome::Inconclusive
        } else if worse && p_value.is_some_and(|p| p < self.significance) {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        Judgement {
            signal: signal.to_owned(),
            canary,
            baseline,
            difference: canary.zip(baseline).map(|(c, b)| c - b),
            canary_samples,
            baseline_samples,
            test,
            p_value: enough.then_some(p_value).flatten(),
            result,
            needed: (!enough).then_some(needed),
        }
    }
}

/// The release's verdict from its signals, with the reasons: the failed
/// signals for a rollback, the inconclusive ones for a hold.
pub fn verdict(judgements: &[Judgement]) -> (Verdict, Vec<String>) {
    let failed: Vec<String> = judgements
        .iter()
        .filter(|j| j.result == Outcome::Fail)
        .map(|j| {
            format!(
                "{}: canary {} against baseline {} (p = {:.2e})",
                j.signal,
                shown(j.canary),
                shown(j.baseline),
                j.p_value.unwrap_or(1.0)
            )
        })
        .collect();
    if !failed.is_empty() {
        return (Verdict::Rollback, failed);
    }
    let waiting: Vec<String> = judgements
        .iter()
        .filter_map(|j| {
            let needed = j.needed?;
            Some(format!(
                "{}: too few events to judge ({} canary, {} baseline); {} more for the canary and {} for the baseline",
                j.signal, j.canary_samples, j.baseline_samples, needed.canary, needed.baseline
            ))
        })
        .collect();
    if !waiting.is_empty() {
        return (Verdict::Hold, waiting);
    }
    if judgements.is_empty() {
        return (
            Verdict::Hold,
            vec!["no data for the canary or the baseline in the range".to_owned()],
        );
    }
    let passed = judgements
        .iter()
        .map(|j| j.signal.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    (
        Verdict::Promote,
        vec![format!("no signal is significantly worse: {passed}")],
    )
}

fn shown(value: Option<f64>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:.4}"))
}

/// One-sided p-value of the canary's share of bad events being higher
/// than the baseline's by chance (pooled two-proportion z-test). `None`
/// without events in a cohort.
pub fn two_proportion((bad_c, n_c): (u64, u64), (bad_b, n_b): (u64, u64)) -> Option<f64> {
    if n_c == 0 || n_b == 0 {
        return None;
    }
    let (x_c, x_b) = (bad_c.min(n_c) as f64, bad_b.min(n_b) as f64);
    let (n_c, n_b) = (n_c as f64, n_b as f64);
    let pooled = (x_c + x_b) / (n_c + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_b)).sqrt();
    if se == 0.0 {
        // Both cohorts all good or all bad: no evidence either way.
        return Some(1.0);
    }
    Some(normal_sf((x_c / n_c - x_b / n_b) / se))
}

/// One-sided p-value of the canary's values being larger than the
/// baseline's by chance (Mann–Whitney U, normal approximation with tie and
/// continuity corrections). Values of one bucket are ties. `None` without
/// values in a cohort.
pub fn mann_whitney(canary: &Distribution, baseline: &Distribution) -> Option<f64> {
    let (n_c, n_b) = (canary.count() as f64, baseline.count() as f64);
    if n_c == 0.0 || n_b == 0.0 {
        return None;
    }
    let mut c = canary.ascending().peekable();
    let mut b = baseline.ascending().peekable();
    let (mut below, mut rank_sum, mut ties) = (0.0, 0.0, 0.0);
    loop {
        // The next bucket of either, with both counts where they share it.
        let (in_c, in_b) = match (c.peek().copied(), b.peek().copied()) {
            (None, None) => break,
            (Some((v, n)), Some((w, m))) if v == w => {
                c.next();
                b.next();
                (n, m)
            }
            (Some((v, n)), Some((w, _))) if v < w => {
                c.next();
                (n, 0)
            }
            (Some((_, n)), None) => {
                c.next();
                (n, 0)
            }
            (_, Some((_, m))) => {
                b.next();
                (0, m)
            }
        };
        let t = (in_c + in_b) as f64;
        rank_sum += in_c as f64 * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
    }
    let n = n_c + n_b;
    let u = rank_sum - n_c * (n_c + 1.0) / 2.0;
    let mean = n_c * n_b / 2.0;
    let variance = n_c * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if variance <= 0.0 {
        // Every value in one bucket.
        return Some(1.0);
    }
    Some(normal_sf((u - mean - 0.5) / variance.sqrt()))
}

/// P(Z > z) for a standard normal Z.
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to a relative error below 1.2e-7
/// (Numerical Recipes' `erfcc`, a Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRITERIA: Criteria = Criteria {
        min_samples: 100,
        significance: 0.05,
        tolerance: 0.1,
    };

    fn distribution(values: &[f64]) -> Distribution {
        let mut d = Distribution::new();
        for v in values {
            d.record(*v).expect("finite");
        }
        d
    }

    #[test]
    fn the_two_proportion_test_matches_the_formula() {
        // 2 % against 1 % of 1,000: z = 0.01 / sqrt(0.015 · 0.985 · 2/1000).
        let p = two_proportion((20, 1_000), (10, 1_000)).expect("events");
        assert!((p - 0.032_914_159).abs() < 1e-6, "{p}");
        let better = two_proportion((10, 1_000), (20, 1_000)).expect("events");
        assert!((better - (1.0 - 0.032_914_159)).abs() < 1e-6, "{better}");
        assert_eq!(two_proportion((0, 500), (0, 500)), Some(1.0));
        assert_eq!(two_proportion((1, 0), (0, 500)), None);
    }

    #[test]
    fn the_mann_whitney_test_ranks_buckets_as_ties() {
        // All four canary values above the four baseline ones: U = 16,
        // mean 8, variance 12; z = (16 − 8 − 0.5) / √12.
        let p = mann_whitney(
            &distribution(&[5.0, 6.0, 7.0, 8.0]),
            &distribution(&[1.0, 2.0, 3.0, 4.0]),
        )
        .expect("values");
        assert!((p - 0.015_191_411).abs() < 1e-6, "{p}");
        // The same values on both sides: no evidence.
        let same = distribution(&[1.0, 2.0, 2.0, 3.0]);
        let p = mann_whitney(&same, &same).expect("values");
        assert!(p > 0.5, "{p}");
        // Ties: canary [2, 2, 3], baseline [1, 2]; ranks 1 | 3, 3, 3 | 5:
        // R = 3 + 3 + 5 = 11, U = 5, mean 3, tie term 24 → variance
        // 0.5 · (6 − 24 / 20) = 2.4.
        let p = mann_whitney(&distribution(&[2.0, 2.0, 3.0]), &distribution(&[1.0, 2.0]))
            .expect("values");
        let expected = normal_sf((5.0 - 3.0 - 0.5) / 2.4_f64.sqrt());
        assert!((p - expected).abs() < 1e-12, "{p} {expected}");
        assert!((expected - 0.166_46).abs() < 1e-4, "{expected}");
    }

    #[test]
    fn signals_pass_fail_or_wait_for_samples() {
        let failed = CRITERIA.ratio("error_ratio", (60, 1_000), (10, 1_000));
        assert_eq!(failed.result, Outcome::Fail);
        assert!((failed.difference.expect("both") - 0.05).abs() < 1e-12);
        // Significant (p ≈ 1e-8) but within the 10 % tolerance: 1.08 %
        // against 1 %.
        let within = CRITERIA.ratio("error_ratio", (10_800, 1_000_000), (10_000, 1_000_000));
        assert_eq!(within.result, Outcome::Pass);
        let few = CRITERIA.ratio("error_ratio", (30, 40), (10, 1_000));
        assert_eq!(few.result, Outcome::Inconclusive);
        assert_eq!(
            few.needed,
            Some(Needed {
                canary: 60,
                baseline: 0
            })
        );
        assert_eq!(few.p_value, None);
        let (overall, reasons) = verdict(&[failed.clone(), few.clone()]);
        assert_eq!(overall, Verdict::Rollback);
        assert_eq!(
            reasons,
            vec!["error_ratio: canary 0.0600 against baseline 0.0100 (p = 5.88e-10)".to_owned()]
        );
        let (overall, reasons) = verdict(&[within.clone(), few]);
        assert_eq!(overall, Verdict::Hold);
        assert!(reasons[0].contains("60 more for the canary"), "{reasons:?}");
        assert_eq!(verdict(&[within]).0, Verdict::Promote);
        assert_eq!(verdict(&[]).0, Verdict::Hold);
    }

    #[test]
    fn latency_worse_by_less_than_a_millisecond_fails_no_canary() {
        // 2,000 requests each: the canary's p50 0.35 ms against 0.30 ms is
        // 17 % worse and significant, and no reason to roll back; 3 ms
        // against 1.5 ms is.
        let spread = |base: f64| {
            distribution(
                &(0..2_000)
                    .map(|i| base + (i % 10) as f64 * 0.01)
                    .collect::<Vec<_>>(),
            )
        };
        let tenths = CRITERIA.values("latency_p50", 0.5, &spread(0.30), &spread(0.25));
        assert!(tenths.p_value.is_some_and(|p| p < 1e-6), "{tenths:?}");
        assert!(
            tenths
                .difference
                .is_some_and(|d| d > 0.04 && d < MIN_WORSE_MS)
        );
        assert_eq!(tenths.result, Outcome::Pass);
        let slower = CRITERIA.values("latency_p50", 0.5, &spread(3.0), &spread(1.5));
        assert_eq!(slower.result, Outcome::Fail);
    }

    #[test]
    fn the_baseline_is_the_other_versions_in_the_canary_units() {
        let member = |version, unit, cohort| Member {
            version,
            unit,
            cohort,
        };
        let groups = vec![
            (member("2.0", "u1", "canary"), 1),
            (member("1.0", "u1", "stable"), 2),
            (member("1.0", "u2", "stable"), 3),
            (member("0.9", "u1", "stable"), 4),
            (member("2.1", "u1", "canary"), 6),
        ];
        let release = Release {
            version: "2.0",
            baseline: None,
            unit: None,
        };
        let sides = |cohorts: &Cohorts<'_>, groups: &[(Member<'_>, i32)]| {
            let on = |side| {
                groups
                    .iter()
                    .filter(|(m, _)| cohorts.side(m) == Some(side))
                    .map(|(_, n)| *n)
                    .collect::<Vec<i32>>()
            };
            (on(Side::Canary), on(Side::Baseline))
        };
        let split = |release: Release<'_>, groups: &[(Member<'_>, i32)]| {
            sides(&release.cohorts(groups.iter().map(|(m, _)| *m)), groups)
        };
        assert_eq!(split(release, &groups), (vec![1], vec![2, 4]));
        let pinned = Release {
            baseline: Some("1.0"),
            ..release
        };
        assert_eq!(split(pinned, &groups), (vec![1], vec![2]));
        let mut beside = groups.clone();
        beside.push((member("1.0", "u1", "baseline"), 5));
        assert_eq!(split(release, &beside), (vec![1], vec![5]));

        // Resolved once over all the data, a series the canary has no
        // group in (a crash type it never had) splits in the same units
        // and cohorts: unit u2's stable group stays out.
        let cohorts = release.cohorts(groups.iter().map(|(m, _)| *m));
        let one_type = [
            (member("1.0", "u1", "stable"), 7),
            (member("1.0", "u2", "stable"), 8),
        ];
        assert_eq!(sides(&cohorts, &one_type), (vec![], vec![7]));
        assert_eq!(cohorts.units, BTreeSet::from(["u1".to_owned()]));
    }
}
