//! The stateful limits: items per second per tenant and per token (token
//! buckets; a request over one is refused whole, to be retried), and
//! metric series (cardinality: new series per metric per minute and active
//! series per tenant; a point over either is rejected and counted in
//! `partial_success`, like any invalid item).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use vigil_config::LimitsConfig;
use vigil_domain::tenant::TenantId;

use crate::validate::{Item, Rejection};

const WINDOW: Duration = Duration::from_secs(60);

/// Token buckets of items, one per key (a tenant, or one of its tokens).
/// A request is let in whole or not at all: refused, it is answered 429 /
/// RESOURCE_EXHAUSTED with the time after which it would fit, so the client
/// retries it instead of losing items.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// May go below zero: a request larger than the burst is let in when the
    /// bucket is full, and the debt is paid before the next one.
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub(crate) fn new(per_second: u64, burst: u64) -> Self {
        RateLimiter {
            per_second: per_second as f64,
            burst: burst as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Lets `items` in for `key`, or says how long until they would fit.
    pub(crate) fn admit(&self, key: &K, items: u64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        let needed = (items as f64).min(self.burst);
        if bucket.tokens >= needed {
            bucket.tokens -= items as f64;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (needed - bucket.tokens) / self.per_second,
        ))
    }

    /// Gives back what [`RateLimiter::admit`] took for a request that another
    /// limit refused.
    pub(crate) fn refund(&self, key: &K, items: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + items as f64).min(self.burst);
        }
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.per_second
    }
}

/// The series each tenant's metrics have, and how many each gained this
/// minute. One lock per tenant, taken per metric and only for metrics: a
/// request of spans or logs, or of another tenant, never waits on it.
#[derive(Debug)]
pub(crate) struct SeriesLimiter {
    limits: SeriesLimits,
    tenants: RwLock<HashMap<TenantId, Arc<Mutex<TenantSeries>>>>,
}

#[derive(Debug, Clone, Copy)]
struct SeriesLimits {
    max_new_per_minute: u32,
    max_active: usize,
    /// A series unseen for this long is forgotten, and counts as new again.
    idle: Duration,
}

/// One tenant's metrics. Series unseen for the idle time, and metrics left
/// without series, are dropped once a minute, so memory follows the series
/// in use (at most the active limit), not every name ever sent.
#[derive(Debug)]
pub(crate) struct TenantSeries {
    metrics: HashMap<String, MetricSeries>,
    /// Series over every metric.
    active: usize,
    swept: Instant,
}

/// Why a new series was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NewThisMinute,
    TenantFull,
}

#[derive(Debug)]
struct MetricSeries {
    /// Keyed by series identities, hashes already: the fast hasher does.
    last_seen: foldhash::HashMap<u64, Instant>,
    window_start: Instant,
    new_in_window: u32,
}

impl SeriesLimiter {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        SeriesLimiter {
            limits: SeriesLimits {
                max_new_per_minute: config.max_new_series_per_metric_per_minute,
                max_active: config.max_active_series_per_tenant,
                idle: Duration::from_secs(config.series_idle_s),
            },
            tenants: RwLock::default(),
        }
    }

    /// The series of `tenant` (tenants are the configured ones and the
    /// anonymous one: a bounded map).
    fn of(&self, tenant: &TenantId, now: Instant) -> Arc<Mutex<TenantSeries>> {
        if let Some(series) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return Arc::clone(series);
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tenants.entry(tenant.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(TenantSeries {
                metrics: HashMap::new(),
                active: 0,
                swept: now,
            }))
        }))
    }
}

impl TenantSeries {
    /// The series of `metric`, created while the tenant has room (a new
    /// metric is a new series: no room, no entry); series unseen for the
    /// idle time are forgotten first, once a minute.
    fn metric(
        &mut self,
        metric: &str,
        now: Instant,
        limits: SeriesLimits,
    ) -> Option<SeriesGate<'_>> {
        if now.saturating_duration_since(self.swept) >= WINDOW {
            self.swept = now;
            let mut active = 0;
            self.metrics.retain(|_, state| {
                state
                    .last_seen
                    .retain(|_, seen| now.saturating_duration_since(*seen) < limits.idle);
                active += state.last_seen.len();
                !state.last_seen.is_empty()
                    || now.saturating_duration_since(state.window_start) < WINDOW
            });
            self.active = active;
        }
        if !self.metrics.contains_key(metric) {
            if self.active >= limits.max_active {
                return None;
            }
            self.metrics.insert(
                metric.to_owned(),
                MetricSeries {
                    last_seen: foldhash::HashMap::default(),
                    window_start: now,
                    new_in_window: 0,
                },
            );
        }
        let state = self.metrics.get_mut(metric)?;
        if now.saturating_duration_since(state.window_start) >= WINDOW {
            state.window_start = now;
            state.new_in_window = 0;
        }
        Some(SeriesGate {
            state,
            active: &mut self.active,
        })
    }
}

/// One metric's series and the tenant's count of active series.
struct SeriesGate<'s> {
    state: &'s mut MetricSeries,
    active: &'s mut usize,
}

impl SeriesGate<'_> {
    /// Whether a point of series `series` may be stored: known series
    /// always; a new one while the metric's minute and the tenant have room.
    fn admit(&mut self, series: u64, now: Instant, limits: SeriesLimits) -> Result<(), Refused> {
        if let Some(seen) = self.state.last_seen.get_mut(&series) {
            *seen = now;
            return Ok(());
        }
        if *self.active >= limits.max_active {
            return Err(Refused::TenantFull);
        }
        if self.state.new_in_window >= limits.max_new_per_minute {
            return Err(Refused::NewThisMinute);
        }
        self.state.new_in_window += 1;
        self.state.last_seen.insert(series, now);
        *self.active += 1;
        Ok(())
    }
}

/// The series gate a request's metric points go through.
pub(crate) struct Admission<'a> {
    tenant: &'a TenantId,
    now: Instant,
    limiter: &'a SeriesLimiter,
    /// The tenant's series, looked up at the first metric point.
    series: Option<Arc<Mutex<TenantSeries>>>,
}

impl<'a> Admission<'a> {
    pub(crate) fn new(tenant: &'a TenantId, now: Instant, limiter: &'a SeriesLimiter) -> Self {
        Admission {
            tenant,
            now,
            limiter,
            series: None,
        }
    }

    /// Runs `check` over one metric's points with the metric's series
    /// gate: the tenant's series are locked and the metric looked up once
    /// for all its points.
    pub(crate) fn metric<R>(
        &mut self,
        metric: &str,
        check: impl FnOnce(&mut MetricAdmission<'_>) -> R,
    ) -> R {
        let (limiter, tenant, now) = (self.limiter, self.tenant, self.now);
        let tenant_series = self.series.get_or_insert_with(|| limiter.of(tenant, now));
        let mut series = tenant_series.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = limiter.limits;
        check(&mut MetricAdmission {
            gate: series.metric(metric, now, limits),
            limits,
            now,
        })
    }
}

/// The series limits of one metric's points (see [`Admission::metric`]).
pub(crate) struct MetricAdmission<'s> {
    /// `None` when the metric is new and the tenant has no room.
    gate: Option<SeriesGate<'s>>,
    limits: SeriesLimits,
    now: Instant,
}

impl MetricAdmission<'_> {
    /// Admits a point of series `series`, or says why not.
    pub(crate) fn admit(&mut self, what: Item<'_>, series: u64) -> Result<(), Rejection> {
        let limits = self.limits;
        let refused = match &mut self.gate {
            Some(gate) => gate.admit(series, self.now, limits),
            None => Err(Refused::TenantFull),
        };
        match refused {
            Ok(()) => Ok(()),
            Err(Refused::NewThisMinute) => Err(Rejection::new(
                "cardinality",
                format!(
                    "{what}: more than {} new series this minute; a new series can start next minute",
                    limits.max_new_per_minute
                ),
            )),
            Err(Refused::TenantFull) => Err(Rejection::new(
                "series_limit",
                format!(
                    "{what}: the tenant has its limit of {} active series; a new series can \
                     start once others go unseen for {} s",
                    limits.max_active,
                    limits.idle.as_secs()
                ),
            )),
        }
    }
}

/// Series identities are hashed with one seed per process.
static SERIES_HASH: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// An order-independent hash of attributes: the identity of a series.
pub(crate) fn attributes_hash(attributes: &[KeyValue]) -> u64 {
    attributes.iter().fold(0u64, |sum, kv| {
        let mut hasher = SERIES_HASH.build_hasher();
        kv.key.hash(&mut hasher);
        if let Some(value) = &kv.value {
            hash_value(value, &mut hasher);
        }
        sum.wrapping_add(hasher.finish())
    })
}

fn hash_value(value: &AnyValue, hasher: &mut impl Hasher) {
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

    impl TenantSeries {
        /// One point through the metric's gate, as [`Admission::metric`] does.
        fn admit(
            &mut self,
            metric: &str,
            series: u64,
            now: Instant,
            limits: SeriesLimits,
        ) -> Result<(), Refused> {
            match self.metric(metric, now, limits) {
                Some(mut gate) => gate.admit(series, now, limits),
                None => Err(Refused::TenantFull),
            }
        }
    }

    fn limits(new_series: u32) -> LimitsConfig {
        LimitsConfig {
            max_new_series_per_metric_per_minute: new_series,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_request_is_let_in_whole_or_told_when_it_would_fit() {
        let limiter = RateLimiter::new(100, 250);
        let acme = TenantId::parse("acme").unwrap();
        let start = Instant::now();
        assert_eq!(limiter.admit(&acme, 200, start), Ok(()));
        // 50 left: 100 more fit in half a second.
        assert_eq!(
            limiter.admit(&acme, 100, start),
            Err(Duration::from_millis(500))
        );
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.admit(&acme, 100, later), Ok(()));
        assert_eq!(
            limiter.admit(&acme, 1, later),
            Err(Duration::from_millis(10))
        );
        limiter.refund(&acme, 20);
        assert_eq!(limiter.admit(&acme, 20, later), Ok(()));
        // A request over the burst passes on a full bucket, then its debt is
        // paid: 1000 items at 100/s leave 750 to wait for, plus the next one.
        let full = start + Duration::from_secs(60);
        assert_eq!(limiter.admit(&acme, 1000, full), Ok(()));
        assert_eq!(
            limiter.admit(&acme, 1, full),
            Err(Duration::from_secs_f64(7.51))
        );
        // Another key has its own bucket.
        let other = TenantId::parse("other").unwrap();
        assert_eq!(limiter.admit(&other, 250, start), Ok(()));
    }

    #[test]
    fn new_series_are_limited_per_metric_per_minute_and_known_ones_pass() {
        let limiter = SeriesLimiter::new(&limits(2));
        let acme = TenantId::parse("acme").unwrap();
        let start = Instant::now();
        let admit = |metric: &str, series: u64, now: Instant| {
            limiter
                .of(&acme, start)
                .lock()
                .unwrap()
                .admit(metric, series, now, limiter.limits)
                .is_ok()
        };
        assert!(admit("m", 1, start));
        assert!(admit("m", 2, start));
        assert!(!admit("m", 3, start), "a third new series this minute");
        assert!(admit("m", 1, start), "known series pass");
        assert!(admit("other", 3, start), "each metric has its own limit");
        let next_minute = start + WINDOW;
        assert!(admit("m", 3, next_minute));
        // Forgotten after an hour unseen: then it is new again, and a metric
        // none of whose series is left is dropped.
        let later = start + limiter.limits.idle + WINDOW;
        assert!(admit("m", 4, later));
        assert_eq!(
            limiter.of(&acme, start).lock().unwrap().metrics.len(),
            1,
            "\"other\" went unseen for an hour"
        );
        assert!(admit("m", 5, later));
        assert!(
            !admit("m", 1, later),
            "series 1 was forgotten, so it is new"
        );
        // Another tenant has series of its own.
        let other = TenantId::parse("other").unwrap();
        assert!(
            limiter
                .of(&other, later)
                .lock()
                .unwrap()
                .admit("m", 1, later, limiter.limits)
                .is_ok()
        );
    }

    #[test]
    fn a_tenant_at_its_active_series_limit_takes_no_new_series_or_names() {
        let limiter = SeriesLimiter::new(&LimitsConfig {
            max_active_series_per_tenant: 3,
            series_idle_s: 600,
            ..LimitsConfig::default()
        });
        let acme = TenantId::parse("acme").unwrap();
        let start = Instant::now();
        let series = limiter.of(&acme, start);
        let admit = |metric: &str, id: u64, now: Instant| {
            series
                .lock()
                .unwrap()
                .admit(metric, id, now, limiter.limits)
        };
        assert_eq!(admit("a", 1, start), Ok(()));
        assert_eq!(admit("a", 2, start), Ok(()));
        assert_eq!(admit("b", 1, start), Ok(()));
        assert_eq!(admit("a", 3, start), Err(Refused::TenantFull));
        for name in 0..1_000 {
            assert_eq!(
                admit(&format!("n{name}"), 1, start),
                Err(Refused::TenantFull)
            );
        }
        assert_eq!(series.lock().unwrap().metrics.len(), 2, "no entry per name");
        assert_eq!(admit("a", 2, start), Ok(()), "known series pass");
        // "a" 1 and "b" 1 go unseen for the idle time: room for two.
        let later = start + Duration::from_secs(600);
        assert_eq!(admit("a", 2, start + Duration::from_secs(300)), Ok(()));
        assert_eq!(admit("c", 1, later), Ok(()));
        assert_eq!(admit("c", 2, later), Ok(()));
        assert_eq!(admit("c", 3, later), Err(Refused::TenantFull));
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
