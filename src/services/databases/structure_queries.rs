//! Appwrite's queries on a collection's attributes and indexes (its
//! `listAttributes` and `listIndexes`): `Collection.attributes(queries:)` and
//! `Collection.indexes(queries:)` filter on their fields, page with `limit`,
//! `offset` and key cursors, answered from the structure already read.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, TypeRef};

use super::appwrite_query::{ParsedQueries, parse_query_strings};
use super::filter::{CmpOp, Field as FilterField, Filter};
use crate::error::{AppError, codes};
use crate::graphql::types::parent_value;

/// What a query may compare of an attribute, as Appwrite's `listAttributes` takes it.
const ATTRIBUTE_FIELDS: &[&str] = &[
    "key", "type", "size", "required", "array", "status", "error",
];

/// What a query may compare of an index, as Appwrite's `listIndexes` takes it.
const INDEX_FIELDS: &[&str] = &["key", "type", "status", "attributes", "error"];

/// `Collection.attributes`, taking Appwrite's queries.
pub fn attributes_field() -> Field {
    listed_field(
        "attributes",
        "Attribute",
        ATTRIBUTE_FIELDS,
        "Its attributes, all of them or those `queries` find (Appwrite's `listAttributes`): `equal`, `notEqual`, `startsWith`, `endsWith`, `isNull`, `isNotNull`, `and`, `or` on `key`, `type`, `size`, `required`, `array`, `status`, `error`, then `cursorAfter`/`cursorBefore` (a key), `offset` and `limit`.",
    )
}

/// `Collection.indexes`, taking Appwrite's queries.
pub fn indexes_field() -> Field {
    listed_field(
        "indexes",
        "Index",
        INDEX_FIELDS,
        "Its indexes, all of them or those `queries` find (Appwrite's `listIndexes`): `equal`, `notEqual`, `startsWith`, `endsWith`, `contains` (an attribute covered), `isNull`, `isNotNull`, `and`, `or` on `key`, `type`, `status`, `attributes`, `error`, then `cursorAfter`/`cursorBefore` (a key), `offset` and `limit`.",
    )
}

fn listed_field(
    name: &'static str,
    item_type: &'static str,
    fields: &'static [&'static str],
    description: &'static str,
) -> Field {
    Field::new(name, TypeRef::named_nn_list_nn(item_type), move |ctx| {
        FieldFuture::new(async move {
            let items: &[Value] = match parent_value(&ctx) {
                Some(Value::Object(map)) => match map.get(name) {
                    Some(Value::List(items)) => items,
                    _ => &[],
                },
                _ => &[],
            };
            let queries = match ctx.args.get("queries") {
                Some(queries) if !queries.is_null() => queries
                    .list()?
                    .iter()
                    .map(|query| query.string().map(String::from))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            let kept = select(items, &queries, fields)?;
            Ok(Some(FieldValue::list(
                kept.into_iter().map(|item| FieldValue::borrowed_any(item)),
            )))
        })
    })
    .description(description)
    .argument(InputValue::new(
        "queries",
        TypeRef::named_nn_list(TypeRef::STRING),
    ))
}

/// The items `queries` find, in order.
fn select<'a>(
    items: &'a [Value],
    queries: &[String],
    fields: &[&str],
) -> Result<Vec<&'a Value>, AppError> {
    if queries.is_empty() {
        return Ok(items.iter().collect());
    }
    let parsed = parse_query_strings(queries).map_err(|err| AppError::Invalid {
        code: err.code(),
        field: "queries".into(),
        reason: err.to_string(),
    })?;
    check(&parsed, fields)?;
    let mut kept: Vec<&Value> = items
        .iter()
        .filter(|item| matches(&parsed.filter, item))
        .collect();
    let position = |cursor: &str| {
        kept.iter()
            .position(|item| entry(item, "key") == Some(&Value::String(cursor.into())))
            .ok_or_else(|| {
                refused(format!(
                    "the cursor names no item listed: {}",
                    super::model::shown(cursor)
                ))
            })
    };
    if let Some(after) = &parsed.cursor_after {
        let at = position(after)?;
        kept.drain(..=at);
    } else if let Some(before) = &parsed.cursor_before {
        let at = position(before)?;
        kept.truncate(at);
        // A page before the cursor is the last `limit` items before it.
        if let Some(limit) = parsed.limit {
            let from = kept.len().saturating_sub(limit as usize);
            kept.drain(..from);
        }
        return Ok(kept);
    }
    let offset = parsed.offset.unwrap_or(0) as usize;
    kept.drain(..offset.min(kept.len()));
    if let Some(limit) = parsed.limit {
        kept.truncate(limit as usize);
    }
    Ok(kept)
}

fn refused(reason: String) -> AppError {
    AppError::Invalid {
        code: codes::QUERY_INVALID,
        field: "queries".into(),
        reason,
    }
}

/// Refuses what a list of attributes or indexes does not take: a selection, an
/// order, a field it does not have, a method it cannot answer.
fn check(parsed: &ParsedQueries, fields: &[&str]) -> Result<(), AppError> {
    if parsed.select.is_some() {
        return Err(refused("this list takes no `select`".into()));
    }
    if !parsed.orders.is_empty() {
        return Err(refused(
            "this list is in the order of the structure: no `orderAsc` or `orderDesc`".into(),
        ));
    }
    check_filter(&parsed.filter, fields)
}

fn check_filter(filter: &Filter, fields: &[&str]) -> Result<(), AppError> {
    let named = |field: &FilterField| match field {
        FilterField::Attribute(name) if fields.contains(&name.as_str()) => Ok(()),
        _ => Err(refused(format!(
            "this list is queried on {} only",
            fields.join(", ")
        ))),
    };
    match filter {
        Filter::And(items) | Filter::Or(items) => {
            items.iter().try_for_each(|item| check_filter(item, fields))
        }
        Filter::Not(inner) => check_filter(inner, fields),
        Filter::Cmp {
            field,
            op: CmpOp::Eq | CmpOp::Ne,
            ..
        }
        | Filter::In { field, .. }
        | Filter::IsNull { field, .. }
        | Filter::StartsWith { field, .. }
        | Filter::EndsWith { field, .. }
        | Filter::Contains { field, .. } => named(field),
        _ => Err(refused(
            "this list takes equal, notEqual, startsWith, endsWith, contains, isNull, \
             isNotNull, and, or, cursors, offset and limit"
                .into(),
        )),
    }
}

fn entry<'a>(item: &'a Value, name: &str) -> Option<&'a Value> {
    match item {
        Value::Object(map) => map.get(name).filter(|value| **value != Value::Null),
        _ => None,
    }
}

/// Whether `item` holds `wanted`: types compared as Appwrite names them
/// (`string`, `key`: case ignored, `double` for FLOAT).
fn same(value: &Value, wanted: &serde_json::Value) -> bool {
    match (value, wanted) {
        (Value::Enum(name), serde_json::Value::String(wanted)) => {
            let wanted = if wanted.eq_ignore_ascii_case("double") {
                "float"
            } else {
                wanted
            };
            name.as_str().eq_ignore_ascii_case(wanted)
        }
        (Value::String(text), serde_json::Value::String(wanted)) => text == wanted,
        (Value::Boolean(b), serde_json::Value::Bool(wanted)) => b == wanted,
        (Value::Number(n), serde_json::Value::Number(wanted)) => n.as_f64() == wanted.as_f64(),
        _ => false,
    }
}

fn text(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(text) => Some(text),
        Value::Enum(name) => Some(name.as_str()),
        _ => None,
    }
}

fn field_name(field: &FilterField) -> &str {
    match field {
        FilterField::Attribute(name) => name,
        _ => "",
    }
}

fn matches(filter: &Filter, item: &Value) -> bool {
    match filter {
        Filter::And(items) => items.iter().all(|inner| matches(inner, item)),
        Filter::Or(items) => items.iter().any(|inner| matches(inner, item)),
        Filter::Not(inner) => !matches(inner, item),
        Filter::Cmp { field, op, value } => {
            let held = entry(item, field_name(field)).is_some_and(|held| same(held, value));
            match op {
                CmpOp::Ne => !held,
                _ => held,
            }
        }
        Filter::In {
            field,
            values,
            negate,
        } => {
            let held = entry(item, field_name(field))
                .is_some_and(|held| values.iter().any(|value| same(held, value)));
            held != *negate
        }
        Filter::IsNull { field, is_null } => entry(item, field_name(field)).is_none() == *is_null,
        Filter::StartsWith { field, value } => text(entry(item, field_name(field)))
            .is_some_and(|text| text.starts_with(value.as_str())),
        Filter::EndsWith { field, value } => {
            text(entry(item, field_name(field))).is_some_and(|text| text.ends_with(value.as_str()))
        }
        Filter::Contains { field, value } => match entry(item, field_name(field)) {
            Some(Value::List(held)) => held.iter().any(|held| same(held, value)),
            Some(Value::String(text)) => value.as_str().is_some_and(|part| text.contains(part)),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(key: &str, kind: &str, size: Option<i64>) -> Value {
        let mut map = async_graphql::indexmap::IndexMap::new();
        map.insert(async_graphql::Name::new("key"), Value::from(key));
        map.insert(
            async_graphql::Name::new("type"),
            Value::Enum(async_graphql::Name::new(kind)),
        );
        map.insert(
            async_graphql::Name::new("size"),
            size.map_or(Value::Null, Value::from),
        );
        map.insert(async_graphql::Name::new("status"), Value::from("available"));
        Value::Object(map)
    }

    fn keys(kept: &[&Value]) -> Vec<String> {
        kept.iter()
            .map(|item| text(entry(item, "key")).unwrap().to_string())
            .collect()
    }

    fn query(json: serde_json::Value) -> String {
        json.to_string()
    }

    #[test]
    fn queries_filter_and_page_the_structure() {
        let items = [
            attribute("title", "STRING", Some(256)),
            attribute("year", "INTEGER", None),
            attribute("plot", "STRING", Some(5000)),
            attribute("rating", "FLOAT", None),
            attribute("tagline", "STRING", Some(100)),
        ];
        let strings = query(
            serde_json::json!({"method": "equal", "attribute": "type", "values": ["string"]}),
        );
        let run = |queries: &[String]| keys(&select(&items, queries, ATTRIBUTE_FIELDS).unwrap());
        assert_eq!(
            run(std::slice::from_ref(&strings)),
            ["title", "plot", "tagline"]
        );
        assert_eq!(
            run(&[
                strings.clone(),
                query(serde_json::json!({"method": "limit", "values": [2]})),
                query(serde_json::json!({"method": "cursorAfter", "values": ["title"]})),
            ]),
            ["plot", "tagline"]
        );
        assert_eq!(
            run(&[
                strings.clone(),
                query(serde_json::json!({"method": "cursorBefore", "values": ["tagline"]})),
                query(serde_json::json!({"method": "limit", "values": [1]})),
            ]),
            ["plot"]
        );
        assert_eq!(
            run(&[query(
                serde_json::json!({"method": "equal", "attribute": "type", "values": ["double"]})
            )]),
            ["rating"]
        );
        assert_eq!(
            run(&[
                query(
                    serde_json::json!({"method": "notEqual", "attribute": "type", "values": ["string"]})
                ),
                query(serde_json::json!({"method": "offset", "values": [1]})),
            ]),
            ["rating"]
        );
        assert_eq!(
            run(&[query(
                serde_json::json!({"method": "isNull", "attribute": "size"})
            )]),
            ["year", "rating"]
        );
        assert_eq!(
            run(&[query(
                serde_json::json!({"method": "startsWith", "attribute": "key", "values": ["ta"]})
            )]),
            ["tagline"]
        );
        for refused in [
            query(serde_json::json!({"method": "select", "values": ["key"]})),
            query(serde_json::json!({"method": "orderAsc", "attribute": "key"})),
            query(serde_json::json!({"method": "equal", "attribute": "default", "values": [1]})),
            query(serde_json::json!({"method": "greaterThan", "attribute": "size", "values": [1]})),
            query(serde_json::json!({"method": "cursorAfter", "values": ["nope"]})),
            "not json".to_string(),
        ] {
            let err = select(&items, std::slice::from_ref(&refused), ATTRIBUTE_FIELDS).unwrap_err();
            assert_eq!(err.code(), "QUERY_INVALID", "{refused}");
        }
    }
}
