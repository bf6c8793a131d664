//! Event patterns of webhooks and function triggers, with Appwrite's names: `users.*.create`,
//! `databases.*.collections.*.documents.*`, `buckets.B.files.*.update` — a
//! resource, then an id (`*` for any) and a child resource or an action, and so
//! on; `*` stands for exactly one segment. A pattern that stops before the action
//! takes every action on what it names (`teams.*` is every team event, memberships
//! included). Checking a pattern against the known tree turns a typo into an error
//! at creation rather than a webhook that never fires.

use crate::db::ids;
use crate::error::{AppError, codes};

/// Top-level resources and the children each resource has.
const TREE: &[(&str, &[&str])] = &[
    (
        "users",
        &[
            "sessions",
            "recovery",
            "verification",
            "targets",
            "tokens",
            "challenges",
            "identities",
        ],
    ),
    ("databases", &["collections", "tables"]),
    ("collections", &["documents", "attributes", "indexes"]),
    ("tables", &["rows", "columns", "indexes"]),
    ("buckets", &["files"]),
    ("teams", &["memberships"]),
    ("functions", &["deployments", "executions"]),
    ("sites", &["deployments"]),
    ("keys", &[]),
    ("messages", &[]),
    ("topics", &["subscribers"]),
    ("providers", &[]),
    ("schedules", &[]),
    ("rules", &[]),
];

/// Resources that start a pattern.
const ROOTS: &[&str] = &[
    "users",
    "databases",
    "buckets",
    "teams",
    "functions",
    "sites",
    "keys",
    "messages",
    "topics",
    "providers",
    "schedules",
    "rules",
];

const ACTIONS: &[&str] = &["create", "update", "upsert", "delete", "*"];
/// What may follow `update` (Appwrite's narrower update events).
const UPDATE_DETAILS: &[&str] = &[
    "email", "name", "password", "status", "prefs", "mfa", "phone", "labels", "*",
];

/// Most patterns one webhook may hold.
pub const MAX_PATTERNS: usize = 100;
/// Longest pattern.
const MAX_PATTERN_BYTES: usize = 256;

fn invalid(reason: String) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_WEBHOOK_EVENTS,
        field: "events".into(),
        reason,
    }
}

/// The patterns, each checked, duplicates dropped, in the order given.
pub fn check_patterns(patterns: &[String]) -> Result<Vec<String>, AppError> {
    if patterns.is_empty() {
        return Err(invalid("a webhook needs at least one event pattern".into()));
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(invalid(format!("at most {MAX_PATTERNS} event patterns")));
    }
    let mut checked: Vec<String> = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        check_pattern(pattern)?;
        if !checked.contains(pattern) {
            checked.push(pattern.clone());
        }
    }
    Ok(checked)
}

fn check_pattern(pattern: &str) -> Result<(), AppError> {
    let shown = || pattern.chars().take(64).collect::<String>();
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(invalid(format!(
            "an event pattern is at most {MAX_PATTERN_BYTES} bytes"
        )));
    }
    let segments: Vec<&str> = pattern.split('.').collect();
    let unknown = |why: &str| invalid(format!("`{}` is not an event: {why}", shown()));
    let Some(&root) = segments.first() else {
        return Err(unknown("empty"));
    };
    if !ROOTS.contains(&root) {
        return Err(unknown(
            "unknown resource; events start with users, databases, buckets, teams, functions, keys, …",
        ));
    }
    let mut resource = root;
    let mut at = 1;
    loop {
        // An id, or the end.
        let Some(id) = segments.get(at) else {
            return Ok(());
        };
        if *id != "*" && ids::validate("events", id).is_err() {
            return Err(unknown("an id must be `*` or a valid id"));
        }
        at += 1;
        // A child resource, an action, or the end.
        let Some(next) = segments.get(at) else {
            return Ok(());
        };
        let children = TREE
            .iter()
            .find(|(name, _)| *name == resource)
            .map(|(_, children)| *children)
            .unwrap_or_default();
        if children.contains(next) {
            resource = next;
            at += 1;
            continue;
        }
        if !ACTIONS.contains(next) {
            return Err(unknown("unknown action or resource"));
        }
        at += 1;
        match segments.get(at) {
            None => return Ok(()),
            Some(detail) if *next == "update" && UPDATE_DETAILS.contains(detail) => {
                return if segments.len() == at + 1 {
                    Ok(())
                } else {
                    Err(unknown("nothing may follow the action"))
                };
            }
            Some(_) => return Err(unknown("nothing may follow the action")),
        }
    }
}

/// Whether `pattern` takes the event named `name` (its most specific name): each
/// segment of the pattern equals the name's or is `*`, and the pattern may stop
/// early (it then takes everything below what it names).
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut names = name.split('.');
    for part in pattern.split('.') {
        match names.next() {
            Some(segment) if part == "*" || part == segment => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appwrite_names_are_taken_and_typos_refused() {
        for ok in [
            "users.*.create",
            "users.*",
            "users",
            "users.u1.update.email",
            "users.*.sessions.*.delete",
            "databases.*.collections.*.documents.*.create",
            "databases.d1.collections.c1.documents.*",
            "buckets.*.files.*.update",
            "teams.*.memberships.*.update.status",
            "functions.*.executions.*.*",
            "keys.*.delete",
        ] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "user.*.create",
            "users.*.creat",
            "users.*.create.now",
            "users.*.files.*.create",
            "users.a b.create",
            "databases.*.documents.*.create",
            "buckets.*.files.*.update.email.x",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        let many = vec!["users.*".to_string(); MAX_PATTERNS + 1];
        assert!(check_patterns(&many).is_err());
        assert!(check_patterns(&[]).is_err());
        assert_eq!(
            check_patterns(&["users.*".into(), "users.*".into()]).unwrap(),
            ["users.*"]
        );
    }

    #[test]
    fn a_pattern_matches_by_segment_and_by_prefix() {
        let name = "databases.d.collections.c.documents.x.create";
        assert!(matches(
            "databases.*.collections.*.documents.*.create",
            name
        ));
        assert!(matches("databases.d.collections.*.documents.*", name));
        assert!(matches("databases.*", name));
        assert!(!matches(
            "databases.*.collections.*.documents.*.update",
            name
        ));
        assert!(!matches("databases.e", name));
        assert!(!matches("users.*", name));
        assert!(!matches(
            "databases.*.collections.*.documents.*.create.x",
            name
        ));
    }
}
