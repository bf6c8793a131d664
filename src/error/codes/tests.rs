use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;
use crate::error::AppError;

/// Upper-case string literals in `src/` that are not error codes.
const NOT_CODES: &[&str] = &[
    // GraphQL enum values.
    "MANY_TO_ONE",
    "ONE_TO_ONE",
    "ONE_TO_MANY",
    "MANY_TO_MANY",
    "SET_NULL",
    "RECOVERY_CODE",
    "SCRYPT_MODIFIED",
    "LAST_24_HOURS",
    "LAST_7_DAYS",
    "LAST_30_DAYS",
    "LAST_90_DAYS",
    "BANDWIDTH_IN",
    "BANDWIDTH_OUT",
    "REALTIME_CONNECTIONS",
    "DOCUMENTS_CREATED",
    "DOCUMENTS_DELETED",
    "FILES_CREATED",
    "FILES_DELETED",
    "STORAGE_BYTES",
    "USERS_CREATED",
    "USERS_DELETED",
    "SESSIONS_CREATED",
    "SESSIONS_DELETED",
    // SQL.
    "STRAIGHT_JOIN",
    "CHAR_LENGTH",
    // Cargo's build output directory, read with `env!`.
    "OUT_DIR",
    // The allocator's own setting, read from the environment.
    "MIMALLOC_PURGE_DELAY",
    // The variables a function's code reads, as Appwrite names them, and parts of
    // their names.
    "APPWRITE_FUNCTION_",
    "PROJECT_ID",
    "RUNTIME_NAME",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each file of `src/` but this registry, with its code and without its unit tests
/// and comments: where codes are used, not where they are checked.
fn production_sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    crate::architecture::rust_files(&root().join("src"), &mut files);
    files.sort();
    let registry = root().join("src/error/codes");
    files
        .into_iter()
        .filter(|path| path.with_extension("") != registry && !path.starts_with(&registry))
        .filter(|path| path.file_name().is_some_and(|name| name != "tests.rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.strip_prefix(root()).unwrap().to_path_buf(),
                without_tests(&text),
            )
        })
        .collect()
}

/// `text` without comment lines and without the items under `#[cfg(test)]`.
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skips the item: up to its closing brace, or its `;`.
            let mut depth = 0i32;
            for line in lines.by_ref() {
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                if depth <= 0 && (line.contains('}') || line.trim_end().ends_with(';')) {
                    break;
                }
            }
        } else if !line.trim_start().starts_with("//") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// The contents of the string literals of `text` made only of `A-Z`, `0-9` and
/// `_`, with the text just before each.
fn upper_case_literals(text: &str) -> Vec<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (start, _) in text.match_indices('"') {
        let rest = &bytes[start + 1..];
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        if len > 0 && rest.get(len) == Some(&b'"') && rest[0].is_ascii_uppercase() {
            found.push((&text[start + 1..start + 1 + len], &text[..start]));
        }
    }
    found
}

/// The `NotFound`/`Conflict` codes the sources compose from a noun: `what: "user"`
/// after `NotFound` or `Conflict`, and `.conflict_as("user", …)`.
fn composed_codes(path: &Path, text: &str) -> Vec<(String, String)> {
    let screaming = |noun: &str| super::super::screaming(noun);
    let noun_at = |at: usize| text[at..].split('"').nth(1).unwrap_or_default().to_string();
    let mut found = Vec::new();
    for (at, _) in text.match_indices("what: \"") {
        let before = &text[at.saturating_sub(300)..at];
        let not_found = before.rfind("NotFound");
        let conflict = before.rfind("Conflict");
        let suffix = match (not_found, conflict) {
            (Some(n), Some(c)) if n > c => "NOT_FOUND",
            (Some(_), None) => "NOT_FOUND",
            (_, Some(_)) => "ALREADY_EXISTS",
            (None, None) => panic!(
                "{}: `what:` of neither NotFound nor Conflict",
                path.display()
            ),
        };
        found.push((
            format!("{}_{suffix}", screaming(&noun_at(at))),
            path.display().to_string(),
        ));
    }
    for (at, _) in text.match_indices(".conflict_as(") {
        let noun = noun_at(at);
        found.push((
            format!("{}_ALREADY_EXISTS", screaming(&noun)),
            path.display().to_string(),
        ));
    }
    found
}

#[test]
fn every_code_is_declared_once_with_a_status_and_a_meaning() {
    let mut seen = BTreeSet::new();
    for code in ALL {
        assert!(seen.insert(code.name), "`{}` is declared twice", code.name);
        assert!(
            code.name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !code.name.starts_with('_')
                && !code.name.ends_with('_'),
            "`{}` is not SCREAMING_SNAKE",
            code.name
        );
        let status = StatusCode::from_u16(code.status).unwrap();
        assert!(
            status.is_client_error() || status.is_server_error(),
            "`{}` has the status {status}, which is no error",
            code.name
        );
        assert!(
            !code.meaning.is_empty() && !code.meaning.contains(['|', '\n']),
            "`{}` needs a one-line meaning without `|`",
            code.name
        );
        if let Some(target) = code.alias_of {
            let target = get(target).unwrap();
            assert_eq!(
                target.alias_of, None,
                "`{}` is an alias of an alias",
                code.name
            );
            assert_eq!(
                target.status, code.status,
                "`{}` answers unlike its target",
                code.name
            );
        }
    }
}

#[test]
fn only_the_codes_named_before_the_convention_put_invalid_last() {
    let invalid_last: BTreeSet<&str> = ALL
        .iter()
        .map(|code| code.name)
        .filter(|name| name.ends_with("_INVALID"))
        .collect();
    let listed: BTreeSet<&str> = NOT_CONVENTIONAL.iter().copied().collect();
    let new: Vec<_> = invalid_last.difference(&listed).collect();
    assert!(
        new.is_empty(),
        "{new:?} put INVALID last: name a new code `INVALID_…`"
    );
    let gone: Vec<_> = listed.difference(&invalid_last).collect();
    assert!(
        gone.is_empty(),
        "{gone:?} are in NOT_CONVENTIONAL but not declared `…_INVALID`"
    );
}

#[test]
fn missing_resources_answer_404_and_taken_ids_409() {
    for code in ALL {
        if code.name.ends_with("_ALREADY_EXISTS") {
            assert_eq!(code.status, 409, "`{}`", code.name);
        }
    }
    for code in ALL.iter().filter(|code| code.name.ends_with("_NOT_FOUND")) {
        // Not a resource: a bad value of the document written, or of the request.
        if ![RELATED_DOCUMENT_NOT_FOUND, OPERATION_NOT_FOUND].contains(&code.name) {
            assert_eq!(code.status, 404, "`{}`", code.name);
        }
    }
}

#[test]
fn every_code_of_a_fixed_variant_is_declared() {
    let fixed = [
        AppError::Unauthenticated,
        AppError::InvalidApiKey,
        AppError::ApiKeyExpired,
        AppError::InvalidCredentials,
        AppError::InvalidSession,
        AppError::SessionExpired,
        AppError::UserBlocked,
        AppError::MfaRequired,
        AppError::InvalidJwt,
        AppError::JwtExpired,
        AppError::ScopeMissing { scope: "s".into() },
        AppError::PermissionDenied { reason: "r".into() },
        AppError::ProjectNotFound { id: "p".into() },
        AppError::MethodDisabled { method: "m" },
        AppError::NotAllowed("r".into()),
        AppError::RateLimited { retry_after: 1 },
        AppError::Unavailable,
        AppError::Busy { retry_after: 1 },
        AppError::StorageFull,
        AppError::FileUnreadable,
        AppError::Db(crate::error::DbError::NotFound),
        AppError::Internal(anyhow::anyhow!("cause")),
    ];
    for err in fixed {
        assert!(err.fixed_code().is_some(), "{err:?} has no fixed code");
        assert!(
            get(&err.code()).is_some(),
            "`{}` is not declared",
            err.code()
        );
    }
}

#[test]
fn every_code_written_in_src_is_declared() {
    let mut undeclared = BTreeSet::new();
    for (path, text) in production_sources() {
        for (literal, before) in upper_case_literals(&text) {
            let in_error_position = before.trim_end().ends_with("code:");
            let looks_like_a_code = literal.contains('_')
                && !literal.starts_with("NIMBUS_")
                && !literal.starts_with("CARGO_")
                && !NOT_CODES.contains(&literal);
            if (in_error_position || looks_like_a_code) && get(literal).is_none() {
                undeclared.insert(format!("`{literal}` ({})", path.display()));
            }
        }
        for (code, place) in composed_codes(&path, &text) {
            if get(&code).is_none() {
                undeclared.insert(format!("`{code}` ({place})"));
            }
        }
    }
    assert!(
        undeclared.is_empty(),
        "declare these codes in src/error/codes.rs (or, if one is not an error code, add it to \
         NOT_CODES in src/error/codes/tests.rs): {}",
        undeclared.into_iter().collect::<Vec<_>>().join(", ")
    );
}

#[test]
fn code_outside_the_registry_names_codes_by_their_constant() {
    let mut written_out = BTreeSet::new();
    for (path, text) in production_sources() {
        for (literal, _) in upper_case_literals(&text) {
            if get(literal).is_some() {
                written_out.insert(format!("`{literal}` ({})", path.display()));
            }
        }
    }
    assert!(
        written_out.is_empty(),
        "write `codes::NAME` instead of these literals: {}",
        written_out.into_iter().collect::<Vec<_>>().join(", ")
    );
}

#[test]
fn every_declared_code_is_used_in_src() {
    let sources = production_sources();
    let mut composed = BTreeSet::new();
    for (path, text) in &sources {
        composed.extend(composed_codes(path, text).into_iter().map(|(code, _)| code));
    }
    let used = |name: &str| {
        composed.contains(name)
            || sources.iter().any(|(_, text)| {
                text.contains(&format!("\"{name}\""))
                    || text
                        .match_indices(&format!("codes::{name}"))
                        .any(|(at, found)| {
                            let next = text[at + found.len()..].chars().next();
                            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
            })
    };
    // An alias is answered in `extensions.aliases` of the code it stands in for.
    let unused: Vec<&str> = ALL
        .iter()
        .filter(|code| code.alias_of.is_none())
        .map(|code| code.name)
        .filter(|name| !used(name))
        .collect();
    assert!(
        unused.is_empty(),
        "no code in src/ answers with {unused:?}: remove them from src/error/codes.rs and the README"
    );
}

/// The rows of the README's "Error codes" table.
fn readme_rows() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split_once("\n### Error codes\n")
        .expect("the README has an `### Error codes` section")
        .1;
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_table_lists_exactly_the_declared_codes() {
    let rows = readme_rows();
    let code_of = |row: &str| {
        row.split('|')
            .nth(1)
            .unwrap_or_default()
            .trim()
            .trim_matches('`')
            .to_string()
    };
    let listed: BTreeSet<String> = rows.iter().map(|row| code_of(row)).collect();
    let declared: BTreeSet<String> = ALL.iter().map(|code| code.name.to_string()).collect();
    let missing: Vec<&String> = declared.difference(&listed).collect();
    let extra: Vec<&String> = listed.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the README's error table must list exactly the codes of src/error/codes.rs: \
         add {missing:?}, remove {extra:?} (`cargo run -- errors print` prints the table)"
    );
    let expected = markdown_table();
    for (row, want) in rows.iter().zip(expected.lines().skip(2)) {
        assert_eq!(
            row,
            want,
            "the README's row of `{}` differs from src/error/codes.rs; \
             `cargo run -- errors print` prints the table",
            code_of(row)
        );
    }
}
