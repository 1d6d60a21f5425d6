//! Small parsers and formatters shared by the commands: durations, instants,
//! `kind=value` pairs.

use std::time::Duration;

use anyhow::{bail, Context};
use stuckless_core::Timestamp;

/// Parses `1500ms`, `30s`, `2m`, `1h` or a bare number of seconds (`30`).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 2m, 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&seconds) {
        bail!("invalid duration {text:?}: out of range");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// clap value parser wrapper for [`parse_duration`].
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Formats a duration for people: `850ms`, `42s`, `4m 30s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) if seconds == 0 => format!("{minutes}m"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Parses an instant: microseconds since the epoch, or RFC 3339 in UTC
/// (`2026-11-29T02:44:00Z`, fractional seconds allowed).
pub fn parse_timestamp(text: &str) -> anyhow::Result<Timestamp> {
    let t = text.trim();
    if let Ok(micros) = t.parse::<i64>() {
        return Ok(Timestamp::from_micros(micros));
    }
    let bad = || format!("invalid time {text:?}: expected RFC 3339 in UTC like 2026-11-29T02:44:00Z");
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix("+00:00"))
        .with_context(bad)?;
    let (date, time) = t.split_once(['T', ' ']).with_context(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<&str> = hms.split(':').collect();
    if d.len() != 3 || h.len() != 3 || frac.len() > 6 || !frac.chars().all(|c| c.is_ascii_digit()) {
        bail!(bad());
    }
    let num = |s: &str| s.parse::<i64>().with_context(bad);
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm, ss) = (num(h[0])?, num(h[1])?, num(h[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mm > 59 || ss > 60 {
        bail!(bad());
    }
    let micros_frac = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<6}"))?
    };
    let days = days_from_civil(y, mo, da);
    Ok(Timestamp::from_micros(
        ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros_frac,
    ))
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "abc", "5 parsecs", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
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
        for bad in ["2026-13-01T00:00:00Z", "yesterday", "2026-11-29T02:44:00+02:00"] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} must be refused");
        }
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
