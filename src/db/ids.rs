//! Resource ids: generated (`unique()`) or chosen by the client, always validated
//! the same way: 1 to 36 characters of `a-zA-Z0-9._-`, not starting with `.`, `_` or `-`.

use rand::Rng as _;

use crate::error::{AppError, codes};

/// The id value a client sends to ask the server to generate one.
pub const UNIQUE: &str = "unique()";

/// A new id: 20 lowercase hex characters, time-ordered (microseconds first) so that
/// ids created later sort later, then random.
pub fn generate() -> String {
    let micros = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let mut id = format!("{micros:013x}");
    let mut rng = rand::rng();
    while id.len() < 20 {
        id.push(char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'));
    }
    id
}

/// Validates a client-supplied id; `unique()` or no id at all generates one.
pub fn resolve(field: &str, requested: Option<&str>) -> Result<String, AppError> {
    match requested {
        None | Some(UNIQUE) => Ok(generate()),
        Some(id) => validate(field, id).map(|()| id.to_string()),
    }
}

/// Checks that `id` is a well-formed id.
pub fn validate(field: &str, id: &str) -> Result<(), AppError> {
    let invalid = |reason: &str| AppError::Invalid {
        code: codes::INVALID_ID,
        field: field.to_string(),
        reason: reason.to_string(),
    };
    if id.is_empty() || id.len() > 36 {
        return Err(invalid("an id has 1 to 36 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "an id may contain only a-z, A-Z, 0-9, '.', '_' and '-'",
        ));
    }
    if matches!(id.as_bytes()[0], b'.' | b'_' | b'-') {
        return Err(invalid("an id may not start with '.', '_' or '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let first = generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = generate();
        assert_eq!(first.len(), 20);
        assert!(validate("id", &first).is_ok());
        assert!(first < second);
    }

    #[test]
    fn rejects_path_traversal_and_nul_in_ids() {
        for bad in ["../etc", "a/b", "a\0b", "", "-x", &"x".repeat(37)] {
            assert!(validate("id", bad).is_err(), "{bad:?} accepted");
        }
    }
}
