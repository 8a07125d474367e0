//! Merged rollups of closed windows, kept between requests — as
//! VictoriaMetrics' rollup result cache and the results cache of Mimir's
//! query frontend keep theirs: a dashboard refreshing a 24 h panel reads
//! from the store only the windows that closed since its last refresh.
//!
//! What is kept is what [`RollupStore::aggregate`] answered for one
//! selection (tenant, kind, service, name, matchers, groups, buckets) at one
//! width with one step per window, over a contiguous range of windows that
//! had closed when it was read. The aggregator writes nothing into a window
//! once it has closed (the reader's `settle_s` allows for its lateness and
//! flushes), so what is kept stays true. Answers are forgotten least
//! recently used first past `api.cache_bytes`; 0 keeps nothing.
//!
//! [`RollupStore::aggregate`]: vigil_store::RollupStore::aggregate

use std::collections::HashMap;
use std::sync::Mutex;

use vigil_store::{Aggregated, Aggregation, StoreError};

use crate::metrics::{SourceLabels, Windows};

/// The cache of one API process, shared by its requests.
pub struct Cache {
    budget_bytes: usize,
    state: Mutex<State>,
    windows: Windows,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Counts uses, to find the least recently used entry.
    clock: u64,
}

/// The kept answer of one selection over `[from_s, to_s)`: its rows, by
/// window start.
struct Entry {
    from_s: u64,
    to_s: u64,
    rows: Vec<Aggregated>,
    bytes: usize,
    used: u64,
}

/// Windows read from the store and served from the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub read: usize,
    pub kept: usize,
}

impl Cache {
    /// A cache of `budget_bytes`, counting what it answers in `windows`.
    pub fn new(budget_bytes: usize, windows: Windows) -> Cache {
        Cache {
            budget_bytes,
            state: Mutex::new(State::default()),
            windows,
        }
    }

    /// What [`Cache::aggregate`] answers, counted.
    pub async fn counted<F, R>(
        &self,
        query: &Aggregation,
        closed_until: u64,
        read: F,
    ) -> Result<Vec<Aggregated>, StoreError>
    where
        F: Fn(Aggregation) -> R,
        R: Future<Output = Result<Vec<Aggregated>, StoreError>>,
    {
        let (rows, served) = self.aggregate(query, closed_until, read).await?;
        for (from, n) in [("store", served.read), ("cache", served.kept)] {
            self.windows
                .get_or_create(&SourceLabels {
                    from: from.to_owned(),
                })
                .inc_by(n as u64);
        }
        Ok(rows)
    }

    /// What `read` answers for `query`, its windows ending by
    /// `closed_until` taken from the cache where it holds them, the rest
    /// read (and the closed part kept). `read` is the store's aggregate.
    pub async fn aggregate<F, R>(
        &self,
        query: &Aggregation,
        closed_until: u64,
        read: F,
    ) -> Result<(Vec<Aggregated>, Served), StoreError>
    where
        F: Fn(Aggregation) -> R,
        R: Future<Output = Result<Vec<Aggregated>, StoreError>>,
    {
        let width = u64::from(query.width_s);
        // Only whole windows, each its own step, are kept: a step made of
        // several windows may be cut differently by the next request.
        let closed_to = query.to_s.min(closed_until / width * width);
        if self.budget_bytes == 0 || query.step_s != width || closed_to <= query.from_s {
            let rows = read(query.clone()).await?;
            let served = Served {
                read: rows.len(),
                kept: 0,
            };
            return Ok((rows, served));
        }
        let key = key(query);
        let held = self.held(&key);
        // The closed range missing from what is held, before and after it;
        // all of it when what is held does not touch it.
        let missing: Vec<(u64, u64)> = match held {
            Some((from_s, to_s)) if from_s <= closed_to && query.from_s <= to_s => {
                [(query.from_s, from_s), (to_s, closed_to)]
                    .into_iter()
                    .filter(|(from, to)| from < to)
                    .collect()
            }
            _ => vec![(query.from_s, closed_to)],
        };
        let part = |from_s: u64, to_s: u64| Aggregation {
            from_s,
            to_s,
            ..query.clone()
        };
        let mut pieces = Vec::new();
        let mut served = Served::default();
        for &(from_s, to_s) in &missing {
            let rows = read(part(from_s, to_s)).await?;
            served.read += rows.len();
            if rows.len() >= query.limit {
                // Cut at the limit: the caller refuses the answer anyway.
                return Ok((rows, served));
            }
            pieces.push(((from_s, to_s), rows));
        }
        let mut rows = match self.keep(key, held, pieces, query.from_s, closed_to, &mut served) {
            Some(rows) => rows,
            None => {
                let rows = read(part(query.from_s, closed_to)).await?;
                served.read += rows.len();
                rows
            }
        };
        if closed_to < query.to_s {
            let open = read(part(closed_to, query.to_s)).await?;
            served.read += open.len();
            rows.extend(open);
        }
        rows.truncate(query.limit);
        Ok((rows, served))
    }

    /// The range held for `key`, if any.
    fn held(&self, key: &str) -> Option<(u64, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.entries.get(key).map(|e| (e.from_s, e.to_s))
    }

    /// Adds `pieces` to what is held for `key` and answers the rows of
    /// `[from_s, to_s)`; `held` is the range the pieces were read around
    /// (they cover all of `[from_s, to_s)` when it does not touch it).
    /// `None` when another request changed what is held meanwhile.
    fn keep(
        &self,
        key: String,
        held: Option<(u64, u64)>,
        pieces: Vec<((u64, u64), Vec<Aggregated>)>,
        from_s: u64,
        to_s: u64,
        served: &mut Served,
    ) -> Option<Vec<Aggregated>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let around = held.filter(|&(from, to)| from <= to_s && from_s <= to);
        let current = state.entries.get(&key).map(|e| (e.from_s, e.to_s));
        if around.is_some() && current != around {
            return None;
        }
        state.clock += 1;
        let clock = state.clock;
        let mut entry = match state.entries.remove(&key) {
            Some(entry) => {
                state.bytes -= entry.bytes;
                if around.is_some() {
                    entry
                } else {
                    Entry::empty(from_s)
                }
            }
            None => Entry::empty(from_s),
        };
        for ((from, to), rows) in pieces {
            entry.bytes += rows.iter().map(row_bytes).sum::<usize>();
            entry.rows.extend(rows);
            entry.from_s = entry.from_s.min(from);
            entry.to_s = entry.to_s.max(to);
        }
        entry.rows.sort_by_key(|row| row.start_s);
        entry.used = clock;
        let start = entry.rows.partition_point(|row| row.start_s < from_s);
        let end = entry.rows.partition_point(|row| row.start_s < to_s);
        let answer = entry.rows[start..end].to_vec();
        served.kept = answer.len().saturating_sub(served.read);
        if entry.bytes <= self.budget_bytes {
            state.bytes += entry.bytes;
            state.entries.insert(key, entry);
            state.evict(self.budget_bytes);
        }
        Some(answer)
    }
}

impl State {
    /// Forgets the least recently used entries until what is held fits.
    fn evict(&mut self, budget_bytes: usize) {
        while self.bytes > budget_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                return;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.bytes;
            }
        }
    }
}

impl Entry {
    fn empty(at_s: u64) -> Entry {
        Entry {
            from_s: at_s,
            to_s: at_s,
            rows: Vec::new(),
            bytes: 0,
            used: 0,
        }
    }
}

/// What identifies an answer but its range and limit.
fn key(query: &Aggregation) -> String {
    format!(
        "{}\0{}\0{:?}\0{:?}\0{:?}\0{:?}\0{}\0{}",
        query.tenant.as_str(),
        query.kind.as_str(),
        query.service,
        query.name,
        query.matchers,
        query.group_by,
        query.buckets,
        query.width_s,
    )
}

/// About the bytes a kept row takes.
fn row_bytes(row: &Aggregated) -> usize {
    std::mem::size_of::<Aggregated>()
        + row.group.iter().map(|v| v.len() + 24).sum::<usize>()
        + row.rollup.values.heap_bytes()
        + row.rollup.users.heap_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vigil_domain::model::{Kind, Rollup};
    use vigil_domain::tenant::TenantId;

    use super::*;

    /// A store of one group with a window a minute whose count is its
    /// minute, recording the ranges it is asked for.
    struct Minutes {
        asked: Mutex<Vec<(u64, u64)>>,
    }

    impl Minutes {
        fn new() -> Minutes {
            Minutes {
                asked: Mutex::new(Vec::new()),
            }
        }

        async fn read(&self, query: Aggregation) -> Result<Vec<Aggregated>, StoreError> {
            self.asked.lock().unwrap().push((query.from_s, query.to_s));
            Ok((query.from_s.div_ceil(60)..query.to_s.div_ceil(60))
                .map(|minute| {
                    let mut rollup = Rollup::default();
                    for _ in 0..minute {
                        rollup.record(1.0, false).unwrap();
                    }
                    Aggregated {
                        group: vec!["u1".to_owned()],
                        start_s: minute * 60,
                        rollup,
                    }
                })
                .collect())
        }

        fn asked(&self) -> Vec<(u64, u64)> {
            std::mem::take(&mut self.asked.lock().unwrap())
        }
    }

    fn query(from_s: u64, to_s: u64) -> Aggregation {
        Aggregation {
            tenant: TenantId::parse("acme").unwrap(),
            kind: Kind::Tenant,
            width_s: 60,
            from_s,
            to_s,
            step_s: 60,
            service: None,
            name: None,
            matchers: Vec::new(),
            group_by: vec!["vigil.unit".to_owned()],
            buckets: false,
            limit: 1_000,
        }
    }

    fn counts(rows: &[Aggregated]) -> Vec<(u64, u64)> {
        let mut counts: Vec<(u64, u64)> = rows
            .iter()
            .map(|row| (row.start_s, row.rollup.values.count()))
            .collect();
        counts.sort_unstable();
        counts
    }

    async fn ask(
        cache: &Cache,
        store: &Minutes,
        query: &Aggregation,
        closed_until: u64,
    ) -> (Vec<(u64, u64)>, Served) {
        let (rows, served) = cache
            .aggregate(query, closed_until, |q| store.read(q))
            .await
            .unwrap();
        (counts(&rows), served)
    }

    #[tokio::test]
    async fn closed_windows_are_read_once() {
        let (cache, store) = (Cache::new(1 << 20, Windows::default()), Minutes::new());
        let direct = |from_s: u64, to_s: u64| -> Vec<(u64, u64)> {
            (from_s / 60..to_s / 60).map(|m| (m * 60, m)).collect()
        };
        // Closed up to 600 s: kept; the rest read each time.
        let (rows, served) = ask(&cache, &store, &query(0, 720), 600).await;
        assert_eq!(rows, direct(0, 720));
        assert_eq!(served, Served { read: 12, kept: 0 });
        assert_eq!(store.asked(), [(0, 600), (600, 720)]);
        // A minute later: only what closed since, and what is still open.
        let (rows, served) = ask(&cache, &store, &query(60, 780), 660).await;
        assert_eq!(rows, direct(60, 780));
        assert_eq!(served, Served { read: 3, kept: 9 });
        assert_eq!(store.asked(), [(600, 660), (660, 780)]);
        // Earlier and later than what is kept: both ends.
        let (rows, _) = ask(&cache, &store, &query(0, 900), 900).await;
        assert_eq!(rows, direct(0, 900));
        assert_eq!(store.asked(), [(660, 900)]);
        // Inside: nothing read.
        let (rows, served) = ask(&cache, &store, &query(120, 300), 900).await;
        assert_eq!(rows, direct(120, 300));
        assert_eq!(served, Served { read: 0, kept: 3 });
        assert!(store.asked().is_empty());
        // Apart from what is kept: read whole, and kept instead.
        let (rows, _) = ask(&cache, &store, &query(6_000, 6_120), 9_000).await;
        assert_eq!(rows, direct(6_000, 6_120));
        assert_eq!(store.asked(), [(6_000, 6_120)]);
        let (_, served) = ask(&cache, &store, &query(0, 120), 9_000).await;
        assert_eq!(served.kept, 0);
        assert_eq!(store.asked(), [(0, 120)]);
    }

    #[tokio::test]
    async fn what_cannot_be_kept_whole_is_read() {
        let (cache, store) = (Cache::new(1 << 20, Windows::default()), Minutes::new());
        // Steps of several windows, another selection, nothing closed.
        let mut steps = query(0, 600);
        steps.step_s = 300;
        for q in [steps.clone(), steps] {
            ask(&cache, &store, &q, 600).await;
        }
        assert_eq!(store.asked(), [(0, 600), (0, 600)]);
        ask(&cache, &store, &query(0, 600), 600).await;
        let mut other = query(0, 600);
        other.group_by = vec!["service.version".to_owned()];
        ask(&cache, &store, &other, 600).await;
        assert_eq!(store.asked(), [(0, 600), (0, 600)]);
        ask(&cache, &store, &query(0, 600), 0).await;
        assert_eq!(store.asked(), [(0, 600)]);
        // No budget, nothing kept; an answer at the limit is not kept.
        let none = Cache::new(0, Windows::default());
        for _ in 0..2 {
            ask(&none, &store, &query(0, 600), 600).await;
        }
        assert_eq!(store.asked(), [(0, 600), (0, 600)]);
        let mut limited = query(0, 600);
        limited.service = Some("limited".to_owned());
        limited.limit = 10;
        for _ in 0..2 {
            let (rows, _) = ask(&cache, &store, &limited, 600).await;
            assert_eq!(rows.len(), 10);
        }
        assert_eq!(store.asked(), [(0, 600), (0, 600)]);
    }

    #[tokio::test]
    async fn the_least_recently_used_is_forgotten_first() {
        let store = Minutes::new();
        let mut units: Vec<Aggregation> = (0..3)
            .map(|i| {
                let mut q = query(0, 600);
                q.service = Some(format!("s{i}"));
                q
            })
            .collect();
        // Room for two answers of ten rows, not three.
        let one = {
            let rows = store.read(units[0].clone()).await.unwrap();
            rows.iter().map(row_bytes).sum::<usize>()
        };
        store.asked();
        let cache = Cache::new(2 * one + one / 2, Windows::default());
        for q in &units {
            ask(&cache, &store, q, 600).await;
        }
        assert_eq!(store.asked().len(), 3);
        // s0 was forgotten for s2; s1 and s2 are kept.
        ask(&cache, &store, &units[1], 600).await;
        ask(&cache, &store, &units[2], 600).await;
        assert!(store.asked().is_empty());
        units.swap(0, 2);
        ask(&cache, &store, &units[2], 600).await;
        assert_eq!(store.asked(), [(0, 600)]);
    }
}
