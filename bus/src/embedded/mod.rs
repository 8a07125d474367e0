//! The in-process bus: a bounded log per topic partition, with consumer
//! groups, kept on disk when it has a directory (see `log.rs`).
//!
//! Messages stay in memory until every consumer group of the topic has
//! committed past them. A topic holds at most `max_bytes_per_topic` of such
//! messages; a publisher that would exceed it waits for room up to the publish
//! timeout, then gets [`BusError::Full`]. Nothing is ever dropped. A group
//! that joins later starts at the oldest message still held. A topic no
//! group reads keeps everything, so it fills and pushes back: in `vigil up`
//! every topic has its reader.
//!
//! With a directory, a publish is acknowledged once its records are in the
//! log under the configured fsync policy, and only then can consumers read
//! them; committed offsets are kept beside the log. A new process reads the
//! log back from the groups' committed offsets: nothing acknowledged is lost
//! with the process. A segment file goes once every group is past it.
//! Without a directory the bus lives in memory and dies with the process.
//!
//! Offsets go on from the log's end, never from the clock; a partition is
//! numbered from its creation time in nanoseconds, so offsets stay above
//! those of any earlier bus whose checkpoints the store may hold.

mod log;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{Bus, BusError, Consumer, Message, Position, Record};
use log::{PartitionLog, Stored};
use vigil_config::{EmbeddedBusConfig, Fsync};

/// The in-process bus. Cheap to clone; clones share the topics.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
    _open: Arc<Open>,
}

/// Dropped with the last handle of the bus: stops the syncer, so the log's
/// lock goes with the last consumer.
#[derive(Debug)]
struct Open {
    shared: Arc<Shared>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        if let Some(disk) = &self.shared.disk {
            disk.appended.notify_all();
        }
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken when messages become readable or a group's membership changes.
    published: Notify,
    /// Woken when commits free room.
    freed: Notify,
    max_bytes_per_topic: u64,
    publish_timeout: Duration,
    disk: Option<Disk>,
    /// Records found torn or corrupt in the log when it was opened.
    torn: AtomicU64,
}

/// Where and how the log is kept.
#[derive(Debug)]
struct Disk {
    path: PathBuf,
    fsync: Fsync,
    fsync_interval: Duration,
    segment_bytes: u64,
    /// Held (locked) while the bus lives: one process per log.
    _lock: File,
    /// Wakes the syncer when appends wait for it.
    appended: Condvar,
    /// The last sync round: the append count it covered and whether it
    /// reached the disk.
    synced: watch::Sender<(u64, bool)>,
}

impl Disk {
    /// Whether appends wait for an fsync.
    fn syncs(&self) -> bool {
        self.fsync != Fsync::Off
    }
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Topic>,
    next_member: u64,
    /// Appends so far, and those the syncer has covered.
    appends: u64,
    synced: u64,
    /// Files appended to since the last sync, with the end they reached.
    unsynced: HashMap<(String, usize), (Arc<File>, i64)>,
    /// Every handle of the bus is gone.
    closed: bool,
}

#[derive(Debug)]
struct Topic {
    partitions: Vec<Partition>,
    groups: HashMap<String, Group>,
    /// Bytes of keys and payloads held in `partitions`.
    held_bytes: u64,
    /// The topic's directory, when it is kept on disk.
    dir: Option<PathBuf>,
}

#[derive(Debug)]
struct Partition {
    messages: VecDeque<Stored>,
    /// The offset the next message gets.
    end: i64,
    /// Messages before this offset may be read: they are acknowledged.
    readable: i64,
    log: Option<PartitionLog>,
}

impl Partition {
    /// The offset of the oldest message held.
    fn first(&self) -> i64 {
        self.messages.front().map_or(self.end, |m| m.offset)
    }
}

#[derive(Debug)]
struct Group {
    /// Members in joining order; partition `p` goes to `members[p % len]`.
    members: Vec<u64>,
    /// Bumped on every join and leave, so members recompute their assignment.
    generation: u64,
    /// The generation up to which each member has given up its partitions.
    released: HashMap<u64, u64>,
    committed: Vec<i64>,
}

impl Group {
    fn new(committed: Vec<i64>) -> Self {
        Group {
            members: Vec::new(),
            generation: 0,
            released: HashMap::new(),
            committed,
        }
    }

    /// Whether every member has given up its partitions of this generation,
    /// so that the new assignment reads no partition twice.
    fn settled(&self) -> bool {
        self.members
            .iter()
            .all(|m| self.released.get(m) == Some(&self.generation))
    }

    /// The partitions of a `partitions`-partition topic that `member` reads.
    fn assignment(&self, member: u64, partitions: usize) -> Vec<usize> {
        let Some(slot) = self.members.iter().position(|&m| m == member) else {
            return Vec::new();
        };
        (slot..partitions).step_by(self.members.len()).collect()
    }
}

fn record_size(key: &[u8], payload: &[u8]) -> u64 {
    (key.len() + payload.len()) as u64
}

fn unavailable(what: &str, error: std::io::Error) -> BusError {
    BusError::Unavailable {
        reason: format!("{what}: {error}"),
    }
}

impl Topic {
    fn partition_of(&self, key: &[u8]) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.partitions.len() as u64) as usize
    }

    /// Drops the messages every group has committed past, and the log
    /// segments they filled; returns whether any room was freed.
    fn trim(&mut self) -> Result<bool, BusError> {
        let mut freed = 0;
        for p in 0..self.partitions.len() {
            let Some(done) = self.done(p) else {
                continue;
            };
            let partition = &mut self.partitions[p];
            while partition.messages.front().is_some_and(|m| m.offset < done) {
                if let Some(message) = partition.messages.pop_front() {
                    freed += record_size(&message.key, &message.payload);
                }
            }
            if let Some(log) = partition.log.as_mut() {
                log.delete_before(done)
                    .map_err(|e| unavailable("deleting a consumed bus log segment", e))?;
            }
        }
        self.held_bytes -= freed;
        Ok(freed > 0)
    }

    /// The offset every group has committed past in partition `p`.
    fn done(&self, p: usize) -> Option<i64> {
        self.groups.values().map(|g| g.committed[p]).min()
    }

    /// Saves the groups' committed offsets, then trims. Saved before any
    /// segment goes, so a restart never starts a group before the oldest
    /// record left; synced (when the log is) only then: an offset lost
    /// otherwise means messages read again, never lost.
    fn save_and_trim(&mut self, syncs: bool) -> Result<bool, BusError> {
        let deleting = self.partitions.iter().enumerate().any(|(p, partition)| {
            let done = self.done(p);
            partition
                .log
                .as_ref()
                .zip(done)
                .is_some_and(|(log, done)| log.has_segment_before(done))
        });
        self.save_committed(syncs && deleting)?;
        self.trim()
    }

    /// Writes the groups' committed offsets beside the log.
    fn save_committed(&self, sync: bool) -> Result<(), BusError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let groups = self
            .groups
            .iter()
            .map(|(name, group)| (name.as_str(), &group.committed[..]));
        log::write_committed(dir, groups, sync)
            .map_err(|e| unavailable("saving the bus's committed offsets", e))
    }
}

/// Nanoseconds since the epoch: where a new partition starts numbering.
fn clock_offset() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl EmbeddedBus {
    /// A bus in memory, or on disk in `config.path` (an error if another
    /// process holds that log).
    pub fn new(config: &EmbeddedBusConfig, publish_timeout: Duration) -> Result<Self, BusError> {
        let disk = match &config.path {
            None => None,
            Some(path) => Some(Disk::open(path, config)?),
        };
        let syncs = disk.as_ref().is_some_and(Disk::syncs);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            published: Notify::new(),
            freed: Notify::new(),
            max_bytes_per_topic: config.max_bytes_per_topic,
            publish_timeout,
            disk,
            torn: AtomicU64::new(0),
        });
        let syncer = if syncs {
            let syncing = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name("vigil-bus-sync".to_owned())
                .spawn(move || sync_rounds(&syncing))
                .map_err(|e| unavailable("starting the bus's syncer", e))?;
            Some(thread)
        } else {
            None
        };
        Ok(EmbeddedBus {
            _open: Arc::new(Open {
                shared: Arc::clone(&shared),
                syncer,
            }),
            shared,
        })
    }

    /// Records found torn or corrupt (and truncated away) in the log of the
    /// topics created so far: what a crash cut off before it was
    /// acknowledged.
    pub fn torn_records(&self) -> u64 {
        self.shared.torn.load(Ordering::Relaxed)
    }
}

impl Disk {
    fn open(path: &Path, config: &EmbeddedBusConfig) -> Result<Disk, BusError> {
        let failed = |e| unavailable(&format!("opening the bus log in {}", path.display()), e);
        std::fs::create_dir_all(path).map_err(failed)?;
        let lock = File::create(path.join("lock")).map_err(failed)?;
        lock.try_lock().map_err(|_| BusError::Fatal {
            reason: format!("another process is using the bus log in {}", path.display()),
        })?;
        Ok(Disk {
            path: path.to_owned(),
            fsync: config.fsync,
            fsync_interval: Duration::from_millis(config.fsync_interval_ms),
            segment_bytes: config.segment_bytes,
            _lock: lock,
            appended: Condvar::new(),
            synced: watch::channel((0, true)).0,
        })
    }

    /// Opens a topic's log: its partitions (at least `partitions`, more if
    /// the log has more), the groups' committed offsets, and the messages
    /// not every group is past.
    fn open_topic(&self, name: &str, partitions: u32) -> Result<(Topic, u64), BusError> {
        let dir = self.path.join(name);
        let failed = |e| unavailable(&format!("opening the bus log in {}", dir.display()), e);
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let existing = std::fs::read_dir(&dir)
            .map_err(failed)?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .map(|p| p + 1)
            .max()
            .unwrap_or(0);
        let count = partitions.max(existing) as usize;
        let saved = log::read_committed(&dir).map_err(failed)?;
        let committed_at = |p: usize| -> Option<i64> {
            saved
                .iter()
                .filter_map(|(_, offsets)| offsets.iter().find(|(q, _)| *q as usize == p))
                .map(|&(_, offset)| offset)
                .min()
        };
        let base = clock_offset();
        let mut torn = 0;
        let mut held_bytes = 0;
        let mut opened = Vec::with_capacity(count);
        for p in 0..count {
            let keep_from = committed_at(p).unwrap_or(i64::MIN);
            let o = PartitionLog::open(
                &dir.join(p.to_string()),
                base,
                keep_from,
                self.segment_bytes,
                self.syncs(),
            )
            .map_err(failed)?;
            torn += o.torn;
            held_bytes += o
                .records
                .iter()
                .map(|r| record_size(&r.key, &r.payload))
                .sum::<u64>();
            opened.push(Partition {
                messages: o.records.into(),
                end: o.end,
                readable: o.end,
                log: Some(o.log),
            });
        }
        let groups = saved
            .into_iter()
            .map(|(name, offsets)| {
                let committed = (0..count)
                    .map(|p| {
                        offsets
                            .iter()
                            .find(|(q, _)| *q as usize == p)
                            .map_or(opened[p].first(), |&(_, offset)| offset)
                    })
                    .collect();
                (name, Group::new(committed))
            })
            .collect();
        Ok((
            Topic {
                partitions: opened,
                groups,
                held_bytes,
                dir: Some(dir),
            },
            torn,
        ))
    }
}

/// The syncer: fsyncs the files appended to, then makes their records
/// readable and tells the waiting publishers. Rounds follow each other as
/// long as appends wait (`always`: publishes arriving during a round share
/// the next), or one per interval (`interval`). Ends with the bus.
fn sync_rounds(shared: &Shared) {
    let Some(disk) = &shared.disk else {
        return;
    };
    loop {
        if disk.fsync == Fsync::Interval {
            std::thread::sleep(disk.fsync_interval);
        }
        let (target, files) = {
            let mut state = shared.lock();
            if state.closed {
                return;
            }
            if state.appends == state.synced {
                state = disk
                    .appended
                    .wait_timeout(state, Duration::from_millis(100))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            if state.appends == state.synced {
                continue;
            }
            (state.appends, std::mem::take(&mut state.unsynced))
        };
        let mut ok = true;
        for (file, _) in files.values() {
            if let Err(error) = file.sync_data() {
                tracing::error!(%error, "the bus log could not be synced to disk");
                ok = false;
            }
        }
        {
            let mut state = shared.lock();
            for ((topic, p), (_, end)) in files {
                if let Some(partition) = state
                    .topics
                    .get_mut(&topic)
                    .and_then(|t| t.partitions.get_mut(p))
                {
                    partition.readable = partition.readable.max(end);
                }
            }
            state.synced = target;
        }
        disk.synced.send_replace((target, ok));
        shared.published.notify_waiters();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written:
        // every mutation completes before it could panic. Keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unknown(topic: &str) -> BusError {
    BusError::UnknownTopic {
        topic: topic.to_owned(),
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        if partitions == 0 {
            return Err(BusError::Fatal {
                reason: format!("topic {topic:?} needs at least one partition"),
            });
        }
        let mut state = self.shared.lock();
        if state.topics.contains_key(topic) {
            return Ok(());
        }
        let created = match &self.shared.disk {
            Some(disk) => {
                let (created, torn) = disk.open_topic(topic, partitions)?;
                self.shared.torn.fetch_add(torn, Ordering::Relaxed);
                created
            }
            None => {
                let base = clock_offset();
                Topic {
                    partitions: (0..partitions)
                        .map(|_| Partition {
                            messages: VecDeque::new(),
                            end: base,
                            readable: base,
                            log: None,
                        })
                        .collect(),
                    groups: HashMap::new(),
                    held_bytes: 0,
                    dir: None,
                }
            }
        };
        state.topics.insert(topic.to_owned(), created);
        Ok(())
    }

    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), BusError> {
        let size: u64 = records
            .iter()
            .map(|r| record_size(&r.key, &r.payload))
            .sum();
        let limit = self.shared.max_bytes_per_topic;
        if size > limit {
            return Err(BusError::TooLarge { size, limit });
        }
        let deadline = Instant::now() + self.shared.publish_timeout;
        let mut records = Some(records);
        let appended = loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                let topic_state = state.topics.get(topic).ok_or_else(|| unknown(topic))?;
                if topic_state.held_bytes + size <= limit {
                    let records = records.take().unwrap_or_default();
                    break self.append(&mut state, topic, records)?;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(BusError::Full {
                    reason: format!(
                        "topic {topic:?} holds {limit} bytes not yet consumed by every group"
                    ),
                });
            }
        };
        let Some(disk) = self.shared.disk.as_ref().filter(|d| d.syncs()) else {
            self.shared.published.notify_waiters();
            return Ok(());
        };
        let mut synced = disk.synced.subscribe();
        let round = tokio::time::timeout_at(deadline, synced.wait_for(|&(n, _)| n >= appended));
        match round.await {
            Ok(Ok(round)) if round.1 => Ok(()),
            Ok(_) => Err(BusError::Unavailable {
                reason: "the bus log could not be synced to disk".to_owned(),
            }),
            Err(_) => Err(BusError::Unavailable {
                reason: format!(
                    "the bus log was not synced to disk within {:?}",
                    self.shared.publish_timeout
                ),
            }),
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let mut state = self.shared.lock();
        let member = state.next_member;
        state.next_member += 1;
        let topic_state = state.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
        let starts: Vec<i64> = topic_state
            .partitions
            .iter()
            .map(Partition::first)
            .collect();
        let group_state = topic_state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group::new(starts));
        group_state.members.push(member);
        group_state.generation += 1;
        drop(state);
        self.shared.published.notify_waiters();
        Ok(Box::new(EmbeddedConsumer {
            shared: Arc::clone(&self.shared),
            topic: topic.to_owned(),
            group: group.to_owned(),
            member,
            generation: 0,
            positions: None,
        }))
    }
}

impl EmbeddedBus {
    /// Stores `records` (room was checked): appended to the partitions' logs
    /// and held in memory. Returns the append count the syncer must reach
    /// before they are acknowledged; without a sync they are readable now.
    fn append(
        &self,
        state: &mut State,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<u64, BusError> {
        let topic_state = state.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
        let mut by_partition: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for record in records {
            let p = topic_state.partition_of(&record.key);
            by_partition.entry(p).or_default().push(record);
        }
        let syncs = self.shared.disk.as_ref().is_some_and(Disk::syncs);
        let mut touched = Vec::new();
        for (p, records) in by_partition {
            let partition = &mut topic_state.partitions[p];
            if let Some(log) = partition.log.as_mut() {
                log.append(records.iter().map(|r| (&r.key[..], &r.payload[..])))
                    .map_err(|e| unavailable("writing the bus log", e))?;
                if syncs {
                    touched.push((p, log.active(), log.end()));
                }
            }
            for record in records {
                topic_state.held_bytes += record_size(&record.key, &record.payload);
                partition.messages.push_back(Stored {
                    offset: partition.end,
                    key: record.key,
                    payload: record.payload,
                });
                partition.end += 1;
            }
            if !syncs {
                partition.readable = partition.end;
            }
        }
        if !syncs {
            return Ok(0);
        }
        for (p, file, end) in touched {
            state.unsynced.insert((topic.to_owned(), p), (file, end));
        }
        state.appends += 1;
        if let Some(disk) = &self.shared.disk {
            disk.appended.notify_one();
        }
        Ok(state.appends)
    }
}

struct EmbeddedConsumer {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    member: u64,
    /// The group generation this member has caught up with.
    generation: u64,
    /// Next offset to read, per assigned partition; `None` while the group
    /// is still rebalancing.
    positions: Option<BTreeMap<i32, i64>>,
}

impl EmbeddedConsumer {
    /// Takes up to `max` messages from the assigned partitions, after catching
    /// up with any change of the group's membership.
    ///
    /// As in Kafka's eager rebalance: on a change, a member gives up every
    /// partition at its next poll, and gets its new ones, each from the
    /// group's committed offset, only once every member has given up its
    /// own. Between two polls a member keeps what it has, so what it read
    /// may be written out before anyone else reads those partitions.
    fn take(&mut self, state: &mut State, max: usize) -> Result<Vec<Message>, BusError> {
        let topic = state
            .topics
            .get_mut(&self.topic)
            .ok_or_else(|| unknown(&self.topic))?;
        let partitions = topic.partitions.len();
        let group = topic
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| unknown(&self.topic))?;
        if group.generation != self.generation {
            self.generation = group.generation;
            self.positions = None;
            group.released.insert(self.member, group.generation);
            // Members waiting for this one look again.
            self.shared.published.notify_waiters();
        }
        if self.positions.is_none() && group.settled() {
            self.positions = Some(
                group
                    .assignment(self.member, partitions)
                    .into_iter()
                    .map(|p| (p as i32, group.committed[p]))
                    .collect(),
            );
        }
        let Some(positions) = self.positions.as_mut() else {
            return Ok(Vec::new());
        };
        let mut batch = Vec::new();
        for (&partition, next) in positions.iter_mut() {
            let log = &topic.partitions[partition as usize];
            // Messages before the first held were committed by every group,
            // so by ours.
            let skip = log.messages.partition_point(|m| m.offset < *next);
            for message in log.messages.range(skip..) {
                if message.offset >= log.readable || batch.len() == max {
                    break;
                }
                batch.push(Message {
                    partition,
                    offset: message.offset,
                    key: message.key.clone(),
                    payload: message.payload.clone(),
                });
                *next = message.offset + 1;
            }
            if batch.len() == max {
                break;
            }
        }
        Ok(batch)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = Instant::now() + timeout;
        let shared = Arc::clone(&self.shared);
        loop {
            let published = shared.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let batch = self.take(&mut shared.lock(), max.max(1))?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let syncs = self.shared.disk.as_ref().is_some_and(Disk::syncs);
        let freed = {
            let mut state = self.shared.lock();
            let topic = state
                .topics
                .get_mut(&self.topic)
                .ok_or_else(|| unknown(&self.topic))?;
            let group = topic
                .groups
                .get_mut(&self.group)
                .ok_or_else(|| unknown(&self.topic))?;
            for position in positions {
                let committed = usize::try_from(position.partition)
                    .ok()
                    .and_then(|p| group.committed.get_mut(p))
                    .ok_or_else(|| BusError::Fatal {
                        reason: format!(
                            "topic {:?} has no partition {}",
                            self.topic, position.partition
                        ),
                    })?;
                *committed = position.next_offset;
            }
            topic.save_and_trim(syncs)?
        };
        if freed {
            self.shared.freed.notify_waiters();
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<i32> {
        self.positions
            .iter()
            .flat_map(|positions| positions.keys().copied())
            .collect()
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(group) = state
            .topics
            .get_mut(&self.topic)
            .and_then(|topic| topic.groups.get_mut(&self.group))
        {
            group.members.retain(|&m| m != self.member);
            group.released.remove(&self.member);
            group.generation += 1;
        }
        drop(state);
        self.shared.published.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions_after;

    fn bus(max_bytes_per_topic: u64, publish_timeout_ms: u64) -> EmbeddedBus {
        EmbeddedBus::new(
            &EmbeddedBusConfig {
                max_bytes_per_topic,
                ..EmbeddedBusConfig::default()
            },
            Duration::from_millis(publish_timeout_ms),
        )
        .unwrap()
    }

    fn on_disk(path: &Path, fsync: Fsync, segment_bytes: u64) -> Result<EmbeddedBus, BusError> {
        EmbeddedBus::new(
            &EmbeddedBusConfig {
                path: Some(path.to_owned()),
                fsync,
                segment_bytes,
                ..EmbeddedBusConfig::default()
            },
            Duration::from_secs(5),
        )
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-bus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn payloads(consumer: &mut Box<dyn Consumer>) -> Vec<(i64, String)> {
        let messages = consumer
            .poll(100, Duration::from_millis(200))
            .await
            .unwrap();
        messages
            .iter()
            .map(|m| (m.offset, String::from_utf8_lossy(&m.payload).into_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_new_bus_on_the_same_log_goes_on_from_the_committed_offsets() {
        for fsync in [Fsync::Always, Fsync::Interval, Fsync::Off] {
            let dir = scratch(&format!("restart-{fsync:?}"));
            let first = {
                let bus = on_disk(&dir, fsync, 1 << 20).unwrap();
                bus.create_topic("t", 1).await.unwrap();
                let mut consumer = bus.subscribe("t", "g").await.unwrap();
                bus.publish("t", vec![record("a"), record("b"), record("c")])
                    .await
                    .unwrap();
                let read = payloads(&mut consumer).await;
                assert_eq!(read.len(), 3, "{fsync:?}");
                // Done with "a" only.
                consumer
                    .commit(&[Position {
                        partition: 0,
                        next_offset: read[1].0,
                    }])
                    .await
                    .unwrap();
                read[0].0
            };
            let bus = on_disk(&dir, fsync, 1 << 20).unwrap();
            bus.create_topic("t", 1).await.unwrap();
            bus.publish("t", vec![record("d")]).await.unwrap();
            let mut again = bus.subscribe("t", "g").await.unwrap();
            let expected = vec![
                (first + 1, "b".to_owned()),
                (first + 2, "c".to_owned()),
                (first + 3, "d".to_owned()),
            ];
            assert_eq!(payloads(&mut again).await, expected, "{fsync:?}");
            let mut newcomer = bus.subscribe("t", "other").await.unwrap();
            assert_eq!(
                payloads(&mut newcomer).await,
                expected,
                "a new group starts at the oldest record held"
            );
            assert_eq!(bus.torn_records(), 0);
            drop((again, newcomer, bus));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[tokio::test]
    async fn segments_go_once_every_group_is_past_them() {
        let dir = scratch("segments");
        let bus = on_disk(&dir, Fsync::Off, 64 * 1024).unwrap();
        bus.create_topic("t", 1).await.unwrap();
        let mut consumer = bus.subscribe("t", "g").await.unwrap();
        let payload = "x".repeat(1_000);
        for _ in 0..200 {
            bus.publish("t", vec![record(&payload)]).await.unwrap();
        }
        let files = || std::fs::read_dir(dir.join("t/0")).unwrap().count();
        assert_eq!(files(), 4, "200 records of 1,021 bytes in 64 KiB files");
        let mut read = Vec::new();
        while read.len() < 200 {
            read.extend(consumer.poll(1_000, Duration::from_secs(1)).await.unwrap());
        }
        consumer.commit(&positions_after(&read)).await.unwrap();
        assert_eq!(files(), 1, "only the file being appended to stays");
        drop((consumer, bus));
        let bus = on_disk(&dir, Fsync::Off, 64 * 1024).unwrap();
        bus.create_topic("t", 1).await.unwrap();
        bus.publish("t", vec![record("next")]).await.unwrap();
        let mut consumer = bus.subscribe("t", "g").await.unwrap();
        let next = payloads(&mut consumer).await;
        assert_eq!(next, vec![(read[199].offset + 1, "next".to_owned())]);
        drop((consumer, bus));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn one_process_at_a_time_uses_a_log() {
        let dir = scratch("lock");
        let bus = on_disk(&dir, Fsync::Always, 1 << 20).unwrap();
        let error = on_disk(&dir, Fsync::Always, 1 << 20).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "bus error: another process is using the bus log in {}",
                dir.display()
            )
        );
        drop(bus);
        on_disk(&dir, Fsync::Always, 1 << 20).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn record(payload: &str) -> Record {
        Record::new("k", payload.to_owned())
    }

    #[tokio::test]
    async fn a_waiting_publish_completes_when_a_commit_makes_room() {
        let bus = bus(10, 5_000);
        bus.create_topic("t", 1).await.unwrap();
        let mut consumer = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", vec![record("12345678")]).await.unwrap();

        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.publish("t", vec![record("abcdefgh")]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the publish must wait for room");

        let first = consumer.poll(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(first.len(), 1);
        consumer.commit(&positions_after(&first)).await.unwrap();
        waiting.await.unwrap().unwrap();
        let second = consumer.poll(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            (second[0].offset - first[0].offset, &second[0].payload[..]),
            (1, &b"abcdefgh"[..])
        );
    }

    #[tokio::test]
    async fn a_later_bus_numbers_its_messages_above_an_earlier_one() {
        let mut last = Vec::new();
        for _ in 0..2 {
            let bus = bus(1 << 20, 1_000);
            bus.create_topic("t", 1).await.unwrap();
            bus.publish("t", vec![record("a"), record("b")])
                .await
                .unwrap();
            let mut consumer = bus.subscribe("t", "g").await.unwrap();
            let messages = consumer.poll(10, Duration::from_secs(1)).await.unwrap();
            let offsets: Vec<i64> = messages.iter().map(|m| m.offset).collect();
            assert_eq!(offsets[1] - offsets[0], 1);
            last.push(offsets);
        }
        assert!(last[1][0] > last[0][1], "{last:?}");
    }

    #[tokio::test]
    async fn a_publish_that_finds_no_room_in_time_is_refused_whole() {
        let bus = bus(10, 20);
        bus.create_topic("t", 1).await.unwrap();
        bus.publish("t", vec![record("123456")]).await.unwrap();
        let error = bus
            .publish("t", vec![record("a"), record("bcdefgh")])
            .await
            .unwrap_err();
        assert!(matches!(error, BusError::Full { .. }) && error.is_retryable());
        let mut consumer = bus.subscribe("t", "g").await.unwrap();
        let held = consumer.poll(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(held.len(), 1, "nothing of the refused publish is stored");
    }

    #[tokio::test]
    async fn oversize_publishes_and_unknown_topics_are_errors() {
        let bus = bus(10, 20);
        bus.create_topic("t", 1).await.unwrap();
        assert_eq!(
            bus.publish("t", vec![record("0123456789")]).await,
            Err(BusError::TooLarge {
                size: 11,
                limit: 10
            })
        );
        let unknown = BusError::UnknownTopic {
            topic: "nope".to_owned(),
        };
        assert_eq!(
            bus.publish("nope", vec![record("x")]).await,
            Err(unknown.clone())
        );
        assert_eq!(bus.subscribe("nope", "g").await.err(), Some(unknown));
        assert!(!BusError::TooLarge { size: 1, limit: 0 }.is_retryable());
    }

    #[tokio::test]
    async fn a_leaving_member_hands_its_partitions_over() {
        let bus = bus(1 << 20, 1_000);
        bus.create_topic("t", 3).await.unwrap();
        let mut a = bus.subscribe("t", "g").await.unwrap();
        let mut b = bus.subscribe("t", "g").await.unwrap();
        let wait = Duration::from_millis(10);
        a.poll(1, wait).await.unwrap();
        assert_eq!(a.assignment(), Vec::<i32>::new(), "b has not given up yet");
        b.poll(1, wait).await.unwrap();
        a.poll(1, wait).await.unwrap();
        assert_eq!((a.assignment(), b.assignment()), (vec![0, 2], vec![1]));
        drop(a);
        assert_eq!(
            b.assignment(),
            vec![1],
            "b keeps its partition until it polls"
        );
        b.poll(1, wait).await.unwrap();
        assert_eq!(b.assignment(), vec![0, 1, 2]);
    }

    /// Regression: a joining member read a partition at once while its
    /// holder, between two polls, still counted it as its own and wrote out
    /// what it had read, so the two counted those messages twice.
    #[tokio::test]
    async fn a_joining_member_reads_nothing_its_holder_has_not_given_up() {
        let bus = bus(1 << 20, 1_000);
        bus.create_topic("t", 2).await.unwrap();
        let wait = Duration::from_millis(10);
        let mut a = bus.subscribe("t", "g").await.unwrap();
        a.poll(1, wait).await.unwrap();
        assert_eq!(a.assignment(), vec![0, 1]);
        let mut b = bus.subscribe("t", "g").await.unwrap();
        let records = (0..20).map(|i| Record::new(format!("k{i}"), "m"));
        bus.publish("t", records.collect()).await.unwrap();
        assert!(b.poll(100, wait).await.unwrap().is_empty());
        assert_eq!(b.assignment(), Vec::<i32>::new());
        assert_eq!(a.assignment(), vec![0, 1], "a keeps both until it polls");
        let from_a = a.poll(100, wait).await.unwrap();
        let from_b = b.poll(100, wait).await.unwrap();
        assert_eq!((a.assignment(), b.assignment()), (vec![0], vec![1]));
        assert!(from_a.iter().all(|m| m.partition == 0));
        assert!(from_b.iter().all(|m| m.partition == 1));
        assert_eq!(from_a.len() + from_b.len(), 20);
    }

    #[tokio::test]
    async fn commits_of_every_group_free_the_room() {
        let bus = bus(1 << 20, 1_000);
        bus.create_topic("t", 1).await.unwrap();
        let mut fast = bus.subscribe("t", "fast").await.unwrap();
        let mut slow = bus.subscribe("t", "slow").await.unwrap();
        bus.publish("t", vec![record("a"), record("b")])
            .await
            .unwrap();
        let held = |bus: &EmbeddedBus| bus.shared.lock().topics["t"].held_bytes;
        assert_eq!(held(&bus), 4);

        let batch = fast.poll(10, Duration::from_secs(1)).await.unwrap();
        fast.commit(&positions_after(&batch)).await.unwrap();
        assert_eq!(held(&bus), 4, "the slow group still needs both");
        let batch = slow.poll(1, Duration::from_secs(1)).await.unwrap();
        slow.commit(&positions_after(&batch)).await.unwrap();
        assert_eq!(held(&bus), 2);
    }

    #[test]
    fn group_assignment_is_round_robin_in_joining_order() {
        let group = Group {
            members: vec![7, 3, 9],
            ..Group::new(vec![0; 8])
        };
        assert_eq!(group.assignment(7, 8), vec![0, 3, 6]);
        assert_eq!(group.assignment(3, 8), vec![1, 4, 7]);
        assert_eq!(group.assignment(9, 8), vec![2, 5]);
        assert_eq!(group.assignment(1, 8), Vec::<usize>::new());
    }
}
