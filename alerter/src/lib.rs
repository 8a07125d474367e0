//! The alerter: rules evaluated on the stream of windows the aggregators
//! publish, alerts through their lifecycle, and notification and
//! remediation webhooks.

pub mod alerts;
pub mod eval;
pub mod notify;
pub mod rules;
pub mod silence;
