//! Crash groups across an app's releases: the order of versions and
//! whether a group is new in a version, back after one without it, or
//! ongoing — the states Sentry's and Crashlytics' issues have.

use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Orders app versions as people read them: runs of digits as numbers
/// (`5.10` after `5.9`), other runs as text, and a pre-release (after a
/// `-`) before its release (`2.0-rc1` before `2.0`). Any string is a
/// version: app stores accept more than semantic versions (`5.1 (812)`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_release, a_pre) = split_pre(a);
    let (b_release, b_pre) = split_pre(b);
    natural(a_release, b_release)
        .then_with(|| match (a_pre, b_pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => natural(a, b),
        })
        .then_with(|| a.cmp(b))
}

fn split_pre(version: &str) -> (&str, Option<&str>) {
    match version.split_once('-') {
        Some((release, pre)) => (release, Some(pre)),
        None => (version, None),
    }
}

/// Compares runs of digits by value, other runs byte by byte.
fn natural(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (runs(a), runs(b));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
                let order = if digits(x) && digits(y) {
                    let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                } else {
                    x.cmp(y)
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The maximal runs of digits and of other characters, in order.
fn runs(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

/// Where a crash group stands in a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashState {
    /// No earlier version had it.
    New,
    /// An earlier version had it, and a version after that one and before
    /// this one did not.
    Regressed,
    /// The version before this one had it too (or every version since it
    /// first appeared did).
    Ongoing,
}

impl CrashState {
    pub fn as_str(self) -> &'static str {
        match self {
            CrashState::New => "new",
            CrashState::Regressed => "regressed",
            CrashState::Ongoing => "ongoing",
        }
    }

    pub fn parse(name: &str) -> Option<CrashState> {
        [CrashState::New, CrashState::Regressed, CrashState::Ongoing]
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// The state in `version` of a group seen in the versions `seen`,
    /// among the app's `versions` (every version with telemetry, in any
    /// order; `seen` need not be among them).
    pub fn of<'a>(
        version: &str,
        seen: impl IntoIterator<Item = &'a str>,
        versions: impl IntoIterator<Item = &'a str>,
    ) -> CrashState {
        let earlier = |v: &&str| compare_versions(v, version) == Ordering::Less;
        let seen: BTreeSet<&str> = seen.into_iter().filter(earlier).collect();
        let Some(last_seen) = seen.iter().copied().max_by(|a, b| compare_versions(a, b)) else {
            return CrashState::New;
        };
        let gap = versions
            .into_iter()
            .filter(earlier)
            .any(|v| compare_versions(v, last_seen) == Ordering::Greater && !seen.contains(v));
        if gap {
            CrashState::Regressed
        } else {
            CrashState::Ongoing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_as_people_read_them() {
        let mut versions = vec![
            "5.10",
            "5.9",
            "2.0",
            "2.0-rc1",
            "2.0-rc10",
            "2.0-rc2",
            "10.0",
            "5.1 (812)",
            "5.1",
            "05.1.1",
        ];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            versions,
            [
                "2.0-rc1",
                "2.0-rc2",
                "2.0-rc10",
                "2.0",
                "5.1",
                "5.1 (812)",
                "05.1.1",
                "5.9",
                "5.10",
                "10.0"
            ]
        );
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0", "01.0"), Ordering::Greater);
    }

    #[test]
    fn a_group_is_new_regressed_or_ongoing() {
        let versions = ["1.0", "1.1", "1.2", "1.3"];
        let state = |version: &str, seen: &[&str]| {
            CrashState::of(version, seen.iter().copied(), versions.iter().copied())
        };
        assert_eq!(state("1.2", &["1.2"]), CrashState::New);
        assert_eq!(state("1.2", &["1.2", "1.3"]), CrashState::New);
        assert_eq!(state("1.2", &["1.1", "1.2"]), CrashState::Ongoing);
        assert_eq!(state("1.2", &["1.0", "1.1", "1.2"]), CrashState::Ongoing);
        assert_eq!(state("1.2", &["1.0", "1.2"]), CrashState::Regressed);
        assert_eq!(state("1.3", &["1.0", "1.2", "1.3"]), CrashState::Ongoing);
        // Versions the app had are the gaps; a version it never had is not.
        assert_eq!(state("1.10", &["1.0", "1.3", "1.10"]), CrashState::Ongoing);
        assert_eq!(state("1.3", &["1.0", "1.3"]), CrashState::Regressed);
        assert_eq!(CrashState::parse("regressed"), Some(CrashState::Regressed));
        assert_eq!(CrashState::parse("resolved"), None);
    }
}
