//! Silences: label matchers that mute the notifications of the alerts they
//! match between a start and an end, or, when recurring, during each
//! window of a cron schedule (nightly maintenance) between the two.
//! Managed through the API (`GET|POST /api/v1/silences`,
//! `DELETE /api/v1/silences/{id}`) and kept in the store
//! ([`Collection::Silence`](crate::alert::Collection)); the alerter reads
//! them back every few seconds.

use std::collections::BTreeMap;

use crate::signal::{Matcher, is_label_name};
use crate::time::Cron;
use serde::{Deserialize, Serialize};

/// A recurring window: it opens at each time of `cron` and stays open for
/// `duration_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurring {
    pub cron: Cron,
    pub duration_ms: u64,
}

/// A silence as stored and shown (times in unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    #[serde(rename = "starts_at")]
    pub starts_at_ms: u64,
    #[serde(rename = "ends_at")]
    pub ends_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring: Option<Recurring>,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    /// Whether it mutes at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        if !(self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms) {
            return false;
        }
        match &self.recurring {
            None => true,
            Some(recurring) => {
                // The window that opened last before now, if it is still open.
                let now_s = now_ms / 1_000;
                let duration_s = recurring.duration_ms.div_ceil(1_000);
                let opened = recurring
                    .cron
                    .next_after(now_s.saturating_sub(duration_s + 60));
                let mut open = opened;
                while let Some(at) = open {
                    if at > now_s {
                        return false;
                    }
                    if now_ms < at * 1_000 + recurring.duration_ms {
                        return true;
                    }
                    open = recurring.cron.next_after(at);
                }
                false
            }
        }
    }

    /// `active`, `pending` (not started) or `expired`; a recurring silence
    /// between its windows is `pending`.
    pub fn status(&self, now_ms: u64) -> &'static str {
        if now_ms >= self.ends_at_ms {
            "expired"
        } else if self.is_active(now_ms) {
            "active"
        } else {
            "pending"
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Why a silence is refused.
pub fn check(silence: &Silence) -> Result<(), (&'static str, String)> {
    if silence.matchers.is_empty() {
        return Err(("matchers", "at least one matcher is needed".into()));
    }
    if silence
        .matchers
        .iter()
        .all(|m| m.value.is_empty() && m.is_equal)
    {
        return Err((
            "matchers",
            "the matchers would match every alert; name at least one label value".into(),
        ));
    }
    if let Some(bad) = silence.matchers.iter().find(|m| !is_label_name(&m.name)) {
        return Err((
            "matchers",
            format!(
                "{:?} is not a label name (letters, digits, '.', '_', '-')",
                bad.name
            ),
        ));
    }
    if silence.created_by.trim().is_empty() {
        return Err(("created_by", "say who creates the silence".into()));
    }
    if silence.ends_at_ms <= silence.starts_at_ms {
        return Err(("ends_at", "must be after starts_at".into()));
    }
    if let Some(recurring) = &silence.recurring
        && !(60_000..=7 * 86_400_000).contains(&recurring.duration_ms)
    {
        return Err((
            "recurring.duration",
            "each window must last between 1m and 7d".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    /// 2026-11-22T00:00:00Z.
    const DAY0: u64 = 1_795_305_600_000;

    fn silence(recurring: Option<Recurring>) -> Silence {
        Silence {
            id: "s1".into(),
            matchers: vec![Matcher::equal("vigil.unit", "u1")],
            starts_at_ms: DAY0,
            ends_at_ms: DAY0 + 3 * 24 * HOUR,
            recurring,
            created_by: "sre".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn a_silence_mutes_between_start_and_end() {
        let s = silence(None);
        assert!(!s.is_active(DAY0 - 1));
        assert!(s.is_active(DAY0));
        assert!(s.is_active(DAY0 + 72 * HOUR - 1));
        assert_eq!(s.status(DAY0 + 72 * HOUR), "expired");
        let labels = BTreeMap::from([("vigil.unit".to_owned(), "u1".to_owned())]);
        assert!(s.matches(&labels));
        assert!(!s.matches(&BTreeMap::new()));
    }

    #[test]
    fn a_recurring_silence_mutes_in_each_window() {
        // Nightly from 02:00 for 90 minutes, for three days.
        let s = silence(Some(Recurring {
            cron: Cron::try_from("0 2 * * *".to_owned()).expect("cron"),
            duration_ms: 90 * 60_000,
        }));
        let at = |hours: f64| DAY0 + (hours * HOUR as f64) as u64;
        let active: Vec<bool> = [1.99, 2.0, 3.0, 3.49, 3.5, 12.0, 26.0, 27.4, 27.6, 74.0]
            .iter()
            .map(|&h| s.is_active(at(h)))
            .collect();
        assert_eq!(
            active,
            vec![
                false, true, true, true, false, false, true, true, false, false
            ]
        );
        assert_eq!(s.status(at(12.0)), "pending");
        assert_eq!(s.status(at(74.0)), "expired");
    }

    #[test]
    fn bad_silences_name_the_field() {
        let mut s = silence(None);
        s.ends_at_ms = s.starts_at_ms;
        assert_eq!(
            check(&s),
            Err(("ends_at", "must be after starts_at".into()))
        );
        let mut s = silence(None);
        s.matchers[0].value.clear();
        assert_eq!(check(&s).map_err(|e| e.0), Err("matchers"));
        assert_eq!(check(&silence(None)), Ok(()));
    }
}
