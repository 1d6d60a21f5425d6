//! Points in time as the queue sees them.
//!
//! A [`Timestamp`] is a count of microseconds since the Unix epoch. Microseconds
//! are Postgres's `timestamptz` resolution, so a time computed by the in-memory
//! model and the same time computed by Postgres compare equal: the conformance
//! suite depends on that.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp from whole seconds since the Unix epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs * 1_000_000)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// The signed distance `self - other` in microseconds.
    pub fn micros_since(self, other: Timestamp) -> i64 {
        self.0.saturating_sub(other.0)
    }
}

/// Converts a duration to whole microseconds, saturating at `i64::MAX`.
pub fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Serde for `Option<Duration>` as whole microseconds (`null` for none): how
/// job time limits appear in JSON, matching the `timeout_us` column.
pub mod micros_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole microseconds, or null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    /// Reads whole microseconds, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

/// Formats a duration for people: `850ms`, `42s`, `4m 30s`, `2h 5m`,
/// `3d 4h`; what `last_error` says a job timed out after, and what the CLI
/// prints.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.as_millis() {
            0 => format!("{}µs", d.as_micros()),
            ms => format!("{ms}ms"),
        };
    }
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) if seconds == 0 => format!("{minutes}m"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d {hours}h"),
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_micros(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_micros(rhs)))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-29T02:44:00.000000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.rem_euclid(1_000_000);
        let secs = self.0.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Days since the epoch to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm), so formatting needs no date crate.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's time limit crosses JSON as whole microseconds, or null
    /// (cargo-mutants found reading it back as `None` passed every test).
    #[test]
    fn micros_opt_round_trips_a_time_limit() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Limit(#[serde(with = "micros_opt")] Option<Duration>);
        for limit in [Some(Duration::from_micros(1_500_001)), None] {
            let json = serde_json::to_string(&Limit(limit)).unwrap();
            assert_eq!(
                serde_json::from_str::<Limit>(&json).unwrap(),
                Limit(limit),
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Limit(Some(Duration::from_secs(2)))).unwrap(),
            "2000000"
        );
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp::from_micros(1_795_920_240_123_456).to_string(),
            "2026-11-29T02:44:00.123456Z"
        );
        assert_eq!(
            Timestamp::from_secs(-1).to_string(),
            "1969-12-31T23:59:59.000000Z"
        );
    }

    /// Every day from 1600 to 2500 against a calendar counted one day at a
    /// time, century and 400-year leap rules included (cargo-mutants: two
    /// operators of the year-of-era formula changed only dates near century
    /// boundaries, which the known instants above do not reach).
    #[test]
    fn civil_dates_match_a_calendar_counted_day_by_day() {
        let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u32| match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        // 1600-01-01 is 135,140 days before 1970-01-01.
        let (mut y, mut m, mut d) = (1600_i64, 1_u32, 1_u32);
        for days in -135_140..194_000_i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!(y, 2501, "the loop covers 1600 to 2500");
    }

    #[test]
    fn human_durations_read_as_people_write_them() {
        let cases = [
            (Duration::from_micros(7), "7µs"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_secs(42), "42s"),
            (Duration::from_secs(15 * 60), "15m"),
            (Duration::from_secs(270), "4m 30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(7500), "2h 5m"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600), "3d 4h"),
        ];
        for (d, text) in cases {
            assert_eq!(human(d), text, "{d:?}");
        }
    }

    #[test]
    fn arithmetic_saturates_and_keeps_micros() {
        let t = Timestamp::from_secs(10);
        assert_eq!((t + Duration::from_micros(1)).as_micros(), 10_000_001);
        assert_eq!(t.saturating_since(t + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            (t + Duration::from_secs(2)).saturating_since(t),
            Duration::from_secs(2)
        );
    }
}
