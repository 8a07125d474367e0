//! Rules evaluated on the stream of windows: rows of 10 s windows go in as
//! the aggregators publish them, and each time a window boundary has
//! passed (plus the evaluation delay) every rule gives a verdict per group.
//!
//! Between boundaries the rules that slide ([`Rule::slides`]: thresholds
//! and anomalies of signals that do not depend on the window's length, and
//! burn rates) are judged again at every flush ([`Engine::slide`]), over
//! their window before the last boundary and every row published since —
//! the open window judged by what it holds. The window judged is thus never
//! shorter than the rule's, and a change shows as soon as its rows are
//! published rather than at the next boundary; `min_count` and `for` hold
//! as at boundaries; a slide starts alerts but stops none
//! (`crate::alerts::Alerts::apply_slide`). Signals that grow with the
//! window (count, sum, rate) cannot be judged over a window still filling
//! and wait for boundaries; so do absence, canary, PromQL and crash group
//! rules. The last boundary of each evaluation is judged the same way, so
//! a slide and the boundary after it do not disagree about the same rows.
//!
//! Rules that select the same series, group them by the same labels and
//! need the same kind of data share one feed, which keeps per group (the
//! values of the `group_by` labels) what they need over their ranges:
//! merged rollups per 10 s slot (threshold, anomaly), running totals of
//! good and bad events per slot (burn rate), and when data was last seen
//! (absence). Ten rules on one service's groups thus merge each row once,
//! merge each window once per boundary, and read a burn rate over 6 h
//! from two running totals. Which feeds and group a series reaches is
//! worked out once per series.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use vigil_domain::canary;
use vigil_domain::model::{Kind, Rollup, SeriesKey};
use vigil_domain::signal::{Matcher, label_of};
use vigil_domain::tenant::TenantId;

use crate::promql::Promql;
use crate::rules::{Check, Direction, Method, Rule, STEP_S};

/// What one rule says of one group at one boundary: its condition holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The rule's index in the engine's rules.
    pub rule: usize,
    /// The group's labels, and for a burn-rate pair its `severity`.
    pub labels: Vec<(String, String)>,
    /// The value the condition was checked on (the burn rate over the long
    /// window, the z-score, the relative deviation, the seconds without
    /// data).
    pub value: Option<f64>,
}

/// The values of a rule's `group_by` labels.
type Group = Vec<String>;

/// What a feed keeps of each slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Keep {
    /// Merged rollups: threshold and anomaly rules.
    Rollups,
    /// Events and bad events (errors, or points above the latency whose
    /// bits are given): burn-rate rules.
    Counts(Option<u64>),
    /// When data was last seen: absence rules.
    Presence,
}

/// Which series a feed takes, how it groups them, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FeedKey {
    tenant: TenantId,
    kind: Kind,
    service: Option<String>,
    series: Option<String>,
    matchers: Vec<Matcher>,
    group_by: Vec<String>,
    keep: Keep,
}

impl FeedKey {
    fn of(rule: &Rule) -> Self {
        let keep = match &rule.check {
            Check::Threshold { .. } | Check::Anomaly { .. } | Check::Canary { .. } => Keep::Rollups,
            Check::BurnRate { latency_ms, .. } => Keep::Counts(latency_ms.map(f64::to_bits)),
            Check::Absence => Keep::Presence,
            Check::Promql(_) | Check::CrashGroup { .. } => {
                unreachable!("PromQL and crash group rules have no feed")
            }
        };
        FeedKey {
            tenant: rule.tenant.clone(),
            kind: rule.kind,
            service: rule.service.clone(),
            series: rule.series.clone(),
            matchers: rule.matchers.clone(),
            group_by: match (&rule.check, rule.kind) {
                (Check::Canary { .. }, Kind::Client) => {
                    canary::CLIENT_GROUP.map(str::to_owned).to_vec()
                }
                (Check::Canary { .. }, _) => canary::SPAN_GROUP.map(str::to_owned).to_vec(),
                _ => rule.group_by.clone(),
            },
            keep,
        }
    }

    fn selects(&self, series: &SeriesKey) -> bool {
        self.series.as_ref().is_none_or(|name| *name == series.name)
            && self.matchers.iter().all(|m| m.matches(series))
    }
}

/// How long a rule needs the slots of its feed: its longest window.
fn slots_s(rule: &Rule) -> u64 {
    match &rule.check {
        Check::Threshold { window_s, .. }
        | Check::Anomaly { window_s, .. }
        | Check::Canary { window_s, .. } => *window_s,
        Check::BurnRate { windows, .. } => windows.iter().map(|w| w.long_s).max().unwrap_or(0),
        Check::Absence => rule.for_s,
        Check::Promql(_) | Check::CrashGroup { .. } => 0,
    }
}

#[derive(Debug)]
struct Feed {
    key: FeedKey,
    /// Slots older than this before the boundary are dropped.
    slots_s: u64,
    /// A group without data for this long is forgotten (never for
    /// presence).
    forget_s: u64,
    tracks: HashMap<Group, Track>,
}

#[derive(Debug, Default)]
struct Track {
    /// Merged rollups by slot start.
    rollups: BTreeMap<u64, Rollup>,
    /// By slot start: the events and bad events of every slot kept up to
    /// this one, on top of `counts_base`.
    counts: VecDeque<(u64, u64, u64)>,
    /// The totals of the slots dropped from `counts`.
    counts_base: (u64, u64),
    /// End of the newest slot with data.
    last_seen_end: u64,
    /// The merged rollups of the windows asked for at `merged_at`, by
    /// window length: kept until the next boundary, so a slide merges only
    /// the freshest rows on top.
    merged: Vec<(u64, Rollup)>,
    merged_at: u64,
    /// Those windows with the fresh slots on top, by window length, for
    /// the evaluation numbered `judged_in`: merged once for all the feed's
    /// rules that slide.
    judged: Vec<(u64, Rollup)>,
    judged_in: u64,
    /// Values of past evaluations, by rule: anomaly rules.
    history: Vec<(usize, VecDeque<(u64, f64)>)>,
}

impl Track {
    fn add_counts(&mut self, start_s: u64, events: u64, bad: u64) {
        let at = self.counts.partition_point(|(s, _, _)| *s < start_s);
        if self.counts.get(at).is_none_or(|(s, _, _)| *s != start_s) {
            let (before_events, before_bad) = match at {
                0 => self.counts_base,
                _ => (self.counts[at - 1].1, self.counts[at - 1].2),
            };
            self.counts.insert(at, (start_s, before_events, before_bad));
        }
        for slot in self.counts.range_mut(at..) {
            slot.1 += events;
            slot.2 += bad;
        }
    }

    /// Events and bad events of the slots starting in `[from, to)`.
    fn counts_in(&self, from: u64, to: u64) -> (u64, u64) {
        let through = |t: u64| match self.counts.partition_point(|(s, _, _)| *s < t) {
            0 => self.counts_base,
            n => (self.counts[n - 1].1, self.counts[n - 1].2),
        };
        let (after, before) = (through(to), through(from));
        (after.0 - before.0, after.1 - before.1)
    }

    /// The merged rollup of the slots in `[boundary − window_s, boundary)`,
    /// merged once per boundary for all the feed's rules.
    fn merged(&mut self, boundary: u64, window_s: u64) -> &Rollup {
        let at = self.merge(boundary, window_s);
        &self.merged[at].1
    }

    /// What [`Track::merged`] reads, by its place in `merged`.
    fn merge(&mut self, boundary: u64, window_s: u64) -> usize {
        if self.merged_at != boundary {
            self.merged.clear();
            self.merged_at = boundary;
        }
        match self.merged.iter().position(|(w, _)| *w == window_s) {
            Some(at) => at,
            None => {
                let mut rollup = Rollup::default();
                for (_, slot) in self.rollups.range(boundary - window_s..boundary) {
                    rollup.merge(slot);
                }
                self.merged.push((window_s, rollup));
                self.merged.len() - 1
            }
        }
    }

    /// The rollup a rule judges at `at`: the window before the boundary,
    /// and when `at` is fresh every slot from the boundary on.
    fn window(&mut self, at: Moment, window_s: u64) -> &Rollup {
        let index = self.merge(at.boundary, window_s);
        if !at.fresh || self.rollups.range(at.boundary..).next().is_none() {
            return &self.merged[index].1;
        }
        if self.judged_in != at.evaluation {
            self.judged.clear();
            self.judged_in = at.evaluation;
        }
        let at_length = match self.judged.iter().position(|(w, _)| *w == window_s) {
            Some(at_length) => at_length,
            None => {
                let mut rollup = self.merged[index].1.clone();
                for (_, slot) in self.rollups.range(at.boundary..) {
                    rollup.merge(slot);
                }
                self.judged.push((window_s, rollup));
                self.judged.len() - 1
            }
        };
        &self.judged[at_length].1
    }

    /// What [`Track::merged`] merged for `window_s` at this boundary.
    fn cached(&self, window_s: u64) -> Option<&Rollup> {
        self.merged
            .iter()
            .find(|(w, _)| *w == window_s)
            .map(|(_, rollup)| rollup)
    }

    fn history(&mut self, rule: usize) -> &mut VecDeque<(u64, f64)> {
        let at = match self.history.iter().position(|(r, _)| *r == rule) {
            Some(at) => at,
            None => {
                self.history.push((rule, VecDeque::new()));
                self.history.len() - 1
            }
        };
        &mut self.history[at].1
    }

    /// Drops what is older than `oldest`.
    fn prune(&mut self, oldest: u64) {
        self.rollups = self.rollups.split_off(&oldest);
        while self.counts.front().is_some_and(|(s, _, _)| *s < oldest) {
            if let Some((_, events, bad)) = self.counts.pop_front() {
                self.counts_base = (events, bad);
            }
        }
    }
}

/// When rules are judged: at a boundary, or between two (a slide).
#[derive(Debug, Clone, Copy)]
struct Moment {
    /// The last boundary: windows end there.
    boundary: u64,
    /// The slots from the boundary on count too (for the rules that slide).
    fresh: bool,
    /// A boundary, not a slide: anomaly rules keep their history.
    at_boundary: bool,
    /// Which evaluation this is (numbered from 1): what a track merged
    /// with the fresh slots holds for this one only.
    evaluation: u64,
}

/// The rules and the state of their groups.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Arc<Rule>>,
    /// The feed of each rule; PromQL rules have none.
    feed_of: Vec<Option<usize>>,
    feeds: Vec<Feed>,
    /// Feeds by (tenant, kind, service); `None`: feeds of every service.
    index: HashMap<(TenantId, Kind, Option<String>), Vec<usize>>,
    /// Which (feed, group) each series reaches, by series id.
    routes: HashMap<u64, Arc<[(usize, Group)]>>,
    /// The windows of the PromQL rules.
    promql: Promql,
    /// The last boundary evaluated.
    evaluated_through: u64,
    /// Evaluations made, boundaries and slides.
    evaluations: u64,
}

impl Engine {
    /// An engine for `rules` that evaluates boundaries after `now_s`; groups
    /// without `group_by` are watched for absence from `now_s` on.
    pub fn new(rules: Vec<Arc<Rule>>, now_s: u64) -> Self {
        let boundary = now_s - now_s % STEP_S;
        let mut by_key: HashMap<FeedKey, usize> = HashMap::new();
        let mut feeds: Vec<Feed> = Vec::new();
        let mut feed_of = Vec::with_capacity(rules.len());
        for rule in &rules {
            if let Check::Promql(_) | Check::CrashGroup { .. } = rule.check {
                feed_of.push(None);
                continue;
            }
            let key = FeedKey::of(rule);
            let at = *by_key.entry(key.clone()).or_insert_with(|| {
                let mut tracks = HashMap::new();
                if key.keep == Keep::Presence && key.group_by.is_empty() {
                    let track = Track {
                        last_seen_end: boundary,
                        ..Track::default()
                    };
                    tracks.insert(Vec::new(), track);
                }
                feeds.push(Feed {
                    key,
                    slots_s: 0,
                    forget_s: 0,
                    tracks,
                });
                feeds.len() - 1
            });
            let feed = &mut feeds[at];
            feed.slots_s = feed.slots_s.max(slots_s(rule));
            feed.forget_s = feed.forget_s.max(rule.range_s()).max(3_600);
            feed_of.push(Some(at));
        }
        let mut index: HashMap<_, Vec<usize>> = HashMap::new();
        for (at, feed) in feeds.iter().enumerate() {
            let key = &feed.key;
            index
                .entry((key.tenant.clone(), key.kind, key.service.clone()))
                .or_default()
                .push(at);
        }
        Engine {
            promql: Promql::new(&rules),
            rules,
            feed_of,
            feeds,
            index,
            routes: HashMap::new(),
            evaluated_through: boundary,
            evaluations: 0,
        }
    }

    /// Takes over what `old` kept for the same feeds, and the anomaly
    /// history of its rules that did not change, so a reload loses no
    /// window.
    pub fn adopt(&mut self, old: &mut Engine) {
        let renumbered: HashMap<usize, usize> = old
            .rules
            .iter()
            .enumerate()
            .filter_map(|(j, rule)| Some((j, self.rules.iter().position(|r| r == rule)?)))
            .collect();
        for feed in &mut self.feeds {
            let Some(previous) = old.feeds.iter_mut().find(|f| f.key == feed.key) else {
                continue;
            };
            feed.tracks = std::mem::take(&mut previous.tracks);
            for track in feed.tracks.values_mut() {
                track.history = std::mem::take(&mut track.history)
                    .into_iter()
                    .filter_map(|(j, values)| Some((*renumbered.get(&j)?, values)))
                    .collect();
            }
        }
        self.promql.adopt(&mut old.promql);
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The last boundary evaluated.
    pub fn evaluated_through(&self) -> u64 {
        self.evaluated_through
    }

    /// Groups tracked over all feeds, and series kept for PromQL rules.
    pub fn groups(&self) -> usize {
        self.feeds.iter().map(|f| f.tracks.len()).sum::<usize>() + self.promql.series()
    }

    fn routes_of(&mut self, series: &SeriesKey) -> Arc<[(usize, Group)]> {
        if let Some(routes) = self.routes.get(&series.id()) {
            return Arc::clone(routes);
        }
        let mut routes = Vec::new();
        for service in [Some(series.service.clone()), None] {
            let key = (series.tenant.clone(), series.kind, service);
            for &at in self.index.get(&key).into_iter().flatten() {
                let feed = &self.feeds[at].key;
                if feed.selects(series) {
                    let group = feed
                        .group_by
                        .iter()
                        .map(|key| label_of(series, key).to_owned())
                        .collect();
                    routes.push((at, group));
                }
            }
        }
        let routes: Arc<[(usize, Group)]> = routes.into();
        self.routes.insert(series.id(), Arc::clone(&routes));
        routes
    }

    /// Adds a series' rollup of the window `[start_s, start_s + width_s)`
    /// (10 s rows as published; wider ones when history is read back from
    /// the store, kept in the slot they start in).
    pub fn ingest(&mut self, series: &SeriesKey, width_s: u64, start_s: u64, rollup: &Rollup) {
        let count = rollup.values.count();
        if count == 0 {
            return;
        }
        self.promql
            .ingest(series, width_s, start_s, rollup, self.evaluated_through);
        for (at, group) in self.routes_of(series).iter() {
            let feed = &mut self.feeds[*at];
            let oldest = self.evaluated_through.saturating_sub(feed.slots_s + STEP_S);
            if start_s + width_s <= oldest {
                continue;
            }
            let track = match feed.tracks.get_mut(group) {
                Some(track) => track,
                None => feed.tracks.entry(group.clone()).or_default(),
            };
            track.last_seen_end = track.last_seen_end.max(start_s + width_s);
            match feed.key.keep {
                Keep::Presence => {}
                Keep::Counts(latency) => {
                    let bad = match latency {
                        Some(bits) => rollup.values.count_above(f64::from_bits(bits)),
                        None => rollup.errors,
                    };
                    track.add_counts(start_s, count, bad);
                }
                Keep::Rollups => {
                    track.rollups.entry(start_s).or_default().merge(rollup);
                }
            }
        }
    }

    /// Evaluates every boundary up to `now_s` not evaluated yet, oldest
    /// first; returns the verdicts of each, with the boundary. The last
    /// one's rules that slide also judge the rows published after it.
    pub fn advance(&mut self, now_s: u64) -> Vec<(u64, Vec<Verdict>)> {
        let mut done = Vec::new();
        while self.evaluated_through + STEP_S <= now_s {
            let boundary = self.evaluated_through + STEP_S;
            let at = Moment {
                boundary,
                fresh: boundary + STEP_S > now_s,
                at_boundary: true,
                evaluation: 0,
            };
            done.push((boundary, self.evaluate(at)));
            self.evaluated_through = boundary;
        }
        done
    }

    /// Judges the rules that slide again, over their windows before the
    /// last boundary evaluated and every row published since; the verdicts
    /// of the other rules stand until the next boundary.
    pub fn slide(&mut self) -> Vec<Verdict> {
        self.evaluate(Moment {
            boundary: self.evaluated_through,
            fresh: true,
            at_boundary: false,
            evaluation: 0,
        })
    }

    fn evaluate(&mut self, at: Moment) -> Vec<Verdict> {
        self.evaluations += 1;
        let at = Moment {
            evaluation: self.evaluations,
            ..at
        };
        let boundary = at.boundary;
        let mut verdicts = Vec::new();
        if at.at_boundary {
            self.promql.evaluate(&self.rules, boundary, &mut verdicts);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(feed) = self.feed_of[i] else {
                continue;
            };
            if !at.at_boundary && !rule.slides() {
                continue;
            }
            let feed = &mut self.feeds[feed];
            if let Check::Canary { window_s, criteria } = &rule.check {
                let release = Judged {
                    rule: i,
                    kind: rule.kind,
                    window_s: *window_s,
                    criteria,
                };
                releases(&release, boundary, feed, &mut verdicts);
                continue;
            }
            let at = Moment {
                fresh: at.fresh && rule.slides(),
                ..at
            };
            for (group, track) in feed.tracks.iter_mut() {
                check(rule, i, at, track, |extra, value| {
                    let mut labels: Vec<(String, String)> = rule
                        .group_by
                        .iter()
                        .cloned()
                        .zip(group.iter().cloned())
                        .collect();
                    labels.extend(extra);
                    verdicts.push(Verdict {
                        rule: i,
                        labels,
                        value,
                    });
                });
            }
        }
        if !at.at_boundary {
            return verdicts;
        }
        for feed in &mut self.feeds {
            let oldest = boundary.saturating_sub(feed.slots_s);
            for track in feed.tracks.values_mut() {
                track.prune(oldest);
            }
            // A group without data for long is forgotten; absence is
            // watched for good.
            if feed.key.keep != Keep::Presence {
                let forget_s = feed.forget_s;
                feed.tracks.retain(|_, track| {
                    !track.rollups.is_empty()
                        || !track.counts.is_empty()
                        || track.last_seen_end + forget_s > boundary
                });
            }
        }
        verdicts
    }
}

/// Judges each canary version (a version with `vigil.cohort=canary`) in a
/// canary rule's feed against its baseline at `boundary`: a rollback
/// verdict holds, labelled with the version and the first failed signal.
/// Server spans are judged by [`canary::Criteria::spans`], an app's client
/// series (grouped by [`canary::CLIENT_GROUP`]) by
/// [`canary::Criteria::client`].
fn releases(release: &Judged<'_>, boundary: u64, feed: &mut Feed, verdicts: &mut Vec<Verdict>) {
    let Judged {
        rule,
        kind,
        window_s,
        criteria,
    } = *release;
    for track in feed.tracks.values_mut() {
        track.merged(boundary, window_s);
    }
    let members: Vec<(&Group, &Rollup)> = feed
        .tracks
        .iter()
        .filter_map(|(group, track)| Some((group, track.cached(window_s)?)))
        .collect();
    let versions: BTreeSet<&str> = members
        .iter()
        .map(|(group, _)| canary::Member::of(group))
        .filter(|m| m.cohort == "canary")
        .map(|m| m.version)
        .collect();
    let version_label = match kind {
        Kind::Client => "app.version",
        _ => "service.version",
    };
    for version in versions {
        let release = canary::Release {
            version,
            baseline: None,
            unit: None,
        };
        let cohorts = release.cohorts(members.iter().map(|(group, _)| canary::Member::of(group)));
        let judgements = match kind {
            Kind::Client => criteria.client(|name| {
                // A group's name and power.foreground (CLIENT_GROUP).
                let foreground_only = name == "client.power.drain";
                cohorts.merge(
                    members
                        .iter()
                        .filter(|(group, _)| {
                            group.get(3).is_some_and(|n| n == name)
                                && (!foreground_only || group.get(4).is_some_and(|f| f == "true"))
                        })
                        .map(|(group, rollup)| (canary::Member::of(group), *rollup)),
                )
            }),
            _ => {
                let (canaries, baselines) = cohorts.merge(
                    members
                        .iter()
                        .map(|(group, rollup)| (canary::Member::of(group), *rollup)),
                );
                criteria.spans(&canaries, &baselines)
            }
        };
        let failed = judgements
            .iter()
            .find(|j| j.result == canary::Outcome::Fail);
        if let Some(failed) = failed {
            verdicts.push(Verdict {
                rule,
                labels: vec![
                    (version_label.to_owned(), version.to_owned()),
                    ("signal".to_owned(), failed.signal.clone()),
                ],
                value: failed.p_value,
            });
        }
    }
}

/// What a canary rule judges: its index, the kind of its series, its
/// window and criteria.
#[derive(Clone, Copy)]
struct Judged<'a> {
    rule: usize,
    kind: Kind,
    window_s: u64,
    criteria: &'a canary::Criteria,
}

/// Checks one group at `at` for rule `index`, calling
/// `verdict(extra labels, value)` for each alert of it whose condition
/// holds.
fn check(
    rule: &Rule,
    index: usize,
    at: Moment,
    track: &mut Track,
    mut verdict: impl FnMut(Vec<(String, String)>, Option<f64>),
) {
    let boundary = at.boundary;
    match &rule.check {
        Check::Threshold {
            signal,
            window_s,
            op,
            value: bound,
            min_count,
        } => {
            let rollup = track.window(at, *window_s);
            let value = (rollup.values.count() >= *min_count)
                .then(|| signal.value(rollup, *window_s))
                .flatten();
            if let Some(value) = value.filter(|v| op.holds(*v, *bound)) {
                verdict(Vec::new(), Some(value));
            }
        }
        Check::Absence => {
            let silent_s = boundary.saturating_sub(track.last_seen_end);
            if silent_s >= rule.for_s {
                verdict(Vec::new(), Some(silent_s as f64));
            }
        }
        Check::BurnRate {
            budget, windows, ..
        } => {
            let rate = |window_s: u64| {
                let end = if at.fresh { u64::MAX } else { boundary };
                let (events, bad) = track.counts_in(boundary - window_s, end);
                (events > 0).then(|| bad as f64 / events as f64 / budget)
            };
            for window in windows {
                let long = rate(window.long_s);
                let short = rate(window.short_s);
                // A rate computed at the factor exactly may come out a
                // rounding error below it.
                let factor = window.factor * (1.0 - 1e-9);
                if long.is_some_and(|r| r >= factor) && short.is_some_and(|r| r >= factor) {
                    let labels = vec![("severity".to_owned(), window.severity.clone())];
                    verdict(labels, long);
                }
            }
        }
        Check::Anomaly {
            signal,
            window_s,
            method,
            direction,
            min_count,
        } => {
            let value_of = |rollup: &Rollup| {
                (rollup.values.count() >= *min_count)
                    .then(|| signal.value(rollup, *window_s))
                    .flatten()
            };
            // The history keeps the boundaries' windows; a fresh moment is
            // judged over its rows too.
            let exact = value_of(track.merged(boundary, *window_s));
            let kept = exact.filter(|_| at.at_boundary);
            let judged = if at.fresh {
                value_of(track.window(at, *window_s))
            } else {
                exact
            };
            let Some(value) = judged else {
                return;
            };
            let history = track.history(index);
            let deviation = match *method {
                Method::ZScore { history_s, .. } => {
                    while history
                        .front()
                        .is_some_and(|(at, _)| at + history_s < boundary)
                    {
                        history.pop_front();
                    }
                    let past: Vec<f64> = history.iter().map(|(_, v)| *v).collect();
                    history.extend(kept.map(|v| (boundary, v)));
                    robust_z(value, &past)
                }
                Method::Seasonal { period_s, .. } => {
                    // One value a minute is kept for the baseline.
                    while history
                        .front()
                        .is_some_and(|(at, _)| at + period_s + 60 <= boundary)
                    {
                        history.pop_front();
                    }
                    let then = boundary - period_s;
                    let baseline = history
                        .iter()
                        .find(|(at, _)| *at <= then && then < at + 60)
                        .map(|(_, v)| *v);
                    if boundary.is_multiple_of(60) {
                        history.extend(kept.map(|v| (boundary, v)));
                    }
                    baseline.map(|base| relative_deviation(value, base))
                }
            };
            let limit = match method {
                Method::ZScore { threshold, .. } => *threshold,
                Method::Seasonal { tolerance, .. } => *tolerance,
            };
            let holds = deviation.is_some_and(|d| match direction {
                Direction::Up => d > limit,
                Direction::Down => d < -limit,
                Direction::Both => d.abs() > limit,
            });
            if holds {
                verdict(Vec::new(), deviation);
            }
        }
        // Judged over all the feed's groups at once, in `releases`; PromQL
        // rules over their series, in `Promql::evaluate`; crash groups by
        // the control loop.
        Check::Canary { .. } | Check::Promql(_) | Check::CrashGroup { .. } => {}
    }
}

/// The median of `values`, which must not be empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// How many robust standard deviations `value` lies above the median of
/// `past` (Iglewicz and Hoaglin's modified z-score: MAD scaled by 1.4826;
/// when the MAD is 0, the mean absolute deviation scaled by 1.2533). `None`
/// with fewer than 6 past values. A past that never varied makes any other
/// value infinitely far.
fn robust_z(value: f64, past: &[f64]) -> Option<f64> {
    if past.len() < 6 {
        return None;
    }
    let mut sorted = past.to_vec();
    let center = median(&mut sorted);
    let mut deviations: Vec<f64> = past.iter().map(|v| (v - center).abs()).collect();
    let mad = median(&mut deviations);
    let scale = if mad > 0.0 {
        1.4826 * mad
    } else {
        1.2533 * deviations.iter().sum::<f64>() / deviations.len() as f64
    };
    let distance = value - center;
    Some(if scale > 0.0 {
        distance / scale
    } else if distance == 0.0 {
        0.0
    } else {
        distance.signum() * f64::INFINITY
    })
}

/// `(value − base) / |base|`; from a base of 0, any rise is infinite.
fn relative_deviation(value: f64, base: f64) -> f64 {
    let distance = value - base;
    if base != 0.0 {
        distance / base.abs()
    } else if distance == 0.0 {
        0.0
    } else {
        distance.signum() * f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::rules;

    const T0: u64 = 1_800_000_000;

    type Labels = Vec<(String, String)>;

    fn rules(yaml: &str) -> Vec<Arc<Rule>> {
        let files = vec![(PathBuf::from("r.yaml"), format!("tenant: acme\n{yaml}"))];
        rules::parse(&files, &|_| None, None)
            .expect("rules load")
            .rules
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn series(service: &str, unit: &str) -> SeriesKey {
        SeriesKey::new(
            TenantId::parse("acme").expect("tenant"),
            Kind::Span,
            service,
            "POST /pay",
            vec![("vigil.unit".into(), unit.into())],
        )
    }

    /// `n` points of `ms`, `errors` of them failed.
    fn rollup(n: u64, ms: f64, errors: u64) -> Rollup {
        let mut rollup = Rollup::default();
        for i in 0..n {
            rollup.record(ms, i < errors).expect("finite");
        }
        rollup
    }

    /// The active verdicts of each boundary up to `to`, as (boundary,
    /// labels, value).
    fn fired(engine: &mut Engine, to: u64) -> Vec<(u64, Labels, Option<f64>)> {
        engine
            .advance(to)
            .into_iter()
            .flat_map(|(boundary, verdicts)| {
                verdicts
                    .into_iter()
                    .map(move |v| (boundary, v.labels, v.value))
            })
            .collect()
    }

    fn unit(value: &str) -> Vec<(String, String)> {
        vec![("vigil.unit".into(), value.into())]
    }

    /// The label of a unit as a Prometheus result has it.
    fn unit_of(value: &str) -> Vec<(String, String)> {
        vec![("vigil_unit".into(), value.into())]
    }

    #[test]
    fn a_threshold_holds_per_group_over_its_window() {
        let rules = rules(
            "rules:\n  - {name: slow, type: threshold, service: pay, group_by: [vigil.unit], signal: p99, window: 30s, op: '>', value: 300, min_count: 5}\n",
        );
        let mut engine = Engine::new(rules, T0);
        // u1 is slow in one 10 s window, u2 never; a fast service of
        // another name is not selected.
        for k in 0..6 {
            let start = T0 + k * 10;
            let slow = if k == 2 { 500.0 } else { 100.0 };
            engine.ingest(&series("pay", "u1"), 10, start, &rollup(10, slow, 0));
            engine.ingest(&series("pay", "u2"), 10, start, &rollup(10, 100.0, 0));
            engine.ingest(&series("shop", "u1"), 10, start, &rollup(10, 900.0, 0));
        }
        let fired = fired(&mut engine, T0 + 60);
        // The slow window [T0+20, T0+30) is in the 30 s windows ending at
        // T0+30, +40 and +50.
        let boundaries: Vec<u64> = fired.iter().map(|(b, _, _)| b - T0).collect();
        assert_eq!(boundaries, vec![30, 40, 50]);
        for (_, labels, value) in &fired {
            assert_eq!(labels, &unit("u1"));
            let p99 = value.expect("a value");
            assert!((p99 - 500.0).abs() <= 500.0 * 0.01, "{p99}");
        }
    }

    #[test]
    fn rules_that_slide_judge_the_freshest_rows_between_boundaries() {
        let rules = rules(concat!(
            "rules:\n",
            "  - {name: failing, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, window: 10s, op: '>', value: 0.05, min_count: 10}\n",
            "  - {name: busy, type: threshold, service: pay, signal: rate, window: 10s, op: '>', value: 0.8}\n",
            "  - {name: slo, type: burn_rate, service: pay, objective: 99, windows: [{long: 1m, short: 10s, factor: 10, severity: page}]}\n",
        ));
        let mut engine = Engine::new(rules, T0);
        let pay = series("pay", "u1");
        engine.ingest(&pay, 10, T0, &rollup(5, 5.0, 0));
        assert_eq!(fired(&mut engine, T0 + 10), Vec::new());
        // Slot T0+10 fills: 6 points, 3 failed. Too few for `failing`
        // alone, but its window counts the 5 before the boundary: 3 of
        // 11. `busy` is a rate (1.1/s over those 10 s and what came
        // since): it waits for the boundary.
        engine.ingest(&pay, 10, T0 + 10, &rollup(6, 5.0, 3));
        let judged = |verdicts: Vec<Verdict>| -> Vec<(usize, Option<f64>)> {
            verdicts.into_iter().map(|v| (v.rule, v.value)).collect()
        };
        assert_eq!(
            judged(engine.slide()),
            vec![(0, Some(3.0 / 11.0)), (2, Some(3.0 / 11.0 / 0.01))]
        );
        // The slot ends with 4 more healthy points: the next slide reads
        // them (3 of 15), not what the last one merged.
        engine.ingest(&pay, 10, T0 + 10, &rollup(4, 5.0, 0));
        assert_eq!(
            judged(engine.slide()),
            vec![(0, Some(3.0 / 15.0)), (2, Some(3.0 / 15.0 / 0.01))]
        );
        // The boundary after judges the slot and, as the last one due, the
        // fresh slot too: 13 of 20 failed; `busy` judges the slot alone
        // (1/s).
        engine.ingest(&pay, 10, T0 + 20, &rollup(10, 5.0, 10));
        let at_boundary: Vec<(usize, Option<f64>)> = engine
            .advance(T0 + 20)
            .into_iter()
            .flat_map(|(_, verdicts)| judged(verdicts))
            .collect();
        assert_eq!(
            at_boundary,
            vec![
                (0, Some(13.0 / 20.0)),
                (1, Some(1.0)),
                (2, Some(13.0 / 25.0 / 0.01))
            ]
        );
        // A slide before any new row says the same of the rules that slide.
        assert_eq!(
            judged(engine.slide()),
            vec![(0, Some(13.0 / 20.0)), (2, Some(13.0 / 25.0 / 0.01))]
        );
    }

    #[test]
    fn a_slide_keeps_no_anomaly_history() {
        let rules = rules(
            "rules:\n  - {name: odd, type: anomaly, service: pay, signal: error_ratio, window: 10s, method: zscore, history: 10m, threshold: 3, min_count: 5}\n",
        );
        let mut engine = Engine::new(rules, T0);
        let pay = series("pay", "u1");
        // Ten quiet windows make the history, a slide after each.
        for k in 0..10 {
            let errors = k % 2;
            engine.ingest(&pay, 10, T0 + k * 10, &rollup(20, 5.0, errors));
            assert_eq!(fired(&mut engine, T0 + (k + 1) * 10), Vec::new());
            assert_eq!(engine.slide(), Vec::new());
        }
        let history = |engine: &Engine| -> usize {
            engine.feeds[0]
                .tracks
                .values()
                .map(|t| t.history.iter().map(|(_, h)| h.len()).sum::<usize>())
                .sum()
        };
        assert_eq!(history(&engine), 10);
        // Half of the open slot fails: the slide sees it, keeps nothing.
        engine.ingest(&pay, 10, T0 + 100, &rollup(20, 5.0, 10));
        let verdicts = engine.slide();
        assert_eq!(verdicts.len(), 1);
        assert!(verdicts[0].value.is_some_and(|z| z > 3.0), "{verdicts:?}");
        assert_eq!(history(&engine), 10);
    }

    fn prometheus_rules(bound: f64) -> Vec<Arc<Rule>> {
        let expr = format!(
            "sum by (vigil_unit) (rate(vigil_span_errors_total{{service=\"pay\"}}[30s])) / sum by (vigil_unit) (rate(vigil_span_requests_total{{service=\"pay\"}}[30s])) > {bound}"
        );
        let yaml = format!(
            "groups:\n  - name: pay\n    rules:\n      - alert: PayErrors\n        expr: '{expr}'\n"
        );
        let files = vec![(PathBuf::from("p.yml"), yaml)];
        let tenant = TenantId::parse("acme").expect("tenant");
        rules::parse(&files, &|_| None, Some(&tenant))
            .expect("rules load")
            .rules
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    #[test]
    fn a_prometheus_rule_holds_for_each_series_of_its_result() {
        let mut engine = Engine::new(prometheus_rules(0.2), T0);
        // u1 fails half its requests from T0+20 on, u2 none; another
        // service failing everything is not selected.
        for k in 0..6 {
            let start = T0 + k * 10;
            let errors = if k >= 2 { 5 } else { 0 };
            engine.ingest(&series("pay", "u1"), 10, start, &rollup(10, 100.0, errors));
            engine.ingest(&series("pay", "u2"), 10, start, &rollup(10, 100.0, 0));
            engine.ingest(&series("shop", "u1"), 10, start, &rollup(10, 100.0, 10));
        }
        // At boundary b the range is the windows starting in [b − 30, b).
        let expected = |boundary: u64, ratio: f64| (boundary, unit_of("u1"), ratio);
        let found: Vec<(u64, Labels, f64)> = fired(&mut engine, T0 + 60)
            .into_iter()
            .map(|(b, labels, value)| (b - T0, labels, value.expect("a value")))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        for (got, want) in found.iter().zip([
            expected(40, 10.0 / 30.0),
            expected(50, 0.5),
            expected(60, 0.5),
        ]) {
            assert_eq!((got.0, &got.1), (want.0, &want.1));
            assert!((got.2 - want.2).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // A reload keeps the windows read: the new bound judges them.
        let mut reloaded = Engine::new(prometheus_rules(0.4), engine.evaluated_through());
        reloaded.adopt(&mut engine);
        assert_eq!(reloaded.groups(), 2, "u1 and u2 of pay, kept for 30 s");
        reloaded.ingest(&series("pay", "u1"), 10, T0 + 60, &rollup(10, 100.0, 3));
        // [40, 70): 5 + 5 + 3 errors of 30 requests, two windows of them
        // read before the reload; [50, 80): 8 of 20, not above 0.4.
        let found = fired(&mut reloaded, T0 + 80);
        assert_eq!(found.len(), 1, "{found:?}");
        let (boundary, labels, value) = &found[0];
        assert_eq!((boundary - T0, labels), (70, &unit_of("u1")));
        assert!((value.expect("a value") - 13.0 / 30.0).abs() < 1e-12);
    }

    #[test]
    fn running_totals_take_slots_in_any_order_and_drop_old_ones() {
        let mut track = Track::default();
        track.add_counts(T0 + 20, 5, 1);
        track.add_counts(T0, 10, 2);
        track.add_counts(T0 + 10, 20, 4);
        track.add_counts(T0 + 20, 1, 1);
        assert_eq!(track.counts_in(T0, T0 + 30), (36, 8));
        assert_eq!(track.counts_in(T0 + 10, T0 + 30), (26, 6));
        assert_eq!(track.counts_in(T0 + 20, T0 + 30), (6, 2));
        assert_eq!(track.counts_in(T0 + 30, T0 + 40), (0, 0));
        track.prune(T0 + 10);
        assert_eq!(track.counts.len(), 2);
        assert_eq!(track.counts_in(T0, T0 + 30), (26, 6), "the dropped slot");
        track.add_counts(T0 + 40, 3, 0);
        assert_eq!(track.counts_in(T0 + 20, T0 + 50), (9, 2));
    }

    #[test]
    fn rules_on_the_same_series_share_a_feed_that_a_reload_keeps() {
        let yaml = |bound: u32| {
            format!(
                "rules:\n  - {{name: slow, type: threshold, service: pay, group_by: [vigil.unit], signal: p99, window: 30s, op: '>', value: {bound}}}\n  - {{name: errors, type: threshold, service: pay, group_by: [vigil.unit], signal: error_ratio, window: 30s, op: '>', value: 0.5}}\n  - {{name: slo, type: burn_rate, service: pay, group_by: [vigil.unit], objective: 99}}\n"
            )
        };
        let mut engine = Engine::new(rules(&yaml(300)), T0);
        for unit in ["u1", "u2"] {
            engine.ingest(&series("pay", unit), 10, T0, &rollup(10, 250.0, 0));
        }
        // Two feeds (rollups, counts) of two groups each, not three.
        assert_eq!((engine.feeds.len(), engine.groups()), (2, 4));
        assert!(fired(&mut engine, T0 + 10).is_empty());
        let mut reloaded = Engine::new(rules(&yaml(200)), engine.evaluated_through());
        reloaded.adopt(&mut engine);
        assert_eq!(reloaded.groups(), 4);
        // The 250 ms read before the reload, judged on the new bound.
        let fired: Vec<(u64, Labels)> = fired(&mut reloaded, T0 + 20)
            .into_iter()
            .map(|(b, labels, _)| (b - T0, labels))
            .collect();
        let mut fired = fired;
        fired.sort();
        assert_eq!(fired, vec![(20, unit("u1")), (20, unit("u2"))]);
    }

    #[test]
    fn a_canary_rule_fires_for_the_version_worse_than_its_baseline() {
        let rules = rules(
            "rules:\n  - {name: canary, type: canary, service: pay, window: 30s, min_samples: 50}\n",
        );
        let mut engine = Engine::new(rules, T0);
        let span = |version: &str, unit: &str, cohort: &str, kind: &str| {
            SeriesKey::new(
                TenantId::parse("acme").expect("tenant"),
                Kind::Span,
                "pay",
                "POST /pay",
                vec![
                    ("service.version".into(), version.into()),
                    ("vigil.unit".into(), unit.into()),
                    ("vigil.cohort".into(), cohort.into()),
                    ("span.kind".into(), kind.into()),
                ],
            )
        };
        for k in 0..3 {
            let start = T0 + k * 10;
            let mut add = |series: SeriesKey, errors: u64| {
                engine.ingest(&series, 10, start, &rollup(100, 20.0, errors));
            };
            add(span("1.0", "u1", "stable", "server"), 1);
            // Not the canaries' unit, and client spans: not compared.
            add(span("1.0", "u2", "stable", "server"), 60);
            add(span("2.0", "u1", "canary", "client"), 60);
            add(span("2.0", "u1", "canary", "server"), 2);
            add(span("2.1", "u1", "canary", "server"), 20);
        }
        let fired: Vec<(u64, Labels)> = fired(&mut engine, T0 + 30)
            .into_iter()
            .map(|(b, labels, p)| {
                // The two-proportion test over the windows so far.
                let n = (b - T0) / 10 * 100;
                let expected = canary::two_proportion((n / 5, n), (n / 100, n));
                assert_eq!(p, expected);
                assert!(p.expect("a p-value") < 1e-5);
                (b - T0, labels)
            })
            .collect();
        let labels = vec![
            ("service.version".to_owned(), "2.1".to_owned()),
            ("signal".to_owned(), "error_ratio".to_owned()),
        ];
        assert_eq!(
            fired,
            vec![(10, labels.clone()), (20, labels.clone()), (30, labels)]
        );
    }

    /// An app release whose canary crashes more fires; one that drains
    /// the battery faster in the background only does not.
    #[test]
    fn a_client_canary_rule_judges_app_releases() {
        let rules = rules(
            "rules:\n  - {name: app, type: canary, kind: client, service: wallet, window: 30s, min_samples: 50}\n",
        );
        let mut engine = Engine::new(rules, T0);
        let client = |name: &str, version: &str, cohort: &str, foreground: Option<&str>| {
            let mut labels = vec![
                ("app.version".to_owned(), version.to_owned()),
                ("vigil.unit".to_owned(), "u1".to_owned()),
                ("vigil.cohort".to_owned(), cohort.to_owned()),
            ];
            labels.extend(foreground.map(|f| ("power.foreground".to_owned(), f.to_owned())));
            SeriesKey::new(
                TenantId::parse("acme").expect("tenant"),
                Kind::Client,
                "wallet",
                name,
                labels,
            )
        };
        for k in 0..3 {
            let start = T0 + k * 10;
            for (version, cohort, crashes, background_drain) in [
                ("5.0", "stable", 1, 5.0),
                ("5.1", "canary", 20, 5.0),
                ("5.2", "canary", 1, 50.0),
            ] {
                let mut add = |series: SeriesKey, rollup: Rollup| {
                    engine.ingest(&series, 10, start, &rollup);
                };
                add(
                    client("client.sessions", version, cohort, None),
                    rollup(100, 1.0, 0),
                );
                add(
                    client("client.crashes", version, cohort, None),
                    rollup(crashes, 1.0, crashes),
                );
                add(
                    client("client.power.drain", version, cohort, Some("true")),
                    rollup(100, 6.0, 0),
                );
                add(
                    client("client.power.drain", version, cohort, Some("false")),
                    rollup(100, background_drain, 0),
                );
            }
        }
        let fired: Vec<(u64, Labels)> = fired(&mut engine, T0 + 30)
            .into_iter()
            .map(|(b, labels, p)| {
                assert!(p.expect("a p-value") < 1e-3, "{labels:?}: {p:?}");
                (b - T0, labels)
            })
            .collect();
        let labels = vec![
            ("app.version".to_owned(), "5.1".to_owned()),
            ("signal".to_owned(), "crash_rate".to_owned()),
        ];
        assert_eq!(
            fired,
            vec![(10, labels.clone()), (20, labels.clone()), (30, labels)]
        );
    }

    #[test]
    fn too_few_points_give_no_verdict() {
        let rules = rules(
            "rules:\n  - {name: errors, type: threshold, signal: error_ratio, op: '>', value: 0.1, min_count: 20}\n",
        );
        let mut engine = Engine::new(rules, T0);
        engine.ingest(&series("pay", "u1"), 10, T0, &rollup(10, 1.0, 10));
        engine.ingest(&series("pay", "u1"), 10, T0 + 10, &rollup(20, 1.0, 3));
        let verdicts = engine.advance(T0 + 20);
        let values: Vec<(u64, Vec<Option<f64>>)> = verdicts
            .iter()
            .map(|(b, v)| (b - T0, v.iter().map(|v| v.value).collect()))
            .collect();
        assert_eq!(values, vec![(10, vec![]), (20, vec![Some(0.15)])]);
    }

    #[test]
    fn burn_rates_fire_when_both_windows_of_a_pair_burn() {
        // 99% objective: a 1% budget. Pairs 60s/20s at 10x, 120s/30s at 2x.
        let rules = rules(
            "rules:\n  - name: slo\n    type: burn_rate\n    objective: 99\n    windows:\n      - {long: 60s, short: 20s, factor: 10, severity: page}\n      - {long: 120s, short: 30s, factor: 2, severity: ticket}\n",
        );
        let mut engine = Engine::new(rules, T0);
        // 100 requests per 10 s; 30 failed from T0+60 to T0+80, 4 after.
        for k in 0..16 {
            let errors = match k {
                6 | 7 => 30,
                8.. => 1,
                _ => 0,
            };
            engine.ingest(
                &series("pay", "u1"),
                10,
                T0 + k * 10,
                &rollup(100, 1.0, errors),
            );
        }
        let fired: Vec<(u64, String, f64)> = fired(&mut engine, T0 + 160)
            .into_iter()
            .map(|(b, labels, value)| (b - T0, labels[0].1.clone(), value.expect("a rate")))
            .collect();
        let rounded: Vec<(u64, &str, i64)> = fired
            .iter()
            .map(|(b, severity, rate)| (*b, severity.as_str(), (rate * 100.0).round() as i64))
            .collect();
        // Values are the long window's burn rate. Page at T0+80: 60 errors
        // of 600 over 60 s (10x) and 60 of 200 over 20 s (30x); at T0+90
        // 61 of 600 (10.17x) and 31 of 200. Ticket from T0+70 (30 of 700
        // over what the 120 s hold so far, 30 of 300 over 30 s) until the
        // 30 s window holds 1 % errors (1x) at T0+110. Windows still
        // filling are judged on what they hold.
        assert_eq!(
            rounded,
            vec![
                (70, "ticket", 429),
                (80, "page", 1000),
                (80, "ticket", 750),
                (90, "page", 1017),
                (90, "ticket", 678),
                (100, "ticket", 620),
            ]
        );
    }

    #[test]
    fn anomalies_are_far_from_the_median_or_from_last_week() {
        let rules = rules(
            "rules:\n  - {name: z, type: anomaly, signal: mean, method: zscore, history: 1m, threshold: 3.5, min_count: 1}\n  - {name: week, type: anomaly, signal: mean, window: 60s, method: seasonal, period: 1w, tolerance: 0.4, direction: both}\n",
        );
        let week = 7 * 86_400;
        let start = T0 - T0 % 60 - week - 60;
        let mut engine = Engine::new(rules, start);
        // A week ago: 100 ms. Now: 100, 102, 98, … then 400 ms.
        for k in 0..6 {
            engine.ingest(
                &series("pay", "u1"),
                10,
                start + k * 10,
                &rollup(1, 100.0, 0),
            );
        }
        let boundary = start + 60;
        assert!(fired(&mut engine, boundary).is_empty());
        let now = boundary + week;
        engine.evaluated_through = now - 70;
        let values = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 400.0];
        for (k, ms) in values.iter().enumerate() {
            engine.ingest(
                &series("pay", "u1"),
                10,
                now - 70 + k as u64 * 10,
                &rollup(1, *ms, 0),
            );
        }
        let fired: Vec<(u64, usize, f64)> = engine
            .advance(now + 10)
            .into_iter()
            .flat_map(|(b, verdicts)| {
                verdicts
                    .into_iter()
                    .map(move |v| (b, v.rule, v.value.expect("a value")))
            })
            .collect();
        let when: Vec<(u64, usize)> = fired.iter().map(|(b, rule, _)| (b - now, *rule)).collect();
        assert_eq!(when, vec![(0, 0), (0, 1), (10, 1)]);
        // The z-score of 400 against 100, 102, 98, 101, 99, 100: median
        // 100, MAD 1, z = 300 / 1.4826.
        assert!((fired[0].2 - 300.0 / 1.4826).abs() < 1e-9);
        // The last minute's mean (900 / 6 = 150 ms) against last week's
        // 100 ms: +50 %; 10 s later 798 / 5 ms: +59.6 %.
        assert!((fired[1].2 - 0.5).abs() < 1e-9, "{}", fired[1].2);
        assert!((fired[2].2 - 0.596).abs() < 1e-9, "{}", fired[2].2);
    }

    #[test]
    fn absence_fires_after_its_time_without_data() {
        let rules = rules(
            "rules:\n  - {name: silent, type: absence, group_by: [vigil.unit], for: 30s}\n  - {name: all-silent, type: absence, for: 40s}\n",
        );
        let mut engine = Engine::new(rules, T0);
        engine.ingest(&series("pay", "u1"), 10, T0, &rollup(1, 1.0, 0));
        engine.ingest(&series("pay", "u2"), 10, T0 + 20, &rollup(1, 1.0, 0));
        let mut fired: Vec<(u64, usize, Labels)> = engine
            .advance(T0 + 70)
            .into_iter()
            .flat_map(|(b, verdicts)| {
                verdicts
                    .into_iter()
                    .map(move |v| (b - T0, v.rule, v.labels))
            })
            .collect();
        fired.sort();
        // u1 last seen at T0+10, u2 and anything at T0+30.
        assert_eq!(
            fired,
            vec![
                (40, 0, unit("u1")),
                (50, 0, unit("u1")),
                (60, 0, unit("u1")),
                (60, 0, unit("u2")),
                (70, 0, unit("u1")),
                (70, 0, unit("u2")),
                (70, 1, vec![]),
            ]
        );
    }
}
