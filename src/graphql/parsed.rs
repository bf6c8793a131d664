//! Parsed query documents, kept by their text: clients send the same few operations
//! over and over, and parsing one costs far more (about 11 µs for a small query) than
//! copying its parsed form (under 1 µs). Bounded by entries and by the memory the
//! parsed forms take (estimated from their text: a query of repeated fields parses
//! to some hundred times its length); when full, the entries not read again since
//! the last time it was full go, so a client sending ever new queries evicts its
//! own, not the operations every client repeats.
//!
//! Every request passes here before anything parses its query, so this is where
//! a text that parsing would be wasted on, or nested too deep to parse safely, is
//! refused ([`check_text`]); a query found in the cache passed that check when it
//! was first parsed. Variables over their bounds are refused here too
//! ([`budget`]), before a transport copies or keeps them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError};

use super::budget;
use super::limits::{QueryLimits, check_text};

const MAX_ENTRIES: usize = 1024;
/// Bytes a parsed document is taken to hold per byte of its text: `{ a a a … }`
/// parses to about a hundred times its length, a typical operation to less.
const PARSED_BYTES_PER_TEXT_BYTE: usize = 128;
/// Most memory the parsed documents may be taken to hold.
const MAX_PARSED_BYTES: usize = 64 * 1024 * 1024;

/// A parsed document, what it is taken to cost, and whether it was read since the
/// cache was last full.
struct Entry {
    document: Arc<ExecutableDocument>,
    cost: usize,
    read: AtomicBool,
}

#[derive(Default)]
struct Documents {
    by_text: HashMap<String, Entry>,
    cost: usize,
}

impl Documents {
    fn get(&self, text: &str) -> Option<Arc<ExecutableDocument>> {
        let entry = self.by_text.get(text)?;
        entry.read.store(true, Ordering::Relaxed);
        Some(entry.document.clone())
    }

    fn insert(&mut self, text: String, document: Arc<ExecutableDocument>) {
        let cost = text.len() * PARSED_BYTES_PER_TEXT_BYTE;
        if self.by_text.len() >= MAX_ENTRIES || self.cost + cost > MAX_PARSED_BYTES {
            // The entries read again since the cache was last full stay (marked
            // unread again); if they alone fill it, it starts over.
            self.by_text
                .retain(|_, entry| entry.read.swap(false, Ordering::Relaxed));
            self.cost = self.by_text.values().map(|entry| entry.cost).sum();
            if self.by_text.len() >= MAX_ENTRIES || self.cost + cost > MAX_PARSED_BYTES {
                self.by_text.clear();
                self.cost = 0;
            }
        }
        self.cost += cost;
        let entry = Entry {
            document,
            cost,
            read: AtomicBool::new(false),
        };
        if let Some(previous) = self.by_text.insert(text, entry) {
            self.cost -= previous.cost;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_text.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }
}
/// Longer queries are parsed every time: they are rare, and would hold memory.
const MAX_QUERY_BYTES: usize = 8 * 1024;

pub struct ParsedQueries {
    documents: Mutex<Documents>,
    limits: QueryLimits,
}

impl ParsedQueries {
    pub fn new(limits: QueryLimits) -> Self {
        ParsedQueries {
            documents: Mutex::default(),
            limits,
        }
    }

    /// The limits requests are held to.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Gives `request` its parsed document, from the cache or by parsing (and then
    /// keeping) it. A query that does not parse is left for execution to report;
    /// one the limits refuse as written, or nested too deep to parse safely, is
    /// refused unparsed, and must not be executed. So are variables over their
    /// bounds ([`budget`]), before anything copies them; the variables the
    /// operation does not declare are dropped.
    pub fn prepare(&self, request: &mut Request) -> Result<(), ServerError> {
        budget::check_size(&request.variables, &self.limits)?;
        self.parse(request)?;
        let operation_name = request.operation_name.take();
        let mut variables = std::mem::take(&mut request.variables);
        let checked = match request.parsed_query() {
            Ok(document) => budget::check_references(
                document,
                operation_name.as_deref(),
                &variables,
                &self.limits,
            )
            .map(|()| budget::keep_declared(document, operation_name.as_deref(), &mut variables)),
            Err(_) => Ok(()),
        };
        request.operation_name = operation_name;
        request.variables = variables;
        checked
    }

    fn parse(&self, request: &mut Request) -> Result<(), ServerError> {
        if request.query.len() > MAX_QUERY_BYTES {
            check_text(&request.query, &self.limits)?;
            // Parsed once: the document stays with the request.
            let _ = request.parsed_query();
            return Ok(());
        }
        let cached = self
            .documents
            .lock()
            .ok()
            .and_then(|documents| documents.get(&request.query));
        if let Some(document) = cached {
            request.set_parsed_query((*document).clone());
            return Ok(());
        }
        check_text(&request.query, &self.limits)?;
        let Ok(document) = request.parsed_query() else {
            return Ok(());
        };
        let document = Arc::new(document.clone());
        if let Ok(mut documents) = self.documents.lock() {
            documents.insert(request.query.clone(), document);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = crate::graphql::limits::TEST_LIMITS;

    fn cache() -> ParsedQueries {
        ParsedQueries::new(LIMITS)
    }

    #[test]
    fn a_query_is_parsed_once_and_given_to_later_requests() {
        let cache = cache();
        let mut first = Request::new("{ a }");
        cache.prepare(&mut first).unwrap();
        assert_eq!(cache.documents.lock().unwrap().len(), 1);
        let mut second = Request::new("{ a }");
        cache.prepare(&mut second).unwrap();
        assert_eq!(cache.documents.lock().unwrap().len(), 1);
        assert!(second.parsed_query().is_ok());
    }

    #[test]
    fn bad_and_huge_queries_are_not_kept() {
        let cache = cache();
        cache.prepare(&mut Request::new("{ a")).unwrap();
        cache
            .prepare(&mut Request::new(format!(
                "{{ a {} }}",
                " ".repeat(MAX_QUERY_BYTES)
            )))
            .unwrap();
        assert!(cache.documents.lock().unwrap().is_empty());
    }

    #[test]
    fn when_full_the_cache_keeps_what_was_read_again() {
        let cache = cache();
        cache.prepare(&mut Request::new("{ kept }")).unwrap();
        cache.prepare(&mut Request::new("{ kept }")).unwrap();
        for i in 0..MAX_ENTRIES {
            cache
                .prepare(&mut Request::new(format!("{{ a{i} }}")))
                .unwrap();
        }
        let documents = cache.documents.lock().unwrap();
        assert_eq!(documents.len(), 2, "the repeated one and the newest");
        assert!(documents.by_text.contains_key("{ kept }"));
    }

    #[test]
    fn the_cache_is_bounded_by_what_its_documents_hold() {
        let cache = cache();
        // Queries of the longest kept length, each taken to hold 1 MiB parsed.
        let long = |i: usize| format!("{{ a{i} {} }}", "b ".repeat(MAX_QUERY_BYTES / 2 - 16));
        for i in 0..200 {
            cache.prepare(&mut Request::new(long(i))).unwrap();
        }
        let documents = cache.documents.lock().unwrap();
        assert!(documents.cost <= MAX_PARSED_BYTES, "{}", documents.cost);
        assert!(documents.len() < 100, "{}", documents.len());
    }

    #[test]
    fn a_query_nested_too_deep_is_refused_unparsed_at_any_length() {
        let cache = cache();
        let deep = |pad: usize| {
            format!(
                "{{ a(x: {}1{}) }}{}",
                "[".repeat(5000),
                "]".repeat(5000),
                " ".repeat(pad)
            )
        };
        assert!(cache.prepare(&mut Request::new(deep(0))).is_err());
        assert!(
            cache
                .prepare(&mut Request::new(deep(MAX_QUERY_BYTES)))
                .is_err()
        );
        assert!(cache.documents.lock().unwrap().is_empty());
    }

    #[test]
    fn a_query_over_the_limits_as_written_is_refused_unparsed() {
        let cache = cache();
        let copies = format!("{{ {} }}", "__typename ".repeat(LIMITS.max_complexity + 1));
        let mut request = Request::new(copies);
        assert!(cache.prepare(&mut request).is_err());
        assert!(cache.documents.lock().unwrap().is_empty());
        let aliases: String = (0..=LIMITS.max_aliases)
            .map(|i| format!("a{i}: a "))
            .collect();
        let mut short = Request::new(format!("{{ {aliases} }}"));
        assert!(short.query.len() <= MAX_QUERY_BYTES);
        assert!(cache.prepare(&mut short).is_err());
        assert!(cache.documents.lock().unwrap().is_empty());
    }
}
