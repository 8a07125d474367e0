//! The message bus between Vigil's components: collectors publish, aggregators
//! and the alerter consume. Two implementations share the [`Bus`] trait and one
//! conformance suite (`bus/tests/bus.rs`):
//!
//! - [`EmbeddedBus`]: in-process and bounded, for `vigil up`;
//! - [`KafkaBus`]: any Kafka-protocol broker, through librdkafka.
//!
//! Semantics both keep: a publish returns only once every record of it is
//! stored (acknowledged); records with the same key keep their order (one
//! partition per key); a consumer group shares a topic's partitions among its
//! members; a consumer commits the offsets it has finished with, and whatever
//! it did not commit is delivered again to the next consumer of its group.

mod embedded;
mod kafka;
pub mod rollups;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::EmbeddedBus;
pub use kafka::KafkaBus;

use vigil_config::{BusConfig, BusKind};
pub use vigil_domain::topics::{Topics, message_key};

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Decides the partition: records with equal keys keep their order.
    pub key: Bytes,
    pub payload: Bytes,
}

impl Record {
    pub fn new(key: impl Into<Bytes>, payload: impl Into<Bytes>) -> Self {
        Record {
            key: key.into(),
            payload: payload.into(),
        }
    }
}

/// A consumed record and where it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    pub key: Bytes,
    pub payload: Bytes,
}

/// A consumer group's position in one partition: the offset of the next
/// message to read, as committed after the messages before it are done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub next_offset: i64,
}

/// The positions just past the given messages, one per partition.
pub fn positions_after(messages: &[Message]) -> Vec<Position> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for message in messages {
        let entry = next.entry(message.partition).or_insert(message.offset + 1);
        *entry = (*entry).max(message.offset + 1);
    }
    next.into_iter()
        .map(|(partition, next_offset)| Position {
            partition,
            next_offset,
        })
        .collect()
}

/// Why a bus operation failed. [`BusError::is_retryable`] tells the caller
/// whether to try again (and a collector to answer UNAVAILABLE or
/// RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("the bus is full ({reason}); retry later")]
    Full { reason: String },
    #[error("the bus is unavailable ({reason}); retry later")]
    Unavailable { reason: String },
    #[error("topic {topic:?} does not exist")]
    UnknownTopic { topic: String },
    #[error("record of {size} bytes is larger than the bus accepts ({limit} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("bus error: {reason}")]
    Fatal { reason: String },
}

impl BusError {
    /// Whether the same call may succeed later without changing it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BusError::Full { .. } | BusError::Unavailable { .. })
    }
}

/// A message bus. See the module documentation for the guarantees.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Creates `topic` with `partitions` partitions unless it exists already.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// Publishes `records` to `topic`, returning once the bus has stored every
    /// one. On error, some records may have been stored and some not; a caller
    /// that retries may publish a record twice, never lose one it was told is
    /// stored.
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), BusError>;

    /// Joins consumer group `group` on `topic`. A group that never committed
    /// starts at the earliest message.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` messages, waiting at most `timeout` for the first one; an
    /// empty batch when none came. Within a partition, messages come in offset
    /// order.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, BusError>;

    /// Records that the group is done with every message before `positions`.
    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError>;

    /// The partitions this member reads, as of its last poll: when members
    /// join or leave it changes only within `poll`, so between two polls no
    /// other member reads them (Kafka's eager rebalance).
    fn assignment(&self) -> Vec<i32>;
}

/// The bus the configuration names.
pub fn connect(config: &BusConfig) -> Result<Arc<dyn Bus>, BusError> {
    let publish_timeout = Duration::from_millis(config.publish_timeout_ms);
    Ok(match config.kind {
        BusKind::Embedded => Arc::new(EmbeddedBus::new(&config.embedded, publish_timeout)?),
        BusKind::Kafka => Arc::new(KafkaBus::new(&config.kafka, publish_timeout)?),
    })
}
