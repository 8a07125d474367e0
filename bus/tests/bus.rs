//! The bus conformance suite: the same tests on the embedded bus and on Kafka
//! (the broker from scripts/services.sh). What one backend promises, both keep.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use vigil_bus::{Bus, BusError, Consumer, EmbeddedBus, KafkaBus, Message, Record, positions_after};
use vigil_config::EmbeddedBusConfig;
use vigil_testing::{Backend, embedded_bus_config, kafka_config, read_until, unique_name};

const DEADLINE: Duration = Duration::from_secs(60);

/// How much a bus may hold before publishers are pushed back.
#[derive(Clone, Copy)]
enum Size {
    Roomy,
    /// Room for about ten 1 kB records in flight.
    Tiny,
}

/// A bus of the backend, or `None` when Kafka is unreachable off CI.
fn bus(backend: Backend, size: Size) -> Option<Arc<dyn Bus>> {
    Some(match (backend, size) {
        (Backend::Embedded, Size::Roomy) => {
            Arc::new(EmbeddedBus::new(&embedded_bus_config(), Duration::from_secs(5)).unwrap())
        }
        (Backend::Embedded, Size::Tiny) => Arc::new(
            EmbeddedBus::new(
                &EmbeddedBusConfig {
                    max_bytes_per_topic: 10 * 1_010,
                    ..embedded_bus_config()
                },
                Duration::from_millis(300),
            )
            .unwrap(),
        ),
        (Backend::Kafka, size) => {
            let mut config = kafka_config()?;
            if let Size::Tiny = size {
                // One message in the producer's queue, held for 100 ms while a
                // batch fills: the queue is full for almost all of each
                // publish's 2 s. (This test never resumes inside a batch, so
                // batching is safe on tansu here.)
                config.max_queued_messages = 1;
                config.max_batch_records = 100;
                config.linger_ms = 100;
            }
            Arc::new(KafkaBus::new(&config, Duration::from_secs(2)).unwrap())
        }
    })
}

/// Polls until `expected` messages came, then briefly for any extra one.
async fn receive(consumer: &mut dyn Consumer, expected: usize) -> Vec<Message> {
    read_until(consumer, |messages| messages.len() >= expected).await
}

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

async fn per_key_order_is_kept(backend: Backend) {
    let Some(bus) = bus(backend, Size::Roomy) else {
        return;
    };
    let topic = unique_name("order");
    bus.create_topic(&topic, 4).await.unwrap();
    let (keys, per_key) = (10, 100);
    for batch in 0..(per_key / 10) {
        let records = (0..keys)
            .flat_map(|k| (0..10).map(move |i| (k, batch * 10 + i)))
            .map(|(k, seq)| Record::new(format!("key-{k}"), format!("key-{k}:{seq}")))
            .collect();
        bus.publish(&topic, records).await.unwrap();
    }

    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let received = receive(consumer.as_mut(), keys * per_key).await;
    assert_eq!(received.len(), keys * per_key);

    let mut sequences: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for message in &received {
        let payload = text(message);
        let (key, seq) = payload.split_once(':').unwrap();
        assert_eq!(message.key, key.as_bytes());
        sequences
            .entry(key.to_owned())
            .or_default()
            .push(seq.parse().unwrap());
        partitions
            .entry(key.to_owned())
            .or_default()
            .insert(message.partition);
        let previous = last_offset.insert(message.partition, message.offset);
        assert!(
            previous.is_none_or(|p| p < message.offset),
            "offsets go forward"
        );
    }
    let in_order: Vec<u32> = (0..per_key as u32).collect();
    assert_eq!(sequences.len(), keys);
    for (key, seqs) in &sequences {
        assert_eq!(seqs, &in_order, "order of {key}");
        assert_eq!(partitions[key].len(), 1, "{key} is on one partition");
    }
}

async fn uncommitted_messages_are_delivered_again(backend: Backend) {
    let Some(bus) = bus(backend, Size::Roomy) else {
        return;
    };
    let topic = unique_name("redeliver");
    bus.create_topic(&topic, 2).await.unwrap();
    let records = (0..100)
        .map(|i| Record::new(format!("k{}", i % 7), format!("m{i}")))
        .collect();
    bus.publish(&topic, records).await.unwrap();

    let group = unique_name("group");
    let mut first = bus.subscribe(&topic, &group).await.unwrap();
    // Another group has its own positions and reads everything.
    let mut other = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let received = receive(first.as_mut(), 100).await;
    assert_eq!(received.len(), 100);
    // Commit only the first 40 messages: within a partition messages come in
    // offset order, so a prefix of the batch is a prefix of each partition.
    let (done, not_done) = received.split_at(40);
    first.commit(&positions_after(done)).await.unwrap();
    drop(first);

    let mut second = bus.subscribe(&topic, &group).await.unwrap();
    let again = receive(second.as_mut(), 60).await;
    let again: BTreeSet<String> = again.iter().map(text).collect();
    let expected: BTreeSet<String> = not_done.iter().map(text).collect();
    assert_eq!(again, expected);
    assert_eq!(receive(other.as_mut(), 100).await.len(), 100);
}

async fn a_full_bus_pushes_back_and_loses_nothing(backend: Backend) {
    let Some(bus) = bus(backend, Size::Tiny) else {
        return;
    };
    let topic = unique_name("full");
    bus.create_topic(&topic, 1).await.unwrap();
    let publishes = (0..100).map(|i| {
        let (bus, topic) = (Arc::clone(&bus), topic.clone());
        tokio::spawn(async move {
            let payload = format!("{i:04}{}", "x".repeat(996));
            let outcome = bus.publish(&topic, vec![Record::new("k", payload)]).await;
            (i, outcome)
        })
    });
    let mut stored = BTreeSet::new();
    let mut pushed_back = 0;
    for publish in publishes.collect::<Vec<_>>() {
        match publish.await.unwrap() {
            (i, Ok(())) => {
                stored.insert(format!("{i:04}"));
            }
            (_, Err(error)) => {
                assert!(matches!(error, BusError::Full { .. }), "{error}");
                assert!(error.is_retryable());
                pushed_back += 1;
            }
        }
    }
    assert!(pushed_back > 0, "a tiny bus must push back");
    assert!(!stored.is_empty(), "a tiny bus must still take some");
    assert_eq!(stored.len() + pushed_back, 100);

    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    let received: BTreeSet<String> = receive(consumer.as_mut(), stored.len())
        .await
        .iter()
        .map(|m| text(m)[..4].to_owned())
        .collect();
    assert_eq!(
        received, stored,
        "exactly the acknowledged records are stored"
    );
}

async fn a_group_shares_partitions(backend: Backend) {
    let Some(bus) = bus(backend, Size::Roomy) else {
        return;
    };
    let topic = unique_name("share");
    bus.create_topic(&topic, 4).await.unwrap();
    let group = unique_name("group");
    let mut a = bus.subscribe(&topic, &group).await.unwrap();
    let mut b = bus.subscribe(&topic, &group).await.unwrap();

    // Both members must poll for the group to settle.
    let deadline = Instant::now() + DEADLINE;
    let settled = |a: &dyn Consumer, b: &dyn Consumer| {
        let (x, y) = (a.assignment(), b.assignment());
        let all: BTreeSet<i32> = x.iter().chain(&y).copied().collect();
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4 && all.len() == 4
    };
    while !settled(a.as_ref(), b.as_ref()) {
        assert!(Instant::now() < deadline, "the group did not settle");
        assert!(
            a.poll(10, Duration::from_millis(100))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            b.poll(10, Duration::from_millis(100))
                .await
                .unwrap()
                .is_empty()
        );
    }

    let records = (0..200)
        .map(|i| Record::new(format!("k{}", i % 20), format!("m{i}")))
        .collect();
    bus.publish(&topic, records).await.unwrap();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() + from_b.len() < 200 {
        assert!(Instant::now() < deadline, "messages did not arrive");
        from_a.extend(a.poll(100, Duration::from_millis(100)).await.unwrap());
        from_b.extend(b.poll(100, Duration::from_millis(100)).await.unwrap());
    }
    for (messages, consumer) in [(&from_a, &a), (&from_b, &b)] {
        assert!(!messages.is_empty(), "every member gets a share");
        let assigned = consumer.assignment();
        assert!(messages.iter().all(|m| assigned.contains(&m.partition)));
    }
    let all: BTreeSet<String> = from_a.iter().chain(&from_b).map(text).collect();
    assert_eq!(all.len(), 200, "each message reaches exactly one member");
    assert_eq!(from_a.len() + from_b.len(), 200);
}

vigil_testing::on_both_backends!(
    per_key_order_is_kept,
    uncommitted_messages_are_delivered_again,
    a_full_bus_pushes_back_and_loses_nothing,
    a_group_shares_partitions,
);

/// Publishes ten records to a new topic of `bus` and reads them back.
async fn round_trip(bus: &dyn Bus) -> Vec<String> {
    let topic = unique_name("secure");
    bus.create_topic(&topic, 1).await.unwrap();
    let records = (0..10)
        .map(|i| Record::new("k", format!("record {i}")))
        .collect();
    bus.publish(&topic, records).await.unwrap();
    let mut consumer = bus.subscribe(&topic, &unique_name("group")).await.unwrap();
    receive(consumer.as_mut(), 10)
        .await
        .iter()
        .map(text)
        .collect()
}

/// Kafka over TLS through librdkafka (OpenSSL), against tansu behind a
/// TLS-terminating proxy with a certificate of a test CA (tansu 0.6 takes
/// certificate options but serves no TLS): with `ssl` and the CA, records
/// go and come back exactly; without the CA the broker's certificate is
/// refused and a publish fails within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls() {
    use vigil_config::SecurityProtocol;
    let pki = vigil_testing::pki::Pki::new();
    let Some((broker, _tls)) = vigil_testing::Broker::start_behind_tls(&pki.server_tls()).await
    else {
        return;
    };
    let mut config = broker.config();
    config.security_protocol = SecurityProtocol::Ssl;
    config.ca_file = Some(pki.ca_file.clone());
    let bus = KafkaBus::new(&config, Duration::from_secs(5)).unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("record {i}")).collect();
    assert_eq!(round_trip(&bus).await, expected);

    let topic = unique_name("secure");
    bus.create_topic(&topic, 1).await.unwrap();
    config.ca_file = None;
    let untrusting = KafkaBus::new(&config, Duration::from_secs(2)).unwrap();
    let refused = untrusting
        .publish(&topic, vec![Record::new("k", "never")])
        .await
        .expect_err("a broker certificate of an unknown CA is trusted");
    assert!(refused.is_retryable(), "{refused}");
}
