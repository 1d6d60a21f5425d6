//! Small parsers and formatters shared by the commands: durations, instants,
//! `kind=value` pairs. Durations and RFC 3339 instants are parsed by jiff.

use std::time::Duration;

use anyhow::{bail, Context};
use stuckless_core::Timestamp;

/// Longest duration a flag accepts.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parses `1500ms`, `30s`, `2m`, `2min`, `1h`, `1h30m`, `0.5s`, days (`2d`,
/// `1d12h`, `1d 12h`, a day being 24 hours), ISO 8601 (`PT30S`, `P1D`) or a
/// bare number of seconds (`30`, `1.5`). Everything [`human_duration`]
/// prints parses back.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let hint = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 2m, 1h30m, 2d");
    if t.is_empty() {
        bail!(hint());
    }
    // A bare number is seconds, as it has always been for these flags.
    let bare = t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let with_unit = if bare { format!("{t}s") } else { t.to_owned() };
    let signed = match with_unit.parse::<jiff::SignedDuration>() {
        Ok(signed) => signed,
        // jiff's absolute duration refuses days (not every calendar day is
        // 24 hours); a span takes them, and for a timeout or a retention age
        // a day is 24 hours. Months and years stay refused: they have no
        // fixed length.
        Err(_) => with_unit
            .parse::<jiff::Span>()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
            .with_context(hint)?,
    };
    if signed.is_negative() {
        bail!("invalid duration {text:?}: must not be negative");
    }
    let d = Duration::try_from(signed).with_context(hint)?;
    if d > MAX_DURATION {
        bail!("invalid duration {text:?}: out of range (at most 10 years)");
    }
    Ok(d)
}

/// clap value parser wrapper for [`parse_duration`].
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("{e:#}"))
}

/// clap value parser of a lease: a duration the core accepts as a lease
/// (at most [`stuckless_core::limits::MAX_LEASE`]), refused with the core's
/// own reason so `--lease 2400h` is an error, not a stuck quarter.
pub fn lease_arg(text: &str) -> Result<Duration, String> {
    let d = duration_arg(text)?;
    stuckless_core::validate_lease("lease", d).map_err(|e| e.to_string())?;
    Ok(d)
}

/// A limit on one attempt, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeLimit {
    /// No limit: a hung handler runs until its worker stops.
    Off,
    /// Cancel the attempt after this long.
    After(Duration),
}

impl TimeLimit {
    /// The limit as the core's builder takes it.
    pub fn as_option(self) -> Option<Duration> {
        match self {
            TimeLimit::Off => None,
            TimeLimit::After(d) => Some(d),
        }
    }
}

/// Parses a time limit: a duration the core accepts as one (1 µs to 7 days),
/// or `off` / `none` for no limit.
pub fn parse_time_limit(text: &str) -> anyhow::Result<TimeLimit> {
    if matches!(text.trim().to_ascii_lowercase().as_str(), "off" | "none") {
        return Ok(TimeLimit::Off);
    }
    let d = parse_duration(text)?;
    stuckless_core::validate_timeout("time limit", d)?;
    Ok(TimeLimit::After(d))
}

/// clap value parser wrapper for [`parse_time_limit`].
pub fn time_limit_arg(text: &str) -> Result<TimeLimit, String> {
    parse_time_limit(text).map_err(|e| format!("{e:#}"))
}

/// Formats a duration for people: `850ms`, `42s`, `4m 30s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: Duration) -> String {
    stuckless_core::time::human(d)
}

/// Parses an instant: microseconds since the epoch, or RFC 3339 in UTC
/// (`2026-11-29T02:44:00Z` or `+00:00`, fractional seconds allowed).
pub fn parse_timestamp(text: &str) -> anyhow::Result<Timestamp> {
    let t = text.trim();
    if let Ok(micros) = t.parse::<i64>() {
        return Ok(Timestamp::from_micros(micros));
    }
    let bad = || format!("invalid time {text:?}: expected RFC 3339 in UTC like 2026-11-29T02:44:00Z");
    // Every time the CLI prints is UTC; an instant with another offset is
    // more likely a local time pasted by mistake than meant.
    if !(t.ends_with(['Z', 'z']) || t.ends_with("+00:00")) {
        bail!(bad());
    }
    let instant: jiff::Timestamp = t.parse().with_context(bad)?;
    Ok(Timestamp::from_micros(instant.as_microsecond()))
}

/// Parses `kind=value` (the form of `--handler` and `--kind-timeout`).
pub fn parse_pair(text: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = text
        .split_once('=')
        .with_context(|| format!("expected KIND=VALUE, got {text:?}"))?;
    if k.trim().is_empty() || v.trim().is_empty() {
        bail!("expected KIND=VALUE, got {text:?}");
    }
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// The system's wall clock as a [`Timestamp`] (for log lines).
pub fn wall_now() -> Timestamp {
    Timestamp::from_micros(jiff::Timestamp::now().as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_every_documented_form() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1500ms", ms(1500)),
            ("30s", ms(30_000)),
            ("30", ms(30_000)),
            ("1.5", ms(1500)),
            (" 8s ", ms(8000)),
            ("2m", ms(120_000)),
            ("2min", ms(120_000)),
            ("10m", ms(600_000)),
            ("1h", ms(3_600_000)),
            ("1h30m", ms(5_400_000)),
            ("1h 30m", ms(5_400_000)),
            ("0.5s", ms(500)),
            ("PT30S", ms(30_000)),
            ("0s", ms(0)),
            ("2d", ms(2 * 86_400_000)),
            ("1d12h", ms(36 * 3_600_000)),
            ("1d 12h", ms(36 * 3_600_000)),
            ("1 day", ms(86_400_000)),
            ("7days", ms(7 * 86_400_000)),
            ("P1D", ms(86_400_000)),
            ("1w", ms(7 * 86_400_000)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_reason() {
        for bad in [
            "",
            "abc",
            "5 parsecs",
            "forever",
            "1e400s",
            "s",
            "1.2.3",
            "1mo",
            "2y",
            "d",
        ] {
            let e = format!("{:#}", parse_duration(bad).unwrap_err());
            assert!(
                e.starts_with(&format!("invalid duration {bad:?}")),
                "{bad:?}: {e}"
            );
        }
        let e = parse_duration("-1s").unwrap_err().to_string();
        assert!(e.contains("must not be negative"), "{e}");
        let e = parse_duration("100000h").unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        // clap shows the whole chain.
        assert!(duration_arg("x").unwrap_err().contains("invalid duration \"x\""));
    }

    #[test]
    fn what_is_printed_parses_back() {
        for secs in [
            1,
            59,
            60,
            270,
            3600,
            7500,
            86_400,
            3 * 86_400 + 4 * 3600,
            7 * 86_400,
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(
                parse_duration(&human_duration(d)).unwrap(),
                d,
                "{}",
                human_duration(d)
            );
        }
    }

    #[test]
    fn leases_are_capped_at_the_cores_limit_with_the_reason() {
        assert_eq!(lease_arg("24h").unwrap(), stuckless_core::limits::MAX_LEASE);
        assert_eq!(lease_arg("1d").unwrap(), stuckless_core::limits::MAX_LEASE);
        for too_long in ["2400h", "1d1s", "2d"] {
            let e = lease_arg(too_long).unwrap_err();
            assert!(
                e.contains("invalid lease: must be at most 24h"),
                "{too_long}: {e}"
            );
        }
        assert!(lease_arg("soon").unwrap_err().contains("invalid duration"));
    }

    #[test]
    fn time_limits_take_off_or_a_duration_within_the_cores_bounds() {
        for off in ["off", "none", "OFF", " None "] {
            assert_eq!(parse_time_limit(off).unwrap(), TimeLimit::Off, "{off:?}");
        }
        assert_eq!(
            parse_time_limit("15m").unwrap(),
            TimeLimit::After(Duration::from_secs(900))
        );
        assert_eq!(
            parse_time_limit("7d").unwrap().as_option(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(TimeLimit::Off.as_option(), None);
        for bad in ["0s", "8d", "never"] {
            let e = time_limit_arg(bad).unwrap_err();
            assert!(e.contains("invalid"), "{bad}: {e}");
        }
        assert!(time_limit_arg("8d").unwrap_err().contains("between 1µs and 7d"));
    }

    #[test]
    fn durations_format_for_people() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(270)), "4m 30s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 4h"
        );
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let t = parse_timestamp("2026-11-29T02:44:00.123456Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-29T02:44:00.123456Z");
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00Z").unwrap(),
            Timestamp::UNIX_EPOCH
        );
        assert_eq!(parse_timestamp("42").unwrap(), Timestamp::from_micros(42));
        for same in [
            "2026-11-29T02:44:00+00:00",
            "2026-11-29 02:44:00Z",
            "2026-11-29t02:44:00z",
        ] {
            assert_eq!(
                parse_timestamp(same).unwrap().to_string(),
                "2026-11-29T02:44:00.000000Z",
                "{same:?}"
            );
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "yesterday",
            "2026-11-29T02:44:00",
            "2026-11-29T03:44:00+01:00",
            "2026-11-29",
        ] {
            let e = parse_timestamp(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid time {bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_wall_clock_is_now() {
        let a = wall_now().as_micros();
        let b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!((b - a).abs() < 5_000_000, "{a} vs {b}");
    }

    #[test]
    fn pairs_need_both_halves() {
        assert_eq!(
            parse_pair("report=http:https://x/y").unwrap().1,
            "http:https://x/y"
        );
        assert!(parse_pair("report").is_err());
        assert!(parse_pair("=noop").is_err());
    }
}
