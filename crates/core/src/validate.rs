//! Input checks every storage shares, so bad input is refused the same way
//! everywhere and before anything is written.

use serde_json::Value;

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Input that no storage will accept; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(into = "OwnedValidationError")]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field.
    pub field: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ValidationError {
            field,
            reason: reason.into(),
        }
    }
}

/// Limits every storage enforces on input, so bad input is refused the same
/// way everywhere and before anything is written.
pub mod limits {
    /// Longest queue or kind name, in bytes.
    pub const MAX_NAME_BYTES: usize = 128;
    /// Longest idempotency key, in bytes.
    pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
    /// Largest payload, as compact JSON, in bytes (1 MiB).
    pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// Largest progress value, as compact JSON, in bytes (64 KiB).
    pub const MAX_PROGRESS_BYTES: usize = 64 * 1024;
    /// Largest checkpoint, as compact JSON, in bytes (1 MiB): a resumable
    /// job's saved state, not a place for its output.
    pub const MAX_CHECKPOINT_BYTES: usize = 1024 * 1024;
    /// Longest stored error message, in bytes; longer ones are truncated.
    pub const MAX_ERROR_BYTES: usize = 4096;
    /// Default attempts before a job is dead.
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
    /// Most attempts a job may allow.
    pub const MAX_MAX_ATTEMPTS: i32 = 1000;
    /// Earliest `run_at`: 0001-01-01T00:00:00Z. Postgres `timestamptz` cannot
    /// hold every `i64` of microseconds, so every storage refuses the same range.
    pub const MIN_TIMESTAMP_MICROS: i64 = -62_135_596_800_000_000;
    /// Latest `run_at`: 9999-12-31T23:59:59.999999Z.
    pub const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_799_999_999;
    /// Longest lease or retry delay: 100 years of 365 days. Longer ones would
    /// push a time past what every storage can represent.
    pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    /// Longest lease: 24 hours. A lease is how long a dead worker's job
    /// waits before it is taken back; a day already means a stuck day, and a
    /// typo like `2400h` must not mean a stuck quarter.
    pub const MAX_LEASE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    /// Longest time limit on one attempt: 7 days (the schema's bound too).
    pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
    /// Shortest time limit on one attempt: 1 microsecond (zero would mean
    /// "already timed out", never a useful limit).
    pub const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_micros(1);
}

/// Checks a queue or kind name: 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.len() > limits::MAX_NAME_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "must be at most {} bytes, got {}",
                limits::MAX_NAME_BYTES,
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(ValidationError::new(
            field,
            format!("may hold only ASCII letters, digits and _ - . : (found {bad:?})"),
        ));
    }
    Ok(())
}

/// Checks a lease or delay against [`limits::MAX_DURATION`].
pub fn validate_duration(field: &'static str, d: std::time::Duration) -> Result<(), ValidationError> {
    if d > limits::MAX_DURATION {
        return Err(ValidationError::new(
            field,
            format!("must be at most 100 years, got {} s", d.as_secs()),
        ));
    }
    Ok(())
}

/// Checks a lease: non-zero and at most [`limits::MAX_LEASE`].
pub fn validate_lease(field: &'static str, d: std::time::Duration) -> Result<(), ValidationError> {
    if d > limits::MAX_LEASE {
        return Err(ValidationError::new(
            field,
            format!(
                "must be at most 24h, got {}; a longer lease only delays the recovery of a dead worker's job",
                crate::time::human(d)
            ),
        ));
    }
    Ok(())
}

/// Checks a time limit on one attempt: 1 µs to [`limits::MAX_TIMEOUT`].
pub fn validate_timeout(field: &'static str, d: std::time::Duration) -> Result<(), ValidationError> {
    if d < limits::MIN_TIMEOUT || d > limits::MAX_TIMEOUT {
        return Err(ValidationError::new(
            field,
            format!("must be between 1µs and 7d, got {}", crate::time::human(d)),
        ));
    }
    Ok(())
}

/// Checks a JSON value's size and that no string in it holds NUL, which
/// Postgres `jsonb` cannot store.
pub fn validate_json(field: &'static str, value: &Value, max_bytes: usize) -> Result<(), ValidationError> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(ValidationError::new(field, "contains a NUL character (\\u0000)"));
    }
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(ValidationError::new(
            field,
            format!("is {size} bytes as JSON; the limit is {max_bytes}"),
        ));
    }
    Ok(())
}

/// The `'static` copy of a name that crossed a wire (field and operation
/// names are `&'static str` in the API). Each distinct name is leaked once;
/// the names are the code's own, so the set stays small.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// [`ValidationError`] with owned names, as it crosses a wire.
#[derive(Serialize, Deserialize)]
struct OwnedValidationError {
    field: String,
    reason: String,
}

impl From<OwnedValidationError> for ValidationError {
    fn from(e: OwnedValidationError) -> Self {
        ValidationError {
            field: intern(&e.field),
            reason: e.reason,
        }
    }
}

impl From<ValidationError> for OwnedValidationError {
    fn from(e: ValidationError) -> Self {
        OwnedValidationError {
            field: e.field.to_owned(),
            reason: e.reason,
        }
    }
}

// Derived by hand: serde would tie a derived impl's `'de` to the `'static`
// names inside.
impl<'de> Deserialize<'de> for ValidationError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OwnedValidationError::deserialize(d).map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Progress and worker metadata may be up to 64 KiB of JSON, the
    /// documented limit: 60 KB passes, 70 KB is refused (cargo-mutants found
    /// `64 + 1024` for `64 * 1024` passed every test).
    #[test]
    fn progress_may_be_up_to_64_kib() {
        let fits = Value::String("p".repeat(60_000));
        let too_big = Value::String("p".repeat(70_000));
        assert!(validate_json("progress", &fits, limits::MAX_PROGRESS_BYTES).is_ok());
        let err = validate_json("progress", &too_big, limits::MAX_PROGRESS_BYTES).unwrap_err();
        assert_eq!(err.field, "progress");
    }

    /// A delay or retention age may be up to 100 years and no more; a
    /// `Duration::MAX` delay is refused, not stored (cargo-mutants found `==`
    /// for `>` passed every core and testkit test).
    #[test]
    fn durations_over_100_years_are_refused() {
        use std::time::Duration;
        assert!(validate_duration("retry_after", limits::MAX_DURATION).is_ok());
        for too_long in [limits::MAX_DURATION + Duration::from_micros(1), Duration::MAX] {
            let err = validate_duration("retry_after", too_long).unwrap_err();
            assert_eq!(err.field, "retry_after");
        }
    }

    /// The documented limits, by behaviour: a 1 MB payload or checkpoint
    /// fits (1 MiB), a 99-year delay fits (100 years), a 128-byte name fits;
    /// one byte more than a name's limit does not. Guards cargo-mutants
    /// survivors that turned the limits' `*` into `+` and `>` into `>=`.
    #[test]
    fn the_documented_limits_hold_at_their_edges() {
        use std::time::Duration;
        let megabyte = Value::String("p".repeat(1_000_000));
        assert!(validate_json("payload", &megabyte, limits::MAX_PAYLOAD_BYTES).is_ok());
        assert!(validate_json("checkpoint", &megabyte, limits::MAX_CHECKPOINT_BYTES).is_ok());
        let years_99 = Duration::from_secs(99 * 365 * 86_400);
        assert!(validate_duration("retry_after", years_99).is_ok());
        assert!(validate_name("kind", &"k".repeat(limits::MAX_NAME_BYTES)).is_ok());
        let err = validate_name("kind", &"k".repeat(limits::MAX_NAME_BYTES + 1)).unwrap_err();
        assert_eq!(err.field, "kind");
    }

    /// A NUL anywhere in the value is refused, inside arrays and object keys
    /// too (cargo-mutants deleted the array arm and no test noticed).
    #[test]
    fn a_nul_is_found_at_any_depth() {
        let nested = [
            serde_json::json!(["ok", "x\u{0}y"]),
            serde_json::json!({"a": [{"b": "\u{0}"}]}),
            serde_json::json!({"k\u{0}": 1}),
        ];
        for value in nested {
            let err = validate_json("payload", &value, limits::MAX_PAYLOAD_BYTES).unwrap_err();
            assert_eq!(err.field, "payload", "{value}");
        }
        let clean = serde_json::json!({"a": ["x", {"b": "y"}]});
        assert!(validate_json("payload", &clean, limits::MAX_PAYLOAD_BYTES).is_ok());
    }

    /// A name read back from the wire keeps its text, and one name is
    /// leaked once (cargo-mutants: `intern -> ""` passed every test).
    #[test]
    fn interned_names_keep_their_text_and_are_shared() {
        let first = intern(&String::from("complete"));
        assert_eq!(first, "complete");
        assert!(std::ptr::eq(first, intern("complete")));
    }
}
