//! The pipeline every request goes through, whatever its protocol: check the
//! items, split per resource, publish, and answer only once the bus has it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use vigil_bus::{Bus, Record, Topics, message_key};
use vigil_config::{CollectorConfig, TokenDigest};
use vigil_domain::tenant::TenantId;

use crate::auth::{Auth, Sender};
use crate::budget::Budget;
use crate::classic_histogram::Histograms;
use crate::error::IngestError;
use crate::limits::{Admission, RateLimiter, SeriesLimiter};
use crate::metrics::Metrics;
use crate::otlp::Export;
use crate::validate::{Rejection, Rejections, Rules};

pub(crate) struct Ingest {
    pub(crate) auth: Auth,
    pub(crate) budget: Budget,
    pub(crate) metrics: Metrics,
    /// Prometheus classic histograms being put together.
    pub(crate) histograms: Histograms,
    config: CollectorConfig,
    tenant_rate: RateLimiter<TenantId>,
    token_rate: RateLimiter<TokenDigest>,
    series: SeriesLimiter,
    bus: Arc<dyn Bus>,
    topics: Topics,
}

impl Ingest {
    pub(crate) fn new(config: &CollectorConfig, bus: Arc<dyn Bus>, topics: Topics) -> Self {
        Ingest {
            auth: Auth::new(config),
            budget: Budget::new(config.max_decoded_bytes_in_flight),
            metrics: Metrics::new(),
            histograms: Histograms::default(),
            config: config.clone(),
            tenant_rate: RateLimiter::new(
                config.limits.tenant_items_per_second,
                config.limits.tenant_burst_items,
            ),
            token_rate: RateLimiter::new(
                config.limits.token_items_per_second,
                config.limits.token_burst_items,
            ),
            series: SeriesLimiter::new(&config.limits),
            bus,
            topics,
        }
    }

    /// The largest request body, after decompression.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Stores the valid items of `request` for its sender and says which
    /// were not.
    pub(crate) async fn export<S: Export>(
        &self,
        sender: &Sender,
        request: S,
    ) -> Result<S::Response, IngestError> {
        self.export_after(sender, request, Rejections::default())
            .await
    }

    /// As [`Ingest::export`], for a request that lost items already on its
    /// way in (while translated from another format), `rejections` says which.
    pub(crate) async fn export_after<S: Export>(
        &self,
        sender: &Sender,
        mut request: S,
        mut rejections: Rejections,
    ) -> Result<S::Response, IngestError> {
        let tenant = &sender.tenant;
        let now = Instant::now();
        let received = request.items() as u64;
        if let Err(error) = self.admit_rate(sender, received, now) {
            rejections.add(Rejection::new("rate_limited", error.to_string()), received);
            self.metrics.items(S::NAME, tenant, 0, false, &rejections);
            return Err(error);
        }
        let rules = Rules::new(&self.config, SystemTime::now());
        let mut admission = Admission::new(tenant, now, &self.series);
        request.validate(&rules, &mut admission, &mut rejections);
        let valid = request.items();
        let records: Vec<Record> = request
            .split()
            .into_iter()
            .map(|(service, part)| Record {
                key: message_key(tenant, &service),
                payload: Bytes::from(part.payload()),
            })
            .collect();
        if !records.is_empty() {
            let published = self.bus.publish(S::topic(&self.topics), records).await;
            if let Err(error) = published {
                self.metrics.bus_error(&error);
                self.metrics
                    .items(S::NAME, tenant, valid, false, &rejections);
                return Err(error.into());
            }
        }
        self.metrics
            .items(S::NAME, tenant, valid, true, &rejections);
        if rejections.count() > 0 {
            tracing::debug!(
                tenant = %tenant,
                rejected = rejections.count(),
                message = %rejections.message(S::ITEMS),
                "rejected items"
            );
        }
        Ok(S::response(&rejections))
    }

    /// Lets a request of `items` in under its token's rate and its tenant's,
    /// or refuses it whole with the time after which it would fit.
    fn admit_rate(&self, sender: &Sender, items: u64, now: Instant) -> Result<(), IngestError> {
        let refused = |who: String, per_second: f64, wait: Duration| IngestError::RateLimited {
            message: format!(
                "{who} is over its limit of {per_second} items/s; retry this request after {} ms",
                wait.as_millis()
            ),
            retry_after: wait,
        };
        if let Some(token) = &sender.token {
            self.token_rate.admit(token, items, now).map_err(|wait| {
                refused("this token".to_owned(), self.token_rate.per_second(), wait)
            })?;
        }
        self.tenant_rate
            .admit(&sender.tenant, items, now)
            .map_err(|wait| {
                if let Some(token) = &sender.token {
                    self.token_rate.refund(token, items);
                }
                refused(
                    format!("tenant {}", sender.tenant),
                    self.tenant_rate.per_second(),
                    wait,
                )
            })
    }
}
