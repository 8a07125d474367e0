//! The rules every item must pass. An item that breaks one is removed from
//! its request and recorded as a [`Rejection`]; the rest of the request goes on.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use vigil_config::CollectorConfig;

/// How many rejection messages a response quotes; the count covers them all.
const QUOTED_REJECTIONS: usize = 5;

/// The item a message is about: `span "GET /pay"`, `metric "latency"`, `log
/// record`. Formatted only when a rejection is written, never per item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    kind: &'static str,
    name: &'a str,
}

impl<'a> Item<'a> {
    pub(crate) fn new(kind: &'static str, name: &'a str) -> Self {
        Item { kind, name }
    }
}

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.kind)
        } else {
            write!(f, "{} {:?}", self.kind, self.name)
        }
    }
}

/// Why one item was rejected: a short code for self-metrics, and a message
/// that names the item and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// The rejections of one request.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    count: u64,
    quoted: Vec<String>,
    /// Items the quoted messages stand for (one message may cover several).
    quoted_items: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

impl Rejections {
    /// Records `items` items rejected for one reason.
    pub(crate) fn add(&mut self, rejection: Rejection, items: u64) {
        self.count += items;
        *self.by_reason.entry(rejection.reason).or_default() += items;
        if self.quoted.len() < QUOTED_REJECTIONS {
            self.quoted.push(rejection.message);
            self.quoted_items += items;
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Whether anything was rejected or refused: something with no items
    /// (a metric without points) is refused without a count, as a warning.
    pub(crate) fn any(&self) -> bool {
        self.count > 0 || !self.quoted.is_empty()
    }

    /// Rejected items by reason code.
    pub(crate) fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_reason
            .iter()
            .map(|(&reason, &count)| (reason, count))
    }

    /// The `partial_success.error_message`: empty when nothing was rejected.
    pub(crate) fn message(&self, items: &str) -> String {
        if !self.any() {
            return String::new();
        }
        if self.count == 0 {
            return format!("no {items} rejected, but: {}", self.quoted.join("; "));
        }
        let mut message = format!(
            "{} {items} rejected: {}",
            self.count,
            self.quoted.join("; ")
        );
        let unquoted = self.count - self.quoted_items;
        if unquoted > 0 {
            message.push_str(&format!("; and {unquoted} more"));
        }
        message
    }
}

/// The rules, fixed for one request (the clock is read once).
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    oldest_ns: u64,
    latest_ns: u64,
    max_attributes: usize,
    max_value_bytes: usize,
    max_name_bytes: usize,
    pub(crate) max_span_events: usize,
    pub(crate) max_span_links: usize,
    max_log_body_bytes: usize,
    max_value_elements: usize,
}

impl Rules {
    pub(crate) fn new(config: &CollectorConfig, now: SystemTime) -> Self {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let max_age = Duration::from_secs(u64::from(config.max_age_days) * 86_400);
        Rules {
            oldest_ns: now_ns.saturating_sub(max_age.as_nanos() as u64),
            latest_ns: now_ns.saturating_add(config.max_future_seconds * 1_000_000_000),
            max_attributes: config.limits.max_attributes,
            max_value_bytes: config.limits.max_attribute_value_bytes,
            max_name_bytes: config.limits.max_name_bytes,
            max_value_elements: config.limits.max_value_elements,
            max_span_events: config.limits.max_span_events,
            max_span_links: config.limits.max_span_links,
            max_log_body_bytes: config.limits.max_log_body_bytes,
        }
    }

    /// A name (of a span, metric or event) must fit the name limit.
    pub(crate) fn name(&self, what: Item<'_>, name: &str) -> Result<(), Rejection> {
        if name.len() > self.max_name_bytes {
            return Err(Rejection::new(
                "name_too_long",
                format!(
                    "{what}: the name has {} bytes, more than the limit of {}",
                    name.len(),
                    self.max_name_bytes
                ),
            ));
        }
        Ok(())
    }

    /// At most `limit` of `field` on one item.
    pub(crate) fn count(
        &self,
        what: Item<'_>,
        field: &str,
        count: usize,
        limit: usize,
    ) -> Result<(), Rejection> {
        if count > limit {
            return Err(Rejection::new(
                "too_many_elements",
                format!("{what}: {count} {field}, more than the limit of {limit}"),
            ));
        }
        Ok(())
    }

    /// A log body's longest string must fit the body limit.
    pub(crate) fn body(&self, what: Item<'_>, body: Option<&AnyValue>) -> Result<(), Rejection> {
        let values = body.map_or(0, elements);
        if values > self.max_value_elements {
            return Err(self.too_many_values(what, "its body", values));
        }
        let longest = body.map_or(0, longest_value);
        if longest > self.max_log_body_bytes {
            return Err(Rejection::new(
                "body_too_long",
                format!(
                    "{what}: the body has {longest} bytes, more than the limit of {}",
                    self.max_log_body_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A time must be set, not older than the retention, and not too far ahead.
    pub(crate) fn time(&self, what: Item<'_>, field: &str, time_ns: u64) -> Result<(), Rejection> {
        if time_ns == 0 {
            return Err(Rejection::new(
                "missing_time",
                format!("{what}: {field} is not set"),
            ));
        }
        if time_ns < self.oldest_ns {
            return Err(Rejection::new(
                "too_old",
                format!("{what}: {field} {time_ns} is older than the retention"),
            ));
        }
        if time_ns > self.latest_ns {
            return Err(Rejection::new(
                "in_future",
                format!("{what}: {field} {time_ns} is too far in the future"),
            ));
        }
        Ok(())
    }

    /// A free-text field must fit the attribute value limit.
    pub(crate) fn text(&self, what: Item<'_>, field: &str, value: &str) -> Result<(), Rejection> {
        if value.len() > self.max_value_bytes {
            return Err(Rejection::new(
                "attribute_too_long",
                format!(
                    "{what}: {field} has {} bytes, more than the limit of {}",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// At most `max_attributes` attributes, every string at most `max_value_bytes`.
    pub(crate) fn attributes(
        &self,
        what: Item<'_>,
        attributes: &[KeyValue],
    ) -> Result<(), Rejection> {
        if attributes.len() > self.max_attributes {
            return Err(Rejection::new(
                "too_many_attributes",
                format!(
                    "{what}: {} attributes, more than the limit of {}",
                    attributes.len(),
                    self.max_attributes
                ),
            ));
        }
        let values: usize = attributes
            .iter()
            .map(|kv| kv.value.as_ref().map_or(0, elements))
            .sum();
        if values > self.max_value_elements {
            return Err(self.too_many_values(what, "its attributes", values));
        }
        for attribute in attributes {
            if attribute.key.len() > self.max_name_bytes {
                return Err(Rejection::new(
                    "name_too_long",
                    format!(
                        "{what}: an attribute key has {} bytes, more than the limit of {}",
                        attribute.key.len(),
                        self.max_name_bytes
                    ),
                ));
            }
            let longest = attribute.value.as_ref().map_or(0, longest_value);
            if longest > self.max_value_bytes {
                return Err(Rejection::new(
                    "attribute_too_long",
                    format!(
                        "{what}: attribute {:?} has a value of {longest} bytes, more than the limit of {}",
                        attribute.key, self.max_value_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Rules {
    fn too_many_values(&self, what: Item<'_>, whose: &str, values: usize) -> Rejection {
        Rejection::new(
            "too_many_values",
            format!(
                "{what}: {whose} hold {values} values (arrays and lists count each element), \
                 more than the limit of {}",
                self.max_value_elements
            ),
        )
    }
}

/// Values in `value`: itself and every element of its arrays and lists, at
/// any depth.
fn elements(value: &AnyValue) -> usize {
    1 + match &value.value {
        Some(any_value::Value::ArrayValue(array)) => array.values.iter().map(elements).sum(),
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .map(|kv| kv.value.as_ref().map_or(0, elements))
            .sum(),
        _ => 0,
    }
}

/// The longest string or bytes value inside `value`, nested ones included.
fn longest_value(value: &AnyValue) -> usize {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.len(),
        Some(any_value::Value::BytesValue(b)) => b.len(),
        Some(any_value::Value::ArrayValue(array)) => {
            array.values.iter().map(longest_value).max().unwrap_or(0)
        }
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .map(longest_value)
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// A trace id must be 16 bytes and not all zero.
pub(crate) fn trace_id(what: Item<'_>, id: &[u8]) -> Result<(), Rejection> {
    id_of_length(what, "trace_id", id, 16)
}

/// A span id must be 8 bytes and not all zero.
pub(crate) fn span_id(what: Item<'_>, field: &str, id: &[u8]) -> Result<(), Rejection> {
    id_of_length(what, field, id, 8)
}

fn id_of_length(what: Item<'_>, field: &str, id: &[u8], length: usize) -> Result<(), Rejection> {
    if id.len() != length || id.iter().all(|&b| b == 0) {
        return Err(Rejection::new(
            "invalid_id",
            format!(
                "{what}: {field} must be {length} bytes, not all zero; got {} bytes",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// A value that must be a finite number.
pub(crate) fn finite(what: Item<'_>, field: &str, value: f64) -> Result<(), Rejection> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Rejection::new(
            "not_finite",
            format!("{what}: {field} is {value}, not a finite number"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::string_attribute;

    const SPAN: Item<'static> = Item {
        kind: "span",
        name: "",
    };
    const P: Item<'static> = Item {
        kind: "p",
        name: "",
    };
    const S: Item<'static> = Item {
        kind: "s",
        name: "",
    };

    #[test]
    fn a_refusal_without_items_is_a_warning_not_a_count() {
        let mut rejections = Rejections::default();
        assert_eq!(rejections.message("data points"), "");
        rejections.add(Rejection::new("no_data", "metric \"size\": has no data"), 0);
        assert!(rejections.any());
        assert_eq!(rejections.count(), 0);
        assert_eq!(
            rejections.message("data points"),
            "no data points rejected, but: metric \"size\": has no data"
        );
        rejections.add(Rejection::new("nan", "a point is NaN"), 2);
        assert_eq!(
            rejections.message("data points"),
            "2 data points rejected: metric \"size\": has no data; a point is NaN"
        );
    }

    #[test]
    fn items_name_themselves_only_when_named() {
        assert_eq!(
            Item::new("span", "GET /pay").to_string(),
            "span \"GET /pay\""
        );
        assert_eq!(Item::new("log record", "").to_string(), "log record");
    }

    fn rules() -> Rules {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        Rules::new(&CollectorConfig::default(), now)
    }

    #[test]
    fn log_bodies_must_fit_their_limit() {
        let rules = rules();
        let what = Item::new("log record", "");
        let text = |n: usize| AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(n))),
        };
        assert_eq!(rules.body(what, Some(&text(65_536))), Ok(()));
        assert_eq!(rules.body(what, None), Ok(()));
        assert_eq!(
            rules.body(what, Some(&text(65_537))),
            Err(Rejection::new(
                "body_too_long",
                "log record: the body has 65537 bytes, more than the limit of 65536"
            ))
        );
    }

    #[test]
    fn times_must_be_within_retention_and_an_hour_ahead() {
        let rules = rules();
        let now_ns = 1_000_000_000 * 1_000_000_000u64;
        let hour = 3_600 * 1_000_000_000u64;
        assert!(rules.time(SPAN, "end", now_ns + hour).is_ok());
        assert!(rules.time(SPAN, "end", now_ns - 30 * 24 * hour).is_ok());
        assert_eq!(
            rules
                .time(SPAN, "end", now_ns + hour + 1)
                .unwrap_err()
                .reason,
            "in_future"
        );
        let old = rules
            .time(SPAN, "end", now_ns - 30 * 24 * hour - 1)
            .unwrap_err();
        assert_eq!(old.reason, "too_old");
        assert!(old.message.starts_with("span: end "), "{}", old.message);
        assert_eq!(
            rules.time(SPAN, "end", 0).unwrap_err().message,
            "span: end is not set"
        );
    }

    #[test]
    fn attribute_limits_look_inside_nested_values() {
        let rules = rules();
        let long = "x".repeat(4097);
        assert!(
            rules
                .attributes(P, &[string_attribute("k", &"x".repeat(4096))])
                .is_ok()
        );
        let error = rules
            .attributes(P, &[string_attribute("k", &long)])
            .unwrap_err();
        assert_eq!(
            error.message,
            "p: attribute \"k\" has a value of 4097 bytes, more than the limit of 4096"
        );
        let nested = KeyValue {
            key: "list".to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![string_attribute("_", &long).value.unwrap()],
                    },
                )),
            }),
            ..Default::default()
        };
        assert_eq!(
            rules.attributes(P, &[nested]).unwrap_err().reason,
            "attribute_too_long"
        );
        let many: Vec<KeyValue> = (0..129)
            .map(|i| string_attribute(&i.to_string(), "v"))
            .collect();
        assert_eq!(
            rules.attributes(P, &many).unwrap_err().reason,
            "too_many_attributes"
        );
    }

    #[test]
    fn ids_must_have_their_length_and_not_be_zero() {
        assert!(trace_id(S, &[1; 16]).is_ok());
        assert_eq!(
            trace_id(S, &[1; 15]).unwrap_err().message,
            "s: trace_id must be 16 bytes, not all zero; got 15 bytes"
        );
        assert!(trace_id(S, &[0; 16]).is_err());
        assert!(span_id(S, "span_id", &[0; 8]).is_err());
        assert!(span_id(S, "span_id", &[9; 8]).is_ok());
    }

    #[test]
    fn the_message_quotes_five_and_counts_all() {
        let mut rejections = Rejections::default();
        assert_eq!(rejections.message("spans"), "");
        for i in 0..7 {
            rejections.add(Rejection::new("r", format!("m{i}")), 1);
        }
        rejections.add(Rejection::new("r", "m7"), 3);
        assert_eq!(rejections.count(), 10);
        assert_eq!(
            rejections.message("spans"),
            "10 spans rejected: m0; m1; m2; m3; m4; and 5 more"
        );
        // A quoted message may stand for several items.
        let mut batch = Rejections::default();
        batch.add(Rejection::new("r", "a batch"), 3);
        batch.add(Rejection::new("r", "one"), 1);
        assert_eq!(batch.message("events"), "4 events rejected: a batch; one");
    }
}
