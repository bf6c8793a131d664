//! Building blocks shared by every service's part of the schema: the `DateTime` and
//! `JSON` scalars, fields read from plain values, Relay connections with keyset
//! cursors, and access to the request's state from a resolver.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Scalar, Type, TypeRef,
};
use async_graphql::{Name, Value};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::SecondsFormat;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{AppError, AppResult, codes};

pub const DATETIME: &str = "DateTime";
pub const JSON: &str = "JSON";

/// Most nodes one page of a connection may hold.
pub const MAX_PAGE_SIZE: usize = 100;
const _: () = assert!(MAX_PAGE_SIZE as u64 <= super::nodes::LARGEST_PAGE);
/// Nodes in a page when the client asks for neither `first` nor `last`.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// The scalars every project schema has.
pub fn scalars() -> Vec<Type> {
    vec![
        Scalar::new(DATETIME)
            .description("A date and time in RFC 3339 form with milliseconds, always UTC, e.g. `2026-01-31T12:00:00.000Z`.")
            .specified_by_url("https://datatracker.ietf.org/doc/html/rfc3339")
            .validator(|value| matches!(value, Value::String(s) if rfc3339_to_millis(s).is_some()))
            .into(),
        Scalar::new(JSON)
            .description("Any JSON value.")
            .specified_by_url("https://www.rfc-editor.org/rfc/rfc8259")
            .into(),
    ]
}

/// `0000-01-01T00:00:00.000Z` and `9999-12-31T23:59:59.999Z` in milliseconds: the
/// instants whose RFC 3339 form has a four-digit year. An offset can carry a text
/// within those years outside them (`9999-12-31T23:59:59-23:59` is in year 10000
/// in UTC), so the bound applies to the instant, not to the text.
pub const MIN_DATETIME_MS: i64 = -62_167_219_200_000;
pub const MAX_DATETIME_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch of an RFC 3339 date-time, if it is one and
/// falls within years 0000 to 9999 in UTC. Sub-millisecond digits are dropped.
pub fn rfc3339_to_millis(input: &str) -> Option<i64> {
    let millis = chrono::DateTime::parse_from_rfc3339(input)
        .ok()?
        .timestamp_millis();
    (MIN_DATETIME_MS..=MAX_DATETIME_MS)
        .contains(&millis)
        .then_some(millis)
}

/// The RFC 3339 form of a stored timestamp, in UTC with milliseconds and `Z`
/// (`2024-05-01T12:00:00.000Z`): what `DateTime` shows. None outside years 0000 to
/// 9999, which the scalar would not take back.
pub fn millis_to_rfc3339(millis: i64) -> Option<String> {
    if !(MIN_DATETIME_MS..=MAX_DATETIME_MS).contains(&millis) {
        return None;
    }
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The `DateTime` value of a stored millisecond timestamp (null outside the years
/// the scalar takes).
pub fn datetime(millis: i64) -> Value {
    millis_to_rfc3339(millis).map_or(Value::Null, Value::String)
}

/// Milliseconds of a `DateTime` argument, or a `BAD_USER_INPUT` error naming `field`.
pub fn parse_datetime(field: &str, text: &str) -> AppResult<i64> {
    rfc3339_to_millis(text).ok_or_else(|| {
        AppError::invalid(
            field,
            "expected an RFC 3339 date-time within years 0000 to 9999 in UTC",
        )
    })
}

/// A field that reads the entry `name` of its parent, a plain object value.
pub fn prop(name: impl Into<String>, ty: impl Into<TypeRef>, description: &str) -> Field {
    let name = name.into();
    let key = name.clone();
    let ty = ty.into();
    let objects = holds_objects(&ty);
    Field::new(name, ty, move |ctx| parent_entry(&ctx, &key, objects)).description(description)
}

/// Whether a field of type `ty` may hand on the objects of its parent's value by
/// reference ([`parent_entry`]): any type but the `JSON` scalar, whose objects
/// are its value.
pub fn holds_objects(ty: &TypeRef) -> bool {
    ty.type_name() != JSON
}

/// The value of the parent: a plain value, or one lent by the grandparent's
/// ([`parent_entry`]).
pub fn parent_value<'a>(ctx: &ResolverContext<'a>) -> Option<&'a Value> {
    let parent = ctx.parent_value;
    parent.as_value().or_else(|| parent.downcast_ref::<Value>())
}

/// The entry `key` of the parent, a plain object value, as a field's result (null
/// when absent). Resolved at once: no future to allocate for each field of each
/// object of a response. When `objects` ([`holds_objects`]), an object or a list
/// of objects is lent to the fields below rather than copied: a page of nodes is
/// not copied once for its list and again for each node.
pub fn parent_entry<'a>(ctx: &ResolverContext<'a>, key: &str, objects: bool) -> FieldFuture<'a> {
    let value = match parent_value(ctx) {
        Some(Value::Object(map)) => map.get(key).filter(|v| **v != Value::Null),
        _ => None,
    };
    let lent = |value: &'a Value| FieldValue::borrowed_any(value);
    match value {
        Some(value @ Value::Object(_)) if objects => FieldFuture::Value(Some(lent(value))),
        Some(Value::List(items))
            if objects && items.iter().all(|item| matches!(item, Value::Object(_))) =>
        {
            FieldFuture::Value(Some(FieldValue::list(items.iter().map(lent))))
        }
        other => FieldFuture::from_value(other.cloned()),
    }
}

/// The GraphQL value of a JSON value, converted in place rather than through
/// serde (which `Value::from_json` does, for a copy the caller must make first).
pub fn json_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.clone()),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json_value).collect()),
        serde_json::Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (Name::new(k), json_value(v)))
                .collect(),
        ),
    }
}

/// The GraphQL value of a JSON value the caller gives up: its strings, lists and
/// objects move rather than being copied.
pub fn json_into_value(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => Value::Number(n),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => {
            Value::List(items.into_iter().map(json_into_value).collect())
        }
        serde_json::Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (Name::new(k), json_into_value(v)))
                .collect(),
        ),
    }
}

/// A plain object value from `(name, value)` pairs, for [`prop`] fields to read.
pub fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (Name::new(k), v))
            .collect(),
    )
}

/// The shared server state from inside a resolver.
pub fn app<'a>(ctx: &ResolverContext<'a>) -> AppResult<&'a AppState> {
    ctx.data::<AppState>()
        .map_err(|_| AppError::Internal(anyhow::anyhow!("AppState missing from schema data")))
}

/// Who is calling, from inside a resolver.
pub fn caller<'a>(ctx: &ResolverContext<'a>) -> AppResult<&'a Caller> {
    mark_caller_dependent(ctx);
    ctx.data::<Caller>()
        .map_err(|_| AppError::Internal(anyhow::anyhow!("Caller missing from request data")))
}

/// Request data of a render: marked when a resolver looked at the caller (or read
/// through the request's transaction), so the rendered response is the caller's
/// own and may not be shared.
#[derive(Clone, Default)]
pub struct RenderTaint(Arc<AtomicBool>);

impl RenderTaint {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Marks a render in progress as the caller's own (see [`RenderTaint`]).
pub fn mark_caller_dependent(ctx: &ResolverContext<'_>) {
    if let Some(taint) = ctx.data_opt::<RenderTaint>() {
        taint.mark();
    }
}

/// An optional string argument.
pub fn opt_string(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<String>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .string()
            .map(|s| Some(s.to_string()))
            .map_err(|_| AppError::invalid(name, "expected a string")),
    }
}

/// The `input` argument of a mutation, as a JSON object for serde to read.
pub fn input<T: serde::de::DeserializeOwned>(ctx: &ResolverContext<'_>) -> AppResult<T> {
    let value = ctx
        .args
        .get("input")
        .map(|v| v.as_value().clone())
        .unwrap_or(Value::Null);
    let json = value
        .into_json()
        .map_err(|e| AppError::invalid("input", e.to_string()))?;
    serde_json::from_value(json).map_err(|e| AppError::invalid("input", plain_serde_message(&e)))
}

/// serde's message about a value that does not fit, with Rust's number types
/// said as a client knows them (`expected u32` is a whole number from 0 to …).
fn plain_serde_message(err: &serde_json::Error) -> String {
    const NUMBERS: [(&str, &str); 9] = [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("usize", "a whole number of 0 or more"),
        ("i32", "a whole number from -2147483648 to 2147483647"),
        (
            "i64",
            "a whole number from -9223372036854775808 to 9223372036854775807",
        ),
        ("f32", "a number"),
        ("f64", "a number"),
    ];
    let text = err.to_string();
    NUMBERS
        .iter()
        .find_map(|(rust, plain)| {
            text.strip_suffix(&format!("expected {rust}"))
                .map(|head| format!("{head}expected {plain}"))
        })
        .unwrap_or(text)
}

/// The payload of a mutation that deletes one thing: `{ deletedId }`.
pub fn deleted_payload_type(name: &str, description: &str, id_description: &str) -> Object {
    Object::new(name).description(description).field(prop(
        "deletedId",
        TypeRef::named_nn(TypeRef::ID),
        id_description,
    ))
}

/// The object types behind a Relay connection of `node` (`{node}Connection` and
/// `{node}Edge`); `PageInfo` is registered once by [`page_info`].
pub fn connection_types(node: &str, plural_description: &str) -> Vec<Type> {
    let connection = format!("{node}Connection");
    let edge = format!("{node}Edge");
    vec![
        Object::new(connection.as_str())
            .description(format!("A page of {plural_description}."))
            .field(prop(
                "edges",
                TypeRef::named_nn_list_nn(edge.as_str()),
                "The nodes of this page with their cursors.",
            ))
            .field(prop(
                "nodes",
                TypeRef::named_nn_list_nn(node),
                "The nodes of this page.",
            ))
            .field(prop(
                "pageInfo",
                TypeRef::named_nn("PageInfo"),
                "Where this page is in the whole list.",
            ))
            .field(prop(
                "totalCount",
                TypeRef::named_nn(TypeRef::INT),
                "How many nodes the whole list has.",
            ))
            .into(),
        Object::new(edge.as_str())
            .description(format!("One of {plural_description}, with its cursor."))
            .field(prop(
                "cursor",
                TypeRef::named_nn(TypeRef::STRING),
                "Opaque cursor: pass it as `after` or `before`.",
            ))
            .field(prop("node", TypeRef::named_nn(node), "The node."))
            .into(),
    ]
}

/// The `PageInfo` type of every connection.
pub fn page_info() -> Type {
    Object::new("PageInfo")
        .description("Where a page is within a list, for Relay pagination.")
        .field(prop(
            "hasNextPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether nodes follow this page.",
        ))
        .field(prop(
            "hasPreviousPage",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether nodes precede this page.",
        ))
        .field(prop(
            "startCursor",
            TypeRef::named(TypeRef::STRING),
            "Cursor of the first node of the page.",
        ))
        .field(prop(
            "endCursor",
            TypeRef::named(TypeRef::STRING),
            "Cursor of the last node of the page.",
        ))
        .into()
}

/// Adds `first`, `after`, `last`, `before` to a list field.
pub fn with_connection_args(field: Field) -> Field {
    field
        .argument(
            InputValue::new("first", TypeRef::named(TypeRef::INT)).description(format!(
                "Return the first n nodes (at most {MAX_PAGE_SIZE})."
            )),
        )
        .argument(
            InputValue::new("after", TypeRef::named(TypeRef::STRING))
                .description("Return nodes after this cursor."),
        )
        .argument(
            InputValue::new("last", TypeRef::named(TypeRef::INT)).description(format!(
                "Return the last n nodes (at most {MAX_PAGE_SIZE})."
            )),
        )
        .argument(
            InputValue::new("before", TypeRef::named(TypeRef::STRING))
                .description("Return nodes before this cursor."),
        )
}

/// The connection arguments of a list field, as a keyset page.
pub type PageRequest = crate::db::Page;

/// Reads and checks the connection arguments of the current field.
pub fn page_request(ctx: &ResolverContext<'_>) -> AppResult<PageRequest> {
    let first = count_arg(ctx, "first", MAX_PAGE_SIZE)?;
    let last = count_arg(ctx, "last", MAX_PAGE_SIZE)?;
    if first.is_some() && last.is_some() {
        return Err(AppError::invalid(
            "last",
            "pass either `first` or `last`, not both",
        ));
    }
    let after = opt_string(ctx, "after")?
        .map(|c| decode_cursor("after", &c))
        .transpose()?;
    let before = opt_string(ctx, "before")?
        .map(|c| decode_cursor("before", &c))
        .transpose()?;
    Ok(PageRequest {
        after,
        before,
        limit: last.or(first).unwrap_or(DEFAULT_PAGE_SIZE),
        from_end: last.is_some(),
    })
}

/// The count argument `name` (`first`, `last`) of the current field: none, or
/// from 0 to `max`.
pub fn count_arg(ctx: &ResolverContext<'_>, name: &str, max: usize) -> AppResult<Option<usize>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => {
            let n = v
                .i64()
                .map_err(|_| AppError::invalid(name, "expected an integer"))?;
            match usize::try_from(n) {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(AppError::invalid(
                    name,
                    format!("must be between 0 and {max}"),
                )),
            }
        }
    }
}

/// The opaque cursor of a node id.
pub fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("id:{id}"))
}

fn decode_cursor(field: &str, cursor: &str) -> AppResult<String> {
    let invalid = || AppError::Invalid {
        code: codes::INVALID_CURSOR,
        field: field.to_string(),
        reason: "not a cursor returned by this list".to_string(),
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let id = text.strip_prefix("id:").ok_or_else(invalid)?;
    crate::db::ids::validate(field, id).map_err(|_| invalid())?;
    Ok(id.to_string())
}

/// Assembles a connection value from the rows a store returned for `page`: up to
/// `page.limit + 1` rows in the page's direction (the extra one only tells that more
/// exist). `to_node` turns a row into its node value; `id_of` gives its id.
pub fn connection<R>(
    page: &PageRequest,
    mut rows: Vec<R>,
    total_count: i64,
    id_of: impl Fn(&R) -> &str,
    to_node: impl Fn(&R) -> Value,
) -> Value {
    let has_more = rows.len() > page.limit;
    rows.truncate(page.limit);
    if page.from_end {
        rows.reverse();
    }
    let (has_next, has_previous) = if page.from_end {
        (page.before.is_some(), has_more)
    } else {
        (has_more, page.after.is_some())
    };
    let cursors: Vec<String> = rows.iter().map(|r| encode_cursor(id_of(r))).collect();
    let nodes: Vec<Value> = rows.iter().map(to_node).collect();
    let edges = nodes
        .iter()
        .zip(&cursors)
        .map(|(node, cursor)| {
            object([
                ("cursor", Value::from(cursor.as_str())),
                ("node", node.clone()),
            ])
        })
        .collect::<Vec<_>>();
    let cursor_value = |c: Option<&String>| c.map_or(Value::Null, |c| Value::from(c.as_str()));
    object([
        ("edges", Value::List(edges)),
        ("nodes", Value::List(nodes)),
        (
            "pageInfo",
            object([
                ("hasNextPage", Value::from(has_next)),
                ("hasPreviousPage", Value::from(has_previous)),
                ("startCursor", cursor_value(cursors.first())),
                ("endCursor", cursor_value(cursors.last())),
            ]),
        ),
        ("totalCount", Value::from(total_count)),
    ])
}

/// Whether the current field's selection asks for `totalCount`, so it is counted
/// only when wanted.
pub fn wants_total_count(ctx: &ResolverContext<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_number_that_does_not_fit_is_said_without_rust_types() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Sized {
            size: u32,
        }
        let err = serde_json::from_value::<Sized>(serde_json::json!({"size": -1})).unwrap_err();
        assert_eq!(
            super::plain_serde_message(&err),
            "invalid value: integer `-1`, expected a whole number from 0 to 4294967295"
        );
        let err = serde_json::from_value::<Sized>(serde_json::json!({})).unwrap_err();
        assert_eq!(super::plain_serde_message(&err), "missing field `size`");
    }

    #[test]
    fn json_converts_as_serde_would() {
        let json = serde_json::json!({
            "s": "π ✓", "i": -3, "u": 18446744073709551615u64, "f": 1.5, "b": true, "n": null,
            "list": [1, "two", [3], {"four": 4}], "nested": {"z": 1, "a": {"deep": []}}
        });
        assert_eq!(
            super::json_value(&json),
            async_graphql::Value::from_json(json.clone()).unwrap()
        );
        assert_eq!(
            super::json_into_value(json.clone()),
            super::json_value(&json)
        );
    }

    use super::*;

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let cursor = encode_cursor("abc");
        assert_eq!(decode_cursor("after", &cursor).unwrap(), "abc");
        assert!(decode_cursor("after", "bm90IGEgY3Vyc29y").is_err());
        assert!(decode_cursor("after", &URL_SAFE_NO_PAD.encode("id:../x")).is_err());
    }

    #[test]
    fn datetimes_print_in_utc_with_milliseconds() {
        assert_eq!(datetime(0), Value::from("1970-01-01T00:00:00.000Z"));
    }
}
