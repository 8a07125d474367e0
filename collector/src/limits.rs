//! The stateful limits: items per second per tenant (a token bucket), and new
//! series per metric per minute (cardinality). An item over a limit is
//! rejected and counted in `partial_success`, like any invalid item.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use vigil_config::LimitsConfig;
use vigil_domain::tenant::TenantId;

use crate::validate::{Item, Rejection};

/// A series not seen for this long is forgotten, and counts as new again.
const SERIES_TTL: Duration = Duration::from_secs(3600);
const WINDOW: Duration = Duration::from_secs(60);

/// Token buckets of items, one per tenant.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        RateLimiter {
            per_second: config.tenant_items_per_second as f64,
            burst: config.tenant_burst_items as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes up to `wanted` tokens from `tenant`'s bucket; returns how many.
    pub(crate) fn take(&self, tenant: &TenantId, wanted: u64, now: Instant) -> u64 {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        let granted = (wanted as f64).min(bucket.tokens.floor()).max(0.0);
        bucket.tokens -= granted;
        granted as u64
    }

    /// Gives back tokens taken but not used.
    pub(crate) fn refund(&self, tenant: &TenantId, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(tenant) {
            bucket.tokens = (bucket.tokens + tokens as f64).min(self.burst);
        }
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.per_second
    }
}

/// The series each metric has, and how many it gained this minute.
#[derive(Debug)]
pub(crate) struct SeriesLimiter {
    max_new_per_minute: u32,
    metrics: Mutex<HashMap<(TenantId, String), MetricSeries>>,
}

#[derive(Debug)]
struct MetricSeries {
    last_seen: HashMap<u64, Instant>,
    window_start: Instant,
    new_in_window: u32,
}

impl SeriesLimiter {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        SeriesLimiter {
            max_new_per_minute: config.max_new_series_per_metric_per_minute,
            metrics: Mutex::new(HashMap::new()),
        }
    }

    /// Holds the limiter for one request.
    pub(crate) fn lock(&self) -> SeriesGate<'_> {
        SeriesGate {
            max_new_per_minute: self.max_new_per_minute,
            metrics: self.metrics.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

pub(crate) struct SeriesGate<'a> {
    max_new_per_minute: u32,
    metrics: MutexGuard<'a, HashMap<(TenantId, String), MetricSeries>>,
}

impl SeriesGate<'_> {
    /// Whether the point of series `series` of `metric` may be stored: known
    /// series always; a new one while the metric's minute has room.
    pub(crate) fn admit(
        &mut self,
        tenant: &TenantId,
        metric: &str,
        series: u64,
        now: Instant,
    ) -> bool {
        let key = (tenant.clone(), metric.to_owned());
        let state = self.metrics.entry(key).or_insert_with(|| MetricSeries {
            last_seen: HashMap::new(),
            window_start: now,
            new_in_window: 0,
        });
        if now.saturating_duration_since(state.window_start) >= WINDOW {
            state.window_start = now;
            state.new_in_window = 0;
            state
                .last_seen
                .retain(|_, seen| now.saturating_duration_since(*seen) < SERIES_TTL);
        }
        if let Some(seen) = state.last_seen.get_mut(&series) {
            *seen = now;
            return true;
        }
        if state.new_in_window >= self.max_new_per_minute {
            return false;
        }
        state.new_in_window += 1;
        state.last_seen.insert(series, now);
        true
    }

    pub(crate) fn max_new_per_minute(&self) -> u32 {
        self.max_new_per_minute
    }
}

/// What one request may still store: its share of the tenant's rate, and the
/// series gate for metric points.
pub(crate) struct Admission<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) now: Instant,
    pub(crate) tokens: u64,
    pub(crate) rate: &'a RateLimiter,
    pub(crate) series: SeriesGate<'a>,
}

impl Admission<'_> {
    /// Spends one item of the rate budget.
    pub(crate) fn take(&mut self, what: Item<'_>) -> Result<(), Rejection> {
        if self.tokens == 0 {
            return Err(Rejection::new(
                "rate_limited",
                format!(
                    "{what}: tenant {} is over its limit of {} items/s",
                    self.tenant,
                    self.rate.per_second()
                ),
            ));
        }
        self.tokens -= 1;
        Ok(())
    }

    /// Admits a point of series `series` of `metric`, or says why not.
    pub(crate) fn series(
        &mut self,
        what: Item<'_>,
        metric: &str,
        series: u64,
    ) -> Result<(), Rejection> {
        if self.series.admit(self.tenant, metric, series, self.now) {
            return Ok(());
        }
        Err(Rejection::new(
            "cardinality",
            format!(
                "{what}: more than {} new series this minute; a new series can start next minute",
                self.series.max_new_per_minute()
            ),
        ))
    }
}

/// An order-independent hash of attributes: the identity of a series.
pub(crate) fn attributes_hash(attributes: &[KeyValue]) -> u64 {
    attributes.iter().fold(0u64, |sum, kv| {
        let mut hasher = DefaultHasher::new();
        kv.key.hash(&mut hasher);
        if let Some(value) = &kv.value {
            hash_value(value, &mut hasher);
        }
        sum.wrapping_add(hasher.finish())
    })
}

fn hash_value(value: &AnyValue, hasher: &mut DefaultHasher) {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => (0u8, s).hash(hasher),
        Some(any_value::Value::BoolValue(b)) => (1u8, b).hash(hasher),
        Some(any_value::Value::IntValue(i)) => (2u8, i).hash(hasher),
        Some(any_value::Value::DoubleValue(d)) => (3u8, d.to_bits()).hash(hasher),
        Some(any_value::Value::BytesValue(b)) => (4u8, b).hash(hasher),
        Some(any_value::Value::ArrayValue(array)) => {
            5u8.hash(hasher);
            array.values.iter().for_each(|v| hash_value(v, hasher));
        }
        Some(any_value::Value::KvlistValue(list)) => {
            (6u8, attributes_hash(&list.values)).hash(hasher)
        }
        // An index into a profile's string table (profiles only).
        Some(any_value::Value::StringValueStrindex(index)) => (7u8, index).hash(hasher),
        None => 8u8.hash(hasher),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u64, burst: u64, new_series: u32) -> LimitsConfig {
        LimitsConfig {
            tenant_items_per_second: per_second,
            tenant_burst_items: burst,
            max_new_series_per_metric_per_minute: new_series,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_bucket_grants_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(&limits(100, 250, 1));
        let acme = TenantId::parse("acme").unwrap();
        let start = Instant::now();
        assert_eq!(limiter.take(&acme, 200, start), 200);
        assert_eq!(limiter.take(&acme, 200, start), 50);
        assert_eq!(limiter.take(&acme, 10, start), 0);
        assert_eq!(
            limiter.take(&acme, 500, start + Duration::from_millis(500)),
            50
        );
        limiter.refund(&acme, 20);
        assert_eq!(
            limiter.take(&acme, 500, start + Duration::from_millis(500)),
            20
        );
        // Another tenant has its own bucket; a long pause refills to the burst only.
        let other = TenantId::parse("other").unwrap();
        assert_eq!(limiter.take(&other, 1000, start), 250);
        assert_eq!(
            limiter.take(&acme, 1000, start + Duration::from_secs(60)),
            250
        );
    }

    #[test]
    fn new_series_are_limited_per_metric_per_minute_and_known_ones_pass() {
        let limiter = SeriesLimiter::new(&limits(1, 1, 2));
        let acme = TenantId::parse("acme").unwrap();
        let start = Instant::now();
        let mut gate = limiter.lock();
        assert!(gate.admit(&acme, "m", 1, start));
        assert!(gate.admit(&acme, "m", 2, start));
        assert!(
            !gate.admit(&acme, "m", 3, start),
            "a third new series this minute"
        );
        assert!(gate.admit(&acme, "m", 1, start), "known series pass");
        assert!(
            gate.admit(&acme, "other", 3, start),
            "each metric has its own limit"
        );
        let next_minute = start + WINDOW;
        assert!(gate.admit(&acme, "m", 3, next_minute));
        // Forgotten after an hour unseen: then it is new again.
        let later = start + SERIES_TTL + WINDOW;
        assert!(gate.admit(&acme, "m", 4, later));
        assert!(gate.admit(&acme, "m", 5, later));
        assert!(
            !gate.admit(&acme, "m", 1, later),
            "series 1 was forgotten, so it is new"
        );
    }

    #[test]
    fn series_identity_ignores_attribute_order() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_owned())),
            }),
            ..Default::default()
        };
        let a = attributes_hash(&[kv("unit", "a"), kv("route", "/pay")]);
        let b = attributes_hash(&[kv("route", "/pay"), kv("unit", "a")]);
        let c = attributes_hash(&[kv("route", "/pay"), kv("unit", "b")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
