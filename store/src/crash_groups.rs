//! Crash groups judged across an app's releases, read alike by the
//! dashboard API (`GET /api/v1/crashes`) and the alerter's `crash_group`
//! rules.
//!
//! Per group over the query's range: its crashes, and those of the range
//! just before; over all the crashes kept until the range's end: first and
//! last seen, first and last version, and its [`CrashState`] in its last
//! version (or the version asked for) among every version the app sent
//! telemetry from (its client series) or crashed in.

use std::collections::{BTreeSet, HashMap};

use vigil_domain::crash::{CrashState, compare_versions};
use vigil_domain::model::Kind;

use crate::{
    CrashCount, CrashDimension, CrashGroupCount, CrashQuery, EventStore, RollupStore, StoreError,
};

/// One crash group, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashGroup {
    pub count: CrashGroupCount,
    /// Sessions and users hit over the range: 0 until [`reach`] fills them.
    pub sessions: u64,
    pub users: u64,
    /// Crashes in the range just before, as long.
    pub previous_events: u64,
    pub state: CrashState,
    /// Over every crash of the group kept until the range's end.
    pub first_ns: u64,
    pub last_ns: u64,
    pub first_version: String,
    pub last_version: String,
}

/// The groups `query` selects, most crashes first, each judged in
/// `version` or else its last version, and the crashes of all of them.
/// Sessions and users are left to [`reach`]: distinct counts cost more.
pub async fn judged<S>(
    store: &S,
    query: &CrashQuery,
    version: Option<&str>,
) -> Result<(Vec<CrashGroup>, u64), StoreError>
where
    S: EventStore + RollupStore + ?Sized,
{
    let length = query.to_ns - query.from_ns;
    let previous_query = CrashQuery {
        from_ns: query.from_ns.saturating_sub(length),
        to_ns: query.from_ns,
        ..query.clone()
    };
    // Each group's versions unfiltered: its history is the group's, not
    // the query's.
    let history_query = CrashQuery {
        from_ns: 0,
        filters: Vec::new(),
        ..query.clone()
    };
    // Read side by side.
    let (current, previous, history, catalogue) = tokio::try_join!(
        store.crash_groups(query),
        store.crash_groups(&previous_query),
        store.crash_counts(&history_query, CrashDimension::Version),
        store.series(&query.tenant, Some(Kind::Client), Some(&query.app)),
    )?;
    let total = current.iter().map(|group| group.events).sum();
    let previous: HashMap<String, u64> = previous
        .into_iter()
        .map(|group| (group.fingerprint, group.events))
        .collect();
    let mut by_group: HashMap<&str, Vec<&CrashCount>> = HashMap::new();
    for count in &history {
        by_group.entry(&count.fingerprint).or_default().push(count);
    }
    let versions: BTreeSet<&str> = catalogue
        .iter()
        .filter_map(|entry| entry.series.label("app.version"))
        .chain(history.iter().map(|count| count.value.as_str()))
        .collect();
    let groups = current
        .into_iter()
        .map(|count| {
            let seen = by_group
                .remove(count.fingerprint.as_str())
                .unwrap_or_default();
            let order = |a: &&&CrashCount, b: &&&CrashCount| compare_versions(&a.value, &b.value);
            let first_version = seen.iter().min_by(order).map(|c| c.value.clone());
            let last_version = seen
                .iter()
                .max_by(order)
                .map(|c| c.value.clone())
                .unwrap_or_default();
            let state = CrashState::of(
                version.unwrap_or(&last_version),
                seen.iter().map(|c| c.value.as_str()),
                versions.iter().copied(),
            );
            CrashGroup {
                sessions: 0,
                users: 0,
                previous_events: previous.get(&count.fingerprint).copied().unwrap_or(0),
                state,
                first_ns: seen
                    .iter()
                    .map(|c| c.first_ns)
                    .min()
                    .unwrap_or(count.first_ns),
                last_ns: seen
                    .iter()
                    .map(|c| c.last_ns)
                    .max()
                    .unwrap_or(count.last_ns),
                first_version: first_version.unwrap_or_default(),
                last_version,
                count,
            }
        })
        .collect();
    Ok((groups, total))
}

/// Fills the sessions and users each of `groups` hit with the crashes
/// `query` selects.
pub async fn reach<S>(
    store: &S,
    query: &CrashQuery,
    groups: &mut [CrashGroup],
) -> Result<(), StoreError>
where
    S: EventStore + ?Sized,
{
    if groups.is_empty() {
        return Ok(());
    }
    let query = CrashQuery {
        fingerprints: groups
            .iter()
            .map(|group| group.count.fingerprint.clone())
            .collect(),
        ..query.clone()
    };
    let reach: HashMap<String, (u64, u64)> = store
        .crash_reach(&query, None)
        .await?
        .into_iter()
        .map(|r| (r.key, (r.sessions, r.users)))
        .collect();
    for group in groups {
        (group.sessions, group.users) = reach
            .get(&group.count.fingerprint)
            .copied()
            .unwrap_or_default();
    }
    Ok(())
}
