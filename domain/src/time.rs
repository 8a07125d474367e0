//! Time as users write it: durations with units (`250ms`, `30s`, `5m`),
//! calendar dates, and cron schedules, all in UTC. Shared by the API's
//! parameters, the prober's schedules and the alerter's recurring silences.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A duration in milliseconds: a whole number of ms, or a number and a unit
/// (`ms`, `s`, `m`, `h`, `d`).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit_ms)
}

/// A duration written with its unit (`250ms`, `2s`, `1m`); a bare number
/// is milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DurationSpec(pub Duration);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Millis;
        impl Visitor<'_> for Millis {
            type Value = DurationSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 250ms, 2s, 5m or 1h")
            }

            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<DurationSpec, E> {
                Ok(DurationSpec(Duration::from_millis(ms)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationSpec, E> {
                parse_duration_ms(text)
                    .map(|ms| DurationSpec(Duration::from_millis(ms)))
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_any(Millis)
    }
}

/// A unix time in ms as RFC 3339 in UTC, to the millisecond:
/// `2026-11-22T07:30:00.250Z`.
pub fn rfc3339(ms: u64) -> String {
    let seconds = ms / 1_000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        ms % 1_000
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` in unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let length = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if length == 0 {
            return None;
        }
        let first_three = format!("{:0<3}", &fraction[..length.min(3)]);
        millis = first_three.parse::<i64>().ok()?;
        rest = &fraction[length..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (hours, minutes) = (digits_of(&rest[1..3])?, digits_of(&rest[4..6])?);
            sign * (hours * 3_600 + minutes * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    u64::try_from(seconds * 1_000 + millis).ok()
}

fn digits_of(text: &str) -> Option<i64> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())?
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date (year, month 1..=12, day 1..=31) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// A cron schedule of five fields (minute, hour, day of month, month, day
/// of week) in UTC, as crontab(5) reads them: `*`, numbers, ranges `a-b`,
/// steps `*/n` and `a-b/n`, lists `a,b`, month and weekday names, weekday 7
/// for Sunday, and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
/// When both day fields are restricted, a day matching either runs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

/// How far ahead [`Cron::next_after`] looks: a schedule that matches no
/// day in five years (`0 0 30 2 *`) never runs.
const HORIZON_DAYS: i64 = 5 * 366;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses a schedule; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        };
        let mut weekdays = field("day of week", weekday, 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            text: text.trim().to_owned(),
            minutes: field("minute", minute, 0, 59, &[])?,
            hours: field("hour", hour, 0, 23, &[])?,
            days: field("day of month", day, 1, 31, &[])?,
            months: field("month", month, 1, 12, &MONTHS)?,
            weekdays,
            any_day: day == "*",
            any_weekday: weekday == "*",
        })
    }

    /// The first minute after `after_s` (unix seconds) the schedule
    /// matches, in unix seconds; `None` if none comes within five years.
    pub fn next_after(&self, after_s: u64) -> Option<u64> {
        let mut t = i64::try_from(after_s / 60 + 1).ok()? * 60;
        let first_day = t.div_euclid(86_400);
        while t.div_euclid(86_400) - first_day <= HORIZON_DAYS {
            let day = t.div_euclid(86_400);
            let (year, month, day_of_month) = civil_from_days(day);
            if !has(self.months, month) {
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                t = days_from_civil(year, month, 1) * 86_400;
                continue;
            }
            let weekday = (day + 4).rem_euclid(7);
            if !self.day_matches(day_of_month, weekday) {
                t = (day + 1) * 86_400;
                continue;
            }
            let hour = t.rem_euclid(86_400) / 3_600;
            if !has(self.hours, hour) {
                t = (t / 3_600 + 1) * 3_600;
                continue;
            }
            let minute = t.rem_euclid(3_600) / 60;
            if !has(self.minutes, minute) {
                t += 60;
                continue;
            }
            return u64::try_from(t).ok();
        }
        None
    }

    fn day_matches(&self, day_of_month: i64, weekday: i64) -> bool {
        let by_day = has(self.days, day_of_month);
        let by_weekday = has(self.weekdays, weekday);
        match (self.any_day, self.any_weekday) {
            (false, false) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }
}

impl TryFrom<String> for Cron {
    type Error = String;

    fn try_from(text: String) -> Result<Cron, String> {
        Cron::parse(&text)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl From<Cron> for String {
    fn from(cron: Cron) -> String {
        cron.text
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn has(set: u64, value: i64) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 64 && set & (1 << v) != 0)
}

/// One field as a bit set of the values it allows, `min..=max`.
fn field(name: &str, text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |part: &str| -> Result<u32, String> {
        let lower = part.to_ascii_lowercase();
        // Names count from the field's first value (jan = 1, sun = 0).
        let number = match names.iter().position(|n| *n == lower) {
            Some(i) => u32::try_from(i).unwrap_or(u32::MAX) + min,
            None => part
                .parse()
                .map_err(|_| format!("{name}: {part:?} is not a number or a name"))?,
        };
        if !(min..=max).contains(&number) {
            return Err(format!("{name}: {number} is outside {min}-{max}"));
        }
        Ok(number)
    };
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("{name}: step {step:?} is not a positive number"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((low, high)) => (value(low)?, value(high)?),
                None if step > 1 => (value(range)?, max),
                None => {
                    let single = value(range)?;
                    (single, single)
                }
            },
        };
        if low > high {
            return Err(format!("{name}: range {range:?} runs backwards"));
        }
        for v in (low..=high).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_332_600_250), "2026-11-22T07:30:00.250Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    fn at(year: i64, month: i64, day: i64, hour: i64, minute: i64) -> u64 {
        u64::try_from(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60)
            .unwrap()
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration_ms("60000"), Some(60_000));
        assert_eq!(parse_duration_ms("1m"), Some(60_000));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1.5h"), None);
        assert_eq!(parse_duration_ms("m"), None);
        assert_eq!(parse_duration_ms("99999999999999999999d"), None);
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in -800_000..800_000 {
            let (year, month, day_of_month) = civil_from_days(day);
            assert_eq!(days_from_civil(year, month, day_of_month), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn cron_finds_the_next_matching_minute() {
        let next = |text: &str, after: u64| Cron::parse(text).unwrap().next_after(after);
        // 2026-11-22 is a Sunday.
        let now = at(2026, 11, 22, 10, 17);
        assert_eq!(next("* * * * *", now), Some(now + 60));
        assert_eq!(next("*/5 * * * *", now), Some(at(2026, 11, 22, 10, 20)));
        assert_eq!(next("0 2 * * *", now), Some(at(2026, 11, 23, 2, 0)));
        assert_eq!(
            next("30 1-3 * * mon-fri", now),
            Some(at(2026, 11, 23, 1, 30))
        );
        assert_eq!(next("0 0 1 jan *", now), Some(at(2027, 1, 1, 0, 0)));
        assert_eq!(next("@weekly", now), Some(at(2026, 11, 29, 0, 0)));
        assert_eq!(next("0 12 * * 7", now), Some(at(2026, 11, 22, 12, 0)));
        assert_eq!(next("0 0 29 2 *", now), Some(at(2028, 2, 29, 0, 0)));
        // Both day fields restricted: the 1st of the month or any Friday.
        assert_eq!(next("0 0 1 * fri", now), Some(at(2026, 11, 27, 0, 0)));
        assert_eq!(next("0 0 30 2 *", now), None);
        // A matching minute is never returned for itself.
        assert_eq!(next("17 10 * * *", now), Some(at(2026, 11, 23, 10, 17)));
    }

    #[test]
    fn bad_cron_schedules_say_which_field() {
        let error = |text: &str| Cron::parse(text).unwrap_err();
        assert_eq!(
            error("* * *"),
            "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), got 3"
        );
        assert_eq!(error("60 * * * *"), "minute: 60 is outside 0-59");
        assert_eq!(
            error("* * * foo *"),
            "month: \"foo\" is not a number or a name"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "minute: step \"0\" is not a positive number"
        );
        assert_eq!(error("* 5-2 * * *"), "hour: range \"5-2\" runs backwards");
    }
}
