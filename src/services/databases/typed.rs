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
use serde_json::{Map, Value as Json};

use crate::error::{AppError, AppResult, codes};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection_types, count_arg, datetime, holds_objects, json_into_value,
    json_value, object, parent_entry, parent_value, parse_datetime,
};
use crate::services::realtime::resume;

use super::documents::{self, Access, Document, DocumentChanges, ListQuery, NewDocument, Paging};
use super::filter::{
    CmpOp, Cursor, Field as FilterField, Filter, FilterError, Link, OrderBy, ResolvedFilter,
    Target, Use, cursor_error, list_signature,
};
use super::loader::{ListKey, ListLoader, ListSpec, RelatedLoader};
use super::model::{Attribute, AttributeKind, is_reserved_key};
use super::schema::{data_model, documents_of, request_tx};
use super::service::References;
use super::spatial::{Relation, Shape};
use super::tx::Sharing;
use super::writes::data_object;
use crate::auth::permissions::{Action, allows};

use super::{Collection, DataModel};

pub const BIGINT: &str = "BigInt";
/// The most documents one page of a typed list holds.
const MAX_FIRST: usize = 1000;
const _: () = assert!(MAX_FIRST as u64 <= crate::graphql::nodes::LARGEST_PAGE);
const DEFAULT_FIRST: usize = crate::graphql::types::DEFAULT_PAGE_SIZE;
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

/// The nested lists of floats a shape is written as: `[Float!]` for a point,
/// `[[Float!]!]` for a line, `[[[Float!]!]!]` for a polygon's rings.
fn shape_type(shape: Shape, non_null: bool) -> TypeRef {
    let depth = match shape {
        Shape::Point => 1,
        Shape::Line => 2,
        Shape::Polygon => 3,
    };
    let mut shape_type = TypeRef::NonNull(Box::new(TypeRef::named(TypeRef::FLOAT)));
    for level in 1..=depth {
        shape_type = TypeRef::List(Box::new(shape_type));
        if level < depth || non_null {
            shape_type = TypeRef::NonNull(Box::new(shape_type));
        }
    }
    shape_type
}

fn filter_type_of(attribute: &Attribute) -> String {
    if attribute.kind.shape().is_some() {
        return SPATIAL_FILTER.into();
    }
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
    if let Some(shape) = attribute.kind.shape() {
        return shape_type(shape, always);
    }
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
    if let Some(shape) = attribute.kind.shape() {
        return shape_type(shape, must);
    }
    match (attribute.array, must) {
        (true, true) => TypeRef::named_nn_list_nn(scalar),
        (true, false) => TypeRef::named_nn_list(scalar),
        (false, true) => TypeRef::named_nn(scalar),
        (false, false) => TypeRef::named(scalar),
    }
}

fn update_type(attribute: &Attribute) -> TypeRef {
    if let Some(shape) = attribute.kind.shape() {
        return shape_type(shape, false);
    }
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
    !attribute.array && !long_text && attribute.kind.shape().is_none()
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
    register_spatial_filter(parts);
    parts.add_type(comparisons(
        "SequenceFilter",
        TypeRef::STRING,
        "Conditions on a document's sequence: decimal strings, compared as numbers.",
    ));
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

/// The filter input of point, line and polygon fields.
const SPATIAL_FILTER: &str = "SpatialFilter";

/// The spatial conditions of [`SPATIAL_FILTER`] that take a shape: the field,
/// the relation, and whether it is negated.
const SPATIAL_CONDITIONS: [(&str, Relation, bool, &str); 12] = [
    ("eq", Relation::Equals, false, "The same shape."),
    (
        "ne",
        Relation::Equals,
        true,
        "Not the same shape (no shape included).",
    ),
    ("contains", Relation::Contains, false, "Contains the shape."),
    (
        "notContains",
        Relation::Contains,
        true,
        "Does not contain the shape (no shape included).",
    ),
    (
        "intersects",
        Relation::Intersects,
        false,
        "Shares a point with the shape.",
    ),
    (
        "notIntersects",
        Relation::Intersects,
        true,
        "Shares no point with the shape (no shape included).",
    ),
    ("crosses", Relation::Crosses, false, "Crosses the shape."),
    (
        "notCrosses",
        Relation::Crosses,
        true,
        "Does not cross the shape (no shape included).",
    ),
    ("overlaps", Relation::Overlaps, false, "Overlaps the shape."),
    (
        "notOverlaps",
        Relation::Overlaps,
        true,
        "Does not overlap the shape (no shape included).",
    ),
    (
        "touches",
        Relation::Touches,
        false,
        "Touches the shape at its boundary only.",
    ),
    (
        "notTouches",
        Relation::Touches,
        true,
        "Does not touch the shape (no shape included).",
    ),
];

/// The distance conditions of [`SPATIAL_FILTER`].
const DISTANCE_CONDITIONS: [(&str, Relation, &str); 4] = [
    (
        "distanceEqual",
        Relation::DistanceEqual,
        "At exactly this distance.",
    ),
    (
        "distanceNotEqual",
        Relation::DistanceNotEqual,
        "At any other distance.",
    ),
    (
        "distanceGreaterThan",
        Relation::DistanceGreaterThan,
        "Farther than this.",
    ),
    (
        "distanceLessThan",
        Relation::DistanceLessThan,
        "Nearer than this.",
    ),
];

fn register_spatial_filter(parts: &mut SchemaParts) {
    let shape_about = "a point `[x, y]`, a line `[[x, y], …]` or a polygon `[[[x, y], …], …]`";
    parts.add_type(
        InputObject::new("SpatialDistance")
            .description("A distance from a shape.")
            .field(
                InputValue::new("shape", TypeRef::named_nn("JSON"))
                    .description(format!("The shape: {shape_about}.")),
            )
            .field(
                InputValue::new("distance", TypeRef::named_nn(TypeRef::FLOAT))
                    .description("The distance: in the coordinates' units, or in meters."),
            )
            .field(
                InputValue::new("meters", TypeRef::named(TypeRef::BOOLEAN)).description(
                    "Measured in meters on the Earth's sphere, between points (default false).",
                ),
            ),
    );
    let mut filter = InputObject::new(SPATIAL_FILTER).description(format!(
        "Conditions on a point, line or polygon field, each against a shape: {shape_about}; all given ones must hold. A document with no shape meets only the negated ones and `isNull`."
    ));
    for (name, _, _, about) in SPATIAL_CONDITIONS {
        filter = filter.field(InputValue::new(name, TypeRef::named("JSON")).description(about));
    }
    for (name, _, about) in DISTANCE_CONDITIONS {
        filter = filter
            .field(InputValue::new(name, TypeRef::named("SpatialDistance")).description(about));
    }
    filter = filter.field(
        InputValue::new("isNull", TypeRef::named(TypeRef::BOOLEAN))
            .description("Has no value (true) or has one (false)."),
    );
    parts.add_type(filter);
}

/// A condition of [`SPATIAL_FILTER`], when `op` is one.
fn spatial_condition(field: &FilterField, op: &str, operand: &Json) -> Option<AppResult<Filter>> {
    let spatial = |relation, shape: Json, distance, meters| Filter::Spatial {
        field: field.clone(),
        relation,
        shape,
        distance,
        meters,
    };
    if let Some((_, relation, negated, _)) =
        SPATIAL_CONDITIONS.iter().find(|(name, ..)| *name == op)
    {
        // `eq`, `ne` and `contains` of the other filters take no list.
        if !operand.is_array() {
            return None;
        }
        let filter = spatial(*relation, operand.clone(), 0.0, false);
        return Some(Ok(if *negated {
            Filter::Not(Box::new(filter))
        } else {
            filter
        }));
    }
    let (_, relation, _) = DISTANCE_CONDITIONS.iter().find(|(name, ..)| *name == op)?;
    let Json::Object(distance) = operand else {
        return Some(Err(bad_filter(format!(
            "`{op}` takes {{shape, distance, meters}}"
        ))));
    };
    let (Some(shape), Some(length)) = (
        distance.get("shape"),
        distance.get("distance").and_then(Json::as_f64),
    ) else {
        return Some(Err(bad_filter(format!(
            "`{op}` takes a shape and a distance"
        ))));
    };
    let meters = distance.get("meters").and_then(Json::as_bool) == Some(true);
    Some(Ok(spatial(*relation, shape.clone(), length, meters)))
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
                    all.push(condition(
                        named_field(collection, model, field),
                        op,
                        operand,
                    )?);
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
    let (relationship, related) = readable_relation(collection, model, access, key)?;
    let inner = filter_from_input(related, model, access, value, depth + 1)?;
    Ok(across(relationship, related, inner))
}

/// The relationship `key` of `collection` and the collection it relates to,
/// when the caller may read every document of that collection (a condition on
/// related documents must not tell what one the caller cannot read holds).
fn readable_relation<'c, 'm>(
    collection: &'c Collection,
    model: &'m DataModel,
    access: &Access,
    key: &str,
) -> AppResult<(&'c super::Relationship, &'m Arc<Collection>)> {
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
    Ok((relationship, related))
}

/// `inner`, a condition on documents of `related`, as a condition on the
/// documents whose `relationship` points at or links one that meets it.
fn across(relationship: &super::Relationship, related: &Collection, inner: Filter) -> Filter {
    match &relationship.junction {
        Some(junction) => Filter::RelatedThrough {
            link: Link {
                junction: junction.clone(),
                near: "a_id",
                far: "b_id",
            },
            target: Target::of(related),
            filter: Box::new(inner),
        },
        None => Filter::Related {
            field: FilterField::attribute(&relationship.key),
            target: Target::of(related),
            filter: Box::new(inner),
        },
    }
}

/// Appwrite's queries across relationships: a condition on `author.name`
/// compares the `name` of the document `author` points at (or, for a
/// many-to-many field, of any document it links), with the rules a typed filter
/// across a relationship keeps. A dotted name whose first part is no
/// relationship is left as it is (an unknown attribute, as before).
pub fn across_relationships(
    collection: &Collection,
    model: &DataModel,
    access: &Access,
    filter: Filter,
    depth: usize,
) -> AppResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(AppError::Invalid {
            code: codes::FILTER_TOO_COMPLEX,
            field: "queries".into(),
            reason: format!("queries nest at most {MAX_FILTER_DEPTH} levels deep"),
        });
    }
    let each = |all: Vec<Filter>| {
        all.into_iter()
            .map(|inner| across_relationships(collection, model, access, inner, depth + 1))
            .collect::<AppResult<Vec<_>>>()
    };
    Ok(match filter {
        Filter::And(all) => Filter::And(each(all)?),
        Filter::Or(all) => Filter::Or(each(all)?),
        Filter::Not(inner) => Filter::Not(Box::new(across_relationships(
            collection,
            model,
            access,
            *inner,
            depth + 1,
        )?)),
        mut leaf => {
            let Some(FilterField::Attribute(name)) = leaf.field_mut() else {
                return Ok(leaf);
            };
            let Some((key, rest)) = name.split_once('.') else {
                return Ok(leaf);
            };
            if collection.relationship(key).is_none() {
                return Ok(leaf);
            }
            let (key, rest) = (key.to_string(), super::appwrite_query::named_field(rest));
            if let Some(field) = leaf.field_mut() {
                *field = rest;
            }
            let (relationship, related) = readable_relation(collection, model, access, &key)?;
            let inner = across_relationships(related, model, access, leaf, depth + 1)?;
            across(relationship, related, inner)
        }
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
    if let Some(spatial) = spatial_condition(&field, op, operand) {
        return spatial;
    }
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

/// The field a filter or an order of `collection`'s names: `sequence` is the
/// document's own unless a field of the collection takes the name
/// ([`shows_sequence`]).
fn named_field(collection: &Collection, model: &DataModel, key: &str) -> FilterField {
    match key {
        "sequence" if shows_sequence(collection, model) => FilterField::Sequence,
        key => field_of(key),
    }
}

/// Whether the collection's type has the document's own `sequence` field: no
/// attribute or relationship of its, nor the reverse field of one pointing at
/// it, takes the name (`sequence` was no reserved key when it came;
/// `$sequence` of the generic API always is it).
fn shows_sequence(collection: &Collection, model: &DataModel) -> bool {
    !collection.attributes.iter().any(|a| a.key == "sequence")
        && !collection.relationships.iter().any(|r| r.key == "sequence")
        && !model
            .references_to(collection)
            .any(|(_, relationship)| relationship.two_way_key.as_deref() == Some("sequence"))
}

fn orders_from_input(
    collection: &Collection,
    model: &DataModel,
    input: Option<&Json>,
) -> AppResult<Vec<OrderBy>> {
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
        let field = named_field(collection, model, key);
        orders.push(match direction.as_str() {
            Some("DESC") => OrderBy::desc(field),
            _ => OrderBy::asc(field),
        });
    }
    Ok(orders)
}

/// A filter of `collection` checked and converted for `usage`: the one
/// conversion both a query's SQL and a subscription's matcher consume.
fn resolve(collection: &Collection, filter: &Filter, usage: Use) -> AppResult<ResolvedFilter> {
    filter
        .resolve(&Target::of(collection), usage)
        .map_err(FilterError::into_app_error)
}

fn encode_cursor(collection: &Collection, orders: &[OrderBy], cursor: &Cursor) -> String {
    cursor.encode(&list_signature(&collection.table, orders))
}

fn decode_cursor(
    field: &str,
    collection: &Collection,
    orders: &[OrderBy],
    text: &str,
) -> AppResult<Cursor> {
    Cursor::decode(text, &list_signature(&collection.table, orders)).map_err(|err| match err {
        FilterError::InvalidCursor { reason } => cursor_error(field, reason),
        other => other.into_app_error(),
    })
}

/// The object value of a document for its typed fields.
fn node_value(document: Document) -> Value {
    node_value_of(document, None)
}

/// What a mutation answers for a document it wrote and the caller may read (the
/// documents service answers no other: a single write answers null then, a
/// bulk one leaves it out of its list, as a list query would).
fn written(document: Document) -> FieldValue<'static> {
    FieldValue::value(node_value(document))
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
        // Unless an attribute of that name holds it (`shows_sequence`).
        "sequence" if !document.data.contains_key("sequence") => {
            Some(Value::from(document.sequence.to_string()))
        }
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
            for name in ["createdAt", "updatedAt", "sequence", "permissions"] {
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
    let t = collection.names.type_name.clone();
    let plural_cap = {
        let mut chars = collection.names.plural.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    parts.add_type(object_type(&collection, model));
    parts.add_types(connection_types(
        &t,
        &format!("documents of `{}`", collection.name),
    ));
    parts.add_type(filter_input(&collection, model));
    parts.add_type(order_input(&collection, model));
    register_write_types(parts, &collection, model);
    parts.query(get_field(&collection));
    parts.query(list_field(&collection));
    parts.mutation(create_field(&collection));
    parts.mutation(create_many_field(&collection, &plural_cap));
    parts.mutation(update_field(&collection));
    parts.mutation(delete_field(&collection));
    register_bulk_and_atomic(parts, &collection, model, &plural_cap);
    register_subscription(parts, &collection);
}

/// The object type of a collection's documents (`Post`): system fields,
/// attributes, relationships and the reverse fields of relationships pointing
/// at it.
fn object_type(collection: &Collection, model: &DataModel) -> Object {
    let about = format!("A document of the collection `{}`.", collection.name);
    let mut object_type = Object::new(collection.names.type_name.as_str())
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
    if shows_sequence(collection, model) {
        object_type = object_type.field(entry(
            "sequence".into(),
            TypeRef::named_nn(TypeRef::STRING),
            super::schema::SEQUENCE_DESCRIPTION.into(),
        ));
    }
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
    for (holder, relationship) in model.references_to(collection) {
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
    object_type
}

/// `PostFilter`: conditions on the system fields, the attributes and the
/// referenced documents, combined with `and`, `or` and `not`.
fn filter_input(collection: &Collection, model: &DataModel) -> InputObject {
    let t = &collection.names.type_name;
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
    if shows_sequence(collection, model) {
        filter = filter.field(InputValue::new(
            "sequence",
            TypeRef::named("SequenceFilter"),
        ));
    }
    for attribute in collection
        .attributes
        .iter()
        .filter(|a| !is_reserved_key(&a.key))
    {
        filter = filter.field(InputValue::new(
            attribute.key.as_str(),
            TypeRef::named(filter_type_of(attribute)),
        ));
    }
    for relationship in collection
        .relationships
        .iter()
        .filter(|r| !is_reserved_key(&r.key))
    {
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
    filter
}

/// `PostOrderBy`: one order, naming exactly one field.
fn order_input(collection: &Collection, model: &DataModel) -> InputObject {
    let t = &collection.names.type_name;
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
    if shows_sequence(collection, model) {
        order = order.field(InputValue::new(
            "sequence",
            TypeRef::named("OrderDirection"),
        ));
    }
    for attribute in collection.attributes.iter().filter(|a| orderable(a)) {
        order = order.field(InputValue::new(
            attribute.key.as_str(),
            TypeRef::named("OrderDirection"),
        ));
    }
    order
}

/// `CreatePostInput`, `UpdatePostInput`, `DeletePostInput` and
/// `DeletePostPayload`.
fn register_write_types(parts: &mut SchemaParts, collection: &Collection, model: &DataModel) {
    let t = &collection.names.type_name;
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
        if !is_reserved_key(&attribute.key) {
            update = update.field(InputValue::new(
                attribute.key.as_str(),
                update_type(attribute),
            ));
        }
    }
    for relationship in &collection.relationships {
        let (ty, about) = reference_input(relationship);
        create =
            create.field(InputValue::new(relationship.key.as_str(), ty.clone()).description(about));
        if !is_reserved_key(&relationship.key) {
            update =
                update.field(InputValue::new(relationship.key.as_str(), ty).description(about));
        }
    }
    for (key, ty, about) in reverse_inputs(collection, model) {
        create = create.field(InputValue::new(key.as_str(), ty.clone()).description(about));
        update = update.field(InputValue::new(key.as_str(), ty).description(about));
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
}

/// `post(id)`.
fn get_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(
        collection.names.single.as_str(),
        TypeRef::named(t.as_str()),
        move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let id = ctx.args.try_get("id")?.string()?.to_string();
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
                let with_permissions = ctx.look_ahead().field("permissions").exists();
                let mut fields = Vec::new();
                selected_fields(&ctx, &[], &mut fields);
                let document = documents_of(&ctx, &access)?
                    .get(&collection, &id, with_permissions, References::AsStored)
                    .await?;
                Ok(document
                    .map(|d| FieldValue::value(node_value_of(d, Some(&field_names(&fields))))))
            })
        },
    )
    .description(format!(
        "A `{t}` by id, or null when it does not exist or the caller may not read it."
    ))
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
}

/// `posts(filter, orderBy, first, after, last, before)`.
fn list_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    list_arguments(Field::new(collection.names.plural.as_str(), TypeRef::named_nn(format!("{t}Connection")), move |ctx| {
        let collection = c.clone();
        FieldFuture::new(async move {
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            documents::require_list_reach(&collection, &access)?;
            let value = connection_of(&ctx, &collection, None).await?;
            Ok(Some(FieldValue::value(value)))
        })
    })
    .description(format!("`{t}` documents the caller may read, filtered, ordered and paged (Relay). `totalCount` is counted only when selected. `PERMISSION_DENIED` when the collection's permissions let the caller read none of them (document security off); `COLLECTION_NOT_FOUND` to a client while the collection is disabled.")), &t)
}

/// `createPost(input)`.
fn create_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(format!("create{t}"), TypeRef::named(t.as_str()), move |ctx| {
        let collection = c.clone();
        FieldFuture::new(async move {
            let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
            let new = new_document(input)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let document = documents_of(&ctx, &access)?
                .create(&collection, new, Sharing::Sole)
                .await?;
            Ok(document.map(written))
        })
    })
    .description(format!("Creates a `{t}`; needs the collection's `create` permission. All document writes of one request commit together or not at all.{NULL_WHEN_UNREADABLE}"))
    .argument(InputValue::new("input", TypeRef::named_nn(format!("Create{t}Input"))))
}

/// `createPosts(input)`.
fn create_many_field(collection: &Arc<Collection>, plural_cap: &str) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(
        format!("create{plural_cap}"),
        TypeRef::named_nn_list_nn(t.as_str()),
        move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let news = bulk_inputs(&ctx)?
                    .into_iter()
                    .map(new_document)
                    .collect::<AppResult<Vec<_>>>()?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let created = documents_of(&ctx, &access)?
                    .create_many(&collection, news)
                    .await?;
                Ok(Some(FieldValue::list(created.into_iter().map(written))))
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
    ))
}

/// `updatePost(input)`.
fn update_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(format!("update{t}"), TypeRef::named(t.as_str()), move |ctx| {
        let collection = c.clone();
        FieldFuture::new(async move {
            let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
            let (id, changes) = document_changes(input)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let document = documents_of(&ctx, &access)?
                .update(&collection, &id, changes, References::AsStored)
                .await?;
            Ok(document.map(written))
        })
    })
    .description(format!("Changes a `{t}`; needs `update` permission on the collection or (with document security) on the document.{NULL_WHEN_UNREADABLE}"))
    .argument(InputValue::new("input", TypeRef::named_nn(format!("Update{t}Input"))))
}

/// `deletePost(input)`.
fn delete_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(format!("delete{t}"), TypeRef::named_nn(format!("Delete{t}Payload")), move |ctx| {
        let collection = c.clone();
        FieldFuture::new(async move {
            let id = match arg_json(&ctx, "input")? {
                Some(Json::Object(map)) => map.get("id").and_then(Json::as_str).unwrap_or_default().to_string(),
                _ => String::new(),
            };
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            documents_of(&ctx, &access)?.delete(&collection, &id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(id))]))))
        })
    })
    .description(format!("Deletes a `{t}`; needs `delete` permission on the collection or (with document security) on the document."))
    .argument(InputValue::new("input", TypeRef::named_nn(format!("Delete{t}Input"))))
}

/// `upsertPost`, `updatePosts`, `deletePosts(filter)`, `incrementPost`,
/// `decrementPost`.
fn register_bulk_and_atomic(
    parts: &mut SchemaParts,
    collection: &Arc<Collection>,
    model: &DataModel,
    plural_cap: &str,
) {
    register_bulk_types(parts, collection, model, plural_cap);
    parts.mutation(upsert_field(collection));
    parts.mutation(update_many_field(collection, plural_cap));
    parts.mutation(delete_many_field(collection, plural_cap));
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
    let t = &collection.names.type_name;
    parts.add_type(
        Enum::new(format!("{t}NumericField"))
            .description(format!("The numeric attributes of `{t}`."))
            .items(numeric.iter().map(|a| a.key.clone())),
    );
    for step in [Step::Increment, Step::Decrement] {
        parts.add_type(step_input(collection, step));
        parts.mutation(step_field(collection, step));
    }
}

/// `UpsertPostInput`, `DeletePostsInput` and `DeletePostsPayload`.
fn register_bulk_types(
    parts: &mut SchemaParts,
    collection: &Collection,
    model: &DataModel,
    plural_cap: &str,
) {
    let t = &collection.names.type_name;
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
    for (key, ty, about) in reverse_inputs(collection, model) {
        upsert = upsert.field(InputValue::new(key.as_str(), ty).description(about));
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
}

/// `upsertPost(input)`.
fn upsert_field(collection: &Arc<Collection>) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(format!("upsert{t}"), TypeRef::named(t.as_str()), move |ctx| {
        let collection = c.clone();
        FieldFuture::new(async move {
            let input = arg_json(&ctx, "input")?.unwrap_or(Json::Null);
            let WriteInput { data, id, permissions, .. } = split_input(input)?;
            let id = id.unwrap_or_default();
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let document = documents_of(&ctx, &access)?
                .upsert(&collection, id, data, permissions, false)
                .await?;
            Ok(document.map(written))
        })
    })
    .description(format!("Creates a `{t}` with this id, or changes it when it exists (needs `create` or `update` permission accordingly).{NULL_WHEN_UNREADABLE}"))
    .argument(InputValue::new("input", TypeRef::named_nn(format!("Upsert{t}Input"))))
}

/// `updatePosts(input)`.
fn update_many_field(collection: &Arc<Collection>, plural_cap: &str) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
    Field::new(
        format!("update{plural_cap}"),
        TypeRef::named_nn_list_nn(t.as_str()),
        move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let inputs = bulk_inputs(&ctx)?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let changes = inputs
                    .into_iter()
                    .map(document_changes)
                    .collect::<AppResult<Vec<_>>>()?;
                let updated = documents_of(&ctx, &access)?
                    .update_many(&collection, changes)
                    .await?;
                Ok(Some(FieldValue::list(updated.into_iter().map(written))))
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
    ))
}

/// `deletePosts(input: {filter})`.
fn delete_many_field(collection: &Arc<Collection>, plural_cap: &str) -> Field {
    let t = collection.names.type_name.clone();
    let c = collection.clone();
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
                let deleted_ids = documents_of(&ctx, &access)?
                    .delete_matching(&collection, filter)
                    .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedIds",
                    Value::List(deleted_ids.into_iter().map(Value::from).collect()),
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
    ))
}

/// Which way an atomic step goes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Increment,
    Decrement,
}

impl Step {
    /// The verb of its mutation and input (`increment`, `Increment`).
    fn verb(self) -> (&'static str, &'static str) {
        match self {
            Step::Increment => ("increment", "Increment"),
            Step::Decrement => ("decrement", "Decrement"),
        }
    }

    /// The input field of the bound the result may not pass.
    fn bound(self) -> &'static str {
        match self {
            Step::Increment => "max",
            Step::Decrement => "min",
        }
    }

    fn sign(self) -> f64 {
        match self {
            Step::Increment => 1.0,
            Step::Decrement => -1.0,
        }
    }

    fn about(self) -> &'static str {
        match self {
            Step::Increment => {
                "Adds `by` (default 1) to a numeric attribute, atomically; refused past `max` or the attribute's own range."
            }
            Step::Decrement => {
                "Subtracts `by` (default 1) from a numeric attribute, atomically; refused below `min` or the attribute's own range."
            }
        }
    }
}

/// `IncrementPostInput` or `DecrementPostInput`.
fn step_input(collection: &Collection, step: Step) -> InputObject {
    let t = &collection.names.type_name;
    InputObject::new(format!("{}{t}Input", step.verb().1))
        .description(step.about())
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
            InputValue::new(step.bound(), TypeRef::named(TypeRef::FLOAT))
                .description("The bound the result may not pass."),
        )
}

/// `incrementPost(input)` or `decrementPost(input)`.
fn step_field(collection: &Arc<Collection>, step: Step) -> Field {
    let t = collection.names.type_name.clone();
    let (verb, input_verb) = step.verb();
    let c = collection.clone();
    Field::new(
        format!("{verb}{t}"),
        TypeRef::named(t.as_str()),
        move |ctx| {
            let collection = c.clone();
            FieldFuture::new(async move {
                let Some(Json::Object(input)) = arg_json(&ctx, "input")? else {
                    return Err(AppError::invalid("input", "expected an object").into());
                };
                let text = |name: &str| {
                    input
                        .get(name)
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let (id, field) = (text("id"), text("field"));
                let by = input.get("by").and_then(Json::as_f64).unwrap_or(1.0);
                if by < 0.0 {
                    return Err(AppError::invalid(
                        "by",
                        "give a positive amount; use the other mutation to go the other way",
                    )
                    .into());
                }
                let bound = input.get(step.bound()).and_then(Json::as_f64);
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let document = documents_of(&ctx, &access)?
                    .increment(&collection, &id, &field, step.sign() * by, bound)
                    .await?;
                Ok(document.map(written))
            })
        },
    )
    .description(format!("{}{NULL_WHEN_UNREADABLE}", step.about()))
    .argument(InputValue::new(
        "input",
        TypeRef::named_nn(format!("{input_verb}{t}Input")),
    ))
}

/// The document a typed create input describes.
fn new_document(input: Json) -> AppResult<NewDocument> {
    let WriteInput {
        data,
        id,
        permissions,
        ..
    } = split_input(input)?;
    Ok(NewDocument {
        id,
        data,
        permissions,
        times: Default::default(),
    })
}

/// The document and the changes a typed update input describes.
fn document_changes(input: Json) -> AppResult<(String, DocumentChanges)> {
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
        times: Default::default(),
        operators: false,
    };
    Ok((id.unwrap_or_default(), changes))
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
    let filter = resolve(collection, &filter, Use::Query)?;
    let orders = orders_from_input(collection, model, arg_json(ctx, "orderBy")?.as_ref())?;
    let first = count_arg(ctx, "first", MAX_FIRST)?;
    let last = count_arg(ctx, "last", MAX_FIRST)?;
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
    let listed = documents_of(ctx, &access)?.list(collection, &query).await?;
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
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            let model = data_model(&ctx)?.clone();
            let loader = tx.related_loader(|| RelatedLoader {
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
    if relationship.kind == super::RelationKind::OneToOne {
        reverse_one_field(name, holder, relationship.key.clone())
    } else {
        reverse_list_field(name, holder, relationship.key.clone())
    }
}

/// The condition "points at the parent document", through reference `key`;
/// `None` when the parent has no id.
fn pointing_at_parent(ctx: &ResolverContext<'_>, key: &str) -> Option<Filter> {
    match parent_value(ctx) {
        Some(Value::Object(map)) => match map.get("id") {
            Some(Value::String(id)) => Some(Filter::Cmp {
                field: FilterField::attribute(key.to_string()),
                op: CmpOp::Eq,
                value: Json::String(id.clone()),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The reverse field of a one-to-one relationship: the one document pointing
/// at this one.
fn reverse_one_field(name: String, holder: Arc<Collection>, key: String) -> Field {
    let holder_type = holder.names.type_name.clone();
    Field::new(name, TypeRef::named(holder_type.as_str()), move |ctx| {
        let (holder, key) = (holder.clone(), key.clone());
        FieldFuture::new(async move {
            let Some(filter) = pointing_at_parent(&ctx, &key) else {
                return Ok(None);
            };
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            let query = ListQuery::first(resolve(&holder, &filter, Use::Query)?, 1);
            let listed = documents_of(&ctx, &access)?.list(&holder, &query).await?;
            Ok(listed
                .documents
                .into_iter()
                .next()
                .map(|(d, _)| FieldValue::value(node_value(d))))
        })
    })
    .description(format!("The `{holder_type}` pointing at this document."))
}

/// The reverse field of a many-to-one relationship: the documents pointing at
/// this one, filtered, ordered and paged.
fn reverse_list_field(name: String, holder: Arc<Collection>, key: String) -> Field {
    let holder_type = holder.names.type_name.clone();
    list_arguments(
        Field::new(
            name,
            TypeRef::named_nn(format!("{holder_type}Connection")),
            move |ctx| {
                let (holder, key) = (holder.clone(), key.clone());
                FieldFuture::new(async move {
                    let Some(filter) = pointing_at_parent(&ctx, &key) else {
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

/// The reverse fields of the two-way relationships pointing at `collection`
/// that its write inputs take (ADR 54): each key, its input type and what it
/// does.
fn reverse_inputs(
    collection: &Collection,
    model: &DataModel,
) -> Vec<(String, TypeRef, &'static str)> {
    model
        .references_to(collection)
        .filter_map(|(_, relationship)| {
            let key = relationship.two_way_key.clone()?;
            if is_reserved_key(&key) {
                return None;
            }
            Some(match relationship.kind {
                super::RelationKind::OneToOne => (
                    key,
                    TypeRef::named(TypeRef::ID),
                    "The id of the document to point at this one (null: none); the one pointing at it before, if the caller may read it, no longer does. Each is the caller's update.",
                ),
                super::RelationKind::ManyToOne => (
                    key,
                    TypeRef::named_nn_list(TypeRef::ID),
                    "The ids of the documents to point at this one: those the caller may read that point at it and are left out no longer do. Each changed one is the caller's update.",
                ),
                super::RelationKind::ManyToMany => (
                    key,
                    TypeRef::named_nn_list(TypeRef::ID),
                    "The ids of the documents to link to this one: replaces its links to documents the caller may read (empty or null: none).",
                ),
            })
        })
        .collect()
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
) -> async_graphql::Result<Value> {
    let paging = ["after", "before", "last"]
        .iter()
        .any(|name| ctx.args.get(name).is_some_and(|v| !v.is_null()));
    if paging {
        return Ok(connection_of(ctx, listed, Some(scope_filter)).await?);
    }
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_READ)?;
    let model = data_model(ctx)?;
    let filter_json = arg_json(ctx, "filter")?;
    let filter = match &filter_json {
        Some(input) => filter_from_input(listed, model, &access, input, 0)?,
        None => Filter::default(),
    };
    let order_json = arg_json(ctx, "orderBy")?;
    let orders = orders_from_input(listed, model, order_json.as_ref())?;
    let first = count_arg(ctx, "first", MAX_FIRST)?.unwrap_or(DEFAULT_FIRST);
    let want_total = ctx.look_ahead().field("totalCount").exists();
    let signature = serde_json::to_string(&(&filter_json, &order_json, first, want_total))
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    let tx = request_tx(ctx)?;
    let loader = tx.list_loader(|| ListLoader {
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
            filter: resolve(listed, &filter, Use::Query)?,
            orders: orders.clone(),
            limit: first,
            want_total,
        }),
        parent,
    };
    // The loader's error keeps its code (`DATABASE_TIMEOUT`, …).
    let page = loader.load_one(key).await?.unwrap_or(documents::Listed {
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
    // An event logged before documents had numbers carries none.
    node.insert(Name::new("sequence"), Value::from("0"));
    for (key, value) in map {
        let name = match key.as_str() {
            "$id" => "id",
            // Before the attributes: one named `sequence` takes its place.
            "$sequence" => "sequence",
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

/// What a change means to a subscriber watching the set `filter` describes (no
/// filter: every document): nothing, or the change type to deliver.
fn change_for(
    filter: Option<&ResolvedFilter>,
    action: &str,
    document: &serde_json::Map<String, Json>,
    previous: Option<&serde_json::Map<String, Json>>,
) -> Option<&'static str> {
    // A filter naming an attribute renamed or deleted since it was resolved
    // matches nothing rather than what its missing values would say (`ne`
    // would match every document).
    if filter.is_some_and(|f| super::matcher::names_a_missing_attribute(f, document)) {
        return None;
    }
    let matches = |document: &serde_json::Map<String, Json>| {
        filter.is_none_or(|f| super::matcher::matches(f, document))
    };
    let now = matches(document);
    match action {
        "create" => now.then_some("CREATE"),
        "delete" => now.then_some("DELETE"),
        "update" => {
            let before = previous.is_some_and(matches);
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
/// Most text a subscription's filter may read of each changed document, in
/// characters (eight conditions on the longest text a request of the default
/// `NIMBUS_MAX_BODY_BYTES` can write).
pub const MAX_FILTER_SCAN: u64 = 16 << 20;

struct DocumentWatch {
    channel: String,
    /// `None` for every document: most subscriptions have no filter, and each
    /// one's watch lives as long as it does.
    filter: Option<Box<ResolvedFilter>>,
    only: Option<String>,
    /// The position of `after:`, when resuming.
    after: Option<i64>,
    cursors: Arc<resume::Cursors>,
    /// [`super::matcher::scan_cost`] of the filter.
    scan: u64,
}

impl crate::services::realtime::watch::Watch for DocumentWatch {
    fn scan_cost(&self) -> u64 {
        self.scan
    }

    /// Whether a document left the set is told only when the caller, as it is
    /// now, could read the version that was in it.
    fn outcome(
        &self,
        event: &crate::bus::Event,
        caller: &crate::auth::Caller,
    ) -> Option<&'static str> {
        let action = event.action_on(&self.channel)?;
        let document = event.payload.as_object()?;
        let id = document.get("$id").and_then(Json::as_str);
        if self.only.as_deref().is_some_and(|only| id != Some(only)) {
            return None;
        }
        let previous = event
            .previous
            .as_ref()
            .filter(|_| crate::auth::access::may_see_previous(caller, event))
            .and_then(Json::as_object);
        change_for(self.filter.as_deref(), action, document, previous)
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
            ("cursor", self.cursors.value(event)),
        ])
    }

    fn resume_after(&self) -> Option<i64> {
        self.after
    }
}

/// The documents of one collection that a `realtime` subscription's `queries`
/// (Appwrite's) ask for: a change passes when the document matches them before
/// or after it, as a typed subscription tells an UPDATE or a LEAVE.
struct QueriedDocuments {
    channel: String,
    filter: ResolvedFilter,
    scan: u64,
}

impl crate::services::realtime::EventFilter for QueriedDocuments {
    fn passes(&self, event: &crate::bus::Event, caller: &crate::auth::Caller) -> bool {
        let Some(action) = event.action_on(&self.channel) else {
            return false;
        };
        let Some(document) = event.payload.as_object() else {
            return false;
        };
        let previous = event
            .previous
            .as_ref()
            .filter(|_| crate::auth::access::may_see_previous(caller, event))
            .and_then(Json::as_object);
        change_for(Some(&self.filter), action, document, previous).is_some()
    }

    fn scan_cost(&self) -> u64 {
        self.scan
    }
}

/// The filter of a `realtime` subscription's `queries`: every channel must be a
/// documents channel of one collection (`databases.D.collections.C.documents`,
/// then an id, an action or both), and the queries filters only, that a
/// subscription can match in memory (no condition across a relationship).
pub fn queried_documents(
    ctx: &ResolverContext<'_>,
    channels: &[String],
    queries: &[String],
) -> AppResult<Arc<dyn crate::services::realtime::EventFilter>> {
    let invalid = |reason: String| AppError::Invalid {
        code: codes::QUERY_INVALID,
        field: "queries".into(),
        reason,
    };
    let mut named: Option<(&str, &str)> = None;
    for channel in channels {
        let segments: Vec<&str> = channel.split('.').collect();
        let one = match segments.as_slice() {
            [
                "databases",
                database,
                "collections",
                collection,
                "documents",
                rest @ ..,
            ] if rest.len() <= 2 && *database != "*" && *collection != "*" => {
                Some((*database, *collection))
            }
            _ => None,
        };
        match (one, named) {
            (Some(one), None) => named = Some(one),
            (Some(one), Some(first)) if one == first => {}
            _ => {
                return Err(invalid(
                    "queries filter the documents of one collection: give only its channels \
                     (`databases.D.collections.C.documents`, then an id or an action)"
                        .into(),
                ));
            }
        }
    }
    let Some((database_id, collection_id)) = named else {
        return Err(invalid("queries need a documents channel".into()));
    };
    let model = data_model(ctx)?;
    let collection = model
        .collection(database_id, collection_id)
        .ok_or_else(|| AppError::NotFound {
            what: "collection",
            id: collection_id.to_string(),
        })?;
    let parsed =
        super::appwrite_query::parse_query_strings(queries).map_err(|err| AppError::Invalid {
            code: err.code(),
            field: "queries".into(),
            reason: err.to_string(),
        })?;
    if !parsed.only_filter() {
        return Err(invalid(
            "a subscription takes filter queries only (no select, order, cursor, limit or offset)"
                .into(),
        ));
    }
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_READ)?;
    // As a typed subscription: only on a collection the caller may read from,
    // and comparing references only where it may read every related document
    // (a match would tell what an unreadable reference holds).
    documents::require_list_reach(collection, &access)?;
    // As a typed subscription's filter, no condition on a relationship: one on
    // the reference itself would go on comparing it for as long as the
    // subscription lasts, whoever may read the related documents by then.
    if let Some(key) = relationship_named(collection, &parsed.filter) {
        return Err(AppError::Invalid {
            code: codes::FILTER_INVALID,
            field: "queries".into(),
            reason: format!("a subscription's queries cannot compare the relationship `{key}`"),
        });
    }
    let filter = resolve(collection, &parsed.filter, Use::Match)?;
    let longest = app(ctx)?.config.max_body_bytes as u64;
    let scan = super::matcher::scan_cost(&filter, longest);
    if scan > MAX_FILTER_SCAN {
        return Err(AppError::Invalid {
            code: codes::FILTER_TOO_COMPLEX,
            field: "queries".into(),
            reason: format!(
                "their text conditions may read {scan} characters of each changed document; a subscription's may read at most {MAX_FILTER_SCAN}"
            ),
        });
    }
    Ok(Arc::new(QueriedDocuments {
        channel: collection.channel(),
        filter,
        scan,
    }))
}

/// The first relationship of `collection` a condition of `filter` compares,
/// by its key or across it (`author.name`).
fn relationship_named<'f>(collection: &Collection, filter: &'f Filter) -> Option<&'f str> {
    match filter {
        Filter::And(all) | Filter::Or(all) => all
            .iter()
            .find_map(|inner| relationship_named(collection, inner)),
        Filter::Not(inner) => relationship_named(collection, inner),
        leaf => match leaf.field()? {
            FilterField::Attribute(name) => {
                let key = name.split_once('.').map_or(name.as_str(), |(key, _)| key);
                collection.relationship(key).is_some().then_some(key)
            }
            _ => None,
        },
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
            ))
            .field(entry(
                "cursor".into(),
                TypeRef::named(TypeRef::STRING),
                resume::CURSOR_DESCRIPTION.into(),
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
                    let filter = match resolve(&collection, &filter, Use::Match)? {
                        ResolvedFilter::And(all) if all.is_empty() => None,
                        filter => Some(Box::new(filter)),
                    };
                    // Each event of the collection is matched against the filter
                    // in memory: its substring and search conditions read at most
                    // so much text, whatever the documents hold.
                    let longest = state.config.max_body_bytes as u64;
                    let scan = filter.as_deref().map_or(0, |f| super::matcher::scan_cost(f, longest));
                    if scan > MAX_FILTER_SCAN {
                        return Err(AppError::Invalid {
                            code: codes::FILTER_TOO_COMPLEX,
                            field: "filter".into(),
                            reason: format!(
                                "its text conditions may read {scan} characters of each changed document; a subscription's may read at most {MAX_FILTER_SCAN}"
                            ),
                        }
                        .into());
                    }
                    let only = match ctx.args.get("id") {
                        Some(v) if !v.is_null() => Some(v.string()?.to_string()),
                        _ => None,
                    };
                    let after = resume::after_argument(&ctx, &caller.project.id)?;
                    let cursors = state.cursors.clone();
                    let watch = DocumentWatch { channel: collection.channel(), filter, only, after, cursors, scan };
                    Ok(crate::services::realtime::watch::follow(&ctx, state, caller, watch))
                })
            },
        )
        .description(format!("Changes to `{t}` documents the caller may read: all of them, those matching `filter` (the list's filter; relationships excepted), or the one with `id`. An update that takes a document out of the filtered set arrives as LEAVE. After a reconnect, `after:` the last `cursor` received replays what was missed."))
        .argument(InputValue::new("filter", TypeRef::named(format!("{t}Filter"))))
        .argument(InputValue::new("id", TypeRef::named(TypeRef::ID)))
        .argument(resume::after_input()),
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
