//! Who may `POST /wake`: the shared secret as configured, and the bearer
//! token read from an `Authorization` header.

use subtle::ConstantTimeEq;

/// The /wake secret as it will be compared, and what start-up should warn
/// about it.
#[derive(Debug, PartialEq, Eq)]
pub struct WakeSecret {
    /// The secret, without trailing whitespace; `None` refuses every /wake.
    pub secret: Option<String>,
    /// Why the configured value was changed or ignored, for a start-up WARN.
    pub warning: Option<&'static str>,
}

impl WakeSecret {
    /// Normalizes `--wake-secret` / `WAKE_SECRET`. A secret stored with
    /// `echo` ends in a newline no client sends, which used to refuse every
    /// wake without a word; trailing whitespace is dropped, and said so.
    pub fn from_flag(raw: Option<&str>) -> WakeSecret {
        let Some(raw) = raw else {
            return WakeSecret {
                secret: None,
                warning: Some("WAKE_SECRET is not set: POST /wake refuses every request"),
            };
        };
        let trimmed = raw.trim_end();
        if trimmed.is_empty() {
            return WakeSecret {
                secret: None,
                warning: Some("WAKE_SECRET is empty or only whitespace: POST /wake refuses every request"),
            };
        }
        WakeSecret {
            secret: Some(trimmed.to_owned()),
            warning: (trimmed.len() != raw.len()).then_some(
                "WAKE_SECRET ends in whitespace (a newline from `echo`?): it was removed; \
                 clients must send the secret without it",
            ),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme
/// is case-insensitive (RFC 7235 §2.1: `bearer`, `BEARER` are the same) and
/// may be followed by more than one space.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` is `secret`, compared in constant time (the secret's
/// length is not hidden; its content is).
pub fn token_matches(secret: &str, presented: &str) -> bool {
    secret.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_is_what_follows() {
        for header in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR s3cret",
            "Bearer   s3cret",
            "Bearer\ts3cret",
            " Bearer s3cret ",
        ] {
            assert_eq!(bearer_token(header), Some("s3cret"), "{header:?}");
        }
        for header in [
            "",
            "Bearer",
            "Bearer ",
            "Basic s3cret",
            "s3cret",
            "Bearers3cret",
            "Token s3cret",
        ] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn a_trailing_newline_is_dropped_with_a_warning() {
        let plain = WakeSecret::from_flag(Some("s3cret"));
        assert_eq!(plain.secret.as_deref(), Some("s3cret"));
        assert_eq!(plain.warning, None);
        for raw in ["s3cret\n", "s3cret\r\n", "s3cret  \t"] {
            let w = WakeSecret::from_flag(Some(raw));
            assert_eq!(w.secret.as_deref(), Some("s3cret"), "{raw:?}");
            assert!(w.warning.unwrap().contains("ends in whitespace"), "{raw:?}");
        }
        // Leading whitespace may be meant: only trailing is removed.
        assert_eq!(
            WakeSecret::from_flag(Some(" s3cret")).secret.as_deref(),
            Some(" s3cret")
        );
        for blank in ["", "\n", "   "] {
            let w = WakeSecret::from_flag(Some(blank));
            assert_eq!(w.secret, None, "{blank:?}");
            assert!(w.warning.unwrap().contains("refuses every request"));
        }
        let unset = WakeSecret::from_flag(None);
        assert_eq!(unset.secret, None);
        assert!(unset.warning.unwrap().contains("not set"));
    }

    #[test]
    fn token_compare_checks_content_and_length() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secret2"));
        assert!(!token_matches("secret", "secre"));
        assert!(!token_matches("secret", ""));
        assert!(!token_matches("", "x"));
    }
}
