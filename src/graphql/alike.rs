//! Whole answers kept for operations that answer every caller alike. A service
//! whose fields depend on nothing but the operation and something the request
//! says (locale's reference lists: compiled-in data, in the request's language)
//! tells which operations read only such fields and what else their answer
//! depends on ([`SameForAll`]); the HTTP handler keeps the serialised answer of
//! such an operation and sends it again to the same request, before anything
//! parses, validates or executes it.
//!
//! Only an answer without errors, extensions or headers is kept, so a request that
//! fails fails the same way every time, and a kept answer was given once to the
//! very same text, variables and operation name in the same project after passing
//! every check. Keyed by those (the exact query text) and the variant the service
//! derives from the request; bounded in entries, variants and bytes. It never
//! keeps anything that depends on who asks: the caller is resolved (and a bad
//! credential refused) before an answer is looked up.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::Request;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use bytes::Bytes;
use lru::LruCache;

/// A service's operations whose answers are alike for every caller.
pub trait SameForAll: Send + Sync + 'static {
    /// Whether `operation` (a query of `document`) reads nothing but fields whose
    /// answers depend only on the operation and on [`variant`](Self::variant).
    fn covers(&self, document: &ExecutableDocument, operation: &OperationDefinition) -> bool;

    /// What else those answers depend on, from the languages the request asks for
    /// (`X-Nimbus-Locale`, else `Accept-Language`, as sent): e.g. the language
    /// they are in. A small set of values, whatever the client sends.
    fn variant(&self, languages: &str) -> &'static str;
}

/// The services' [`SameForAll`]s of a schema, in the order they were added.
pub type Rules = std::sync::Arc<[Box<dyn SameForAll>]>;

/// Longest query text kept; longer ones are answered as usual.
const MAX_QUERY_BYTES: usize = 2 * 1024;
/// Longest variables (as JSON) kept.
const MAX_VARIABLES_BYTES: usize = 1024;
/// Largest answer kept.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Most operations (project, query text, operation name) kept.
const MAX_OPERATIONS: usize = 512;
/// Most answers (variables and variant) kept per operation.
const MAX_ANSWERS: usize = 96;
/// Most bytes of text and answers kept in all.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The kept answers of one server.
pub struct KeptAnswers {
    entries: Mutex<Entries>,
    /// Whether anything is kept: until then no request pays for a look-up.
    any: AtomicBool,
    hasher: std::hash::RandomState,
}

struct Entries {
    operations: LruCache<u64, Entry>,
    bytes: usize,
}

/// One operation's answers, by variables and variant.
struct Entry {
    parts: Parts,
    /// The name of the operation, as its document declares it.
    name: Option<String>,
    /// The root fields it selects, as the caller counted them (usage).
    roots: std::sync::Arc<[String]>,
    /// Which of the schema's rules covers it.
    rule: usize,
    answers: Vec<Answer>,
    bytes: usize,
}

struct Answer {
    /// The variables, as JSON (empty without any).
    variables: String,
    variant: &'static str,
    body: Bytes,
}

impl Answer {
    fn bytes(&self) -> usize {
        self.variables.len() + self.body.len()
    }
}

/// What identifies an operation.
#[derive(PartialEq, Eq)]
struct Parts {
    project: String,
    operation: Option<String>,
    query: String,
}

/// A request that may be answered from, or kept in, the store.
pub struct Asked<'r> {
    hash: u64,
    project: &'r str,
    request: &'r Request,
}

/// A kept answer.
pub struct Kept {
    /// The name of the operation, as its document declares it.
    pub name: Option<String>,
    /// The root fields it selects, as given to [`KeptAnswers::keep`].
    pub roots: std::sync::Arc<[String]>,
    pub body: Bytes,
}

/// A request about to run whose answer will be kept if it is clean.
pub struct ToKeep {
    hash: u64,
    parts: Parts,
    rule: usize,
    variables: String,
    variant: &'static str,
}

impl Default for KeptAnswers {
    fn default() -> Self {
        KeptAnswers {
            entries: Mutex::new(Entries {
                operations: LruCache::new(
                    NonZeroUsize::new(MAX_OPERATIONS).unwrap_or(NonZeroUsize::MIN),
                ),
                bytes: 0,
            }),
            any: AtomicBool::new(false),
            hasher: std::hash::RandomState::new(),
        }
    }
}

/// The variables of `request` as JSON (empty without any); `None` when too long
/// to keep.
fn variables_of(request: &Request) -> Option<String> {
    if request.variables.is_empty() {
        return Some(String::new());
    }
    let json = serde_json::to_string(&request.variables).ok()?;
    (json.len() <= MAX_VARIABLES_BYTES).then_some(json)
}

impl KeptAnswers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves consistent maps: keep using them.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hash(&self, project: &str, request: &Request) -> u64 {
        self.hasher.hash_one((
            project,
            request.operation_name.as_deref(),
            request.query.as_str(),
        ))
    }

    /// What identifies `request` in `project`; `None` when it cannot be kept.
    pub fn ask<'r>(&self, project: &'r str, request: &'r Request) -> Option<Asked<'r>> {
        if request.query.len() > MAX_QUERY_BYTES || !request.uploads.is_empty() {
            return None;
        }
        Some(Asked {
            hash: self.hash(project, request),
            project,
            request,
        })
    }

    /// The kept answer to `asked` in the variant `rules` derive from `languages`.
    pub fn get(&self, rules: &Rules, asked: &Asked<'_>, languages: &str) -> Option<Kept> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let (rule, name, roots) = {
            let entries = self.lock();
            let entry = entries.operations.peek(&asked.hash)?;
            if !entry.parts.is(asked) {
                return None;
            }
            (entry.rule, entry.name.clone(), entry.roots.clone())
        };
        // Only for an operation kept: its variables and variant, out of the lock.
        let variables = variables_of(asked.request)?;
        let variant = rules.get(rule)?.variant(languages);
        let mut entries = self.lock();
        let entry = entries.operations.get(&asked.hash)?;
        if !entry.parts.is(asked) || entry.rule != rule {
            return None;
        }
        let body = entry
            .answers
            .iter()
            .find(|a| a.variant == variant && a.variables == variables)?
            .body
            .clone();
        Some(Kept { name, roots, body })
    }

    /// `Some` when a rule covers the operation `request` runs in `project`: its
    /// answer, if clean, is then to be kept with [`keep`](Self::keep). A request
    /// that does not parse is not covered.
    pub fn covered(
        &self,
        rules: &Rules,
        project: &str,
        request: &mut Request,
        languages: &str,
    ) -> Option<ToKeep> {
        if rules.is_empty() || request.query.len() > MAX_QUERY_BYTES || !request.uploads.is_empty()
        {
            return None;
        }
        let name = request.operation_name.clone();
        let document = request.parsed_query().ok()?;
        let operation = match (&document.operations, name) {
            (DocumentOperations::Single(op), _) => &op.node,
            (DocumentOperations::Multiple(ops), Some(name)) => &ops.get(name.as_str())?.node,
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                &ops.values().next()?.node
            }
            _ => return None,
        };
        if operation.ty != OperationType::Query {
            return None;
        }
        let rule = rules.iter().position(|r| r.covers(document, operation))?;
        let variables = variables_of(request)?;
        Some(ToKeep {
            hash: self.hash(project, request),
            variant: rules[rule].variant(languages),
            rule,
            variables,
            parts: Parts {
                project: project.to_string(),
                operation: request.operation_name.clone(),
                query: request.query.clone(),
            },
        })
    }

    /// Keeps `body`, the whole answer (without errors, extensions or headers) of
    /// the operation named `name` that `to_keep` describes, and the names of the
    /// root fields it selects (`roots`, handed back with the answer).
    pub fn keep(&self, to_keep: ToKeep, name: Option<&str>, roots: &[String], body: Bytes) {
        if body.len() > MAX_ANSWER_BYTES {
            return;
        }
        let ToKeep {
            hash,
            parts,
            rule,
            variables,
            variant,
        } = to_keep;
        let mut entries = self.lock();
        let entries = &mut *entries;
        let same = entries
            .operations
            .peek(&hash)
            .is_some_and(|e| e.parts == parts && e.rule == rule);
        if !same {
            let bytes = parts.bytes();
            let entry = Entry {
                parts,
                name: name.map(str::to_string),
                roots: roots.into(),
                rule,
                answers: Vec::new(),
                bytes,
            };
            // An operation under the same hash, or the least recently used one
            // when full, makes way.
            if let Some((_, old)) = entries.operations.push(hash, entry) {
                entries.bytes -= old.bytes;
            }
            entries.bytes += bytes;
        }
        let Some(entry) = entries.operations.get_mut(&hash) else {
            return;
        };
        if entry
            .answers
            .iter()
            .any(|a| a.variant == variant && a.variables == variables)
        {
            return;
        }
        if entry.answers.len() >= MAX_ANSWERS {
            let oldest = entry.answers.remove(0);
            entry.bytes -= oldest.bytes();
            entries.bytes -= oldest.bytes();
        }
        let answer = Answer {
            variables,
            variant,
            body,
        };
        entry.bytes += answer.bytes();
        entries.bytes += answer.bytes();
        entry.answers.push(answer);
        while entries.bytes > MAX_BYTES {
            let Some((_, old)) = entries.operations.pop_lru() else {
                break;
            };
            entries.bytes -= old.bytes;
        }
        self.any
            .store(!entries.operations.is_empty(), Ordering::Relaxed);
    }
}

impl Parts {
    fn is(&self, asked: &Asked<'_>) -> bool {
        self.query == asked.request.query
            && self.project == asked.project
            && self.operation == asked.request.operation_name
    }

    fn bytes(&self) -> usize {
        self.project.len() + self.operation.as_ref().map_or(0, String::len) + self.query.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Covers queries whose first root field is `same`; the variant is the
    /// languages as sent.
    struct Same;

    impl SameForAll for Same {
        fn covers(&self, _: &ExecutableDocument, operation: &OperationDefinition) -> bool {
            use async_graphql::parser::types::Selection;
            operation
                .selection_set
                .node
                .items
                .iter()
                .all(|item| matches!(&item.node, Selection::Field(f) if f.node.name.node == "same"))
        }

        fn variant(&self, languages: &str) -> &'static str {
            match languages {
                "de" => "de",
                _ => "en",
            }
        }
    }

    fn rules() -> Rules {
        Arc::from(vec![Box::new(Same) as Box<dyn SameForAll>])
    }

    fn run(kept: &KeptAnswers, request: &mut Request, languages: &str, body: &str) -> bool {
        match kept.covered(&rules(), "p", request, languages) {
            Some(to_keep) => {
                kept.keep(to_keep, None, &[], Bytes::from(body.to_string()));
                true
            }
            None => false,
        }
    }

    fn get(kept: &KeptAnswers, request: &Request, languages: &str) -> Option<String> {
        let asked = kept.ask("p", request)?;
        kept.get(&rules(), &asked, languages)
            .map(|k| String::from_utf8(k.body.to_vec()).unwrap())
    }

    #[test]
    fn an_answer_is_kept_per_variant_and_only_for_covered_queries() {
        let kept = KeptAnswers::default();
        let mut request = Request::new("{ same }");
        assert_eq!(get(&kept, &request, "de"), None);
        assert!(run(&kept, &mut request, "de", "DE"));
        assert_eq!(get(&kept, &request, "de").as_deref(), Some("DE"));
        assert_eq!(get(&kept, &request, "fr"), None, "another variant");
        assert!(run(&kept, &mut request, "fr", "EN"));
        assert_eq!(get(&kept, &request, "xx").as_deref(), Some("EN"));
        assert_eq!(get(&kept, &Request::new("{ same  }"), "de"), None);
        let mut other = Request::new("{ same other }");
        assert!(!run(&kept, &mut other, "de", "no"));
        let mut mutation = Request::new("mutation { same }");
        assert!(!run(&kept, &mut mutation, "de", "no"));
        let with_variables = Request::new("{ same }").variables(
            async_graphql::Variables::from_json(serde_json::json!({"a": 1})),
        );
        assert_eq!(get(&kept, &with_variables, "de"), None);
    }

    #[test]
    fn the_store_stays_within_its_bytes() {
        let kept = KeptAnswers::default();
        let big = "x".repeat(MAX_ANSWER_BYTES);
        for i in 0..(MAX_BYTES / MAX_ANSWER_BYTES + 8) {
            let mut request = Request::new(format!("{{ same a{i}: same }}"));
            assert!(run(&kept, &mut request, "de", &big));
        }
        let entries = kept.lock();
        assert!(entries.bytes <= MAX_BYTES, "{}", entries.bytes);
        let counted: usize = entries.operations.iter().map(|(_, e)| e.bytes).sum();
        assert_eq!(counted, entries.bytes);
        drop(entries);
        let mut too_big = Request::new("{ same }");
        run(&kept, &mut too_big, "de", &"x".repeat(MAX_ANSWER_BYTES + 1));
        assert_eq!(get(&kept, &Request::new("{ same }"), "de"), None);
    }
}
