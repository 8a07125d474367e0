//! `crash_group` rules: an app's crash groups read from the store at each
//! boundary (`vigil_store::crash_groups`, as `GET /api/v1/crashes` reads
//! them), each group that qualifies a verdict labelled with its last
//! version, fingerprint, exception type and state.
//!
//! A group qualifies by volume — it is in one of the rule's `states` (new
//! or regressed by default) and crashed at least `min_count` times in the
//! window — or by velocity, as Crashlytics' velocity alerts: its crashed
//! users in its last version over the window (distinct user hashes of its
//! crashes) are at least `velocity` of that version's users (the sketch of
//! its sessions' and crashes' users kept with their rollups). An app that
//! names no user is judged on sessions the same way.
//!
//! The store is read once a minute (crash groups change slowly, and the
//! tick that sends pages should not wait on them every 10 s), within
//! [`READ_TIMEOUT`]; between reads, and when the store cannot be read, a
//! rule keeps its last verdicts: an outage of the store resolves no alert.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use vigil_domain::distinct::Distinct;
use vigil_domain::model::Kind;
use vigil_store::crash_groups::{self, CrashGroup};
use vigil_store::{Aggregation, AlertStore, CrashDimension, CrashQuery, StoreError};

use super::Control;
use crate::eval::Verdict;
use crate::rules::{Check, Rule};

/// How often the store is read, in seconds of boundaries.
const READ_EVERY_S: u64 = 60;

/// How long one rule's read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Control {
    /// The verdicts of every `crash_group` rule at `boundary`.
    pub(super) async fn crash_verdicts(&mut self, boundary: u64) -> Vec<Verdict> {
        if boundary >= self.crashes_read_at + READ_EVERY_S {
            self.crashes_read_at = boundary;
            for (index, rule) in self.engine.rules().iter().enumerate() {
                if !matches!(rule.check, Check::CrashGroup { .. }) {
                    continue;
                }
                let read = rule_verdicts(self.store.as_ref(), index, rule, boundary);
                match tokio::time::timeout(READ_TIMEOUT, read).await {
                    Ok(Ok(found)) => {
                        self.crash_verdicts.insert(index, found);
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(rule = %rule.name, %error, "crash groups not read; the rule's last verdicts are kept");
                    }
                    Err(_) => {
                        tracing::warn!(rule = %rule.name, "crash groups not read within {READ_TIMEOUT:?}; the rule's last verdicts are kept");
                    }
                }
            }
        }
        self.crash_verdicts.values().flatten().cloned().collect()
    }
}

async fn rule_verdicts(
    store: &dyn AlertStore,
    index: usize,
    rule: &Rule,
    boundary: u64,
) -> Result<Vec<Verdict>, StoreError> {
    let Check::CrashGroup {
        window_s,
        states,
        min_count,
        velocity,
    } = &rule.check
    else {
        return Ok(Vec::new());
    };
    let app = rule.service.clone().unwrap_or_default();
    let from_s = boundary.saturating_sub(*window_s);
    let query = CrashQuery {
        tenant: rule.tenant.clone(),
        app: app.clone(),
        from_ns: from_s * 1_000_000_000,
        to_ns: boundary * 1_000_000_000,
        filters: Vec::new(),
        fingerprints: Vec::new(),
    };
    let (groups, _) = crash_groups::judged(store, &query, None).await?;
    let shares = match velocity {
        Some(_) => shares(store, &query, &groups, from_s, boundary).await?,
        None => HashMap::new(),
    };
    Ok(groups
        .iter()
        .filter_map(|group| {
            let fingerprint = group.count.fingerprint.as_str();
            let share = shares.get(fingerprint).copied();
            let fast = velocity.is_some_and(|v| share.is_some_and(|s| s >= v));
            let many = states.contains(&group.state) && group.count.events >= *min_count;
            (fast || many).then(|| Verdict {
                rule: index,
                labels: vec![
                    ("app.version".to_owned(), group.last_version.clone()),
                    ("crash.fingerprint".to_owned(), fingerprint.to_owned()),
                    (
                        "exception.type".to_owned(),
                        group.count.exception_type.clone(),
                    ),
                    ("crash.state".to_owned(), group.state.as_str().to_owned()),
                ],
                value: if fast {
                    share
                } else {
                    Some(group.count.events as f64)
                },
            })
        })
        .collect())
}

/// A version's users (of its sessions and crashes) and its sessions over
/// the window.
#[derive(Default)]
struct Reach {
    users: Distinct,
    sessions: f64,
}

/// Each group's crashed users in its last version over its window, as a
/// share of that version's users; of its sessions for an app that names
/// no user.
async fn shares(
    store: &dyn AlertStore,
    query: &CrashQuery,
    groups: &[CrashGroup],
    from_s: u64,
    to_s: u64,
) -> Result<HashMap<String, f64>, StoreError> {
    let mut versions: HashMap<String, Reach> = HashMap::new();
    for name in ["client.sessions", "client.crashes"] {
        let rows = store
            .aggregate(&Aggregation {
                tenant: query.tenant.clone(),
                kind: Kind::Client,
                width_s: 10,
                from_s,
                to_s,
                step_s: to_s - from_s,
                service: Some(query.app.clone()),
                name: Some(name.to_owned()),
                matchers: Vec::new(),
                group_by: vec!["app.version".to_owned()],
                buckets: false,
                limit: 10_000,
            })
            .await?;
        for row in rows {
            let version = row.group.into_iter().next().unwrap_or_default();
            let reach = versions.entry(version).or_default();
            reach.users.merge(&row.rollup.users);
            if name == "client.sessions" {
                reach.sessions += row.rollup.values.sum();
            }
        }
    }
    let last: BTreeSet<&str> = groups.iter().map(|g| g.last_version.as_str()).collect();
    let mut shares = HashMap::new();
    for version in last {
        let Some(totals) = versions.get(version) else {
            continue;
        };
        let users = totals.users.count();
        if users == 0 && totals.sessions <= 0.0 {
            continue;
        }
        let in_version = CrashQuery {
            filters: vec![(CrashDimension::Version, version.to_owned())],
            ..query.clone()
        };
        for reach in store.crash_reach(&in_version, None).await? {
            let last = groups
                .iter()
                .any(|g| g.count.fingerprint == reach.key && g.last_version == version);
            if last {
                let share = if users > 0 {
                    reach.users as f64 / users as f64
                } else {
                    (reach.sessions + reach.without_session) as f64 / totals.sessions
                };
                shares.insert(reach.key, share.min(1.0));
            }
        }
    }
    Ok(shares)
}
