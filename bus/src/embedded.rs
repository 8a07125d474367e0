//! The in-process bus: a bounded log per topic partition, with consumer groups.
//!
//! Messages stay in memory until every consumer group of the topic has
//! committed past them. A topic holds at most `max_bytes_per_topic` of such
//! messages; a publisher that would exceed it waits for room up to the publish
//! timeout, then gets [`BusError::Full`]. Nothing is ever dropped. A group
//! that joins later starts at the oldest message still held. A topic no
//! group reads keeps everything, so it fills and pushes back: in `vigil up`
//! every topic has its reader. Data not yet consumed is lost if the process
//! dies; this is the single-process deployment's trade-off.
//!
//! The store outlives the bus: an aggregator's checkpoint names offsets of
//! the bus of an earlier process. So a bus numbers its messages from the
//! time it was created, in nanoseconds since the epoch, and every offset
//! of a later bus is above every offset of an earlier one: a checkpoint
//! left by an earlier process never points past this one's messages.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Bus, BusError, Consumer, Message, Position, Record};
use vigil_config::EmbeddedBusConfig;

/// The in-process bus. Cheap to clone; clones share the topics.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken when messages arrive or a group's membership changes.
    published: Notify,
    /// Woken when commits free room.
    freed: Notify,
    max_bytes_per_topic: u64,
    publish_timeout: Duration,
    /// The offset of every partition's first message.
    first_offset: i64,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Topic>,
    next_member: u64,
}

#[derive(Debug)]
struct Topic {
    partitions: Vec<Partition>,
    groups: HashMap<String, Group>,
    /// Bytes of keys and payloads held in `partitions`.
    held_bytes: u64,
}

#[derive(Debug)]
struct Partition {
    /// Offset of `messages[0]`.
    start: i64,
    messages: VecDeque<(Bytes, Bytes)>,
}

impl Partition {
    fn end(&self) -> i64 {
        self.start + self.messages.len() as i64
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

impl Topic {
    fn partition_of(&self, key: &[u8]) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.partitions.len() as u64) as usize
    }

    /// Drops the messages every group has committed past; returns whether any went.
    fn trim(&mut self) -> bool {
        let mut freed = 0;
        for (p, partition) in self.partitions.iter_mut().enumerate() {
            let done = self.groups.values().map(|g| g.committed[p]).min();
            while done.is_some_and(|done| partition.start < done) {
                let Some((key, payload)) = partition.messages.pop_front() else {
                    break;
                };
                partition.start += 1;
                freed += record_size(&key, &payload);
            }
        }
        self.held_bytes -= freed;
        freed > 0
    }
}

impl EmbeddedBus {
    pub fn new(config: &EmbeddedBusConfig, publish_timeout: Duration) -> Self {
        EmbeddedBus {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                published: Notify::new(),
                freed: Notify::new(),
                max_bytes_per_topic: config.max_bytes_per_topic,
                publish_timeout,
                first_offset: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            }),
        }
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
        state
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| Topic {
                partitions: (0..partitions)
                    .map(|_| Partition {
                        start: self.shared.first_offset,
                        messages: VecDeque::new(),
                    })
                    .collect(),
                groups: HashMap::new(),
                held_bytes: 0,
            });
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
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                let topic_state = state.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
                if topic_state.held_bytes + size <= limit {
                    for record in records {
                        let p = topic_state.partition_of(&record.key);
                        topic_state.partitions[p]
                            .messages
                            .push_back((record.key, record.payload));
                    }
                    topic_state.held_bytes += size;
                    drop(state);
                    self.shared.published.notify_waiters();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(BusError::Full {
                    reason: format!(
                        "topic {topic:?} holds {limit} bytes not yet consumed by every group"
                    ),
                });
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let mut state = self.shared.lock();
        let member = state.next_member;
        state.next_member += 1;
        let topic_state = state.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
        let starts: Vec<i64> = topic_state.partitions.iter().map(|p| p.start).collect();
        let group_state = topic_state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                members: Vec::new(),
                generation: 0,
                released: HashMap::new(),
                committed: starts,
            });
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
            // Messages below `start` were committed by every group, so by ours.
            let first = (*next).max(log.start);
            let take = ((log.end() - first) as usize).min(max - batch.len());
            let skip = (first - log.start) as usize;
            for (i, (key, payload)) in log.messages.range(skip..skip + take).enumerate() {
                batch.push(Message {
                    partition,
                    offset: first + i as i64,
                    key: key.clone(),
                    payload: payload.clone(),
                });
            }
            *next = first + take as i64;
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
            topic.trim()
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
            },
            Duration::from_millis(publish_timeout_ms),
        )
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
            generation: 1,
            released: HashMap::new(),
            committed: vec![0; 8],
        };
        assert_eq!(group.assignment(7, 8), vec![0, 3, 6]);
        assert_eq!(group.assignment(3, 8), vec![1, 4, 7]);
        assert_eq!(group.assignment(9, 8), vec![2, 5]);
        assert_eq!(group.assignment(1, 8), Vec::<usize>::new());
    }
}
