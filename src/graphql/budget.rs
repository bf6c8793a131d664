//! The bound on a request's variables, checked before anything counts, validates or
//! runs the request, on every transport (HTTP, a batch's each request, WebSocket,
//! a function's own GraphQL calls).
//!
//! A variable costs far more held than sent: a JSON `0,` of two bytes becomes a
//! value of 72 bytes, so a 2 MiB body of small numbers holds some 70 MB. And every
//! use of a variable in the document is a copy of it: async-graphql's validation,
//! its `@skip`/`@include` and its argument resolution each copy the variable's
//! value (or its default) once per reference, so a 1.7 MB string named 80,000
//! times in one argument list is 136 GB of copies. Two bounds keep both in check:
//! the variables as sent, counted once ([`Size`]: values and bytes of text), and
//! the sum, over every reference to a variable in the operation run (fragments
//! expanded, as execution expands them), of the size of what it names, within
//! [`REFERENCE_FACTOR`] times the first. Both walks only count; they copy nothing.
//!
//! Variables the operation does not declare are dropped ([`keep_declared`]):
//! nothing can read them (a reference to an undeclared variable fails
//! validation), so, as graphql-js ignores them, a client that sends extra ones
//! still gets its answer, and nothing keeps them (a subscription keeps its
//! variables for as long as it lasts).
//!
//! This module decides nothing about the document's shape: depth, aliases and
//! complexity are [`super::limits`]'s.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, ServerError, ServerResult, Value as ConstValue, Variables};
use async_graphql_value::Value;

use super::limits::{QueryLimits, coded};
use super::variables::selected_operations;
use crate::error::codes;

/// How many times its variables, counted once, an operation's references to them
/// may add up to: a variable used in a few places is common (`$id` in two
/// fields, `$skip` in a few directives), a large one named many times is not.
pub const REFERENCE_FACTOR: u64 = 4;

/// What a value holds: its values (every scalar, list and object counts one) and
/// its bytes of text (strings, enum names, object keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    pub values: u64,
    pub bytes: u64,
}

impl Size {
    /// The size of `value`, walked without recursion: a value nested as deep as
    /// its JSON allows costs no stack.
    pub fn of(value: &ConstValue) -> Size {
        let mut size = Size::default();
        let mut pending = vec![value];
        while let Some(value) = pending.pop() {
            size.values += 1;
            match value {
                ConstValue::String(text) => size.bytes += text.len() as u64,
                ConstValue::Enum(name) => size.bytes += name.len() as u64,
                ConstValue::Binary(bytes) => size.bytes += bytes.len() as u64,
                ConstValue::List(items) => pending.extend(items),
                ConstValue::Object(fields) => {
                    for (name, value) in fields {
                        size.bytes += name.len() as u64;
                        pending.push(value);
                    }
                }
                ConstValue::Null | ConstValue::Number(_) | ConstValue::Boolean(_) => {}
            }
        }
        size
    }

    /// The size of all of `variables`, their names included.
    pub fn of_variables(variables: &Variables) -> Size {
        variables
            .iter()
            .fold(Size::default(), |size, (name, value)| {
                let value = Size::of(value);
                size.plus(Size {
                    values: value.values,
                    bytes: value.bytes + name.len() as u64,
                })
            })
    }

    fn plus(self, other: Size) -> Size {
        Size {
            values: self.values.saturating_add(other.values),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    fn times(self, n: u64) -> Size {
        Size {
            values: self.values.saturating_mul(n),
            bytes: self.bytes.saturating_mul(n),
        }
    }

    fn exceeds(self, max: Size) -> bool {
        self.values > max.values || self.bytes > max.bytes
    }

    /// About the memory a copy of a value of this size holds.
    pub fn memory(self) -> u64 {
        self.values
            .saturating_mul(std::mem::size_of::<ConstValue>() as u64)
            .saturating_add(self.bytes)
    }
}

/// The most a request's variables may hold, counted once.
pub fn max_size(limits: &QueryLimits) -> Size {
    Size {
        values: limits.max_variable_values,
        bytes: limits.max_variables_bytes,
    }
}

/// Refuses variables over the limits as sent (`VARIABLES_TOO_LARGE`), before
/// anything reads the document.
pub fn check_size(variables: &Variables, limits: &QueryLimits) -> ServerResult<()> {
    if variables.is_empty() {
        return Ok(());
    }
    let size = Size::of_variables(variables);
    let max = max_size(limits);
    if size.exceeds(max) {
        return Err(too_large(format!(
            "the variables hold {} values and {} bytes of text; the limits are {} values \
             and {} bytes",
            size.values, size.bytes, max.values, max.bytes
        )));
    }
    Ok(())
}

/// Refuses an operation whose references to its variables add up to more than
/// [`REFERENCE_FACTOR`] times the limits (`VARIABLES_TOO_LARGE`): each reference
/// is a copy of the value it names (or of its default). All operations of the
/// document count when the request names none.
pub fn check_references(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &QueryLimits,
) -> ServerResult<()> {
    let max = max_size(limits).times(REFERENCE_FACTOR);
    let mut counter = Counter {
        document,
        fragments: HashMap::new(),
    };
    let mut total = Size::default();
    for operation in selected_operations(document, operation_name) {
        let counts = counter.selection_set(&operation.selection_set.node, 0);
        let mut counts = counts;
        for directive in &operation.directives {
            count_directive(&directive.node, &mut counts);
        }
        for (name, references) in counts {
            let Some(value) = value_of(operation, variables, name) else {
                continue;
            };
            total = total.plus(Size::of(value).times(references));
            if total.exceeds(max) {
                return Err(too_large(format!(
                    "the operation's uses of its variables copy more than {} values or {} \
                     bytes of text, each use a copy of the value it names; send a large \
                     value in one variable used once",
                    max.values, max.bytes
                )));
            }
        }
    }
    Ok(())
}

/// Drops the variables no operation the request may run declares.
pub fn keep_declared(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &mut Variables,
) {
    if variables.is_empty() {
        return;
    }
    let declared: HashSet<&Name> = selected_operations(document, operation_name)
        .flat_map(|operation| &operation.variable_definitions)
        .map(|definition| &definition.node.name.node)
        .collect();
    variables.retain(|name, _| declared.contains(name));
}

/// Every check of this module, in order, then the undeclared variables dropped.
pub fn check(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &mut Variables,
    limits: &QueryLimits,
) -> ServerResult<()> {
    check_size(variables, limits)?;
    check_references(document, operation_name, variables, limits)?;
    keep_declared(document, operation_name, variables);
    Ok(())
}

/// Values a JSON body may hold beside its variables: each request's own fields
/// (`query`, `operationName`, `extensions` and what is in it).
const ENVELOPE_VALUES: u64 = 64;

/// Whether a JSON body holds more values than `limits` lets the variables of
/// `requests` requests hold, counted as [`Size`] counts them (every scalar, list
/// and object; an object's keys are not values) without parsing it: parsing is
/// what costs, some 72 bytes a value, so a 2 MiB body of `0,` would hold 70 MB
/// before its variables could be counted. The count of malformed JSON means
/// nothing but stays bounded; the parser refuses it after.
pub fn body_over(bytes: &[u8], limits: &QueryLimits, requests: usize) -> bool {
    let requests = requests.max(1) as u64;
    let limit = limits
        .max_variable_values
        .saturating_add(ENVELOPE_VALUES.saturating_mul(requests));
    json_values_over(bytes, limit)
}

fn json_values_over(bytes: &[u8], limit: u64) -> bool {
    let mut values = 0u64;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    // An escape's next byte is never the closing quote.
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
                let next = bytes[at.min(bytes.len())..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace());
                if next != Some(&b':') {
                    values += 1;
                }
            }
            b'[' | b'{' => {
                values += 1;
                at += 1;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                values += 1;
                while at < bytes.len()
                    && !matches!(bytes[at], b',' | b']' | b'}' | b':' | b'"' | b'[' | b'{')
                    && !bytes[at].is_ascii_whitespace()
                {
                    at += 1;
                }
            }
            _ => at += 1,
        }
        if values > limit {
            return true;
        }
    }
    false
}

fn too_large(message: String) -> ServerError {
    coded(message, codes::VARIABLES_TOO_LARGE)
}

/// The value a reference to `name` resolves to in `operation`: as sent, else its
/// default (async-graphql resolves only declared variables).
fn value_of<'a>(
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    name: &Name,
) -> Option<&'a ConstValue> {
    let definition = operation
        .variable_definitions
        .iter()
        .find(|definition| definition.node.name.node == *name)?;
    variables
        .get(name)
        .or_else(|| definition.node.default_value())
}

/// References to each variable.
type Counts<'d> = HashMap<&'d Name, u64>;

/// Deeper than any document the nesting limit lets through (a fragment cycle,
/// which `measure` and validation refuse).
const MAX_WALK: usize = 256;

/// The walk that counts references, each fragment counted once and then
/// multiplied by its spreads.
struct Counter<'d> {
    document: &'d ExecutableDocument,
    /// A fragment's counts, once known; `None` while it is being counted.
    fragments: HashMap<&'d str, Option<Counts<'d>>>,
}

impl<'d> Counter<'d> {
    fn selection_set(&mut self, set: &'d SelectionSet, nesting: usize) -> Counts<'d> {
        let mut counts = Counts::new();
        if nesting > MAX_WALK {
            return counts;
        }
        for item in &set.items {
            for directive in item.node.directives() {
                count_directive(&directive.node, &mut counts);
            }
            match &item.node {
                Selection::Field(field) => {
                    for (_, value) in &field.node.arguments {
                        count_value(&value.node, &mut counts);
                    }
                    let inner = self.selection_set(&field.node.selection_set.node, nesting + 1);
                    add(&mut counts, &inner, 1);
                }
                Selection::InlineFragment(fragment) => {
                    let inner = self.selection_set(&fragment.node.selection_set.node, nesting + 1);
                    add(&mut counts, &inner, 1);
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if let Some(inner) = self.fragment(name, nesting) {
                        add(&mut counts, &inner, 1);
                    }
                }
            }
        }
        counts
    }

    /// The counts of one expansion of fragment `name`; `None` for an unknown
    /// fragment or a cycle.
    fn fragment(&mut self, name: &'d Name, nesting: usize) -> Option<Counts<'d>> {
        match self.fragments.get(name.as_str()) {
            Some(Some(counts)) => return Some(counts.clone()),
            Some(None) => return None,
            None => {}
        }
        let definition = &self.document.fragments.get(name)?.node;
        self.fragments.insert(name.as_str(), None);
        let mut counts = self.selection_set(&definition.selection_set.node, nesting + 1);
        for directive in &definition.directives {
            count_directive(&directive.node, &mut counts);
        }
        self.fragments.insert(name.as_str(), Some(counts.clone()));
        Some(counts)
    }
}

fn add<'d>(counts: &mut Counts<'d>, more: &Counts<'d>, times: u64) {
    for (name, n) in more {
        let count = counts.entry(*name).or_default();
        *count = count.saturating_add(n.saturating_mul(times));
    }
}

fn count_directive<'d>(directive: &'d Directive, counts: &mut Counts<'d>) {
    for (_, value) in &directive.arguments {
        count_value(&value.node, counts);
    }
}

/// Counts the variables `value` names, however deep in lists and objects.
fn count_value<'d>(value: &'d Value, counts: &mut Counts<'d>) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Variable(name) => {
                let count = counts.entry(name).or_default();
                *count = count.saturating_add(1);
            }
            Value::List(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_body_is_counted_as_its_variables_are_without_parsing_it() {
        let body = br#"{"query": "q", "variables": {"ids": [1, -2.5e3, true, null, "a\"b:", {"k": "v", "n": [ ]}]}}"#;
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
        let variables = Variables::from_json(parsed["variables"].clone());
        // The body adds its own object, the query string and the variables' object.
        let counted = Size::of_variables(&variables).values + 3;
        assert!(!json_values_over(body, counted));
        assert!(json_values_over(body, counted - 1));
        let many = format!("{{\"variables\": {{\"v\": [{}0]}}}}", "0,".repeat(200_000));
        assert!(body_over(many.as_bytes(), &LIMITS, 1));
        let some = format!("{{\"variables\": {{\"v\": [{}0]}}}}", "0,".repeat(1_000));
        assert!(!body_over(some.as_bytes(), &LIMITS, 1));
        // Unterminated strings and stray bytes end the count, not the server.
        assert!(!json_values_over(br#"{"a": "unterminated\"#, 10));
    }

    use super::*;
    use serde_json::json;

    const LIMITS: QueryLimits = crate::graphql::limits::TEST_LIMITS;

    fn size(json: serde_json::Value) -> Size {
        Size::of(&ConstValue::from_json(json).unwrap())
    }

    fn code(err: ServerError) -> String {
        err.extensions
            .and_then(|ext| ext.get("code").cloned())
            .map(|code| code.to_string())
            .unwrap_or_default()
    }

    fn checked(
        query: &str,
        operation: Option<&str>,
        variables: serde_json::Value,
    ) -> ServerResult<Variables> {
        let document = async_graphql::parser::parse_query(query).unwrap();
        let mut variables = Variables::from_json(variables);
        check(&document, operation, &mut variables, &LIMITS).map(|()| variables)
    }

    #[test]
    fn a_value_counts_every_value_and_every_byte_of_text() {
        assert_eq!(
            size(json!(null)),
            Size {
                values: 1,
                bytes: 0
            }
        );
        assert_eq!(
            size(json!("héllo")),
            Size {
                values: 1,
                bytes: 6
            }
        );
        assert_eq!(
            size(json!({"ab": [1, "xyz", {"c": true}], "d": null})),
            // object, list, 1, "xyz", object, true, null; keys ab, c, d
            Size {
                values: 7,
                bytes: 3 + 2 + 1 + 1
            }
        );
        let names = Variables::from_json(json!({"first": 1, "q": "abc"}));
        assert_eq!(
            Size::of_variables(&names),
            Size {
                values: 2,
                bytes: 5 + 1 + 3
            }
        );
    }

    #[test]
    fn a_value_nested_deep_is_measured_without_recursion() {
        let mut value = ConstValue::Null;
        for _ in 0..100_000 {
            value = ConstValue::List(vec![value]);
        }
        assert_eq!(Size::of(&value).values, 100_001);
        // Dropped without recursion either.
        let mut value = value;
        while let ConstValue::List(mut items) = value {
            value = items.pop().unwrap_or(ConstValue::Null);
        }
    }

    #[test]
    fn variables_over_the_limits_as_sent_are_refused() {
        let many: Vec<u8> = vec![0; LIMITS.max_variable_values as usize];
        let refused =
            checked("query($a: [Int]) { a(x: $a) }", None, json!({"a": many})).unwrap_err();
        assert_eq!(code(refused), "\"VARIABLES_TOO_LARGE\"");
        let long = "x".repeat(LIMITS.max_variables_bytes as usize);
        let refused =
            checked("query($a: String) { a(x: $a) }", None, json!({"a": long})).unwrap_err();
        assert_eq!(code(refused), "\"VARIABLES_TOO_LARGE\"");
        // Undeclared ones count too: they were sent.
        let refused = checked("{ a }", None, json!({"b": long})).unwrap_err();
        assert_eq!(code(refused), "\"VARIABLES_TOO_LARGE\"");
        let within: Vec<u8> = vec![0; LIMITS.max_variable_values as usize - 1];
        assert!(checked("query($a: [Int]) { a(x: $a) }", None, json!({"a": within})).is_ok());
    }

    #[test]
    fn each_reference_counts_the_size_of_what_it_names() {
        let quarter = "x".repeat((LIMITS.max_variables_bytes / 4) as usize);
        let uses = |n: usize| {
            format!(
                "query($q: String) {{ a(queries: [{}]) }}",
                vec!["$q"; n].join(",")
            )
        };
        // A variable of a quarter of the limit may be used up to 4 × 4 times.
        let limit = (REFERENCE_FACTOR * 4) as usize;
        assert!(checked(&uses(limit - 1), None, json!({"q": quarter})).is_ok());
        let refused = checked(&uses(limit + 1), None, json!({"q": quarter})).unwrap_err();
        assert_eq!(code(refused), "\"VARIABLES_TOO_LARGE\"");
        // Many uses of a small variable are nothing.
        assert!(checked(&uses(80_000), None, json!({"q": "x"})).is_ok());
    }

    #[test]
    fn references_count_through_fragments_directives_and_defaults() {
        let quarter = "x".repeat((LIMITS.max_variables_bytes / 4) as usize);
        let limit = REFERENCE_FACTOR * 4;
        // Fragments expanded: F spreads G twice, G uses $q twice, in arguments
        // and directives: each spread of F is 4 uses.
        let query = |spreads: u64| {
            format!(
                "query($q: String) {{ {} }} fragment F on Q {{ ...G ...G }} \
                 fragment G on Q {{ a(x: {{y: [$q]}}) b @skip(if: $q) }}",
                "...F ".repeat(spreads as usize)
            )
        };
        assert!(checked(&query(limit / 4), None, json!({"q": quarter})).is_ok());
        assert!(checked(&query(limit / 4 + 1), None, json!({"q": quarter})).is_err());
        // A default is copied at each use as a sent value is.
        let defaulted = format!(
            "query($q: String = \"{quarter}\") {{ {} }}",
            "a(x: $q) ".repeat(limit as usize + 1)
        );
        assert!(checked(&defaulted, None, json!({})).is_err());
        // Only the operation run counts.
        let two = format!(
            "query A($q: String) {{ {} }} query B($q: String) {{ a(x: $q) }}",
            "a(x: $q) ".repeat(limit as usize + 1)
        );
        assert!(checked(&two, Some("B"), json!({"q": quarter})).is_ok());
        assert!(checked(&two, Some("A"), json!({"q": quarter})).is_err());
        // A fragment cycle counts once around, and is refused elsewhere.
        assert!(
            checked(
                "{ ...A } fragment A on Q { ...A a(x: $q) }",
                None,
                json!({})
            )
            .is_ok()
        );
    }

    #[test]
    fn undeclared_variables_are_dropped() {
        let kept = checked(
            "query A($a: Int) { a(x: $a) } query B($b: Int) { b(x: $b) }",
            Some("A"),
            json!({"a": 1, "b": 2, "c": 3}),
        )
        .unwrap();
        assert_eq!(kept, Variables::from_json(json!({"a": 1})));
        let all = checked(
            "query A($a: Int) { a(x: $a) } query B($b: Int) { b(x: $b) }",
            None,
            json!({"a": 1, "b": 2, "c": 3}),
        )
        .unwrap();
        assert_eq!(all, Variables::from_json(json!({"a": 1, "b": 2})));
    }
}
