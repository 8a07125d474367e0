//! Fuzz targets of what the aggregator reads from the bus (see
//! `vigil_testing::fuzz`): OTLP metrics, spans and logs as valid encodings
//! mutated and as random bytes. Metrics go three messages at a time through
//! one cumulative state, so that bucket layouts, offsets and starts jump
//! between points of a series as a hostile or broken sender's would.
//!
//! Properties: nothing panics (a message that cannot be read is an error,
//! for the dead-letter topic); every distribution made of a point holds
//! a finite count of buckets within the OTLP limit's reach; what prost
//! reads, the in-place reading of gauges and sums (`wire.rs`) reads alike.

use proptest::prelude::*;
use prost::Message;
use vigil_domain::distribution::MAX_OTLP_BUCKETS;
use vigil_domain::tenant::TenantId;
use vigil_testing::fuzz::seeds::{logs, metrics, traces};
use vigil_testing::fuzz::{config, mutations};

use crate::cumulative::Cumulative;
use crate::points::{self, Amount};

fn tenant() -> TenantId {
    TenantId::parse("fuzz").expect("a tenant id")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_metrics_through_the_cumulative_state(
        messages in prop::collection::vec(mutations(vec![metrics().encode_to_vec()]), 1..4)
    ) {
        let mut cumulative = Cumulative::default();
        for (offset, payload) in messages.iter().enumerate() {
            let Ok((observations, _refused)) =
                points::metrics(&tenant(), payload, offset as i64, &mut cumulative)
            else {
                continue;
            };
            for observation in observations {
                if let Amount::Many(rollup) = observation.amount {
                    let (keys, counts) = rollup.values.to_buckets();
                    prop_assert_eq!(keys.len(), counts.len());
                    prop_assert!(keys.len() <= 2 * MAX_OTLP_BUCKETS + 1, "{} buckets", keys.len());
                }
            }
        }
    }

    #[test]
    fn fuzz_metrics_read_in_place_as_prost_reads_them(
        messages in prop::collection::vec(mutations(vec![metrics().encode_to_vec()]), 1..4)
    ) {
        let (mut in_place, mut with_prost) = (Cumulative::default(), Cumulative::default());
        for (offset, payload) in messages.iter().enumerate() {
            let offset = offset as i64;
            let Ok(expected) = points::metrics_with_prost(&tenant(), payload, offset, &mut with_prost)
            else {
                // Broken for prost: read here or not (see `wire.rs`), never
                // a panic; apart, so that the two states stay alike.
                let _ = points::metrics(&tenant(), payload, offset, &mut Cumulative::default());
                continue;
            };
            let read = points::metrics(&tenant(), payload, offset, &mut in_place);
            prop_assert!(read.is_ok(), "{:?}", read.err());
            let read = read.unwrap_or_default();
            prop_assert_eq!(format!("{read:?}"), format!("{expected:?}"));
        }
    }

    #[test]
    fn fuzz_spans(payload in mutations(vec![traces().encode_to_vec()])) {
        let _ = points::spans(&tenant(), &payload, &["http.route".to_owned()]);
    }

    #[test]
    fn fuzz_logs(payload in mutations(vec![logs().encode_to_vec()])) {
        let _ = crate::logs::logs(&tenant(), &payload, |i| i as u64);
    }
}
