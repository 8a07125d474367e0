//! One topic's consumer loop: poll, turn messages into observations, and
//! every flush interval write each partition's rows with its checkpoint,
//! publish them on the rollups topic, then commit the group offsets.
//!
//! The rollups topic is at-least-once, and may miss a flush that was
//! written just before a crash: readers drop repeated `seq`s and read a
//! gap from the store. A message that cannot be decoded goes to the
//! dead-letter topic with the reason, and its partition goes on.
//!
//! The store, not the consumer group, says where a partition resumes (see
//! `partition.rs`); the group's committed offset is the checkpoint's, so that a
//! new member starts close to where it must. A partition taken away in a
//! rebalance is dropped without a flush: its new owner resumes from the
//! store. While the store refuses a flush nothing is polled; after
//! [`FLUSH_GIVE_UP`] of failures the pipeline gives up its state and starts
//! again from the store, so it never writes for a partition it lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use vigil_bus::{Bus, Consumer, Message, Position, Record, Topics, rollups};
use vigil_config::AggregatorConfig;
use vigil_domain::model::{Fnv, Kind, SeriesKey, service_total, tenant_total};
use vigil_domain::shutdown::Shutdown;
use vigil_store::{
    CATALOGUE_REFRESH_S, CatalogueEntry, EventRecord, Flush, IngestStore, RollupQuery, SpanRecord,
    StoreError,
};

use crate::IdMap;
use crate::active::ActiveSeries;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::points::{self, Observation};
use crate::{client_telemetry, logs};

/// Messages taken per poll.
const POLL_MAX: usize = 2_000;
/// How long a poll waits when nothing comes.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Backoff between failed flushes: doubles from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a flush may keep failing before the pipeline starts over.
const FLUSH_GIVE_UP: Duration = Duration::from_secs(30);
/// How long a publish to the rollups or dead-letter topic is retried.
const PUBLISH_GIVE_UP: Duration = Duration::from_secs(10);
/// How long a stopping pipeline keeps taking what the bus holds before its
/// last flush.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// A poll this short that brings nothing ends the drain.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How often series whose windows all closed are forgotten.
const PRUNE_S: u64 = 60;

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Metrics,
    Traces,
    Logs,
    Client,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Metrics => "metrics",
            Stream::Traces => "traces",
            Stream::Logs => "logs",
            Stream::Client => "client",
        }
    }

    /// The topic that carries it.
    pub fn topic(self, topics: &Topics) -> &str {
        match self {
            Stream::Metrics => &topics.metrics,
            Stream::Traces => &topics.traces,
            Stream::Logs => &topics.logs,
            Stream::Client => &topics.client,
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A topic's pipeline.
pub struct StreamLoop {
    pub source: String,
    pub signal: Stream,
    pub config: AggregatorConfig,
    pub store: Arc<dyn IngestStore>,
    pub bus: Arc<dyn Bus>,
    pub topics: Topics,
    pub metrics: Arc<Metrics>,
    /// Each tenant's active series, shared with the other pipelines.
    active: Arc<ActiveSeries>,
    partitions: BTreeMap<i32, Partition>,
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
    /// Per series: first and last window start seen, and when last written.
    /// A series leaves it when no partition holds it any more.
    catalogue: IdMap<u64, (u64, u64, Option<u64>)>,
    /// When series no window holds were last forgotten.
    pruned_s: u64,
}

impl StreamLoop {
    /// The pipeline of `signal`'s topic.
    pub fn new(
        signal: Stream,
        config: AggregatorConfig,
        store: Arc<dyn IngestStore>,
        bus: Arc<dyn Bus>,
        topics: Topics,
        metrics: Arc<Metrics>,
        active: Arc<ActiveSeries>,
    ) -> Self {
        StreamLoop {
            source: signal.topic(&topics).to_owned(),
            signal,
            config,
            store,
            bus,
            topics,
            metrics,
            active,
            partitions: BTreeMap::new(),
            spans: Vec::new(),
            events: Vec::new(),
            catalogue: IdMap::default(),
            pruned_s: now_s(),
        }
    }

    /// Drops every partition's state, to start over from the store.
    pub fn forget(&mut self) {
        self.partitions.clear();
        self.spans.clear();
        self.events.clear();
        self.catalogue.clear();
    }

    /// Consumes until `shutdown`, flushing at every interval; then takes
    /// what the bus still holds (for up to [`DRAIN_MAX`]) and flushes it.
    /// Returns whether that drain reached the end of the bus, or an error
    /// when a flush kept failing: the caller starts a new pipeline (and
    /// consumer) from the store.
    pub async fn run(
        &mut self,
        consumer: &mut dyn Consumer,
        shutdown: &Shutdown,
    ) -> Result<bool, StoreError> {
        let interval = Duration::from_millis(self.config.flush_interval_ms);
        let mut next_flush = Instant::now() + interval;
        while !shutdown.is_triggered() {
            let wait = next_flush
                .saturating_duration_since(Instant::now())
                .min(POLL_WAIT);
            let batch = match consumer.poll(POLL_MAX, wait).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, source = %self.source, "polling the bus failed");
                    tokio::time::sleep(POLL_WAIT).await;
                    Vec::new()
                }
            };
            self.take_all(batch, consumer).await?;
            if Instant::now() >= next_flush {
                self.flush(consumer).await?;
                next_flush = Instant::now() + interval;
            }
        }
        let deadline = Instant::now() + DRAIN_MAX;
        let drained = loop {
            let batch = match consumer.poll(POLL_MAX, DRAIN_POLL).await {
                Ok(batch) if batch.is_empty() => break true,
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, source = %self.source, "polling the bus failed while stopping");
                    break false;
                }
            };
            self.take_all(batch, consumer).await?;
            if Instant::now() >= deadline {
                tracing::warn!(
                    source = %self.source,
                    "stopping with messages left in the bus; the next start takes them"
                );
                break false;
            }
        };
        self.flush(consumer).await?;
        Ok(drained)
    }

    /// Takes a polled batch (the messages of partitions still assigned), and
    /// flushes early once the rows pending reach the flush's limit.
    async fn take_all(
        &mut self,
        batch: Vec<Message>,
        consumer: &mut dyn Consumer,
    ) -> Result<(), StoreError> {
        let assigned = consumer.assignment();
        self.partitions.retain(|id, _| assigned.contains(id));
        for message in batch {
            if assigned.contains(&message.partition) {
                self.take(message).await?;
            }
        }
        let pending: usize = self.partitions.values().map(Partition::pending_rows).sum();
        if pending >= self.config.max_flush_rows {
            self.flush(consumer).await?;
        }
        Ok(())
    }

    async fn take(&mut self, message: Message) -> Result<(), StoreError> {
        if !self.partitions.contains_key(&message.partition) {
            let partition = self.resume(message.partition).await?;
            self.partitions.insert(message.partition, partition);
        }
        let Some(partition) = self.partitions.get_mut(&message.partition) else {
            return Ok(());
        };
        if !partition.take(message.offset) {
            return Ok(());
        }
        self.metrics.messages.inc();
        let observations = match decode(
            &message,
            &self.source,
            self.signal,
            partition,
            &self.config,
        ) {
            Ok(decoded) => {
                self.spans.extend(decoded.spans);
                self.events.extend(decoded.events);
                self.metrics.refused_points.inc_by(decoded.refused);
                decoded.observations
            }
            Err(error) => {
                self.metrics.undecodable_messages.inc();
                tracing::warn!(
                    %error, source = %self.source, partition = message.partition,
                    offset = message.offset, "a message cannot be decoded; sent to the dead-letter topic"
                );
                let letter = rollups::dead_letter(&self.source, &message, &error.to_string());
                let topic = self.topics.dead_letter.clone();
                if self.publish(&topic, vec![letter]).await {
                    self.metrics.dead_letters.inc();
                }
                return Ok(());
            }
        };
        let mut admission = self.active.admission(now_s(), &self.metrics);
        let mut totals = Totals::default();
        let catalogue = &mut self.catalogue;
        let mut seen = |id: u64, time_s: u64| {
            let seen = catalogue.entry(id).or_insert((time_s, time_s, None));
            seen.0 = seen.0.min(time_s);
            seen.1 = seen.1.max(time_s);
        };
        // Counted here, added to the self-metrics once per message.
        let (mut observed, mut late, mut refused) = (0, 0, 0);
        for observation in observations {
            let (id, time_s) = (observation.id, observation.time_s);
            if !admission.admit(&observation.series, id) {
                continue;
            }
            // An admitted span also counts in its service's and its
            // tenant's totals, which are not points of their own: neither
            // counted nor limited apart.
            let added = totals.of(&observation);
            let late_before = partition.late_points();
            if partition.observe(observation).is_ok() {
                late += partition.late_points() - late_before;
                observed += 1;
                seen(id, time_s);
                for total in added.into_iter().flatten() {
                    let id = total.id;
                    if partition.observe(total).is_ok() {
                        seen(id, time_s);
                    }
                }
            } else {
                refused += 1;
            }
        }
        self.metrics.late_points.inc_by(late);
        self.metrics.observations.inc_by(observed);
        self.metrics.refused_points.inc_by(refused);
        Ok(())
    }

    /// A partition as the store left it.
    async fn resume(&self, id: i32) -> Result<Partition, StoreError> {
        let checkpoint = self.store.checkpoint(&self.source, id).await?;
        let lateness_s = self.config.allowed_lateness_s;
        let (stored, cumulative) = match checkpoint {
            Some(c) => {
                let mut query = RollupQuery::new(
                    10,
                    Partition::restore_from(c.watermark_s, lateness_s),
                    u64::MAX >> 1,
                );
                query.source = Some((self.source.clone(), id));
                let stored = self.store.rollups(&query).await?;
                let cumulative = if self.signal == Stream::Metrics {
                    let staleness_s = self.config.cumulative_max_staleness_s;
                    let since_ns = c.watermark_s.saturating_sub(staleness_s) * 1_000_000_000;
                    self.store
                        .cumulative(&self.source, id, c.next_offset, since_ns)
                        .await?
                } else {
                    Vec::new()
                };
                (stored, cumulative)
            }
            None => (Vec::new(), Vec::new()),
        };
        // Totals are not series under the tenant's limit.
        let sent = stored.iter().filter(|row| !row.series.kind.is_total());
        self.active
            .restore(sent.map(|row| &row.series), now_s(), &self.metrics);
        tracing::info!(
            source = %self.source, partition = id, ?checkpoint, restored = stored.len(),
            cumulative = cumulative.len(), "resuming partition"
        );
        Ok(Partition::resume(
            id,
            lateness_s,
            checkpoint,
            stored,
            cumulative,
            now_s(),
        ))
    }

    /// Writes every partition's rows and checkpoint as one flush, retrying
    /// while the store is unavailable, then commits the group offsets.
    async fn flush(&mut self, consumer: &mut dyn Consumer) -> Result<(), StoreError> {
        let now = now_s();
        let staleness_s = self.config.cumulative_max_staleness_s;
        let mut flush = Flush {
            source: self.source.clone(),
            time_s: now,
            checkpoints: Vec::new(),
            rows: Vec::new(),
            cumulative: Vec::new(),
        };
        let mut batches = Vec::new();
        for partition in self.partitions.values_mut() {
            if let Some(written) = partition.flush(now, staleness_s) {
                if self.config.publish_rollups && !written.rows.is_empty() {
                    batches.extend(rollups::encode(
                        &self.source,
                        &written.checkpoint,
                        &written.rows,
                    ));
                }
                flush.rows.extend(written.rows);
                flush.checkpoints.push(written.checkpoint);
                flush.cumulative.extend(written.cumulative);
            }
        }
        if flush.checkpoints.is_empty() {
            return Ok(());
        }
        let catalogue = self.catalogue_updates(now);
        let spans = std::mem::take(&mut self.spans);
        let events = std::mem::take(&mut self.events);
        let mut backoff = Backoff::new(FLUSH_GIVE_UP);
        while let Err(error) = self.write(&flush, &spans, &events, &catalogue).await {
            self.metrics.failed_flushes.inc();
            if !(error.is_retryable() && backoff.wait("flush", &error).await) {
                return Err(error);
            }
            if self.landed(&flush).await {
                tracing::info!(source = %self.source, "a flush whose answer was lost had been written");
                break;
            }
        }
        self.metrics
            .flush_seconds
            .observe(backoff.started.elapsed().as_secs_f64());
        for entry in &catalogue {
            if let Some(seen) = self.catalogue.get_mut(&entry.series.id()) {
                seen.2 = Some(now);
            }
        }
        if now.saturating_sub(self.pruned_s) >= PRUNE_S {
            self.pruned_s = now;
            self.forget_closed_series();
        }
        if !batches.is_empty() {
            let count = batches.len() as u64;
            let topic = self.topics.rollups.clone();
            if self.publish(&topic, batches).await {
                self.metrics.published_batches.inc_by(count);
            }
        }
        self.metrics.flushes.inc();
        self.metrics.rows_written.inc_by(flush.rows.len() as u64);
        self.metrics.spans_written.inc_by(spans.len() as u64);
        self.metrics.events_written.inc_by(events.len() as u64);
        let positions: Vec<Position> = flush
            .checkpoints
            .iter()
            .map(|c| Position {
                partition: c.partition,
                next_offset: c.next_offset,
            })
            .collect();
        if let Err(error) = consumer.commit(&positions).await {
            // The store has the data; the group offset is only a hint.
            tracing::warn!(%error, "committing group offsets failed");
        }
        Ok(())
    }

    /// Whether the store holds every checkpoint of `flush` already: a write
    /// whose answer was lost (a connection cut after the store took it)
    /// landed whole, since a flush's rows and checkpoints are written as one
    /// (one transaction, one ClickHouse insert block), and is not written
    /// again.
    async fn landed(&self, flush: &Flush) -> bool {
        for written in &flush.checkpoints {
            match self
                .store
                .checkpoint(&flush.source, written.partition)
                .await
            {
                Ok(Some(stored)) if stored.seq >= written.seq => {}
                _ => return false,
            }
        }
        true
    }

    /// Publishes `records`, retrying while the bus is unavailable; whether
    /// it took them. Neither the store nor the partition waits longer.
    async fn publish(&self, topic: &str, records: Vec<Record>) -> bool {
        let mut backoff = Backoff::new(PUBLISH_GIVE_UP);
        loop {
            let Err(error) = self.bus.publish(topic, records.clone()).await else {
                return true;
            };
            if !(error.is_retryable() && backoff.wait(topic, &error).await) {
                self.metrics.failed_publishes.inc();
                tracing::error!(%error, %topic, "publish failed; giving up");
                return false;
            }
        }
    }

    /// Spans, events and catalogue first (all idempotent), then the flush: a
    /// crash in between leaves records that a replay writes again.
    async fn write(
        &self,
        flush: &Flush,
        spans: &[SpanRecord],
        events: &[EventRecord],
        catalogue: &[CatalogueEntry],
    ) -> Result<(), StoreError> {
        if !spans.is_empty() {
            self.store.write_spans(spans).await?;
        }
        if !events.is_empty() {
            self.store.write_events(events).await?;
        }
        if !catalogue.is_empty() {
            self.store.record_series(catalogue).await?;
        }
        self.store.write(flush).await
    }

    /// Forgets the series no open window holds any more (their windows all
    /// closed and written), in the partitions and in the catalogue: memory
    /// follows the series of the last hour, not every series ever seen. A
    /// series seen again is new to the catalogue, whose store keeps the
    /// earliest first-seen.
    fn forget_closed_series(&mut self) {
        for partition in self.partitions.values_mut() {
            partition.forget_closed_series();
        }
        let partitions = &self.partitions;
        self.catalogue.retain(|id, (_, _, written)| {
            written.is_none() || partitions.values().any(|p| p.series(*id).is_some())
        });
    }

    /// Series new since the last flush, or not written for an hour.
    fn catalogue_updates(&self, now: u64) -> Vec<CatalogueEntry> {
        self.catalogue
            .iter()
            .filter(|(_, (_, _, written))| written.is_none_or(|at| at + CATALOGUE_REFRESH_S <= now))
            .filter_map(|(id, &(first, last, _))| {
                let series = self
                    .partitions
                    .values()
                    .find_map(|partition| partition.series(*id))?;
                Some(CatalogueEntry {
                    series: (**series).clone(),
                    first_seen_s: first,
                    last_seen_s: last,
                })
            })
            .collect()
    }
}

/// Waits between attempts of a call that keeps failing: from [`RETRY_FIRST`],
/// doubling up to [`RETRY_MAX`], until `give_up` has passed since the first.
struct Backoff {
    started: Instant,
    next: Duration,
    give_up: Duration,
}

impl Backoff {
    fn new(give_up: Duration) -> Self {
        Backoff {
            started: Instant::now(),
            next: RETRY_FIRST,
            give_up,
        }
    }

    /// Sleeps before the next attempt at `what`, which failed with `error`;
    /// `false`, at once, when it is time to give up.
    async fn wait(&mut self, what: &str, error: &(dyn std::fmt::Display + Sync)) -> bool {
        if self.started.elapsed() >= self.give_up {
            return false;
        }
        tracing::warn!(%error, retry_in = ?self.next, "{what} failed; retrying");
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(RETRY_MAX);
        true
    }
}

/// What one message holds.
#[derive(Default)]
struct Decoded {
    observations: Vec<Observation>,
    /// Spans, log records and crashes to keep raw.
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
    /// Points that could not be recorded.
    refused: u64,
}

/// Reads one message.
fn decode(
    message: &Message,
    source: &str,
    signal: Stream,
    partition: &mut Partition,
    config: &AggregatorConfig,
) -> Result<Decoded, points::DecodeError> {
    let tenant = points::tenant_of(&message.key)?;
    // Stable per record: a replay writes the same ids, which the store keeps once.
    let event_id = |index: usize| {
        let mut hash = Fnv::default();
        hash.write(source.as_bytes());
        hash.write(&message.partition.to_le_bytes());
        hash.write(&message.offset.to_le_bytes());
        hash.write(&(index as u64).to_le_bytes());
        hash.finish()
    };
    match signal {
        Stream::Metrics => {
            let (observations, refused) = points::metrics(
                &tenant,
                &message.payload,
                message.offset,
                &mut partition.cumulative,
            )?;
            Ok(Decoded {
                observations,
                refused,
                ..Decoded::default()
            })
        }
        Stream::Traces => {
            let spans = points::spans(&tenant, &message.payload, &config.span_dimensions)?;
            Ok(Decoded {
                observations: spans.observations,
                spans: spans.records,
                ..Decoded::default()
            })
        }
        Stream::Logs => {
            let logs = logs::logs(&tenant, &message.payload, event_id)?;
            Ok(Decoded {
                observations: logs.observations,
                events: logs.events,
                ..Decoded::default()
            })
        }
        Stream::Client => {
            let client = client_telemetry::client(
                &tenant,
                &message.payload,
                event_id,
                config.crash_loop_launches,
            )?;
            Ok(Decoded {
                observations: client.observations,
                events: client.crashes,
                ..Decoded::default()
            })
        }
    }
}

/// The totals' series of the span series of one message, made once per
/// span series.
#[derive(Default)]
struct Totals {
    made: IdMap<u64, [(Arc<SeriesKey>, u64); 2]>,
}

impl Totals {
    /// The observations a span observation adds to its service's total
    /// ([`Kind::Service`]) and its tenant's ([`Kind::Tenant`]); none for
    /// other kinds.
    fn of(&mut self, observation: &Observation) -> Option<[Observation; 2]> {
        let span = &observation.series;
        if span.kind != Kind::Span {
            return None;
        }
        let made = self.made.entry(observation.id).or_insert_with(|| {
            [service_total(span), tenant_total(span)].map(|total| {
                let id = total.id();
                (Arc::new(total), id)
            })
        });
        Some(made.each_ref().map(|(series, id)| Observation {
            series: Arc::clone(series),
            id: *id,
            time_s: observation.time_s,
            amount: observation.amount.clone(),
        }))
    }
}
