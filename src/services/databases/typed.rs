//! The GraphQL types and fields of one collection, so that generated clients are
//! typed end to end: for `posts` the type `Post`, `PostConnection`, `PostFilter`,
//! `PostOrderBy`, `CreatePostInput`, `UpdatePostInput`, the queries `post(id)` and
//! `posts(filter, orderBy, first, after, last, before)`, and the mutations
//! `createPost`, `createPosts`, `updatePost`, `deletePost`. Shared filter inputs
//! (`StringFilter`, `IntFilter`, …) are registered once by [`register_shared`].

use std::sync::{Arc, LazyLock};

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar,
    SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use async_graphql::{Name, Value};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value as Json};

use crate::error::{AppError, AppResult, codes};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection_types, datetime, holds_objects, json_into_value, json_value,
    object, parent_entry, parent_value, parse_datetime,
};

use super::documents::{self, Access, Document, DocumentChanges, ListQuery, NewDocument, Paging};
use super::filter::{CmpOp, Cursor, Field as FilterField, Filter, Link, OrderBy};
use super::loader::{ListKey, ListLoader, ListSpec, RelatedLoader};
use super::model::{Attribute, AttributeKind};
use super::schema::{data_model, data_object, request_tx};
use super::tx::Sharing;
use crate::auth::permissions::{Action, allows};

use super::{Collection, DataModel, sql_dialect};

pub const BIGINT: &str = "BigInt";
/// The most documents one page of a typed list holds.
const MAX_FIRST: usize = 1000;
const DEFAULT_FIRST: usize = 20;
const MAX_FILTER_DEPTH: usize = 10;

/// The scalar kinds a filter input exists for.
const FILTERED: [(&str, &str); 6] = [
    ("String", TypeRef::STRING),
    ("Int", TypeRef::INT),
    (BIGINT, BIGINT),
    ("Float", TypeRef::FLOAT),
    ("Boolean", TypeRef::BOOLEAN),
    (DATETIME, DATETIME),
];

/// The GraphQL scalar of an attribute's values.
fn scalar_of(attribute: &Attribute) -> &'static str {
    match &attribute.kind {
        AttributeKind::Integer { min, max } => {
            let fits = |v: &Option<i64>| v.is_some_and(|v| i32::try_from(v).is_ok());
            if fits(min) && fits(max) {
                TypeRef::INT
            } else {
                BIGINT
            }
        }
        AttributeKind::Float { .. } => TypeRef::FLOAT,
        AttributeKind::Boolean => TypeRef::BOOLEAN,
        AttributeKind::Datetime => DATETIME,
        _ => TypeRef::STRING,
    }
}

fn filter_type_of(attribute: &Attribute) -> String {
    let scalar = scalar_of(attribute);
    if attribute.array {
        format!("{scalar}ListFilter")
    } else {
        format!("{scalar}Filter")
    }
}

/// The type of an attribute's field in the object type.
fn output_type(attribute: &Attribute) -> TypeRef {
    let scalar = scalar_of(attribute);
    // A default fills every document that gives no value (null included).
    let always = attribute.required || attribute.default.is_some();
    match (attribute.array, always) {
        (true, true) => TypeRef::named_nn_list_nn(scalar),
        (true, false) => TypeRef::named_nn_list(scalar),
        (false, true) => TypeRef::named_nn(scalar),
        (false, false) => TypeRef::named(scalar),
    }
}

/// The type of an attribute in a create input: required without default is
/// required here too.
fn create_type(attribute: &Attribute) -> TypeRef {
    let scalar = scalar_of(attribute);
    let must = attribute.required && attribute.default.is_none();
    match (attribute.array, must) {
        (true, true) => TypeRef::named_nn_list_nn(scalar),
        (true, false) => TypeRef::named_nn_list(scalar),
        (false, true) => TypeRef::named_nn(scalar),
        (false, false) => TypeRef::named(scalar),
    }
}

fn update_type(attribute: &Attribute) -> TypeRef {
    let scalar = scalar_of(attribute);
    if attribute.array {
        TypeRef::named_nn_list(scalar)
    } else {
        TypeRef::named(scalar)
    }
}

/// Whether a list can be ordered by the attribute (not arrays, not long text).
fn orderable(attribute: &Attribute) -> bool {
    let long_text = attribute.kind.is_textual() && attribute.kind.max_chars().is_none();
    !attribute.array && !long_text
}

/// The types every project has: `BigInt`, the per-scalar filters, `IDFilter`.
pub fn register_shared(parts: &mut SchemaParts) {
    parts.add_type(
        Scalar::new(BIGINT)
            .description("A 64-bit integer, as a JSON number (exact up to 2^53 in JavaScript).")
            .validator(|value| matches!(value, Value::Number(n) if n.is_i64())),
    );
    let comparisons = |name: &str, scalar: &str, about: &str| {
        let one = || TypeRef::named(scalar);
        let many = || TypeRef::named_nn_list(scalar);
        InputObject::new(name)
            .description(about)
            .field(InputValue::new("eq", one()).description("Equal to."))
            .field(InputValue::new("ne", one()).description("Not equal to (null included)."))
            .field(InputValue::new("in", many()).description("One of."))
            .field(InputValue::new("notIn", many()).description("None of (null included)."))
            .field(InputValue::new("lt", one()).description("Less than."))
            .field(InputValue::new("lte", one()).description("Less than or equal to."))
            .field(InputValue::new("gt", one()).description("Greater than."))
            .field(InputValue::new("gte", one()).description("Greater than or equal to."))
            .field(
                InputValue::new("isNull", TypeRef::named(TypeRef::BOOLEAN))
                    .description("Has no value (true) or has one (false)."),
            )
    };
    parts.add_type(comparisons("IDFilter", TypeRef::ID, "Conditions on an id."));
    parts.add_type(
        Enum::new("DocumentChangeType")
            .description("What happened to a document in a watched set: created in it, changed in it (or changed into it), deleted, or changed out of it.")
            .items(["CREATE", "UPDATE", "DELETE", "LEAVE"]),
    );

    for (name, scalar) in FILTERED {
        let mut filter = comparisons(
            &format!("{name}Filter"),
            scalar,
            &format!("Conditions on a {name} field; all given ones must hold."),
        );
        if scalar == TypeRef::STRING {
            filter = filter
                .field(
                    InputValue::new("startsWith", TypeRef::named(TypeRef::STRING))
                        .description("Starts with (case-sensitive)."),
                )
                .field(
                    InputValue::new("endsWith", TypeRef::named(TypeRef::STRING))
                        .description("Ends with (case-sensitive)."),
                )
                .field(
                    InputValue::new("contains", TypeRef::named(TypeRef::STRING))
                        .description("Contains (case-sensitive)."),
                )
                .field(
                    InputValue::new("search", TypeRef::named(TypeRef::STRING)).description(
                        "Full-text search: every word occurs (MariaDB needs a FULLTEXT index).",
                    ),
                );
        }
        parts.add_type(filter);
        parts.add_type(
            InputObject::new(format!("{name}ListFilter"))
                .description(format!("Conditions on a list of {name}."))
                .field(
                    InputValue::new("contains", TypeRef::named(scalar))
                        .description("Has this element."),
                )
                .field(
                    InputValue::new("isNull", TypeRef::named(TypeRef::BOOLEAN))
                        .description("Has no value (true) or has one (false)."),
                ),
        );
    }
}

fn field_of(key: &str) -> FilterField {
    match key {
        "id" => FilterField::Id,
        "createdAt" => FilterField::CreatedAt,
        "updatedAt" => FilterField::UpdatedAt,
        other => FilterField::attribute(other),
    }
}

fn bad_filter(reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::FILTER_INVALID,
        field: "filter".into(),
        reason: reason.into(),
    }
}

/// A typed filter input (as JSON) in the filter module's terms.
pub fn filter_from_input(
    collection: &Collection,
    model: &DataModel,
    access: &Access,
    input: &Json,
    depth: usize,
) -> AppResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(AppError::Invalid {
            code: codes::FILTER_TOO_COMPLEX,
            field: "filter".into(),
            reason: format!("filters nest at most {MAX_FILTER_DEPTH} levels deep"),
        });
    }
    let Json::Object(map) = input else {
        return Err(bad_filter("expected an object"));
    };
    let mut all = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "and" | "or" => {
                let Json::Array(items) = value else {
                    return Err(bad_filter(format!("`{key}` takes a list of filters")));
                };
                let inner = items
                    .iter()
                    .map(|item| filter_from_input(collection, model, access, item, depth + 1))
                    .collect::<AppResult<Vec<_>>>()?;
                all.push(if key == "and" {
                    Filter::And(inner)
                } else {
                    Filter::Or(inner)
                });
            }
            "not" => {
                if !value.is_null() {
                    all.push(Filter::Not(Box::new(filter_from_input(
                        collection,
                        model,
                        access,
                        value,
                        depth + 1,
                    )?)));
                }
            }
            field if collection.relationship(field).is_some() => {
                if value.is_null() {
                    continue;
                }
                all.push(related_filter(
                    collection, model, access, field, value, depth,
                )?);
            }
            field => {
                let Json::Object(conditions) = value else {
                    if value.is_null() {
                        continue;
                    }
                    return Err(bad_filter(format!(
                        "`{field}` takes an object of conditions"
                    )));
                };
                for (op, operand) in conditions {
                    all.push(condition(field_of(field), op, operand)?);
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Filter::And(all)
    })
}

/// A condition on the documents a reference points at: allowed when the caller
/// may read every document of the related collection, so a filter never reveals
/// what a document it cannot read holds.
fn related_filter(
    collection: &Collection,
    model: &DataModel,
    access: &Access,
    key: &str,
    value: &Json,
    depth: usize,
) -> AppResult<Filter> {
    let relationship = collection
        .relationship(key)
        .ok_or_else(|| bad_filter(format!("`{key}` is not a relationship")))?;
    let related = model
        .collection(&collection.database_id, &relationship.related_collection)
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("a relationship names a missing collection"))
        })?;
    let readable = match access {
        Access::Server => true,
        Access::Client { roles, .. } => {
            related.enabled && allows(roles, Action::Read, &related.permissions)
        }
    };
    if !readable {
        return Err(AppError::PermissionDenied {
            reason: format!(
                "filtering on `{key}` needs permission to read every document of `{}`",
                related.name
            ),
        });
    }
    let inner = filter_from_input(related, model, access, value, depth + 1)?;
    Ok(match &relationship.junction {
        Some(junction) => Filter::RelatedThrough {
            link: Link {
                junction: junction.clone(),
                near: "a_id",
                far: "b_id",
            },
            table: related.table.clone(),
            attrs: related.columns(),
            filter: Box::new(inner),
        },
        None => Filter::Related {
            field: FilterField::attribute(key),
            table: related.table.clone(),
            attrs: related.columns(),
            filter: Box::new(inner),
        },
    })
}

fn condition(field: FilterField, op: &str, operand: &Json) -> AppResult<Filter> {
    let cmp = |op: CmpOp| Filter::Cmp {
        field: field.clone(),
        op,
        value: operand.clone(),
    };
    let list = || match operand {
        Json::Array(values) => Ok(values.clone()),
        _ => Err(bad_filter(format!("`{op}` takes a list"))),
    };
    let text = || match operand {
        Json::String(s) => Ok(s.clone()),
        _ => Err(bad_filter(format!("`{op}` takes a string"))),
    };
    Ok(match op {
        "eq" if operand.is_null() => Filter::IsNull {
            field,
            is_null: true,
        },
        "ne" if operand.is_null() => Filter::IsNull {
            field,
            is_null: false,
        },
        "eq" => cmp(CmpOp::Eq),
        "ne" => cmp(CmpOp::Ne),
        "lt" => cmp(CmpOp::Lt),
        "lte" => cmp(CmpOp::Le),
        "gt" => cmp(CmpOp::Gt),
        "gte" => cmp(CmpOp::Ge),
        "in" => Filter::In {
            field,
            values: list()?,
            negate: false,
        },
        "notIn" => Filter::In {
            field,
            values: list()?,
            negate: true,
        },
        "isNull" => match operand {
            Json::Bool(is_null) => Filter::IsNull {
                field,
                is_null: *is_null,
            },
            _ => return Err(bad_filter("`isNull` takes true or false")),
        },
        "startsWith" => Filter::StartsWith {
            field,
            value: text()?,
        },
        "endsWith" => Filter::EndsWith {
            field,
            value: text()?,
        },
        "contains" => Filter::Contains {
            field,
            value: operand.clone(),
        },
        "search" => Filter::Search {
            field,
            query: text()?,
        },
        other => return Err(bad_filter(format!("unknown condition `{other}`"))),
    })
}

fn orders_from_input(input: Option<&Json>) -> AppResult<Vec<OrderBy>> {
    let items = match input {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items.clone(),
        Some(single @ Json::Object(_)) => vec![single.clone()],
        Some(_) => return Err(AppError::invalid("orderBy", "expected a list of orders")),
    };
    let mut orders = Vec::new();
    for item in items {
        let Json::Object(map) = item else {
            return Err(AppError::invalid("orderBy", "each order is an object"));
        };
        let set: Vec<_> = map.iter().filter(|(_, v)| !v.is_null()).collect();
        let [(key, direction)] = set.as_slice() else {
            return Err(AppError::invalid(
                "orderBy",
                "each order names exactly one field, e.g. `{views: DESC}`; give several orders as a list",
            ));
        };
        let field = field_of(key);
        orders.push(match direction.as_str() {
            Some("DESC") => OrderBy::desc(field),
            _ => OrderBy::asc(field),
        });
    }
    Ok(orders)
}

/// What a typed cursor carries beside the position: the list it belongs to, so a
/// cursor of another collection or order is refused instead of misread.
fn order_signature(collection: &Collection, orders: &[OrderBy]) -> String {
    let mut signature = collection.table.clone();
    for order in orders {
        signature.push(':');
        signature.push_str(&order.field.shown());
        signature.push_str(if order.desc { "-" } else { "+" });
    }
    signature
}

fn encode_cursor(collection: &Collection, orders: &[OrderBy], cursor: &Cursor) -> String {
    let inner = cursor.encode();
    URL_SAFE_NO_PAD.encode(format!("{}\n{inner}", order_signature(collection, orders)))
}

fn decode_cursor(
    field: &str,
    collection: &Collection,
    orders: &[OrderBy],
    text: &str,
) -> AppResult<Cursor> {
    let invalid = |reason: &str| AppError::Invalid {
        code: codes::INVALID_CURSOR,
        field: field.into(),
        reason: reason.into(),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid("not a cursor returned by this list"))?;
    let decoded =
        String::from_utf8(bytes).map_err(|_| invalid("not a cursor returned by this list"))?;
    let (signature, inner) = decoded
        .split_once('\n')
        .ok_or_else(|| invalid("not a cursor returned by this list"))?;
    if signature != order_signature(collection, orders) {
        return Err(invalid(
            "the cursor belongs to another collection or another order",
        ));
    }
    Cursor::decode(inner).map_err(|_| invalid("not a cursor returned by this list"))
}

/// The object value of a document for its typed fields.
fn node_value(document: Document) -> Value {
    node_value_of(document, None)
}

/// What a mutation answers for a document it wrote: the document when the
/// caller may read it as the write left it, nothing otherwise (a caller may
/// write what it may not read, and learns no more of it by writing). A single
/// write answers null then, a bulk one leaves it out of its list, as a list
/// query would.
fn written(
    collection: &Collection,
    access: &Access,
    document: Document,
) -> Option<FieldValue<'static>> {
    documents::may_read(collection, access, &document)
        .then(|| FieldValue::value(node_value(document)))
}

/// The description of a mutation answering a document, with the rule of
/// [`written`].
const NULL_WHEN_UNREADABLE: &str =
    " Answers null for a document the caller may not read once written.";

/// The same for a bulk mutation.
const LISTS_ONLY_READABLE: &str =
    " Lists only the documents the caller may read once written, in input order.";

/// The name of every node's `id` entry, made once rather than per node.
static ID: LazyLock<Name> = LazyLock::new(|| Name::new("id"));

/// The names of the node fields a selection reads ([`selected_fields`]), made once
/// per request and shared by every node of a page.
fn field_names(fields: &[String]) -> Vec<Name> {
    fields.iter().map(Name::new).collect()
}

/// The object value of a document with only the fields a selection names (and
/// `id`, which relationship fields read), or all of them. The document's values
/// move into it: a page is not copied on its way to the response.
fn node_value_of(mut document: Document, fields: Option<&[Name]>) -> Value {
    let system = |name: &str, document: &Document| match name {
        "createdAt" => Some(datetime(document.created_at)),
        "updatedAt" => Some(datetime(document.updated_at)),
        "permissions" => Some(Value::List(
            document
                .permissions
                .iter()
                .map(|p| Value::from(p.to_string()))
                .collect(),
        )),
        _ => None,
    };
    let mut map = async_graphql::indexmap::IndexMap::with_capacity(
        fields.map_or(document.data.len() + 4, |f| f.len() + 1),
    );
    match fields {
        Some(fields) => {
            for name in fields {
                let value = match system(name.as_str(), &document) {
                    Some(value) => value,
                    None => match document.data.remove(name.as_str()) {
                        Some(value) => json_into_value(value),
                        None => continue,
                    },
                };
                map.insert(name.clone(), value);
            }
        }
        None => {
            for name in ["createdAt", "updatedAt", "permissions"] {
                if let Some(value) = system(name, &document) {
                    map.insert(Name::new(name), value);
                }
            }
            for (key, value) in std::mem::take(&mut document.data) {
                map.insert(Name::new(key), json_into_value(value));
            }
        }
    }
    map.insert(ID.clone(), Value::String(document.id));
    Value::Object(map)
}

/// The names of the fields selected under `path` (e.g. `["edges", "node"]`) of
/// the field being resolved, fragments included.
fn selected_fields(ctx: &ResolverContext<'_>, path: &[&str], into: &mut Vec<String>) {
    fn walk(field: async_graphql::SelectionField<'_>, path: &[&str], into: &mut Vec<String>) {
        for child in field.selection_set() {
            match path.split_first() {
                Some((first, rest)) if child.name() == *first => walk(child, rest, into),
                Some(_) => {}
                None => into.push(child.name().to_string()),
            }
        }
    }
    walk(ctx.field(), path, into);
}

/// A field reading the entry `name` of its parent object value.
fn entry(name: String, ty: TypeRef, description: String) -> Field {
    let key = name.clone();
    let objects = holds_objects(&ty);
    Field::new(name, ty, move |ctx| parent_entry(&ctx, &key, objects)).description(description)
}

fn arg_json(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<Json>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .as_value()
            .clone()
            .into_json()
            .map(Some)
            .map_err(|e| AppError::invalid(name, e.to_string())),
    }
}

fn count_arg(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<usize>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => {
            let n = v
                .i64()
                .map_err(|_| AppError::invalid(name, "expected an integer"))?;
            if !(0..=MAX_FIRST as i64).contains(&n) {
                return Err(AppError::invalid(
                    name,
                    format!("must be between 0 and {MAX_FIRST}"),
                ));
            }
            Ok(Some(n as usize))
        }
    }
}

/// A typed write input, split: the attribute values and the system entries.
struct WriteInput {
    data: Map<String, Json>,
    id: Option<String>,
    permissions: Option<Vec<String>>,
    expected_updated_at: Option<String>,
}

/// Splits a typed create or update input into the document's data and the
/// system entries.
fn split_input(input: Json) -> AppResult<WriteInput> {
    let mut data = data_object(input)?;
    let id = data.remove("id").and_then(|v| v.as_str().map(String::from));
    let permissions = match data.remove("permissions") {
        None | Some(Json::Null) => None,
        Some(Json::Array(items)) => Some(
            items
                .into_iter()
                .map(|p| {
                    p.as_str()
                        .map(String::from)
                        .ok_or_else(|| AppError::invalid("permissions", "expected strings"))
                })
                .collect::<AppResult<Vec<_>>>()?,
        ),
        Some(_) => return Err(AppError::invalid("permissions", "expected a list")),
    };
    let expected = data
        .remove("expectedUpdatedAt")
        .and_then(|v| v.as_str().map(String::from));
    Ok(WriteInput {
        data,
        id,
        permissions,
        expected_updated_at: expected,
    })
}

/// Adds the types and root fields of one collection.
pub fn register_collection(
    parts: &mut SchemaParts,
    collection: Arc<Collection>,
    model: &DataModel,
) {
    let names = &collection.names;
    let t = names.type_name.clone();
    let plural_cap = {
        let mut chars = names.plural.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    let about = format!("A document of the collection `{}`.", collection.name);

    // The object type.
    let mut object_type = Object::new(t.as_str())
        .description(about)
        .field(entry(
            "id".into(),
            TypeRef::named_nn(TypeRef::ID),
            "Unique id in the collection.".into(),
        ))
        .field(entry(
            "createdAt".into(),
            TypeRef::named_nn(DATETIME),
            "When it was created.".into(),
        ))
        .field(entry(
            "updatedAt".into(),
            TypeRef::named_nn(DATETIME),
            "When it last changed.".into(),
        ))
        .field(entry(
            "permissions".into(),
            TypeRef::named_nn_list_nn(TypeRef::STRING),
            "Its own permissions, e.g. `read(\"user:abc\")`.".into(),
        ));
    for attribute in &collection.attributes {
        object_type = object_type.field(entry(
            attribute.key.clone(),
            output_type(attribute),
            format!(
                "The `{}` attribute ({}).",
                attribute.key,
                attribute.kind.name()
            ),
        ));
    }
    for relationship in &collection.relationships {
        if let Some(related) =
            model.collection(&collection.database_id, &relationship.related_collection)
        {
            object_type = object_type.field(match &relationship.junction {
                Some(junction) => linked_field(
                    relationship.key.clone(),
                    related.clone(),
                    Link {
                        junction: junction.clone(),
                        near: "b_id",
                        far: "a_id",
                    },
                ),
                None => reference_field(relationship.key.clone(), related.clone()),
            });
        }
    }
    for (holder, relationship) in model.references_to(&collection) {
        if let Some(reverse) = &relationship.two_way_key {
            object_type = object_type.field(match &relationship.junction {
                Some(junction) => linked_field(
                    reverse.clone(),
                    holder.clone(),
                    Link {
                        junction: junction.clone(),
                        near: "a_id",
                        far: "b_id",
                    },
                ),
                None => reverse_field(reverse.clone(), holder.clone(), relationship),
            });
        }
    }
    parts.add_type(object_type);
    parts.add_types(connection_types(
        &t,
        &format!("documents of `{}`", collection.name),
    ));

    // Filter and order inputs.
    let filter_name = format!("{t}Filter");
    let mut filter = InputObject::new(filter_name.as_str())
        .description(format!(
            "Conditions on `{t}` documents; all given ones must hold."
        ))
        .field(InputValue::new("id", TypeRef::named("IDFilter")))
        .field(InputValue::new(
            "createdAt",
            TypeRef::named("DateTimeFilter"),
        ))
        .field(InputValue::new(
            "updatedAt",
            TypeRef::named("DateTimeFilter"),
        ))
        .field(
            InputValue::new("and", TypeRef::named_nn_list(filter_name.as_str()))
                .description("All of these hold."),
        )
        .field(
            InputValue::new("or", TypeRef::named_nn_list(filter_name.as_str()))
                .description("At least one of these holds."),
        )
        .field(
            InputValue::new("not", TypeRef::named(filter_name.as_str()))
                .description("This does not hold."),
        );
    for attribute in &collection.attributes {
        filter = filter.field(InputValue::new(
            attribute.key.as_str(),
            TypeRef::named(filter_type_of(attribute)),
        ));
    }
    for relationship in &collection.relationships {
        if let Some(related) =
            model.collection(&collection.database_id, &relationship.related_collection)
        {
            filter = filter.field(
                InputValue::new(
                    relationship.key.as_str(),
                    TypeRef::named(format!("{}Filter", related.names.type_name)),
                )
                .description(
                    "Conditions on the referenced document (needs permission to read its whole collection).",
                ),
            );
        }
    }
    parts.add_type(filter);
    let order_name = format!("{t}OrderBy");
    let mut order = InputObject::new(order_name.as_str())
        .oneof()
        .description(format!(
            "One order of `{t}` documents: name exactly one field. Ties are broken by id."
        ))
        .field(InputValue::new("id", TypeRef::named("OrderDirection")))
        .field(InputValue::new(
            "createdAt",
            TypeRef::named("OrderDirection"),
        ))
        .field(InputValue::new(
            "updatedAt",
            TypeRef::named("OrderDirection"),
        ));
    for attribute in collection.attributes.iter().filter(|a| orderable(a)) {
        order = order.field(InputValue::new(
            attribute.key.as_str(),
            TypeRef::named("OrderDirection"),
        ));
    }
    parts.add_type(order);

    // Write inputs.
    let mut create = InputObject::new(format!("Create{t}Input"))
        .description(format!("A new `{t}`."))
        .field(
            InputValue::new("id", TypeRef::named(TypeRef::ID))
                .description("Its id (generated when omitted or `unique()`)."),
        )
        .field(
            InputValue::new("permissions", TypeRef::named_nn_list(TypeRef::STRING)).description(
                "Its permissions; omitted: the signed-in creator may read, update and delete it.",
            ),
        );
    let mut update = InputObject::new(format!("Update{t}Input"))
        .description(format!("Changes to a `{t}`: given fields are set (null clears), others stay."))
        .field(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The document."))
        .field(InputValue::new("permissions", TypeRef::named_nn_list(TypeRef::STRING)).description("Replace its permissions."))
        .field(InputValue::new("expectedUpdatedAt", TypeRef::named(DATETIME)).description("Refuse (`DOCUMENT_CHANGED`) unless its `updatedAt` is still this: no lost updates."));
    for attribute in &collection.attributes {
        create = create.field(InputValue::new(
            attribute.key.as_str(),
            create_type(attribute),
        ));
        update = update.field(InputValue::new(
            attribute.key.as_str(),
            update_type(attribute),
        ));
    }
    for relationship in &collection.relationships {
        let (ty, about) = reference_input(relationship);
        create =
            create.field(InputValue::new(relationship.key.as_str(), ty.clone()).description(about));
        update = update.field(InputValue::new(relationship.key.as_str(), ty).description(about));
    }
    parts.add_type(create);
    parts.add_type(update);
    parts.add_type(
        InputObject::new(format!("Delete{t}Input"))
            .description(format!("The `{t}` to delete."))
            .field(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
    );
    parts.add_type(
        Object::new(format!("Delete{t}Payload"))
            .description(format!("The result of `delete{t}`."))
            .field(entry(
                "deletedId".into(),
                TypeRef::named_nn(TypeRef::ID),
                "Id of the deleted document.".into(),
            )),
    );

    // Queries.
    let c = collection.clone();
    parts.query(
        Field::new(
            names.single.as_str(),
            TypeRef::named(t.as_str()),
            move |ctx| {
                let collection = c.clone();
                FieldFuture::new(async move {
                    let id = ctx.args.try_get("id")?.string()?.to_string();
                    let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
                    let dialect = sql_dialect(app(&ctx)?.db.dialect());
                    let with_permissions = ctx.look_ahead().field("permissions").exists();
                    let mut fields = Vec::new();
                    selected_fields(&ctx, &[], &mut fields);
                    let mut conn = request_tx(&ctx)?.reader().await?;
                    let document = documents::get(
                        &mut conn,
                        dialect,
                        &collection,
                        &access,
                        &id,
                        with_permissions,
                    )
                    .await?;
                    Ok(document
                        .map(|d| FieldValue::value(node_value_of(d, Some(&field_names(&fields))))))
                })
            },
        )
        .description(format!(
            "A `{t}` by id, or null when it does not exist or the caller may not read it."
        ))
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
    );
    let c = collection.clone();
    parts.query(
        list_arguments(Field::new(names.plural.as_str(), TypeRef::named_nn(format!("{t}Connection")), move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let value = connection_of(&ctx, &collection, None).await?;
                Ok(Some(FieldValue::value(value)))
            })
        })
        .description(format!("`{t}` documents the caller may read, filtered, ordered and paged (Relay). `totalCount` is counted only when selected.")), &t),
    );

    // Mutations.
    let c = collection.clone();
    parts.mutation(
        Field::new(format!("create{t}"), TypeRef::named(t.as_str()), move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
                let (access, document) = create_one(&ctx, &collection, input, Sharing::Sole).await?;
                Ok(written(&collection, &access, document))
            })
        })
        .description(format!("Creates a `{t}`; needs the collection's `create` permission. All document writes of one request commit together or not at all.{NULL_WHEN_UNREADABLE}"))
        .argument(InputValue::new("input", TypeRef::named_nn(format!("Create{t}Input")))),
    );
    let c = collection.clone();
    parts.mutation(
        Field::new(
            format!("create{plural_cap}"),
            TypeRef::named_nn_list_nn(t.as_str()),
            move |ctx| {
                let collection = c.clone();
                FieldFuture::new(async move {
                    let inputs = bulk_inputs(&ctx)?;
                    let mut created = Vec::with_capacity(inputs.len());
                    for input in inputs {
                        let (access, document) =
                            create_one(&ctx, &collection, input, Sharing::Among).await?;
                        created.extend(written(&collection, &access, document));
                    }
                    Ok(Some(FieldValue::list(created)))
                })
            },
        )
        .description(format!(
            "Creates up to {} `{t}` documents at once: all or none.{LISTS_ONLY_READABLE}",
            documents::MAX_BULK
        ))
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn_list_nn(format!("Create{t}Input")),
        )),
    );
    let c = collection.clone();
    parts.mutation(
        Field::new(format!("update{t}"), TypeRef::named(t.as_str()), move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
                let WriteInput { data, id, permissions, expected_updated_at: expected } = split_input(input)?;
                let id = id.unwrap_or_default();
                let changes = DocumentChanges {
                    data,
                    permissions,
                    expected_updated_at: expected
                        .as_deref()
                        .map(|t| parse_datetime("expectedUpdatedAt", t))
                        .transpose()?,
                };
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let dialect = sql_dialect(app(&ctx)?.db.dialect());
                let tx = request_tx(&ctx)?;
                let (previous, document) = {
                    let mut op = tx.writer().await?;
                    let result = documents::update(&mut op, dialect, &collection, &access, &id, changes, data_model(&ctx)?).await;
                    op.end(result)?
                };
                tx.publish_after_commit(documents::event(&collection, &document, "update", Some(&previous)));
                Ok(written(&collection, &access, document))
            })
        })
        .description(format!("Changes a `{t}`; needs `update` permission on the collection or (with document security) on the document.{NULL_WHEN_UNREADABLE}"))
        .argument(InputValue::new("input", TypeRef::named_nn(format!("Update{t}Input")))),
    );
    let c = collection.clone();
    parts.mutation(
        Field::new(format!("delete{t}"), TypeRef::named_nn(format!("Delete{t}Payload")), move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let id = match arg_json(&ctx, "input")? {
                    Some(Json::Object(map)) => map.get("id").and_then(Json::as_str).unwrap_or_default().to_string(),
                    _ => String::new(),
                };
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let dialect = sql_dialect(app(&ctx)?.db.dialect());
                let tx = request_tx(&ctx)?;
                let deleted = {
                    let mut op = tx.writer().await?;
                    let result = documents::delete(&mut op, dialect, &collection, &access, &id, data_model(&ctx)?).await;
                    op.end(result)?
                };
                for (holder, document) in &deleted {
                    tx.publish_after_commit(documents::event(holder, document, "delete", None));
                }
                Ok(Some(FieldValue::value(object([("deletedId", Value::from(id))]))))
            })
        })
        .description(format!("Deletes a `{t}`; needs `delete` permission on the collection or (with document security) on the document."))
        .argument(InputValue::new("input", TypeRef::named_nn(format!("Delete{t}Input")))),
    );
    register_bulk_and_atomic(parts, &collection, &plural_cap);
    register_subscription(parts, &collection);
}

/// `upsertPost`, `updatePosts`, `deletePosts(filter)`, `incrementPost`,
/// `decrementPost`.
fn register_bulk_and_atomic(
    parts: &mut SchemaParts,
    collection: &Arc<Collection>,
    plural_cap: &str,
) {
    let t = collection.names.type_name.clone();
    let mut upsert = InputObject::new(format!("Upsert{t}Input"))
        .description(format!("A `{t}` to create, or to change when its id exists: given fields are set, others stay (or take their defaults when created)."))
        .field(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The document."))
        .field(InputValue::new("permissions", TypeRef::named_nn_list(TypeRef::STRING)).description("Its permissions."));
    for attribute in &collection.attributes {
        upsert = upsert.field(InputValue::new(
            attribute.key.as_str(),
            update_type(attribute),
        ));
    }
    for relationship in &collection.relationships {
        let (ty, about) = reference_input(relationship);
        upsert = upsert.field(InputValue::new(relationship.key.as_str(), ty).description(about));
    }
    parts.add_type(upsert);
    parts.add_type(
        InputObject::new(format!("Delete{plural_cap}Input"))
            .description(format!(
                "Which `{t}` documents to delete: at most {} may match.",
                documents::MAX_BULK
            ))
            .field(InputValue::new(
                "filter",
                TypeRef::named_nn(format!("{t}Filter")),
            )),
    );
    parts.add_type(
        Object::new(format!("Delete{plural_cap}Payload"))
            .description(format!("The result of `delete{plural_cap}`."))
            .field(entry(
                "deletedIds".into(),
                TypeRef::named_nn_list_nn(TypeRef::ID),
                "Ids of the deleted documents, cascades not included.".into(),
            )),
    );

    let c = collection.clone();
    parts.mutation(
        Field::new(format!("upsert{t}"), TypeRef::named(t.as_str()), move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
                let WriteInput { data, id, permissions, .. } = split_input(input)?;
                let id = id.unwrap_or_default();
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let dialect = sql_dialect(app(&ctx)?.db.dialect());
                let model = data_model(&ctx)?;
                let tx = request_tx(&ctx)?;
                let (previous, document, action) = {
                    let mut op = tx.writer().await?;
                    let result = async {
                        if documents::exists(&mut op, dialect, &collection, &id).await? {
                            let changes = DocumentChanges { data, permissions, expected_updated_at: None };
                            let (previous, document) = documents::update(&mut op, dialect, &collection, &access, &id, changes, model).await?;
                            Ok((Some(previous), document, "update"))
                        } else {
                            let new = NewDocument { id: Some(id), data, permissions };
                            let first_write = op.first_write();
                            Ok((None, documents::create(&mut op, first_write, dialect, &collection, &access, new, model).await?, "create"))
                        }
                    }
                    .await;
                    op.end(result)?
                };
                tx.publish_after_commit(documents::event(&collection, &document, action, previous.as_ref()));
                Ok(written(&collection, &access, document))
            })
        })
        .description(format!("Creates a `{t}` with this id, or changes it when it exists (needs `create` or `update` permission accordingly).{NULL_WHEN_UNREADABLE}"))
        .argument(InputValue::new("input", TypeRef::named_nn(format!("Upsert{t}Input")))),
    );

    let c = collection.clone();
    parts.mutation(
        Field::new(
            format!("update{plural_cap}"),
            TypeRef::named_nn_list_nn(t.as_str()),
            move |ctx| {
                let collection = c.clone();
                FieldFuture::new(async move {
                    let inputs = bulk_inputs(&ctx)?;
                    let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                    let dialect = sql_dialect(app(&ctx)?.db.dialect());
                    let model = data_model(&ctx)?;
                    let tx = request_tx(&ctx)?;
                    let mut updated = Vec::with_capacity(inputs.len());
                    for input in inputs {
                        let WriteInput {
                            data,
                            id,
                            permissions,
                            expected_updated_at,
                        } = split_input(input)?;
                        let changes = DocumentChanges {
                            data,
                            permissions,
                            expected_updated_at: expected_updated_at
                                .as_deref()
                                .map(|t| parse_datetime("expectedUpdatedAt", t))
                                .transpose()?,
                        };
                        let id = id.unwrap_or_default();
                        let (previous, document) = {
                            let mut op = tx.writer().await?;
                            let result = documents::update(
                                &mut op,
                                dialect,
                                &collection,
                                &access,
                                &id,
                                changes,
                                model,
                            )
                            .await;
                            op.end(result)?
                        };
                        tx.publish_after_commit(documents::event(
                            &collection,
                            &document,
                            "update",
                            Some(&previous),
                        ));
                        updated.extend(written(&collection, &access, document));
                    }
                    Ok(Some(FieldValue::list(updated)))
                })
            },
        )
        .description(format!(
            "Changes up to {} `{t}` documents at once: all or none.{LISTS_ONLY_READABLE}",
            documents::MAX_BULK
        ))
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn_list_nn(format!("Update{t}Input")),
        )),
    );

    let c = collection.clone();
    parts.mutation(
        Field::new(
            format!("delete{plural_cap}"),
            TypeRef::named_nn(format!("Delete{plural_cap}Payload")),
            move |ctx| {
                let collection = c.clone();
                FieldFuture::new(async move {
                    let filter_input = match arg_json(&ctx, "input")? {
                        Some(Json::Object(mut map)) => map.remove("filter").unwrap_or(Json::Null),
                        _ => Json::Null,
                    };
                    let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                    let model = data_model(&ctx)?;
                    let filter = filter_from_input(&collection, model, &access, &filter_input, 0)?;
                    let dialect = sql_dialect(app(&ctx)?.db.dialect());
                    let tx = request_tx(&ctx)?;
                    let mut op = tx.writer().await?;
                    let result = async {
                        let query = ListQuery {
                            filter,
                            orders: Vec::new(),
                            paging: Paging::Keyset {
                                after: None,
                                before: None,
                                limit: documents::MAX_BULK,
                                from_end: false,
                            },
                            want_total: false,
                            want_permissions: true,
                            only: None,
                            want_more: true,
                            want_cursors: false,
                        };
                        let matching =
                            documents::list(&mut op, dialect, &collection, &access, &query).await?;
                        if matching.has_more {
                            return Err(AppError::Invalid {
                                code: codes::TOO_MANY_DOCUMENTS,
                                field: "filter".into(),
                                reason: format!(
                                    "more than {} documents match; narrow the filter",
                                    documents::MAX_BULK
                                ),
                            });
                        }
                        let mut deleted_ids = Vec::with_capacity(matching.documents.len());
                        for (document, _) in &matching.documents {
                            let deleted = documents::delete(
                                &mut op,
                                dialect,
                                &collection,
                                &access,
                                &document.id,
                                model,
                            )
                            .await;
                            match deleted {
                                Ok(deleted) => {
                                    for (holder, document) in &deleted {
                                        tx.publish_after_commit(documents::event(
                                            holder, document, "delete", None,
                                        ));
                                    }
                                    deleted_ids.push(Value::from(document.id.as_str()));
                                }
                                // Taken along by an earlier one's cascade.
                                Err(AppError::NotFound { .. }) => {}
                                Err(err) => return Err(err),
                            }
                        }
                        Ok(deleted_ids)
                    }
                    .await;
                    let deleted_ids = op.end(result)?;
                    Ok(Some(FieldValue::value(object([(
                        "deletedIds",
                        Value::List(deleted_ids),
                    )]))))
                })
            },
        )
        .description(format!(
            "Deletes the `{t}` documents matching a filter, at most {}: all or none.",
            documents::MAX_BULK
        ))
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn(format!("Delete{plural_cap}Input")),
        )),
    );

    let numeric: Vec<&Attribute> = collection
        .attributes
        .iter()
        .filter(|a| {
            !a.array
                && matches!(
                    a.kind,
                    AttributeKind::Integer { .. } | AttributeKind::Float { .. }
                )
        })
        .filter(|a| !matches!(a.key.as_str(), "true" | "false" | "null"))
        .collect();
    if numeric.is_empty() {
        return;
    }
    parts.add_type(
        Enum::new(format!("{t}NumericField"))
            .description(format!("The numeric attributes of `{t}`."))
            .items(numeric.iter().map(|a| a.key.clone())),
    );
    for (name, input_name, bound, sign, about) in [
        (
            format!("increment{t}"),
            format!("Increment{t}Input"),
            "max",
            1.0,
            "Adds `by` (default 1) to a numeric attribute, atomically; refused past `max` or the attribute's own range.",
        ),
        (
            format!("decrement{t}"),
            format!("Decrement{t}Input"),
            "min",
            -1.0,
            "Subtracts `by` (default 1) from a numeric attribute, atomically; refused below `min` or the attribute's own range.",
        ),
    ] {
        parts.add_type(
            InputObject::new(input_name.as_str())
                .description(about)
                .field(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
                .field(InputValue::new(
                    "field",
                    TypeRef::named_nn(format!("{t}NumericField")),
                ))
                .field(
                    InputValue::new("by", TypeRef::named(TypeRef::FLOAT))
                        .description("How much (default 1; positive)."),
                )
                .field(
                    InputValue::new(bound, TypeRef::named(TypeRef::FLOAT))
                        .description("The bound the result may not pass."),
                ),
        );
        let c = collection.clone();
        parts.mutation(
            Field::new(name, TypeRef::named(t.as_str()), move |ctx| {
                let collection = c.clone();
                FieldFuture::new(async move {
                    let Some(Json::Object(input)) = arg_json(&ctx, "input")? else {
                        return Err(AppError::invalid("input", "expected an object").into());
                    };
                    let id = input
                        .get("id")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let field = input
                        .get("field")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let by = input.get("by").and_then(Json::as_f64).unwrap_or(1.0);
                    if by < 0.0 {
                        return Err(AppError::invalid(
                            "by",
                            "give a positive amount; use the other mutation to go the other way",
                        )
                        .into());
                    }
                    let limit = input.get(bound).and_then(Json::as_f64);
                    let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                    let dialect = sql_dialect(app(&ctx)?.db.dialect());
                    let tx = request_tx(&ctx)?;
                    let (previous, document) = {
                        let mut op = tx.writer().await?;
                        let result = documents::increment(
                            &mut op,
                            dialect,
                            &collection,
                            &access,
                            &id,
                            &field,
                            sign * by,
                            limit,
                        )
                        .await;
                        op.end(result)?
                    };
                    tx.publish_after_commit(documents::event(
                        &collection,
                        &document,
                        "update",
                        Some(&previous),
                    ));
                    Ok(written(&collection, &access, document))
                })
            })
            .description(format!("{about}{NULL_WHEN_UNREADABLE}"))
            .argument(InputValue::new("input", TypeRef::named_nn(input_name))),
        );
    }
}

/// Creates one document of a typed create: the caller's access and the
/// document.
fn create_one<'a>(
    ctx: &'a ResolverContext<'a>,
    collection: &'a Collection,
    input: Json,
    sharing: Sharing,
) -> futures_util::future::BoxFuture<'a, AppResult<(Access, Document)>> {
    Box::pin(create_one_impl(ctx, collection, input, sharing))
}

async fn create_one_impl(
    ctx: &ResolverContext<'_>,
    collection: &Collection,
    input: Json,
    sharing: Sharing,
) -> AppResult<(Access, Document)> {
    let WriteInput {
        data,
        id,
        permissions,
        ..
    } = split_input(input)?;
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_WRITE)?;
    let tx = request_tx(ctx)?;
    let new = NewDocument {
        id,
        data,
        permissions,
    };
    let document = tx
        .create(collection, &access, new, data_model(ctx)?, sharing)
        .await?;
    tx.publish_after_commit(documents::event(collection, &document, "create", None));
    Ok((access, document))
}

/// A page of `collection` for the list field being resolved (its `filter`,
/// `orderBy`, `first`, `after`, `last`, `before`), within `scope` when given
/// (e.g. the posts of one author).
async fn connection_of(
    ctx: &ResolverContext<'_>,
    collection: &Arc<Collection>,
    scope: Option<Filter>,
) -> AppResult<Value> {
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_READ)?;
    let model = data_model(ctx)?;
    let parts = ConnectionParts::selected(ctx);
    let mut filter = match arg_json(ctx, "filter")? {
        Some(input) => filter_from_input(collection, model, &access, &input, 0)?,
        None => Filter::default(),
    };
    if let Some(scope) = scope {
        filter = Filter::And(vec![scope, filter]);
    }
    let orders = orders_from_input(arg_json(ctx, "orderBy")?.as_ref())?;
    let first = count_arg(ctx, "first")?;
    let last = count_arg(ctx, "last")?;
    if first.is_some() && last.is_some() {
        return Err(AppError::invalid(
            "last",
            "pass either `first` or `last`, not both",
        ));
    }
    let cursor = |name: &str| -> AppResult<Option<Cursor>> {
        match ctx.args.get(name) {
            Some(v) if !v.is_null() => {
                let text = v
                    .string()
                    .map_err(|_| AppError::invalid(name, "expected a string"))?;
                decode_cursor(name, collection, &orders, text).map(Some)
            }
            _ => Ok(None),
        }
    };
    let after = cursor("after")?;
    let before = cursor("before")?;
    let from_end = last.is_some();
    let (had_after, had_before) = (after.is_some(), before.is_some());
    let query = ListQuery {
        filter,
        orders: orders.clone(),
        paging: Paging::Keyset {
            after,
            before,
            limit: last.or(first).unwrap_or(DEFAULT_FIRST),
            from_end,
        },
        want_total: ctx.look_ahead().field("totalCount").exists(),
        want_permissions: parts.permissions,
        only: Some(parts.node_fields.clone()),
        want_more: parts.more,
        want_cursors: parts.edge_cursors || parts.page_cursors,
    };
    let dialect = sql_dialect(app(ctx)?.db.dialect());
    let mut conn = request_tx(ctx)?.reader().await?;
    let listed = documents::list(&mut conn, dialect, collection, &access, &query).await?;
    drop(conn);
    let (has_next, has_previous) = if from_end {
        (had_before, listed.has_more)
    } else {
        (listed.has_more, had_after)
    };
    Ok(connection_value(
        collection,
        &orders,
        listed,
        has_next,
        has_previous,
        &parts,
    ))
}

/// The field of a reference (`post.author`): the referenced document, read in a
/// batch with every other reference of the request; null when there is none or
/// the caller may not read it.
fn reference_field(key: String, related: Arc<Collection>) -> Field {
    let ty = TypeRef::named(related.names.type_name.as_str());
    let about = format!("The referenced `{}` document.", related.names.type_name);
    Field::new(key.clone(), ty, move |ctx| {
        let (key, related) = (key.clone(), related.clone());
        FieldFuture::new(async move {
            let target = match parent_value(&ctx) {
                Some(Value::Object(map)) => match map.get(key.as_str()) {
                    Some(Value::String(id)) => id.clone(),
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            };
            let tx = request_tx(&ctx)?;
            let state = app(&ctx)?.clone();
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            let model = data_model(&ctx)?.clone();
            let loader = tx.related_loader(|| RelatedLoader {
                state,
                tx: Arc::downgrade(tx),
                access,
                model,
            });
            let document = loader
                .load_one((related.database_id.clone(), related.id.clone(), target))
                .await?;
            Ok(document.map(|d| FieldValue::value(node_value(d))))
        })
    })
    .description(about)
}

/// The reverse field of a relationship (`author.posts`): the documents pointing
/// at this one, as a filtered, ordered, paged list (or the one document, for a
/// one-to-one relationship).
fn reverse_field(
    name: String,
    holder: Arc<Collection>,
    relationship: &super::Relationship,
) -> Field {
    let key = relationship.key.clone();
    let reference_key = relationship.key.clone();
    let holder_type = holder.names.type_name.clone();
    let scope = move |ctx: &ResolverContext<'_>| -> Option<Filter> {
        match parent_value(ctx) {
            Some(Value::Object(map)) => match map.get("id") {
                Some(Value::String(id)) => Some(Filter::Cmp {
                    field: FilterField::attribute(key.clone()),
                    op: CmpOp::Eq,
                    value: Json::String(id.clone()),
                }),
                _ => None,
            },
            _ => None,
        }
    };
    if relationship.kind == super::RelationKind::OneToOne {
        return Field::new(name, TypeRef::named(holder_type.as_str()), move |ctx| {
            let (holder, scope) = (holder.clone(), scope.clone());
            FieldFuture::new(async move {
                let Some(filter) = scope(&ctx) else {
                    return Ok(None);
                };
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
                let dialect = sql_dialect(app(&ctx)?.db.dialect());
                let query = ListQuery {
                    filter,
                    orders: Vec::new(),
                    paging: Paging::Keyset {
                        after: None,
                        before: None,
                        limit: 1,
                        from_end: false,
                    },
                    want_total: false,
                    want_permissions: true,
                    only: None,
                    want_more: true,
                    want_cursors: false,
                };
                let mut conn = request_tx(&ctx)?.reader().await?;
                let listed = documents::list(&mut conn, dialect, &holder, &access, &query).await?;
                Ok(listed
                    .documents
                    .into_iter()
                    .next()
                    .map(|(d, _)| FieldValue::value(node_value(d))))
            })
        })
        .description(format!("The `{holder_type}` pointing at this document."));
    }
    list_arguments(
        Field::new(
            name,
            TypeRef::named_nn(format!("{holder_type}Connection")),
            move |ctx| {
                let (holder, scope, key) = (holder.clone(), scope.clone(), reference_key.clone());
                FieldFuture::new(async move {
                    let Some(filter) = scope(&ctx) else {
                        return Ok(None);
                    };
                    let Filter::Cmp {
                        value: Json::String(parent),
                        ..
                    } = &filter
                    else {
                        return Ok(None);
                    };
                    let parent = parent.clone();
                    let value = related_list(
                        &ctx,
                        &holder,
                        documents::ParentScope::Reference(key),
                        filter,
                        parent,
                    )
                    .await?;
                    Ok(Some(FieldValue::value(value)))
                })
            },
        )
        .description(format!(
            "The `{holder_type}` documents pointing at this one, filtered, ordered and paged."
        )),
        &holder_type,
    )
}

/// The input type of a relationship field: one id, or the full list of linked
/// ids for a many-to-many one.
fn reference_input(relationship: &super::Relationship) -> (TypeRef, &'static str) {
    if relationship.junction.is_some() {
        (
            TypeRef::named_nn_list(TypeRef::ID),
            "The ids of the linked documents: replaces the links (empty or null: none).",
        )
    } else {
        (
            TypeRef::named(TypeRef::ID),
            "The id of the referenced document (null: none).",
        )
    }
}

/// A many-to-many field (`post.tags`, or the reverse `tag.posts`): the linked
/// documents of `listed`, filtered, ordered and paged.
fn linked_field(name: String, listed: Arc<Collection>, link: Link) -> Field {
    let listed_type = listed.names.type_name.clone();
    list_arguments(
        Field::new(
            name,
            TypeRef::named_nn(format!("{listed_type}Connection")),
            move |ctx| {
                let (listed, link) = (listed.clone(), link.clone());
                FieldFuture::new(async move {
                    let id = match parent_value(&ctx) {
                        Some(Value::Object(map)) => match map.get("id") {
                            Some(Value::String(id)) => id.clone(),
                            _ => return Ok(None),
                        },
                        _ => return Ok(None),
                    };
                    let scope = Filter::LinkedTo {
                        link: link.clone(),
                        id: id.clone(),
                    };
                    let value = related_list(
                        &ctx,
                        &listed,
                        documents::ParentScope::Junction(link),
                        scope,
                        id,
                    )
                    .await?;
                    Ok(Some(FieldValue::value(value)))
                })
            },
        )
        .description(format!(
            "The linked `{listed_type}` documents, filtered, ordered and paged."
        )),
        &listed_type,
    )
}

/// The value of a connection (`edges`, `nodes`, `pageInfo`, `totalCount`) of
/// a page read in the order `orders`.
/// The parts of a connection its selection asks for: only those are built.
struct ConnectionParts {
    edges: bool,
    edge_cursors: bool,
    nodes: bool,
    page_cursors: bool,
    /// `pageInfo.hasNextPage` or `hasPreviousPage`: whether more rows follow the
    /// page, read with one row more.
    more: bool,
    /// The nodes' `permissions`, read with one more query.
    permissions: bool,
    /// The fields of nodes selected under `nodes` or `edges { node }`.
    node_fields: Vec<String>,
}

impl ConnectionParts {
    fn selected(ctx: &ResolverContext<'_>) -> ConnectionParts {
        let look = ctx.look_ahead();
        let (edges, nodes, page_info) = (
            look.field("edges"),
            look.field("nodes"),
            look.field("pageInfo"),
        );
        ConnectionParts {
            edges: edges.exists(),
            edge_cursors: edges.field("cursor").exists(),
            nodes: nodes.exists(),
            page_cursors: page_info.field("startCursor").exists()
                || page_info.field("endCursor").exists(),
            more: page_info.field("hasNextPage").exists()
                || page_info.field("hasPreviousPage").exists(),
            permissions: nodes.field("permissions").exists()
                || edges.field("node").field("permissions").exists(),
            node_fields: {
                let mut fields = Vec::new();
                selected_fields(ctx, &["nodes"], &mut fields);
                selected_fields(ctx, &["edges", "node"], &mut fields);
                fields
            },
        }
    }
}

fn connection_value(
    collection: &Collection,
    orders: &[OrderBy],
    listed: documents::Listed,
    has_next: bool,
    has_previous: bool,
    parts: &ConnectionParts,
) -> Value {
    let cursor = |c: &Cursor| Value::from(encode_cursor(collection, orders, c));
    let (documents, cursors): (Vec<_>, Vec<_>) = listed.documents.into_iter().unzip();
    let nodes: Vec<Value> = if parts.nodes || parts.edges {
        let names = field_names(&parts.node_fields);
        documents
            .into_iter()
            .map(|d| node_value_of(d, Some(&names)))
            .collect()
    } else {
        Vec::new()
    };
    let edges = if parts.edges {
        nodes
            .iter()
            .zip(&cursors)
            .map(|(node, c)| {
                let cursor = if parts.edge_cursors {
                    cursor(c)
                } else {
                    Value::Null
                };
                object([("cursor", cursor), ("node", node.clone())])
            })
            .collect()
    } else {
        Vec::new()
    };
    let page_cursor = |c: Option<&Cursor>| match c {
        Some(c) if parts.page_cursors => cursor(c),
        _ => Value::Null,
    };
    object([
        ("edges", Value::List(edges)),
        (
            "nodes",
            Value::List(if parts.nodes { nodes } else { Vec::new() }),
        ),
        (
            "pageInfo",
            object([
                ("hasNextPage", Value::from(has_next)),
                ("hasPreviousPage", Value::from(has_previous)),
                ("startCursor", page_cursor(cursors.first())),
                ("endCursor", page_cursor(cursors.last())),
            ]),
        ),
        ("totalCount", Value::from(listed.total.unwrap_or(0))),
    ])
}

/// One parent's list across a relationship (`author.posts(...)`): a first page
/// is loaded in one batch with the same list of every other parent in the
/// request; paging on from a cursor (or from the end) is a query of its own.
async fn related_list(
    ctx: &ResolverContext<'_>,
    listed: &Arc<Collection>,
    scope: documents::ParentScope,
    scope_filter: Filter,
    parent: String,
) -> AppResult<Value> {
    let paging = ["after", "before", "last"]
        .iter()
        .any(|name| ctx.args.get(name).is_some_and(|v| !v.is_null()));
    if paging {
        return connection_of(ctx, listed, Some(scope_filter)).await;
    }
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_READ)?;
    let model = data_model(ctx)?;
    let filter_json = arg_json(ctx, "filter")?;
    let filter = match &filter_json {
        Some(input) => filter_from_input(listed, model, &access, input, 0)?,
        None => Filter::default(),
    };
    let order_json = arg_json(ctx, "orderBy")?;
    let orders = orders_from_input(order_json.as_ref())?;
    let first = count_arg(ctx, "first")?.unwrap_or(DEFAULT_FIRST);
    let want_total = ctx.look_ahead().field("totalCount").exists();
    let signature = serde_json::to_string(&(&filter_json, &order_json, first, want_total))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    let tx = request_tx(ctx)?;
    let state = app(ctx)?.clone();
    let loader = tx.list_loader(|| ListLoader {
        state,
        tx: Arc::downgrade(tx),
        access: access.clone(),
        model: model.clone(),
    });
    let key = ListKey {
        database: listed.database_id.clone(),
        collection: listed.id.clone(),
        scope,
        spec: Arc::new(ListSpec {
            signature,
            filter,
            orders: orders.clone(),
            limit: first,
            want_total,
        }),
        parent,
    };
    let page = loader
        .load_one(key)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{}", e.message)))?
        .unwrap_or(documents::Listed {
            documents: Vec::new(),
            has_more: false,
            total: want_total.then_some(0),
        });
    let has_next = page.has_more;
    Ok(connection_value(
        listed,
        &orders,
        page,
        has_next,
        false,
        &ConnectionParts::selected(ctx),
    ))
}

/// The object value of a document as an event carries it (`$id`, `$createdAt`,
/// …, then the attributes by key).
fn node_value_from_event(payload: &Json) -> Value {
    let Json::Object(map) = payload else {
        return Value::Null;
    };
    let mut node = async_graphql::indexmap::IndexMap::new();
    for (key, value) in map {
        let name = match key.as_str() {
            "$id" => "id",
            "$createdAt" => "createdAt",
            "$updatedAt" => "updatedAt",
            "$permissions" => "permissions",
            "$collectionId" | "$databaseId" => continue,
            other => other,
        };
        node.insert(Name::new(name), json_value(value));
    }
    Value::Object(node)
}

/// What a change means to a subscriber watching the set `filter` describes:
/// nothing, or the change type to deliver.
fn change_for(
    filter: &Filter,
    collection: &Collection,
    action: &str,
    document: &serde_json::Map<String, Json>,
    previous: Option<&serde_json::Map<String, Json>>,
) -> Option<&'static str> {
    let now = super::matcher::matches(filter, collection, document);
    match action {
        "create" => now.then_some("CREATE"),
        "delete" => now.then_some("DELETE"),
        "update" => {
            let before = previous.is_some_and(|p| super::matcher::matches(filter, collection, p));
            match (before, now) {
                (_, true) => Some("UPDATE"),
                (true, false) => Some("LEAVE"),
                (false, false) => None,
            }
        }
        _ => None,
    }
}

/// A `postChanged(filter, id)` subscription: the changes to the documents of one
/// collection in the filtered set (or the one with `id`).
struct DocumentWatch {
    channel: String,
    collection: Arc<Collection>,
    filter: Filter,
    only: Option<String>,
    /// The subscriber as it subscribed: whether a document left its set is
    /// told only when it could read the version that was in the set.
    subscriber: crate::auth::Caller,
}

impl crate::services::realtime::watch::Watch for DocumentWatch {
    fn outcome(&self, event: &crate::bus::Event) -> Option<&'static str> {
        let action = event.action_on(&self.channel)?;
        let document = event.payload.as_object()?;
        let id = document.get("$id").and_then(Json::as_str);
        if self.only.as_deref().is_some_and(|only| id != Some(only)) {
            return None;
        }
        let previous = event
            .previous
            .as_ref()
            .filter(|_| crate::auth::access::may_see_previous(&self.subscriber, event))
            .and_then(Json::as_object);
        change_for(&self.filter, &self.collection, action, document, previous)
    }

    fn value(&self, event: &crate::bus::Event, outcome: &'static str) -> Value {
        object([
            ("type", Value::Enum(Name::new(outcome))),
            ("node", node_value_from_event(&event.payload)),
            (
                "previous",
                event
                    .previous
                    .as_ref()
                    .map(node_value_from_event)
                    .unwrap_or(Value::Null),
            ),
        ])
    }
}

/// `postChanged(filter, id)`: the changes to the documents in a filtered set (or
/// one document), typed like queries; a document leaving the set by an update
/// arrives once as LEAVE.
fn register_subscription(parts: &mut SchemaParts, collection: &Arc<Collection>) {
    let t = collection.names.type_name.clone();
    parts.add_type(
        Object::new(format!("{t}Event"))
            .description(format!("A change to a watched `{t}`."))
            .field(entry(
                "type".into(),
                TypeRef::named_nn("DocumentChangeType"),
                "What happened.".into(),
            ))
            .field(entry(
                "node".into(),
                TypeRef::named_nn(t.as_str()),
                "The document after the change (before it, for DELETE).".into(),
            ))
            .field(entry(
                "previous".into(),
                TypeRef::named(t.as_str()),
                "The document before an update.".into(),
            )),
    );
    let c = collection.clone();
    parts.subscription(
        SubscriptionField::new(
            format!("{}Changed", collection.names.single),
            TypeRef::named_nn(format!("{t}Event")),
            move |ctx| {
                let collection = c.clone();
                SubscriptionFieldFuture::new(async move {
                    if let Some(rendering) = crate::services::realtime::watch::prepared(&ctx) {
                        return Ok(rendering);
                    }
                    let state = app(&ctx)?.clone();
                    let caller = caller(&ctx)?.clone();
                    let access = Access::of(&caller, documents::DOCUMENTS_READ)?;
                    if !documents::may_read_any(&collection, &access) {
                        return Err(AppError::PermissionDenied {
                            reason: format!("no permission to read documents of `{}`", collection.name),
                        }
                        .into());
                    }
                    let model = data_model(&ctx)?.clone();
                    let filter = match arg_json(&ctx, "filter")? {
                        Some(input) => filter_from_input(&collection, &model, &access, &input, 0)?,
                        None => Filter::default(),
                    };
                    super::matcher::check_evaluable(&filter)?;
                    // The same checks as a query's: unknown fields, wrong types.
                    let mut probe = sqlx::QueryBuilder::<sqlx::Any>::new("");
                    super::filter::push_filter(
                        &mut probe,
                        sql_dialect(state.db.dialect()),
                        "d",
                        &collection.columns(),
                        &filter,
                    )
                    .map_err(documents::filter_error)?;
                    let only = match ctx.args.get("id") {
                        Some(v) if !v.is_null() => Some(v.string()?.to_string()),
                        _ => None,
                    };
                    let watch = DocumentWatch { channel: collection.channel(), collection, filter, only, subscriber: caller.clone() };
                    Ok(crate::services::realtime::watch::follow(&ctx, state, caller, watch))
                })
            },
        )
        .description(format!("Changes to `{t}` documents the caller may read: all of them, those matching `filter` (the list's filter; relationships excepted), or the one with `id`. An update that takes a document out of the filtered set arrives as LEAVE. Delivery is at most once: after a reconnect, re-query from the last `updatedAt` seen."))
        .argument(InputValue::new("filter", TypeRef::named(format!("{t}Filter"))))
        .argument(InputValue::new("id", TypeRef::named(TypeRef::ID))),
    );
}

/// The arguments of a list of `type_name` documents: `filter`, `orderBy`,
/// `first`, `after`, `last`, `before`.
fn list_arguments(field: Field, type_name: &str) -> Field {
    field
        .argument(InputValue::new(
            "filter",
            TypeRef::named(format!("{type_name}Filter")),
        ))
        .argument(
            InputValue::new(
                "orderBy",
                TypeRef::named_nn_list(format!("{type_name}OrderBy")),
            )
            .description("Orders, most significant first; ties by id."),
        )
        .argument(
            InputValue::new("first", TypeRef::named(TypeRef::INT)).description(format!(
                "The first n (at most {MAX_FIRST}; default {DEFAULT_FIRST})."
            )),
        )
        .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
        .argument(
            InputValue::new("last", TypeRef::named(TypeRef::INT))
                .description(format!("The last n (at most {MAX_FIRST}).")),
        )
        .argument(InputValue::new("before", TypeRef::named(TypeRef::STRING)))
}

/// The `input` list of a bulk mutation: at most [`documents::MAX_BULK`] items.
fn bulk_inputs(ctx: &ResolverContext<'_>) -> AppResult<Vec<Json>> {
    let Some(Json::Array(inputs)) = arg_json(ctx, "input")? else {
        return Err(AppError::invalid("input", "expected a list"));
    };
    if inputs.len() > documents::MAX_BULK {
        return Err(AppError::invalid(
            "input",
            format!("at most {} documents at once", documents::MAX_BULK),
        ));
    }
    Ok(inputs)
}
