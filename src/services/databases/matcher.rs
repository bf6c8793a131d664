//! A filter evaluated on one document in memory, with the meaning its SQL has
//! (`filter`): typed subscriptions see each changed document once and decide
//! whether it is in the subscriber's set without a query. Values compare in
//! stored form (datetimes as milliseconds, strings byte by byte); a condition on
//! a missing value is false, `ne`/`notIn` also match it, `not` is "not true".
//! Filters across relationships need the database and are refused here.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{AppError, AppResult, codes};

use super::Collection;
use super::filter::{CmpOp, Field, Filter};
use super::model::{Attribute, SqlValue, rfc3339_to_millis};

/// Refuses filters that cannot be evaluated on a document alone.
pub fn check_evaluable(filter: &Filter) -> AppResult<()> {
    match filter {
        Filter::And(items) | Filter::Or(items) => items.iter().try_for_each(check_evaluable),
        Filter::Not(inner) => check_evaluable(inner),
        Filter::Related { .. } | Filter::RelatedThrough { .. } | Filter::LinkedTo { .. } => {
            Err(AppError::Invalid {
                code: codes::FILTER_INVALID,
                field: "filter".into(),
                reason: "a subscription's filter cannot reach across relationships".into(),
            })
        }
        _ => Ok(()),
    }
}

/// A field's value in a document (the event form: `$id`, `$createdAt`,
/// `$updatedAt`, then attributes by key): none when null or absent, several for
/// an array.
fn values_of(
    collection: &Collection,
    document: &Map<String, Value>,
    field: &Field,
) -> Vec<SqlValue> {
    let text = |key: &str| document.get(key).and_then(Value::as_str);
    match field {
        Field::Id => text("$id")
            .map(|s| SqlValue::Text(s.to_string()))
            .into_iter()
            .collect(),
        Field::CreatedAt => text("$createdAt")
            .and_then(rfc3339_to_millis)
            .map(SqlValue::Int)
            .into_iter()
            .collect(),
        Field::UpdatedAt => text("$updatedAt")
            .and_then(rfc3339_to_millis)
            .map(SqlValue::Int)
            .into_iter()
            .collect(),
        Field::Attribute(key) => {
            let Some(attribute) = collection.columns().into_iter().find(|a| &a.key == key) else {
                return Vec::new();
            };
            match document.get(key) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| stored(&attribute, item))
                    .collect(),
                Some(value) => stored(&attribute, value).into_iter().collect(),
            }
        }
    }
}

fn stored(attribute: &Attribute, value: &Value) -> Option<SqlValue> {
    attribute.filter_value(value).ok()
}

/// The stored form of a filter operand for `field`.
fn operand(collection: &Collection, field: &Field, value: &Value) -> Option<SqlValue> {
    match field {
        Field::Id => value.as_str().map(|s| SqlValue::Text(s.to_string())),
        Field::CreatedAt | Field::UpdatedAt => value
            .as_str()
            .and_then(rfc3339_to_millis)
            .map(SqlValue::Int),
        Field::Attribute(key) => collection
            .columns()
            .into_iter()
            .find(|a| &a.key == key)
            .and_then(|a| stored(&a, value)),
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

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `document` is in the set `filter` describes.
pub fn matches(filter: &Filter, collection: &Collection, document: &Map<String, Value>) -> bool {
    match filter {
        Filter::And(items) => items.iter().all(|f| matches(f, collection, document)),
        Filter::Or(items) => items.iter().any(|f| matches(f, collection, document)),
        Filter::Not(inner) => !matches(inner, collection, document),
        Filter::Cmp { field, op, value } => {
            let have = values_of(collection, document, field);
            let Some(want) = operand(collection, field, value) else {
                return false;
            };
            let Some(have) = have.first() else {
                return *op == CmpOp::Ne;
            };
            let Some(order) = compare(have, &want) else {
                return false;
            };
            match op {
                CmpOp::Eq => order == Ordering::Equal,
                CmpOp::Ne => order != Ordering::Equal,
                CmpOp::Lt => order == Ordering::Less,
                CmpOp::Le => order != Ordering::Greater,
                CmpOp::Gt => order == Ordering::Greater,
                CmpOp::Ge => order != Ordering::Less,
            }
        }
        Filter::In {
            field,
            values,
            negate,
        } => {
            let have = values_of(collection, document, field);
            let Some(have) = have.first() else {
                return *negate;
            };
            let found = values
                .iter()
                .filter_map(|v| operand(collection, field, v))
                .any(|v| compare(have, &v) == Some(Ordering::Equal));
            found != *negate
        }
        Filter::IsNull { field, is_null } => {
            // An empty list is a value, as in SQL; only a missing one is null.
            let null = match field {
                Field::Attribute(key) => matches!(document.get(key), None | Some(Value::Null)),
                _ => false,
            };
            null == *is_null
        }
        Filter::Between { field, low, high } => {
            let have = values_of(collection, document, field);
            let (Some(have), Some(low), Some(high)) = (
                have.first(),
                operand(collection, field, low),
                operand(collection, field, high),
            ) else {
                return false;
            };
            compare(have, &low).is_some_and(|o| o != Ordering::Less)
                && compare(have, &high).is_some_and(|o| o != Ordering::Greater)
        }
        Filter::StartsWith { field, value } => {
            text_of(collection, document, field).is_some_and(|t| t.starts_with(value.as_str()))
        }
        Filter::EndsWith { field, value } => {
            text_of(collection, document, field).is_some_and(|t| t.ends_with(value.as_str()))
        }
        Filter::Contains { field, value } => {
            let is_array = matches!(field, Field::Attribute(key)
                if collection.columns().iter().any(|a| &a.key == key && a.array));
            if is_array {
                let Some(want) = operand(collection, field, value) else {
                    return false;
                };
                values_of(collection, document, field)
                    .iter()
                    .any(|v| compare(v, &want) == Some(Ordering::Equal))
            } else {
                match (text_of(collection, document, field), value.as_str()) {
                    (Some(text), Some(part)) => text.contains(part),
                    _ => false,
                }
            }
        }
        Filter::Search { field, query } => {
            let Some(text) = text_of(collection, document, field) else {
                return false;
            };
            let have = words(&text);
            let wanted = words(query);
            !wanted.is_empty()
                && wanted
                    .iter()
                    .all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
        }
        Filter::Related { .. } | Filter::RelatedThrough { .. } | Filter::LinkedTo { .. } => false,
    }
}

fn text_of(
    collection: &Collection,
    document: &Map<String, Value>,
    field: &Field,
) -> Option<String> {
    match values_of(collection, document, field).into_iter().next() {
        Some(SqlValue::Text(text)) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::services::databases::model::AttributeKind;

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
            (cmp("$unused", CmpOp::Eq, json!(1)), false, false),
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
        for (filter, on_full, on_empty) in cases {
            assert_eq!(
                matches(&filter, &c, &d),
                on_full,
                "{filter:?} on the full document"
            );
            assert_eq!(
                matches(&filter, &c, &empty),
                on_empty,
                "{filter:?} on the empty document"
            );
        }
    }

    #[test]
    fn filters_across_relationships_are_refused() {
        let related = Filter::Related {
            field: Field::attribute("author"),
            table: "c_2".into(),
            attrs: Vec::new(),
            filter: Box::new(Filter::default()),
        };
        let err = check_evaluable(&Filter::Not(Box::new(related))).unwrap_err();
        assert_eq!(err.code(), "FILTER_INVALID");
        assert!(check_evaluable(&Filter::default()).is_ok());
    }
}
