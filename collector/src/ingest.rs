//! The pipeline every request goes through, whatever its protocol: check the
//! items, split per resource, publish, and answer only once the bus has it.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use vigil_bus::{Bus, Record, Topics, message_key};
use vigil_config::CollectorConfig;
use vigil_domain::tenant::TenantId;

use crate::auth::Auth;
use crate::budget::Budget;
use crate::error::IngestError;
use crate::limits::{Admission, RateLimiter, SeriesLimiter};
use crate::metrics::Metrics;
use crate::otlp::ExportRequest;
use crate::validate::{Rejections, Rules};

pub(crate) struct Ingest {
    pub(crate) auth: Auth,
    pub(crate) budget: Budget,
    pub(crate) metrics: Metrics,
    config: CollectorConfig,
    rate: RateLimiter,
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
            config: config.clone(),
            rate: RateLimiter::new(&config.limits),
            series: SeriesLimiter::new(&config.limits),
            bus,
            topics,
        }
    }

    /// The largest request body, after decompression.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// Stores the valid items of `request` for `tenant` and says which were not.
    pub(crate) async fn export<S: ExportRequest>(
        &self,
        tenant: &TenantId,
        request: S,
    ) -> Result<S::Response, IngestError> {
        self.export_after(tenant, request, Rejections::default())
            .await
    }

    /// As [`Ingest::export`], for a request that lost items already on its
    /// way in (while translated from another format), `rejections` says which.
    pub(crate) async fn export_after<S: ExportRequest>(
        &self,
        tenant: &TenantId,
        mut request: S,
        mut rejections: Rejections,
    ) -> Result<S::Response, IngestError> {
        let rules = Rules::new(&self.config, SystemTime::now());
        let unused_tokens = {
            // The series limiter stays locked for this block only, never
            // across the publish below.
            let now = Instant::now();
            let mut admission = Admission {
                tenant,
                now,
                tokens: self.rate.take(tenant, request.items() as u64, now),
                rate: &self.rate,
                series: self.series.lock(),
            };
            request.validate(&rules, &mut admission, &mut rejections);
            admission.tokens
        };
        self.rate.refund(tenant, unused_tokens);
        let valid = request.items();
        let records: Vec<Record> = request
            .split()
            .into_iter()
            .map(|(service, part)| Record {
                key: message_key(tenant, &service),
                payload: Bytes::from(part.encode_to_vec()),
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
}
