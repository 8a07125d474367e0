//! The Kafka bus, over librdkafka (bundled, through `rdkafka`).
//!
//! Producer: `acks=all` and idempotence, so a stored record is stored once and
//! in order; a publish resolves when the broker acknowledged every record.
//! Consumers: manual commits only (`enable.auto.commit=false`), starting at the
//! earliest offset when the group has none. Topics are created with the admin
//! API, since Vigil does not rely on broker auto-creation.
//! Which librdkafka errors are worth retrying is decided in [`classify`].
//! A producer that hits a fatal error (an idempotence failure such as a fenced
//! epoch after messages timed out in flight) never works again, so it is
//! replaced by a new one; the failed publish returns a retryable error.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::{Bus, BusError, Consumer, Message, Position, Record};
use vigil_config::KafkaBusConfig;

/// How long to wait before offering a record again to a full producer queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);
/// Largest record the producer sends (librdkafka `message.max.bytes`): the
/// largest request the collector takes by default. Brokers and topics must
/// allow it (`message.max.bytes`, `max.message.bytes`).
const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// A bus on Kafka-protocol brokers.
pub struct KafkaBus {
    config: KafkaBusConfig,
    publish_timeout: Duration,
    producer: RwLock<Arc<FutureProducer>>,
    admin: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Sets up the producer and admin clients; connections open lazily.
    pub fn new(config: &KafkaBusConfig, publish_timeout: Duration) -> Result<Self, BusError> {
        let producer = new_producer(config, publish_timeout)?;
        let admin = client_config(config).create().map_err(fatal)?;
        Ok(KafkaBus {
            config: config.clone(),
            publish_timeout,
            producer: RwLock::new(Arc::new(producer)),
            admin,
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces `failed` with a new producer if `error` shows it will not
    /// work again (and no other publish replaced it already).
    fn replace_if_broken(&self, failed: &Arc<FutureProducer>, error: &KafkaError) {
        let fatal = failed.client().fatal_error();
        let broken = fatal.is_some() || error.rdkafka_error_code().is_some_and(breaks_idempotence);
        if !broken {
            return;
        }
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match new_producer(&self.config, self.publish_timeout) {
            Ok(producer) => {
                tracing::warn!(%error, ?fatal, "Kafka producer cannot go on; replaced it");
                *current = Arc::new(producer);
            }
            Err(error) => {
                tracing::error!(%error, "Kafka producer failed fatally and cannot be replaced");
            }
        }
    }
}

fn new_producer(
    config: &KafkaBusConfig,
    publish_timeout: Duration,
) -> Result<FutureProducer, BusError> {
    client_config(config)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", config.compression.as_str())
        .set("linger.ms", config.linger_ms.to_string())
        .set(
            "message.timeout.ms",
            publish_timeout.as_millis().to_string(),
        )
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .set(
            "queue.buffering.max.messages",
            config.max_queued_messages.to_string(),
        )
        .set("batch.num.messages", config.max_batch_records.to_string())
        .create()
        .map_err(fatal)
}

/// What every client shares: the brokers, who Vigil is, and how it speaks
/// to them. TLS goes through librdkafka's OpenSSL: the system's roots,
/// plus `ca_file` when set.
fn client_config(config: &KafkaBusConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id)
        .set("security.protocol", config.security_protocol.as_str());
    if let Some(ca_file) = &config.ca_file {
        client.set("ssl.ca.location", ca_file.display().to_string());
    }
    if let Some(sasl) = &config.sasl {
        client
            .set("sasl.mechanism", sasl.mechanism.as_str())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
    client
}

fn fatal(error: KafkaError) -> BusError {
    BusError::Fatal {
        reason: error.to_string(),
    }
}

/// Errors after which an idempotent producer rejects everything it sends:
/// its producer id or epoch is no longer the broker's.
fn breaks_idempotence(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::ProducerFenced
            | Code::OutOfOrderSequenceNumber
            | Code::UnknownProducerId
            | Code::InvalidProducerEpoch
            | Code::InvalidProducerIdMapping
    )
}

/// The one place that decides what a librdkafka error means for the caller.
fn classify(error: &KafkaError, topic: &str) -> BusError {
    use RDKafkaErrorCode as Code;
    let reason = error.to_string();
    match error.rdkafka_error_code() {
        Some(Code::QueueFull) => BusError::Full { reason },
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic) => BusError::UnknownTopic {
            topic: topic.to_owned(),
        },
        Some(
            // The broker's limit is below ours: a configuration to fix.
            Code::MessageSizeTooLarge
            | Code::InvalidConfig
            | Code::InvalidArgument
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::InvalidRecord
            | Code::UnsupportedVersion,
        ) => BusError::Fatal { reason },
        // Timeouts, transport failures, leader elections, coordinator moves,
        // rebalances: the broker or the group will be back.
        _ => BusError::Unavailable { reason },
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let partitions = i32::try_from(partitions).map_err(|_| BusError::Fatal {
            reason: format!("{partitions} partitions is more than Kafka allows"),
        })?;
        let replication = TopicReplication::Fixed(self.config.replication_factor as i32);
        let options = AdminOptions::new().operation_timeout(Some(self.publish_timeout));
        let results = self
            .admin
            .create_topics(&[NewTopic::new(topic, partitions, replication)], &options)
            .await
            .map_err(|e| classify(&e, topic))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(classify(&KafkaError::AdminOp(code), topic));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), BusError> {
        let limit = MAX_MESSAGE_BYTES;
        if let Some(size) = records
            .iter()
            .map(|r| (r.key.len() + r.payload.len()) as u64)
            .find(|&size| size > limit)
        {
            return Err(BusError::TooLarge { size, limit });
        }
        let producer = self.producer();
        publish_with(&producer, topic, &records, self.publish_timeout)
            .await
            .map_err(|error| {
                self.replace_if_broken(&producer, &error);
                classify(&error, topic)
            })
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let consumer: StreamConsumer = client_config(&self.config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .map_err(fatal)?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| classify(&e, topic))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
        }))
    }
}

/// Publishes `records` through `producer`, waiting for room in its queue and
/// then for the broker's acknowledgement of every record.
async fn publish_with(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    let mut deliveries = Vec::with_capacity(records.len());
    for record in records {
        let mut future_record = FutureRecord::to(topic)
            .key(&record.key[..])
            .payload(&record.payload[..]);
        loop {
            match producer.send_result(future_record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((error, returned)) => {
                    let queue_full =
                        error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull);
                    if !queue_full || Instant::now() >= deadline {
                        return Err(error);
                    }
                    future_record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
            }
        }
    }
    let mut first_error = None;
    for delivery in deliveries {
        let error = match delivery.await {
            Ok(Ok(_)) => continue,
            Ok(Err((error, _))) => error,
            Err(_canceled) => KafkaError::Canceled,
        };
        first_error.get_or_insert(error);
    }
    first_error.map_or(Ok(()), Err)
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    topic: String,
}

impl KafkaConsumer {
    fn convert(message: &rdkafka::message::BorrowedMessage<'_>) -> Message {
        Message {
            partition: message.partition(),
            offset: message.offset(),
            key: Bytes::copy_from_slice(message.key().unwrap_or_default()),
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, BusError> {
        let first = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(Err(error)) => return Err(classify(&error, &self.topic)),
            Ok(Ok(message)) => Self::convert(&message),
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(Self::convert(&message)),
                // Hand over what we have: the messages taken so far are past the
                // consumer's position and would be skipped if dropped here. The
                // error, if it lasts, comes back on the next poll.
                Some(Err(error)) => {
                    tracing::debug!(error = %error, topic = %self.topic, "consumer error after a partial batch");
                    break;
                }
                None => break,
            }
        }
        Ok(batch)
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let mut list = TopicPartitionList::new();
        for position in positions {
            list.add_partition_offset(
                &self.topic,
                position.partition,
                Offset::Offset(position.next_offset),
            )
            .map_err(|e| classify(&e, &self.topic))?;
        }
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        // A synchronous commit blocks until the coordinator answers.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| BusError::Fatal {
                reason: format!("commit task failed: {e}"),
            })?
            .map_err(|e| classify(&e, &topic))
    }

    fn assignment(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self
            .consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        partitions.sort_unstable();
        partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_once_for_every_caller() {
        let production = |code| classify(&KafkaError::MessageProduction(code), "t");
        assert!(matches!(
            production(RDKafkaErrorCode::QueueFull),
            BusError::Full { .. }
        ));
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            let error = production(transient);
            assert!(
                matches!(error, BusError::Unavailable { .. }),
                "{transient:?}"
            );
            assert!(error.is_retryable());
        }
        assert_eq!(
            production(RDKafkaErrorCode::UnknownTopicOrPartition),
            BusError::UnknownTopic {
                topic: "t".to_owned()
            }
        );
        for permanent in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            let error = production(permanent);
            assert!(matches!(error, BusError::Fatal { .. }), "{permanent:?}");
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn idempotence_failures_mark_the_producer_for_replacement() {
        for code in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::UnknownProducerId,
        ] {
            assert!(breaks_idempotence(code), "{code:?}");
            // The publish itself is worth retrying, on the new producer.
            let error = classify(&KafkaError::MessageProduction(code), "t");
            assert!(error.is_retryable(), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
        ] {
            assert!(!breaks_idempotence(code), "{code:?}");
        }
    }

    #[tokio::test]
    async fn oversize_records_are_refused_before_the_broker() {
        let bus = KafkaBus::new(&KafkaBusConfig::default(), Duration::from_millis(100)).unwrap();
        let payload = vec![0u8; MAX_MESSAGE_BYTES as usize];
        let error = bus
            .publish("t", vec![Record::new("k", payload)])
            .await
            .unwrap_err();
        assert_eq!(
            error,
            BusError::TooLarge {
                size: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES
            }
        );
    }

    /// SASL cannot be tried against the test broker (tansu 0.6 closes the
    /// connection on librdkafka's SaslHandshake), so this checks what is
    /// handed to librdkafka, whose SASL is its own.
    #[test]
    fn security_settings_reach_librdkafka() {
        use vigil_config::{SaslConfig, SaslMechanism, SecurityProtocol};
        let plain = client_config(&KafkaBusConfig::default());
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
        assert_eq!(plain.get("sasl.mechanism"), None);
        assert_eq!(plain.get("ssl.ca.location"), None);
        let pki = vigil_testing::pki::Pki::new();
        let config = KafkaBusConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            ca_file: Some(pki.ca_file.clone()),
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha512,
                username: "vigil".to_owned(),
                password: vigil_config::Secret::new("s3cret"),
            }),
            ..KafkaBusConfig::default()
        };
        let client = client_config(&config);
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", &pki.ca_file.display().to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "vigil"),
            ("sasl.password", "s3cret"),
        ] {
            assert_eq!(client.get(key), Some(value), "{key}");
        }
        // librdkafka accepts the combination (it was built with SSL and SASL).
        assert!(client.create::<rdkafka::producer::FutureProducer>().is_ok());
    }
}
