//! The alerter: rules evaluated on the stream of windows the aggregators
//! publish, alerts through their lifecycle, and notification and
//! remediation webhooks.

pub mod eval;
pub mod rules;
