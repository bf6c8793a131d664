//! A resolved filter evaluated on one document in memory, with the meaning its
//! SQL has (`filter`): typed subscriptions see each changed document once and
//! decide whether it is in the subscriber's set without a query. The filter's
//! values were converted to stored form when it was resolved
//! ([`Filter::resolve`](super::filter::Filter::resolve), for
//! [`Use::Match`](super::filter::Use::Match), which refuses conditions across
//! relationships); the document's values go through the same conversion of
//! the same columns. Values compare in stored form (datetimes as milliseconds,
//! strings byte by byte); a condition on a missing value is false, `ne`/`notIn`
//! also match it, `not` is "not true".

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::filter::{CmpOp, Column, Field, ResolvedFilter, SpatialCondition};
use super::model::SqlValue;

/// The document entry a column's value is in (the event form: `$id`,
/// `$sequence`, `$createdAt`, `$updatedAt`, then attributes by key).
fn entry<'d>(document: &'d Map<String, Value>, column: &Column) -> Option<&'d Value> {
    let name = match column.field() {
        Field::Id => "$id",
        Field::CreatedAt => "$createdAt",
        Field::UpdatedAt => "$updatedAt",
        Field::Sequence => "$sequence",
        Field::Attribute(key) => key.as_str(),
    };
    document
        .get(name)
        .filter(|v| !v.is_null())
        // A document of a MariaDB table that had no room for its sequence's key
        // shows 0 where the column holds none (`upgrade::sequences`).
        .filter(|v| !(matches!(column.field(), Field::Sequence) && v.as_str() == Some("0")))
}

/// A column's values in a document, in stored form: none when null or absent,
/// several for an array. The server wrote the document, so its values convert;
/// one that would not is no value.
fn values_of(document: &Map<String, Value>, column: &Column) -> Vec<SqlValue> {
    match entry(document, column) {
        None => Vec::new(),
        Some(Value::Array(items)) if column.is_array() => items
            .iter()
            .filter_map(|item| column.value(item).ok())
            .collect(),
        Some(value) => column.value(value).ok().into_iter().collect(),
    }
}

/// A text column's value in a document, borrowed: the substring operators apply
/// only to text columns (`Column::textual`), whose stored form is the text the
/// server wrote. A document of megabytes is not copied for each condition.
fn text_of<'d>(document: &'d Map<String, Value>, column: &Column) -> Option<&'d str> {
    match entry(document, column) {
        Some(Value::String(text)) if !column.is_array() => Some(text),
        _ => None,
    }
}

fn compare(a: &SqlValue, b: &SqlValue) -> Option<Ordering> {
    use SqlValue::*;
    let number = |v: &SqlValue| match v {
        Int(i) => Some(*i as f64),
        Float(f) => Some(*f),
        Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Text(x), Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => number(a)?.partial_cmp(&number(b)?),
    }
}

/// The words of a text, as `search` splits it.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Whether `word` starts with `prefix` (lower case), ignoring case, without
/// making a lower-case copy of either.
fn starts_with_folded(word: &str, prefix: &str) -> bool {
    let mut have = word.chars().flat_map(char::to_lowercase);
    prefix.chars().all(|want| have.next() == Some(want))
}

/// The most text matching a filter may read of one document: for each substring
/// or search condition, its column's declared size, or `longest` (the largest
/// text a document can hold) if less; for each spatial condition, the segment
/// pairs it may compare, weighed as text. What a subscription's filter costs each
/// event of its collection, known before any.
pub fn scan_cost(filter: &ResolvedFilter, longest: u64) -> u64 {
    let size = |column: &Column| -> u64 {
        let declared = match column.attribute().map(|a| &a.kind) {
            Some(kind) => kind
                .text_limit()
                .or(kind.max_chars())
                .map_or(u64::MAX, u64::from),
            // An id.
            None => 36,
        };
        declared.min(longest)
    };
    match filter {
        ResolvedFilter::And(items) | ResolvedFilter::Or(items) => items
            .iter()
            .map(|item| scan_cost(item, longest))
            .fold(0, u64::saturating_add),
        ResolvedFilter::Not(inner) => scan_cost(inner, longest),
        ResolvedFilter::StartsWith { column, .. }
        | ResolvedFilter::EndsWith { column, .. }
        | ResolvedFilter::Contains { column, .. }
        | ResolvedFilter::Search { column, .. } => size(column),
        // Pairs of segments to compare (a document's shape holds at most
        // `MAX_POINTS`), each counted as 50 characters read: two shapes that
        // cross at every pair cost about that much per pair.
        ResolvedFilter::Spatial(condition) => {
            use geo::CoordsIter as _;
            let given = condition.shape.geometry().coords_count() as u64;
            given.saturating_mul(super::spatial::MAX_POINTS as u64 * 50)
        }
        _ => 0,
    }
}

fn compares(op: CmpOp, order: Ordering) -> bool {
    match op {
        CmpOp::Eq => order == Ordering::Equal,
        CmpOp::Ne => order != Ordering::Equal,
        CmpOp::Lt => order == Ordering::Less,
        CmpOp::Le => order != Ordering::Greater,
        CmpOp::Gt => order == Ordering::Greater,
        CmpOp::Ge => order != Ordering::Less,
    }
}

/// Whether `filter` names an attribute that `document` (an event's, which has
/// every attribute, null or not) does not have: the filter was resolved against
/// the collection before one of its attributes was renamed or deleted, and no
/// longer says anything about the documents.
pub fn names_a_missing_attribute(filter: &ResolvedFilter, document: &Map<String, Value>) -> bool {
    let missing = |column: &Column| match column.field() {
        Field::Attribute(key) => !document.contains_key(key.as_str()),
        _ => false,
    };
    match filter {
        ResolvedFilter::And(items) | ResolvedFilter::Or(items) => items
            .iter()
            .any(|item| names_a_missing_attribute(item, document)),
        ResolvedFilter::Not(inner) => names_a_missing_attribute(inner, document),
        ResolvedFilter::Cmp { column, .. }
        | ResolvedFilter::In { column, .. }
        | ResolvedFilter::IsNull { column, .. }
        | ResolvedFilter::Between { column, .. }
        | ResolvedFilter::StartsWith { column, .. }
        | ResolvedFilter::EndsWith { column, .. }
        | ResolvedFilter::Contains { column, .. }
        | ResolvedFilter::HasElement { column, .. }
        | ResolvedFilter::Search { column, .. }
        | ResolvedFilter::Spatial(SpatialCondition { column, .. }) => missing(column),
        ResolvedFilter::Related { .. }
        | ResolvedFilter::RelatedThrough { .. }
        | ResolvedFilter::LinkedTo { .. } => false,
    }
}

/// Whether `document` is in the set `filter` describes. Conditions across
/// relationships match nothing: resolving for matching refuses them.
pub fn matches(filter: &ResolvedFilter, document: &Map<String, Value>) -> bool {
    match filter {
        ResolvedFilter::And(items) => items.iter().all(|f| matches(f, document)),
        ResolvedFilter::Or(items) => items.iter().any(|f| matches(f, document)),
        ResolvedFilter::Not(inner) => !matches(inner, document),
        ResolvedFilter::Cmp { column, op, value } => match values_of(document, column).first() {
            None => *op == CmpOp::Ne,
            Some(have) => compare(have, value).is_some_and(|o| compares(*op, o)),
        },
        ResolvedFilter::In {
            column,
            values,
            negate,
        } => match values_of(document, column).first() {
            None => *negate,
            Some(have) => {
                let found = values
                    .iter()
                    .any(|v| compare(have, v) == Some(Ordering::Equal));
                found != *negate
            }
        },
        // An empty list is a value, as in SQL; only a missing one is null.
        ResolvedFilter::IsNull { column, is_null } => entry(document, column).is_none() == *is_null,
        ResolvedFilter::Between { column, low, high } => {
            values_of(document, column).first().is_some_and(|have| {
                compare(have, low).is_some_and(|o| o != Ordering::Less)
                    && compare(have, high).is_some_and(|o| o != Ordering::Greater)
            })
        }
        ResolvedFilter::StartsWith { column, value } => {
            text_of(document, column).is_some_and(|t| t.starts_with(value.as_str()))
        }
        ResolvedFilter::EndsWith { column, value } => {
            text_of(document, column).is_some_and(|t| t.ends_with(value.as_str()))
        }
        ResolvedFilter::Contains { column, value } => {
            text_of(document, column).is_some_and(|t| t.contains(value.as_str()))
        }
        ResolvedFilter::HasElement { column, value } => values_of(document, column)
            .iter()
            .any(|v| compare(v, value) == Some(Ordering::Equal)),
        ResolvedFilter::Search { column, query, .. } => {
            let Some(text) = text_of(document, column) else {
                return false;
            };
            // Folded a character at a time, as the document's words are.
            let mut wanted = words(query)
                .map(|w| w.chars().flat_map(char::to_lowercase).collect::<String>())
                .peekable();
            wanted.peek().is_some()
                && wanted.all(|w| words(text).any(|h| starts_with_folded(h, &w)))
        }
        ResolvedFilter::Spatial(SpatialCondition {
            column,
            relation,
            shape,
            distance,
            meters,
            ..
        }) => {
            let own = column.attribute().and_then(|a| a.kind.shape());
            let stored = entry(document, column)
                .zip(own)
                .and_then(|(value, own)| super::spatial::check(own, value).ok());
            stored.is_some_and(|stored| {
                super::spatial::holds(
                    *relation,
                    &stored.geometry(),
                    &shape.geometry(),
                    *distance,
                    *meters,
                ) == Some(true)
            })
        }
        ResolvedFilter::Related { .. }
        | ResolvedFilter::RelatedThrough { .. }
        | ResolvedFilter::LinkedTo { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::services::databases::Collection;
    use crate::services::databases::filter::{Filter, Target, Use};
    use crate::services::databases::model::{Attribute, AttributeKind};

    fn collection() -> Collection {
        let attr = |key: &str, kind: AttributeKind, array: bool| Attribute {
            key: key.into(),
            kind,
            required: false,
            array,
            default: None,
        };
        super::super::test_collection(vec![
            attr("title", AttributeKind::String { size: 100 }, false),
            attr(
                "views",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
                false,
            ),
            attr("tags", AttributeKind::String { size: 10 }, true),
            attr("at", AttributeKind::Datetime, false),
        ])
    }

    fn doc(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn conditions_mean_what_their_sql_means() {
        let c = collection();
        let d = doc(
            json!({"$id": "a", "$createdAt": "2026-01-01T00:00:00.000Z", "title": "Rust and SQLite", "views": 7, "tags": ["x", "y"], "at": "2026-05-01T10:00:00.000Z"}),
        );
        let empty = doc(json!({"$id": "b", "title": null, "tags": []}));
        let attr = |k: &str| Field::attribute(k);
        let cmp = |k: &str, op, v: Value| Filter::Cmp {
            field: attr(k),
            op,
            value: v,
        };
        let cases: Vec<(Filter, bool, bool)> = vec![
            (cmp("views", CmpOp::Gt, json!(5)), true, false),
            (cmp("views", CmpOp::Ne, json!(7)), false, true),
            (cmp("title", CmpOp::Lt, json!("S")), true, false),
            (
                Filter::In {
                    field: attr("views"),
                    values: vec![json!(1), json!(7)],
                    negate: false,
                },
                true,
                false,
            ),
            (
                Filter::In {
                    field: attr("views"),
                    values: vec![json!(1)],
                    negate: true,
                },
                true,
                true,
            ),
            (
                Filter::IsNull {
                    field: attr("title"),
                    is_null: true,
                },
                false,
                true,
            ),
            (
                Filter::IsNull {
                    field: attr("tags"),
                    is_null: true,
                },
                false,
                false,
            ),
            (
                Filter::Contains {
                    field: attr("tags"),
                    value: json!("y"),
                },
                true,
                false,
            ),
            (
                Filter::Contains {
                    field: attr("title"),
                    value: json!("and"),
                },
                true,
                false,
            ),
            (
                Filter::Contains {
                    field: attr("title"),
                    value: json!("AND"),
                },
                false,
                false,
            ),
            (
                Filter::StartsWith {
                    field: attr("title"),
                    value: "Rust".into(),
                },
                true,
                false,
            ),
            (
                Filter::Search {
                    field: attr("title"),
                    query: "sql RU".into(),
                },
                true,
                false,
            ),
            (
                Filter::Search {
                    field: attr("title"),
                    query: "go".into(),
                },
                false,
                false,
            ),
            (
                cmp("at", CmpOp::Ge, json!("2026-05-01T12:00:00+02:00")),
                true,
                false,
            ),
            (
                Filter::Between {
                    field: attr("views"),
                    low: json!(7),
                    high: json!(9),
                },
                true,
                false,
            ),
            (
                Filter::Not(Box::new(cmp("views", CmpOp::Gt, json!(5)))),
                false,
                true,
            ),
            (
                Filter::Cmp {
                    field: Field::Id,
                    op: CmpOp::Eq,
                    value: json!("a"),
                },
                true,
                false,
            ),
            (
                Filter::Cmp {
                    field: Field::CreatedAt,
                    op: CmpOp::Lt,
                    value: json!("2027-01-01T00:00:00Z"),
                },
                true,
                false,
            ),
            (Filter::And(vec![]), true, true),
            (Filter::Or(vec![]), false, false),
        ];
        let target = Target::of(&c);
        for (filter, on_full, on_empty) in cases {
            let filter = filter.resolve(&target, Use::Match).unwrap();
            assert_eq!(
                matches(&filter, &d),
                on_full,
                "{filter:?} on the full document"
            );
            assert_eq!(
                matches(&filter, &empty),
                on_empty,
                "{filter:?} on the empty document"
            );
        }
    }

    #[test]
    fn bad_filters_are_refused_when_resolved_never_matched_as_nothing() {
        let target = Target::of(&collection());
        let cmp = |k: &str, v: Value| Filter::Cmp {
            field: Field::attribute(k),
            op: CmpOp::Eq,
            value: v,
        };
        let related = Filter::Related {
            field: Field::attribute("title"),
            target: target.clone(),
            filter: Box::new(Filter::default()),
        };
        let cases = [
            (cmp("$unused", json!(1)), "FILTER_UNKNOWN_FIELD"),
            (cmp("views", json!("seven")), "FILTER_INVALID"),
            (cmp("views", json!(1.5)), "FILTER_INVALID"),
            (cmp("at", json!("yesterday")), "FILTER_INVALID"),
            (
                Filter::In {
                    field: Field::attribute("views"),
                    values: vec![json!(1), json!("x")],
                    negate: true,
                },
                "FILTER_INVALID",
            ),
            (
                Filter::Between {
                    field: Field::CreatedAt,
                    low: json!("2020-01-01T00:00:00Z"),
                    high: json!(5),
                },
                "FILTER_INVALID",
            ),
            (
                Filter::Contains {
                    field: Field::attribute("tags"),
                    value: json!(3),
                },
                "FILTER_INVALID",
            ),
            (
                Filter::Search {
                    field: Field::attribute("title"),
                    query: "a\u{0}b".into(),
                },
                "VALUE_INVALID",
            ),
            (Filter::Not(Box::new(related)), "FILTER_INVALID"),
        ];
        for (filter, code) in cases {
            let err = filter.resolve(&target, Use::Match).unwrap_err();
            assert_eq!(err.code(), code, "{filter:?}");
        }
        // Matching needs no index for `search`; a query does.
        let search = Filter::Search {
            field: Field::attribute("title"),
            query: "rust".into(),
        };
        assert!(search.resolve(&target, Use::Match).is_ok());
        assert_eq!(
            search.resolve(&target, Use::Query).unwrap_err().code(),
            "SEARCH_NEEDS_FULLTEXT_INDEX"
        );
    }

    #[test]
    fn a_filter_costs_the_text_its_conditions_may_read() {
        let target = Target::of(&collection());
        let contains = |field: &str| Filter::Contains {
            field: Field::attribute(field),
            value: json!("x"),
        };
        let filter = Filter::Or(vec![
            contains("title"),
            Filter::Not(Box::new(Filter::Search {
                field: Field::attribute("title"),
                query: "Ünïcode words".into(),
            })),
            Filter::StartsWith {
                field: Field::Id,
                value: "a".into(),
            },
            // Comparisons and array elements read no text.
            Filter::Cmp {
                field: Field::attribute("views"),
                op: CmpOp::Gt,
                value: json!(1),
            },
            contains("tags"),
        ])
        .resolve(&target, Use::Match)
        .unwrap();
        assert_eq!(scan_cost(&filter, u64::MAX), 100 + 100 + 36);
        assert_eq!(
            scan_cost(&filter, 50),
            50 + 50 + 36,
            "at most the longest text"
        );

        // Words compare folded to lower case, a character at a time.
        let search = Filter::Search {
            field: Field::attribute("title"),
            query: "ÜNÏ WORD".into(),
        }
        .resolve(&target, Use::Match)
        .unwrap();
        assert!(matches(
            &search,
            &doc(json!({"title": "some ünïcode Words"}))
        ));
        assert!(!matches(&search, &doc(json!({"title": "some ünïcode"}))));
    }
}
