//! Rollups, the catalogue and checkpoints in SQLite.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};
use vigil_domain::model::{Checkpoint, CumulativeState};
use vigil_domain::model::{Kind, SeriesKey};
use vigil_domain::signal::label_of;
use vigil_domain::tenant::TenantId;

use super::{SqliteStore, bound_to_sql, fatal, from_sql, to_sql};
use crate::codec::{Stats, blob_buckets, buckets_blob, corrupt, extend_buckets, merge_rows};
use crate::{
    Aggregated, Aggregation, CatalogueEntry, Flush, RollupQuery, RollupStore, StoreError,
    StoredRollup, day_of,
};

fn labels_json(series: &SeriesKey) -> String {
    serde_json::to_string(series.labels()).unwrap_or_default()
}

fn series_from_row(
    tenant: &str,
    kind: &str,
    service: String,
    name: String,
    labels: &str,
) -> Result<SeriesKey, StoreError> {
    let labels: Vec<(String, String)> =
        serde_json::from_str(labels).map_err(|e| corrupt("labels", e))?;
    let (keys, values) = labels.into_iter().unzip();
    crate::codec::series_from(tenant, kind, service, name, keys, values)
}

/// The users column of a row: NULL (none named) reads as no bytes.
fn users_of<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Result<&'r [u8], StoreError> {
    let value = row.get_ref(index).map_err(fatal)?;
    Ok(value
        .as_blob_or_null()
        .map_err(|e| corrupt("users", e))?
        .unwrap_or_default())
}

#[async_trait]
impl RollupStore for SqliteStore {
    async fn write(&self, flush: &Flush) -> Result<(), StoreError> {
        let flush = flush.clone();
        self.run(move |connection| {
            let day = to_sql(day_of(flush.time_s));
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO rollups (tenant, kind, service, name, labels, series, width,
                            start, count, sum, min, max, errors, buckets, correction, source,
                            bus_partition, day, users)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                            ?15, ?16, ?17, ?18, ?19)",
                    )
                    .map_err(fatal)?;
                for row in &flush.rows {
                    let stats = Stats::of(&row.rollup);
                    let series = &row.series;
                    insert
                        .execute(params![
                            series.tenant.as_str(),
                            series.kind.as_str(),
                            series.service,
                            series.name,
                            labels_json(series),
                            to_sql(series.id()),
                            row.width_s,
                            to_sql(row.start_s),
                            to_sql(stats.count),
                            stats.sum,
                            stats.min,
                            stats.max,
                            to_sql(stats.errors),
                            buckets_blob(&stats.keys, &stats.counts),
                            row.correction,
                            flush.source,
                            row.partition,
                            day,
                            (!stats.users.is_empty()).then(|| stats.users.to_bytes()),
                        ])
                        .map_err(fatal)?;
                }
                let mut checkpoint = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO checkpoints
                            (source, bus_partition, seq, next_offset, replay_from, watermark)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(fatal)?;
                for c in &flush.checkpoints {
                    // `replay_from` is kept for files of earlier versions:
                    // nothing is replayed since cumulative state is stored.
                    checkpoint
                        .execute(params![
                            flush.source,
                            c.partition,
                            to_sql(c.seq),
                            c.next_offset,
                            c.next_offset,
                            to_sql(c.watermark_s),
                        ])
                        .map_err(fatal)?;
                }
                let mut cumulative = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO cumulative
                            (source, bus_partition, series, offset, time_ns, state, day)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(fatal)?;
                for c in &flush.cumulative {
                    cumulative
                        .execute(params![
                            flush.source,
                            c.partition,
                            to_sql(c.series),
                            c.offset,
                            to_sql(c.time_ns),
                            c.state,
                            day,
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn record_series(&self, entries: &[CatalogueEntry]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(fatal)?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO series (series, tenant, kind, service, name, labels,
                            first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (series) DO UPDATE SET
                            first_seen = min(first_seen, excluded.first_seen),
                            last_seen = max(last_seen, excluded.last_seen)",
                    )
                    .map_err(fatal)?;
                for entry in &entries {
                    let series = &entry.series;
                    upsert
                        .execute(params![
                            to_sql(series.id()),
                            series.tenant.as_str(),
                            series.kind.as_str(),
                            series.service,
                            series.name,
                            labels_json(series),
                            to_sql(entry.first_seen_s),
                            to_sql(entry.last_seen_s),
                        ])
                        .map_err(fatal)?;
                }
            }
            tx.commit().map_err(fatal)
        })
        .await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let source = source.to_owned();
        self.run(move |connection| {
            connection
                .query_row(
                    "SELECT seq, next_offset, watermark FROM checkpoints
                     WHERE source = ?1 AND bus_partition = ?2",
                    params![source, partition],
                    |row| {
                        Ok(Checkpoint {
                            seq: from_sql(row.get(0)?),
                            partition,
                            next_offset: row.get(1)?,
                            watermark_s: from_sql(row.get(2)?),
                        })
                    },
                )
                .optional()
                .map_err(fatal)
        })
        .await
    }

    async fn cumulative(
        &self,
        source: &str,
        partition: i32,
        before_offset: i64,
        since_ns: u64,
    ) -> Result<Vec<CumulativeState>, StoreError> {
        let source = source.to_owned();
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT series, offset, time_ns, state FROM cumulative
                     WHERE source = ?1 AND bus_partition = ?2 AND offset < ?3 AND time_ns >= ?4",
                )
                .map_err(fatal)?;
            let rows = statement
                .query_map(
                    params![source, partition, before_offset, to_sql(since_ns)],
                    |row| {
                        Ok(CumulativeState {
                            partition,
                            series: from_sql(row.get(0)?),
                            offset: row.get(1)?,
                            time_ns: from_sql(row.get(2)?),
                            state: row.get(3)?,
                        })
                    },
                )
                .map_err(fatal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fatal)
        })
        .await
    }

    async fn rollups(&self, query: &RollupQuery) -> Result<Vec<StoredRollup>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut sql = String::from(
                "SELECT tenant, kind, service, name, labels, width, start, count, sum, min, max,
                    errors, buckets, series, users
                 FROM rollups WHERE width = ? AND start >= ? AND start < ?",
            );
            let mut values = vec![
                Value::from(query.width_s),
                Value::from(to_sql(query.from_s)),
                Value::from(to_sql(query.to_s)),
            ];
            let mut filter = |column: &str, value: Value| {
                sql.push_str(&format!(" AND {column} = ?"));
                values.push(value);
            };
            if let Some(tenant) = &query.tenant {
                filter("tenant", Value::from(tenant.as_str().to_owned()));
            }
            if let Some(kind) = query.kind {
                filter("kind", Value::from(kind.as_str().to_owned()));
            }
            if let Some(service) = &query.service {
                filter("service", Value::from(service.clone()));
            }
            if let Some(name) = &query.name {
                filter("name", Value::from(name.clone()));
            }
            if let Some((source, partition)) = &query.source {
                filter("source", Value::from(source.clone()));
                filter("bus_partition", Value::from(*partition));
            }
            let mut statement = connection.prepare_cached(&sql).map_err(fatal)?;
            let mut rows = statement.query(params_from_iter(values)).map_err(fatal)?;
            let mut stored = Vec::new();
            // Labels are parsed once per series, not per row.
            let mut keys: HashMap<(String, i64), SeriesKey> = HashMap::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                let id: i64 = row.get(13).map_err(fatal)?;
                let series = match keys.entry((tenant, id)) {
                    Entry::Occupied(entry) => entry.get().clone(),
                    Entry::Vacant(entry) => {
                        let kind: String = row.get(1).map_err(fatal)?;
                        let labels: String = row.get(4).map_err(fatal)?;
                        let series = series_from_row(
                            &entry.key().0,
                            &kind,
                            row.get(2).map_err(fatal)?,
                            row.get(3).map_err(fatal)?,
                            &labels,
                        )?;
                        entry.insert(series).clone()
                    }
                };
                let blob: Vec<u8> = row.get(12).map_err(fatal)?;
                let (keys, counts) = blob_buckets(&blob)?;
                let mut stats = Stats {
                    count: from_sql(row.get(7).map_err(fatal)?),
                    sum: row.get(8).map_err(fatal)?,
                    min: row.get(9).map_err(fatal)?,
                    max: row.get(10).map_err(fatal)?,
                    errors: from_sql(row.get(11).map_err(fatal)?),
                    keys,
                    counts,
                    users: Default::default(),
                };
                stats.merge_users(users_of(row, 14)?)?;
                stored.push(StoredRollup {
                    series,
                    width_s: row.get(5).map_err(fatal)?,
                    start_s: from_sql(row.get(6).map_err(fatal)?),
                    rollup: stats.into_rollup(true)?,
                });
            }
            Ok(merge_rows(stored))
        })
        .await
    }

    async fn aggregate(&self, query: &Aggregation) -> Result<Vec<Aggregated>, StoreError> {
        let query = query.clone();
        self.run(move |connection| {
            let mut sql = String::from(
                "SELECT series, service, name, labels, start, count, sum, min, max, errors,
                    CASE WHEN ? THEN buckets END, users
                 FROM rollups
                 WHERE tenant = ? AND kind = ? AND width = ? AND start >= ? AND start < ?",
            );
            let mut values = vec![
                Value::from(query.buckets),
                Value::from(query.tenant.as_str().to_owned()),
                Value::from(query.kind.as_str().to_owned()),
                Value::from(query.width_s),
                Value::from(bound_to_sql(query.from_s)),
                Value::from(bound_to_sql(query.to_s)),
            ];
            for (column, value) in [("service", &query.service), ("name", &query.name)] {
                if let Some(value) = value {
                    sql.push_str(&format!(" AND {column} = ?"));
                    values.push(Value::from(value.clone()));
                }
            }
            let mut statement = connection.prepare_cached(&sql).map_err(fatal)?;
            let mut rows = statement.query(params_from_iter(values)).map_err(fatal)?;
            // Labels are parsed once per series: the index of its group, or
            // None when the matchers leave it out. Rows are summed as stored
            // (buckets appended) and made distributions once per output row.
            let mut series_groups: HashMap<i64, Option<usize>> = HashMap::new();
            let mut groups: Vec<Vec<String>> = Vec::new();
            let mut group_index: HashMap<Vec<String>, usize> = HashMap::new();
            let mut merged: HashMap<(usize, u64), Stats> = HashMap::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let id: i64 = row.get(0).map_err(fatal)?;
                let group = match series_groups.entry(id) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        let labels: String = row.get(3).map_err(fatal)?;
                        let series = series_from_row(
                            query.tenant.as_str(),
                            query.kind.as_str(),
                            row.get(1).map_err(fatal)?,
                            row.get(2).map_err(fatal)?,
                            &labels,
                        )?;
                        let group = query.matchers.iter().all(|m| m.matches(&series)).then(|| {
                            let values: Vec<String> = query
                                .group_by
                                .iter()
                                .map(|key| label_of(&series, key).to_owned())
                                .collect();
                            *group_index.entry(values.clone()).or_insert_with(|| {
                                groups.push(values);
                                groups.len() - 1
                            })
                        });
                        *entry.insert(group)
                    }
                };
                let Some(group) = group else {
                    continue;
                };
                let start = from_sql(row.get(4).map_err(fatal)?);
                let key = (group, start - start % query.step_s);
                if !merged.contains_key(&key) && merged.len() >= query.limit {
                    break;
                }
                let stats = merged.entry(key).or_default();
                let count = from_sql(row.get(5).map_err(fatal)?);
                let (min, max): (f64, f64) =
                    (row.get(7).map_err(fatal)?, row.get(8).map_err(fatal)?);
                if count > 0 {
                    let first = stats.count == 0;
                    stats.min = if first { min } else { stats.min.min(min) };
                    stats.max = if first { max } else { stats.max.max(max) };
                }
                stats.count += count;
                stats.sum += row.get::<_, f64>(6).map_err(fatal)?;
                stats.errors += from_sql(row.get(9).map_err(fatal)?);
                if query.buckets {
                    let blob = row
                        .get_ref(10)
                        .map_err(fatal)?
                        .as_blob()
                        .map_err(|e| corrupt("buckets", e))?;
                    extend_buckets(blob, &mut stats.keys, &mut stats.counts)?;
                }
                stats.merge_users(users_of(row, 11)?)?;
            }
            let mut out: Vec<Aggregated> = merged
                .into_iter()
                .map(|((group, start_s), stats)| {
                    Ok(Aggregated {
                        group: groups[group].clone(),
                        start_s,
                        rollup: stats.into_rollup(query.buckets)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            out.sort_by(|a, b| (&a.group, a.start_s).cmp(&(&b.group, b.start_s)));
            Ok(out)
        })
        .await
    }

    async fn series(
        &self,
        tenant: &TenantId,
        kind: Option<Kind>,
        service: Option<&str>,
    ) -> Result<Vec<CatalogueEntry>, StoreError> {
        let tenant = tenant.clone();
        let service = service.map(str::to_owned);
        self.run(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant, kind, service, name, labels, first_seen, last_seen FROM series
                     WHERE tenant = ?1 AND (?2 IS NULL OR kind = ?2)
                        AND (?3 IS NULL OR service = ?3)
                     ORDER BY kind, service, name, series",
                )
                .map_err(fatal)?;
            let mut rows = statement
                .query(params![tenant.as_str(), kind.map(Kind::as_str), service])
                .map_err(fatal)?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next().map_err(fatal)? {
                let tenant: String = row.get(0).map_err(fatal)?;
                let kind: String = row.get(1).map_err(fatal)?;
                let labels: String = row.get(4).map_err(fatal)?;
                entries.push(CatalogueEntry {
                    series: series_from_row(
                        &tenant,
                        &kind,
                        row.get(2).map_err(fatal)?,
                        row.get(3).map_err(fatal)?,
                        &labels,
                    )?,
                    first_seen_s: from_sql(row.get(5).map_err(fatal)?),
                    last_seen_s: from_sql(row.get(6).map_err(fatal)?),
                });
            }
            Ok(entries)
        })
        .await
    }
}
