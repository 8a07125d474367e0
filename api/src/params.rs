//! Query-string parameters: only the ones a path takes, each at most once,
//! and the times and durations the API contract allows.
//!
//! Times are RFC 3339 (`2026-11-22T07:30:00Z`, `…+01:00`, fractions of a
//! second), unix milliseconds, `now`, `now-<duration>` or `now+<duration>`. Durations are
//! milliseconds, or a number with a unit: `ms`, `s`, `m`, `h`, `d`.

use vigil_domain::signal::{is_label_name, parse_filter};
use vigil_domain::time::{parse_duration_ms, parse_rfc3339};

use crate::error::BadParameter;

/// `id` lower-cased, if it is `digits` hex digits (a trace or span id).
pub fn hex_id(id: &str, digits: usize) -> Option<String> {
    (id.len() == digits && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// The parameters of one request.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    now_ms: u64,
}

impl Params {
    /// Parses a raw query string, refusing names not in `allowed` and names
    /// given twice. `now_ms` is what `now` means.
    pub fn parse(raw: Option<&str>, allowed: &[&str], now_ms: u64) -> Result<Params, BadParameter> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(BadParameter::new(
                    name,
                    format!("unknown parameter; this path takes {}", allowed.join(", ")),
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(BadParameter::new(name, "given twice; give it once"));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params { pairs, now_ms })
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// The value of `name` as a string, if given.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// The time range `from`..`to` in unix milliseconds, by default the
    /// `default_ms` before now; `from` must be before `to`.
    pub fn range(&self, default_ms: u64) -> Result<(u64, u64), BadParameter> {
        let to = self.time("to")?.unwrap_or(self.now_ms);
        let from = self.time("from")?.unwrap_or(to.saturating_sub(default_ms));
        if from >= to {
            return Err(BadParameter::new("from", "must be before to"));
        }
        Ok((from, to))
    }

    /// The time `name` in unix milliseconds, if given.
    pub fn time(&self, name: &str) -> Result<Option<u64>, BadParameter> {
        self.get(name)
            .map(|text| {
                parse_time(text, self.now_ms).ok_or_else(|| {
                    BadParameter::new(
                        name,
                        format!(
                            "{text:?} is not a time: use RFC 3339 (2026-11-22T07:30:00Z), unix ms or now-<duration> (now-15m)"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A comma-separated list of label names, if given.
    pub fn labels(&self, name: &str) -> Result<Option<Vec<String>>, BadParameter> {
        self.get(name)
            .map(|list| {
                list.split(',')
                    .map(|key| {
                        let key = key.trim();
                        is_label_name(key).then(|| key.to_owned()).ok_or_else(|| {
                            BadParameter::new(name, format!("{key:?} is not a label name"))
                        })
                    })
                    .collect()
            })
            .transpose()
    }

    /// The `key="value"` matchers of `name`, written as `filter` writes
    /// them; equalities only.
    pub fn equalities(&self, name: &str) -> Result<Vec<(String, String)>, BadParameter> {
        parse_filter(self.get(name).unwrap_or(""))
            .map_err(|e| BadParameter::new(name, e))?
            .into_iter()
            .map(|matcher| {
                if matcher.is_equal {
                    Ok((matcher.name, matcher.value))
                } else {
                    Err(BadParameter::new(
                        name,
                        format!(
                            "{}: only key=\"value\" matchers are supported here",
                            matcher.name
                        ),
                    ))
                }
            })
            .collect()
    }

    /// A trace or span id of `digits` hex digits, lower-cased.
    pub fn hex_id(&self, name: &str, digits: usize) -> Result<Option<String>, BadParameter> {
        self.get(name)
            .map(|id| {
                hex_id(id, digits)
                    .ok_or_else(|| BadParameter::new(name, format!("must be {digits} hex digits")))
            })
            .transpose()
    }

    /// A duration in milliseconds.
    pub fn duration_ms(&self, name: &str) -> Result<Option<u64>, BadParameter> {
        self.get(name)
            .map(|text| {
                parse_duration_ms(text).ok_or_else(|| {
                    BadParameter::new(
                        name,
                        format!(
                            "{text:?} is not a duration: use ms (60000) or a unit (1m, 10s, 1h, 7d)"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A whole number between `min` and `max`.
    pub fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, BadParameter> {
        self.get(name)
            .map(|text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        BadParameter::new(
                            name,
                            format!("must be a whole number from {min} to {max}, got {text:?}"),
                        )
                    })
            })
            .transpose()
    }

    /// `true` or `false`.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, BadParameter> {
        self.get(name)
            .map(|text| match text {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(BadParameter::new(
                    name,
                    format!("must be true or false, got {text:?}"),
                )),
            })
            .transpose()
    }
}

/// A time in unix milliseconds.
pub fn parse_time(text: &str, now_ms: u64) -> Option<u64> {
    if text == "now" {
        return Some(now_ms);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        return now_ms.checked_sub(parse_duration_ms(ago)?);
    }
    if let Some(ahead) = text.strip_prefix("now+") {
        return now_ms.checked_add(parse_duration_ms(ahead)?);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    parse_rfc3339(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn times_parse_in_every_form() {
        assert_eq!(
            parse_time("2026-11-22T07:30:00Z", NOW),
            Some(1_795_332_600_000)
        );
        assert_eq!(
            parse_time("2026-11-22T08:30:00.25+01:00", NOW),
            Some(1_795_332_600_250)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z", NOW), Some(0));
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z", NOW),
            Some(951_868_800_000)
        );
        assert_eq!(parse_time("1795332600000", NOW), Some(1_795_332_600_000));
        assert_eq!(parse_time("now", NOW), Some(NOW));
        assert_eq!(parse_time("now-15m", NOW), Some(NOW - 900_000));
        assert_eq!(parse_time("now+1m", NOW), Some(NOW + 60_000));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-22T07:30:00",
            "2026-11-22T07:30:00+0100",
            "2026-11-22T07:30:00.Z",
            "now-5y",
            "-5",
        ] {
            assert_eq!(parse_time(bad, NOW), None, "{bad}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused_by_name() {
        let error = Params::parse(Some("from=1&limt=5"), &["from", "limit"], NOW).unwrap_err();
        assert_eq!(error.parameter, "limt");
        assert_eq!(
            error.reason,
            "unknown parameter; this path takes from, limit"
        );
        let error = Params::parse(Some("limit=1&limit=2"), &["limit"], NOW).unwrap_err();
        assert_eq!(error.parameter, "limit");
        let params = Params::parse(Some("from=now-1h&limit=7"), &["from", "limit"], NOW).unwrap();
        assert_eq!(params.range(60_000).unwrap(), (NOW - 3_600_000, NOW));
        assert_eq!(params.number("limit", 1, 10).unwrap(), Some(7));
        assert!(params.number("from", 1, 10).is_err());
        let params = Params::parse(Some("from=now&to=now-1m"), &["from", "to"], NOW).unwrap();
        assert_eq!(params.range(60_000).unwrap_err().parameter, "from");
    }
}
