//! Parsed query documents, kept by their text: clients send the same few operations
//! over and over, and parsing one costs far more (about 11 µs for a small query) than
//! copying its parsed form (under 1 µs). Bounded: past `MAX_ENTRIES` the cache starts
//! over, so a client sending ever new queries cannot grow it.
//!
//! Every request passes here before anything parses its query, so this is where
//! a text that parsing would be wasted on, or nested too deep to parse safely, is
//! refused ([`check_text`]); a query found in the cache passed that check when it
//! was first parsed. Variables over their bounds are refused here too
//! ([`budget`]), before a transport copies or keeps them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError};

use super::budget;
use super::limits::{QueryLimits, check_text};

const MAX_ENTRIES: usize = 1024;
/// Longer queries are parsed every time: they are rare, and would hold memory.
const MAX_QUERY_BYTES: usize = 8 * 1024;

pub struct ParsedQueries {
    documents: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
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
            .and_then(|documents| documents.get(&request.query).cloned());
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
            if documents.len() >= MAX_ENTRIES {
                documents.clear();
            }
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
    fn the_cache_starts_over_when_full() {
        let cache = cache();
        for i in 0..=MAX_ENTRIES {
            cache
                .prepare(&mut Request::new(format!("{{ a{i} }}")))
                .unwrap();
        }
        assert_eq!(cache.documents.lock().unwrap().len(), 1);
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
