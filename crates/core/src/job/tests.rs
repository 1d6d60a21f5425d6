//! Unit tests of the job types.

use super::*;
use serde_json::json;

#[test]
fn a_json_null_progress_survives_serde() {
    let heartbeat = crate::driver::JobHeartbeat {
        id: JobId(1),
        epoch: Epoch(1),
        lease: std::time::Duration::from_secs(1),
        progress: Some(Value::Null),
    };
    let back: crate::driver::JobHeartbeat =
        serde_json::from_str(&serde_json::to_string(&heartbeat).unwrap()).unwrap();
    assert_eq!(back.progress, Some(Value::Null));
    let none = crate::driver::JobHeartbeat {
        progress: None,
        ..heartbeat
    };
    let back: crate::driver::JobHeartbeat =
        serde_json::from_str(&serde_json::to_string(&none).unwrap()).unwrap();
    assert_eq!(back.progress, None);
}

#[test]
fn terminal_states_have_no_exit() {
    for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        for to in JobStatus::ALL {
            assert!(!from.may_become(to), "{from} -> {to} must be impossible");
        }
    }
    assert!(JobStatus::Queued.may_become(JobStatus::Running));
    assert!(!JobStatus::Queued.may_become(JobStatus::Succeeded));
}

#[test]
fn status_round_trips_through_text() {
    for s in JobStatus::ALL {
        assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
    }
    assert!("RUNNING".parse::<JobStatus>().is_err());
}

#[test]
fn validation_rejects_hostile_input_with_the_field_named() {
    let ok = NewJob::new("default", "report", json!({"x": 1}));
    assert!(ok.validate().is_ok());
    let cases = [
        (NewJob::new("", "k", json!(null)), "queue"),
        (NewJob::new("q".repeat(129), "k", json!(null)), "queue"),
        (NewJob::new("q'; drop table jobs;--", "k", json!(null)), "queue"),
        (NewJob::new("q", "kïnd", json!(null)), "kind"),
        (NewJob::new("q", "k\0", json!(null)), "kind"),
        (NewJob::new("q", "k", json!({"a": "x\u{0}y"})), "payload"),
        (
            NewJob::new("q", "k", json!("x".repeat(limits::MAX_PAYLOAD_BYTES))),
            "payload",
        ),
        (NewJob::new("q", "k", json!(1)).max_attempts(0), "max_attempts"),
        (
            NewJob::new("q", "k", json!(1)).run_at(Timestamp::from_micros(i64::MAX)),
            "run_at",
        ),
        (
            NewJob::new("q", "k", json!(1)).idempotency_key(""),
            "idempotency_key",
        ),
    ];
    for (job, field) in cases {
        let err = job.validate().expect_err("must be rejected");
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn clamp_error_keeps_char_boundaries() {
    let long = "é".repeat(limits::MAX_ERROR_BYTES);
    let clamped = clamp_error(&long);
    assert!(clamped.len() <= limits::MAX_ERROR_BYTES);
    assert!(clamped.chars().all(|c| c == 'é'));
    assert_eq!(clamp_error("a\0b"), "ab");
    // One ASCII byte first puts the limit inside a two-byte char: the
    // cut steps back to the boundary before it, never past the limit
    // (a cargo-mutants survivor stepped forward).
    let shifted = format!("a{long}");
    let clamped = clamp_error(&shifted);
    assert_eq!(clamped.len(), limits::MAX_ERROR_BYTES - 1);
    assert!(shifted.starts_with(&clamped));
}

/// Guards a cargo-mutants survivor (`>` for `>=` and `==` in the key's
/// length check): a key of exactly the limit is accepted.
#[test]
fn an_idempotency_key_of_exactly_the_limit_is_accepted() {
    let at_limit = "k".repeat(limits::MAX_IDEMPOTENCY_KEY_BYTES);
    let job = NewJob::new("q", "k", json!(1)).idempotency_key(at_limit);
    assert!(job.validate().is_ok());
}

/// Ids and epochs print as their bare numbers (logs, the CLI and SQL
/// parameters read them back); cargo-mutants found an empty Display passed.
#[test]
fn ids_and_epochs_print_as_numbers() {
    assert_eq!(JobId(42).to_string(), "42");
    assert_eq!(" 42 ".parse::<JobId>().unwrap(), JobId(42));
    assert_eq!(Epoch(-3).to_string(), "-3");
    assert_eq!(JobStatus::Running.to_string(), "running");
    let retry = crate::JobError::retryable("rate limited");
    assert_eq!(retry.to_string(), "retryable: rate limited");
    assert_eq!(
        crate::JobError::permanent("bad input").to_string(),
        "permanent: bad input"
    );
}

/// Every event kind round-trips through its SQL/JSON name, the names are
/// distinct, an unknown name is refused, and only inserted, claimed and
/// completed are happy-path events (logged only when asked). Guards four
/// cargo-mutants survivors (`as_str`, `Display`, `from_str`'s `==`,
/// `is_happy_path`).
#[test]
fn event_kinds_round_trip_through_their_names() {
    use JobEventKind::*;
    let all = [
        Inserted, Claimed, Completed, Retried, Dead, Reaped, Released, Cancelled, Requeued,
    ];
    let names: std::collections::BTreeSet<&str> = all.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), all.len(), "names are distinct: {names:?}");
    for kind in all {
        let name = kind.to_string();
        assert_eq!(name, kind.as_str());
        assert!(name.chars().all(|c| c.is_ascii_lowercase()), "{name}");
        assert_eq!(name.parse::<JobEventKind>().unwrap(), kind);
        assert_eq!(
            kind.is_happy_path(),
            matches!(kind, Inserted | Claimed | Completed),
            "{name}"
        );
    }
    assert_eq!(Reaped.as_str(), "reaped", "the name SQL and the CLI use");
    assert!("reap".parse::<JobEventKind>().is_err());
}
