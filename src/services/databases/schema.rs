//! GraphQL of databases: the structure API (`createDatabase`, `createCollection`,
//! `createAttribute`, `createIndex`, … for API keys with `databases.*`), the
//! generic document API that works for any collection (`documents(queries:)` with
//! Appwrite's query language, `createDocument(data: JSON)`, …), and, through
//! `typed`, the types and fields of each collection.

use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};
use async_graphql::{Name, Value};
use serde_json::Map;

use crate::error::{AppError, AppResult, codes};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, JSON, app, caller, datetime, input, json_value, object, opt_string, prop,
};
use crate::services::projects::Project;

use super::appwrite_query::parse_query_strings;
use super::ddl::{Index, IndexKind, IndexOrder};
use super::documents::{self, Access, DocumentChanges, NewDocument};
use super::model::{Attribute, AttributeKind};
use super::nested::Nesting;
use super::service::{Documents, ListByDocument, References};
use super::structure::{self, CollectionChanges, NewCollection};
use super::transactions::Applied;
use super::transactions_schema::{operation, stage_one};
use super::tx::{RequestTx, Sharing};
use super::writes::{SystemFields, bulk_reach, data_object, filter_queries, upserts_of};
use super::{Collection, DataModel, Database, OnDelete, RelationKind, Relationship, typed};

/// The request's transaction, which the HTTP and WebSocket handlers attach.
pub(crate) fn request_tx<'a>(ctx: &ResolverContext<'a>) -> AppResult<&'a Arc<RequestTx>> {
    crate::graphql::types::mark_caller_dependent(ctx);
    ctx.data::<Arc<RequestTx>>()
        .map_err(|_| AppError::Internal(anyhow::anyhow!("RequestTx missing from request data")))
}

/// The project's collections, as the schema was built with.
pub(crate) fn data_model<'a>(ctx: &ResolverContext<'a>) -> AppResult<&'a Arc<DataModel>> {
    ctx.data::<Arc<DataModel>>()
        .map_err(|_| AppError::Internal(anyhow::anyhow!("DataModel missing from schema data")))
}

/// Whether the caller may read document `id` (presence on a document); one it may
/// not read answers as a missing one.
pub async fn may_read_document(
    ctx: &ResolverContext<'_>,
    database_id: &str,
    collection_id: &str,
    id: &str,
) -> AppResult<()> {
    let (tx, model) = (request_tx(ctx)?, data_model(ctx)?);
    may_read_document_in(tx, model, caller(ctx)?, database_id, collection_id, id).await
}

/// [`may_read_document`] outside a request (a presence stream checking again
/// after its collection changed), against the project's collections as they are
/// now.
pub async fn may_read_document_now(
    state: &crate::AppState,
    caller: &crate::auth::Caller,
    database_id: &str,
    collection_id: &str,
    id: &str,
) -> AppResult<()> {
    let model = Arc::new(super::store::load_model(state, &caller.project.id).await?);
    let tx = super::tx::RequestTx::new(state, super::tx::Mode::Exclusive);
    may_read_document_in(&tx, &model, caller, database_id, collection_id, id).await
}

async fn may_read_document_in(
    tx: &Arc<super::tx::RequestTx>,
    model: &Arc<DataModel>,
    caller: &crate::auth::Caller,
    database_id: &str,
    collection_id: &str,
    id: &str,
) -> AppResult<()> {
    let hidden = || AppError::NotFound {
        what: "document",
        id: id.chars().take(64).collect(),
    };
    let Some(collection) = model.collection(database_id, collection_id).cloned() else {
        return Err(hidden());
    };
    let access = crate::auth::access::Access::of(caller, documents::DOCUMENTS_READ)?;
    let found = Documents::new(tx, model, &access)
        .get(&collection, id, false, References::AsStored)
        .await?;
    found.map(|_| ()).ok_or_else(hidden)
}

/// Clears in `payload`, a document as a realtime event carries it, the
/// many-to-one and one-to-one references the caller may not read, as the generic
/// reads do ([`documents::hide_unreadable_references`]). A payload that holds a
/// reference makes the render the caller's own: another subscriber may read other
/// related documents. One that names no known collection, or holds no reference,
/// is left as it is.
pub async fn hide_unreadable_references_in(
    ctx: &ResolverContext<'_>,
    payload: &mut serde_json::Value,
) -> AppResult<()> {
    let Some(object) = payload.as_object_mut() else {
        return Ok(());
    };
    let named = |key: &str| object.get(key).and_then(serde_json::Value::as_str);
    let (Some(database_id), Some(collection_id)) = (named("$databaseId"), named("$collectionId"))
    else {
        return Ok(());
    };
    let model = data_model(ctx)?;
    let Some(collection) = model.collection(database_id, collection_id).cloned() else {
        return Ok(());
    };
    let references: serde_json::Map<String, serde_json::Value> = collection
        .relationships
        .iter()
        .filter(|r| r.has_column())
        .filter_map(|r| {
            let value = object.get(&r.key)?;
            value.is_string().then(|| (r.key.clone(), value.clone()))
        })
        .collect();
    if references.is_empty() {
        return Ok(());
    }
    crate::graphql::types::mark_caller_dependent(ctx);
    let mut shown = [documents::Document {
        id: String::new(),
        sequence: 0,
        created_at: 0,
        updated_at: 0,
        permissions: Vec::new(),
        data: references,
    }];
    match crate::auth::access::Access::of(caller(ctx)?, documents::DOCUMENTS_READ) {
        Ok(access) => {
            let mut conn = request_tx(ctx)?.reader().await?;
            documents::hide_unreadable_references(
                &mut conn,
                &collection,
                &access,
                model,
                &mut shown,
            )
            .await?;
        }
        // Not a reader of documents at all: no related id is its to see.
        Err(_) => shown[0]
            .data
            .values_mut()
            .for_each(|v| *v = serde_json::Value::Null),
    }
    let [shown] = shown;
    object.extend(shown.data);
    Ok(())
}

pub(super) fn database_value(database: &Database) -> Value {
    object([
        ("id", Value::from(database.id.as_str())),
        ("name", Value::from(database.name.as_str())),
        ("enabled", Value::from(database.enabled)),
        ("createdAt", datetime(database.created_at)),
        ("updatedAt", datetime(database.updated_at)),
        ("type", Value::from("legacy")),
        ("status", Value::from("ready")),
    ])
}

pub(super) fn attribute_value(attribute: &Attribute) -> Value {
    let (size, min, max, elements) = match &attribute.kind {
        AttributeKind::String { size } | AttributeKind::Varchar { size } => {
            (Value::from(*size), Value::Null, Value::Null, Value::Null)
        }
        AttributeKind::Integer { min, max } => (
            Value::Null,
            min.map(Value::from).unwrap_or(Value::Null),
            max.map(Value::from).unwrap_or(Value::Null),
            Value::Null,
        ),
        AttributeKind::Float { min, max } => (
            Value::Null,
            min.map(Value::from).unwrap_or(Value::Null),
            max.map(Value::from).unwrap_or(Value::Null),
            Value::Null,
        ),
        AttributeKind::Enum { elements } => (
            Value::Null,
            Value::Null,
            Value::Null,
            Value::List(elements.iter().map(|e| Value::from(e.as_str())).collect()),
        ),
        _ => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    object([
        ("key", Value::from(attribute.key.as_str())),
        (
            "type",
            Value::Enum(async_graphql::Name::new(
                attribute.kind.name().to_ascii_uppercase(),
            )),
        ),
        ("required", Value::from(attribute.required)),
        ("array", Value::from(attribute.array)),
        (
            "default",
            attribute.default.as_ref().map_or(Value::Null, json_value),
        ),
        ("size", size),
        ("min", min),
        ("max", max),
        ("elements", elements),
    ])
}

pub(super) fn index_value(index: &Index) -> Value {
    let kind = match index.kind {
        IndexKind::Key => "KEY",
        IndexKind::Unique => "UNIQUE",
        IndexKind::Fulltext => "FULLTEXT",
        IndexKind::Spatial => "SPATIAL",
    };
    object([
        ("key", Value::from(index.key.as_str())),
        ("type", Value::Enum(async_graphql::Name::new(kind))),
        (
            "attributes",
            Value::List(
                index
                    .attributes
                    .iter()
                    .map(|a| Value::from(a.as_str()))
                    .collect(),
            ),
        ),
        (
            "orders",
            Value::List(
                index
                    .orders
                    .iter()
                    .map(|o| {
                        Value::Enum(async_graphql::Name::new(match o {
                            IndexOrder::Asc => "ASC",
                            IndexOrder::Desc => "DESC",
                        }))
                    })
                    .collect(),
            ),
        ),
        (
            "lengths",
            Value::List(
                (0..index.attributes.len())
                    .map(|i| index.length(i).map_or(Value::Null, Value::from))
                    .collect(),
            ),
        ),
    ])
}

/// `Collection.reverseRelationships`: the two-way relationships pointing at the
/// collection, seen from its side, read from the stored structure when asked.
fn reverse_relationships_field() -> Field {
    Field::new(
        "reverseRelationships",
        TypeRef::named_nn_list_nn("Relationship"),
        |ctx| {
            FieldFuture::new(async move {
                let entry = |key: &str| match crate::graphql::types::parent_value(&ctx) {
                    Some(Value::Object(map)) => match map.get(key) {
                        Some(Value::String(text)) => text.clone(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                let (id, database_id) = (entry("id"), entry("databaseId"));
                // What the structure queries need, wherever a collection shows.
                let grant: crate::auth::Grant<crate::auth::scopes::DatabasesRead> =
                    caller(&ctx)?.require()?;
                let collections = super::store::list_collections(
                    app(&ctx)?.db.pool(),
                    grant.project(),
                    Some(&database_id),
                )
                .await
                .map_err(AppError::from)?;
                let seen: Vec<Value> = collections
                    .iter()
                    .flat_map(|holder| {
                        holder.relationships.iter().filter_map(|relationship| {
                            let key = relationship.two_way_key.as_deref()?;
                            (relationship.related_collection == id)
                                .then(|| reverse_relationship_value(holder, relationship, key))
                        })
                    })
                    .collect();
                Ok(Some(FieldValue::value(Value::List(seen))))
            })
        },
    )
    .description("The two-way relationships pointing at it, seen from its side (Appwrite's other side of a relationship): `key` is its field (`libraries`), `type` as this side sees it (`ONE_TO_MANY` for the `MANY_TO_ONE` the other collection holds), `relatedCollectionId` the collection holding it, `twoWayKey` that collection's field. Write them as any field (the reverse fields of a write).")
}

/// A relationship `holder` holds, as the collection it points at sees it
/// through its reverse field `key`.
fn reverse_relationship_value(
    holder: &Collection,
    relationship: &Relationship,
    key: &str,
) -> Value {
    let mirrored = Relationship {
        key: key.to_string(),
        related_collection: holder.id.clone(),
        two_way_key: Some(relationship.key.clone()),
        ..relationship.clone()
    };
    let mut value = relationship_value(&mirrored);
    if relationship.kind == RelationKind::ManyToOne
        && let Value::Object(map) = &mut value
    {
        map.insert(Name::new("type"), Value::Enum(Name::new("ONE_TO_MANY")));
    }
    value
}

pub(super) fn relationship_value(relationship: &Relationship) -> Value {
    let enum_value = |name: &str| Value::Enum(async_graphql::Name::new(name));
    object([
        ("key", Value::from(relationship.key.as_str())),
        (
            "relatedCollectionId",
            Value::from(relationship.related_collection.as_str()),
        ),
        (
            "type",
            enum_value(match relationship.kind {
                RelationKind::ManyToOne => "MANY_TO_ONE",
                RelationKind::OneToOne => "ONE_TO_ONE",
                RelationKind::ManyToMany => "MANY_TO_MANY",
            }),
        ),
        (
            "twoWayKey",
            relationship
                .two_way_key
                .as_deref()
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        (
            "onDelete",
            enum_value(match relationship.on_delete {
                OnDelete::Restrict => "RESTRICT",
                OnDelete::Cascade => "CASCADE",
                OnDelete::SetNull => "SET_NULL",
            }),
        ),
    ])
}

pub(super) fn collection_value(collection: &Collection) -> Value {
    object([
        ("id", Value::from(collection.id.as_str())),
        ("databaseId", Value::from(collection.database_id.as_str())),
        ("name", Value::from(collection.name.as_str())),
        (
            "graphqlName",
            Value::from(collection.names.type_name.as_str()),
        ),
        (
            "documentSecurity",
            Value::from(collection.document_security),
        ),
        ("enabled", Value::from(collection.enabled)),
        (
            "permissions",
            Value::List(
                collection
                    .permissions
                    .iter()
                    .map(|p| Value::from(p.to_string()))
                    .collect(),
            ),
        ),
        (
            "attributes",
            Value::List(collection.attributes.iter().map(attribute_value).collect()),
        ),
        (
            "indexes",
            Value::List(collection.indexes.iter().map(index_value).collect()),
        ),
        (
            "relationships",
            Value::List(
                collection
                    .relationships
                    .iter()
                    .map(relationship_value)
                    .collect(),
            ),
        ),
        ("bytesMax", Value::from(super::ddl::MAX_ROW_WIDTH as u64)),
        (
            "bytesUsed",
            Value::from(super::ddl::row_width(&collection.columns()) as u64),
        ),
        ("createdAt", datetime(collection.created_at)),
        ("updatedAt", datetime(collection.updated_at)),
    ])
}

crate::graphql_input! {
    "An attribute to add."
    struct AttributeInput {
        "1-64 of a-z, A-Z, 0-9, `_`, starting with a letter; not `id`, `createdAt`, `updatedAt`, `permissions`."
        key: String,
        "The type of its values."
        r#type: String as "AttributeType",
        "STRING, VARCHAR: the most characters (required)."
        size: Option<u32>,
        "INTEGER, FLOAT: the smallest value allowed."
        min: Option<serde_json::Value>,
        "INTEGER, FLOAT: the largest value allowed."
        max: Option<serde_json::Value>,
        "ENUM: the allowed values."
        elements: Option<Vec<String>>,
        "Every document must have a value (default false)."
        required: Option<bool>,
        "A list of values (default false)."
        array: Option<bool>,
        "The value of documents that give none (not with `required`)."
        default: Option<serde_json::Value>,
        "Appwrite's encryption of values at rest: not supported, `true` is refused."
        encrypt: Option<bool>,
    }
}

fn number_setting<T: serde::de::DeserializeOwned>(
    field: &str,
    value: Option<serde_json::Value>,
) -> AppResult<Option<T>> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|_| AppError::Invalid {
                code: codes::ATTRIBUTE_INVALID,
                field: field.into(),
                reason: "not a number of the attribute's type".into(),
            }),
    }
}

impl AttributeInput {
    fn into_attribute(self) -> AppResult<Attribute> {
        if self.encrypt == Some(true) {
            return Err(AppError::Invalid {
                code: codes::ATTRIBUTE_INVALID,
                field: "encrypt".into(),
                reason: "attributes encrypted at rest are not supported; encrypt the value before \
                         writing it, or keep it in a file of an encrypted bucket"
                    .into(),
            });
        }
        let kind = match self.r#type.as_str() {
            "STRING" => AttributeKind::String {
                size: self.size.ok_or_else(|| AppError::Invalid {
                    code: codes::ATTRIBUTE_INVALID,
                    field: "size".into(),
                    reason: "a string attribute needs its `size` (most characters)".into(),
                })?,
            },
            "INTEGER" => AttributeKind::Integer {
                min: number_setting("min", self.min)?,
                max: number_setting("max", self.max)?,
            },
            "FLOAT" => AttributeKind::Float {
                min: number_setting("min", self.min)?,
                max: number_setting("max", self.max)?,
            },
            "BOOLEAN" => AttributeKind::Boolean,
            "DATETIME" => AttributeKind::Datetime,
            "EMAIL" => AttributeKind::Email,
            "URL" => AttributeKind::Url,
            "IP" => AttributeKind::Ip,
            "ENUM" => AttributeKind::Enum {
                elements: self.elements.unwrap_or_default(),
            },
            "VARCHAR" => AttributeKind::Varchar {
                size: self.size.ok_or_else(|| AppError::Invalid {
                    code: codes::ATTRIBUTE_INVALID,
                    field: "size".into(),
                    reason: "a varchar attribute needs its `size` (most characters)".into(),
                })?,
            },
            "TEXT" => AttributeKind::Text,
            "MEDIUMTEXT" => AttributeKind::Mediumtext,
            "LONGTEXT" => AttributeKind::Longtext,
            "POINT" => AttributeKind::Point,
            "LINE" => AttributeKind::Line,
            "POLYGON" => AttributeKind::Polygon,
            other => {
                return Err(AppError::Invalid {
                    code: codes::ATTRIBUTE_INVALID,
                    field: "type".into(),
                    reason: format!("unknown attribute type `{other}`"),
                });
            }
        };
        let attribute = Attribute {
            key: self.key,
            kind,
            required: self.required.unwrap_or(false),
            array: self.array.unwrap_or(false),
            default: self.default.filter(|d| !d.is_null()),
        };
        attribute.validate().map_err(structure::value_error)?;
        Ok(attribute)
    }
}

crate::graphql_input! {
    "An index to add."
    struct IndexInput {
        "The index's key, unique in the collection."
        key: String,
        "What it does."
        r#type: String as "IndexType",
        "1 to 8 attribute keys."
        attributes: Vec<String>,
        "The order of each attribute."
        orders: Option<Vec<String>> as "OrderDirection",
        "At most one per attribute, by position: how many characters of a string attribute the index covers on MariaDB (null or 0: the whole value, or the first 191 of a longer one). Keys compare only these characters there (a unique index too); SQLite indexes whole values."
        lengths: Option<Vec<Option<i64>>>,
    }
}

impl IndexInput {
    fn into_index(self) -> AppResult<Index> {
        let invalid = |reason: String| AppError::Invalid {
            code: codes::INDEX_INVALID,
            field: "index".into(),
            reason,
        };
        let kind = match self.r#type.as_str() {
            "KEY" => IndexKind::Key,
            "UNIQUE" => IndexKind::Unique,
            "FULLTEXT" => IndexKind::Fulltext,
            "SPATIAL" => IndexKind::Spatial,
            other => return Err(invalid(format!("unknown index type `{other}`"))),
        };
        let orders = self
            .orders
            .unwrap_or_default()
            .into_iter()
            .map(|o| match o.as_str() {
                "ASC" => Ok(IndexOrder::Asc),
                "DESC" => Ok(IndexOrder::Desc),
                other => Err(invalid(format!("unknown order `{other}`"))),
            })
            .collect::<AppResult<Vec<_>>>()?;
        let lengths = self
            .lengths
            .unwrap_or_default()
            .into_iter()
            .map(|length| match length {
                None | Some(0) => Ok(None),
                Some(length) => u32::try_from(length).map(Some).map_err(|_| {
                    invalid(format!("a length is a number of characters, not {length}"))
                }),
            })
            .collect::<AppResult<Vec<_>>>()?;
        Ok(Index {
            key: self.key,
            kind,
            attributes: self.attributes,
            orders,
            lengths,
        })
    }
}

crate::graphql_input! {
    "A new database."
    struct CreateDatabaseInput {
        "Its id (generated when omitted or `unique()`)."
        id: Option<String> as "ID",
        "Display name."
        name: String,
        "Whether clients can reach it (default true)."
        enabled: Option<bool>,
    }
}

crate::graphql_input! {
    "Changes to a database."
    struct UpdateDatabaseInput {
        "The database."
        id: String as "ID",
        "New name."
        name: Option<String>,
        "Whether clients can reach it."
        enabled: Option<bool>,
    }
}

crate::graphql_input! {
    "A new collection."
    struct CreateCollectionInput {
        "Its database."
        database_id: String as "ID",
        "Its id (generated when omitted or `unique()`)."
        id: Option<String> as "ID",
        "Display name; its GraphQL names derive from it (`blog posts` → `BlogPost`, `blogPosts`) unless `graphqlName` is given."
        name: String,
        "The GraphQL type name to use, e.g. `Post`."
        graphql_name: Option<String>,
        "Whether each document's own permissions count (default false)."
        document_security: Option<bool>,
        "Whether clients can reach it (default true)."
        enabled: Option<bool>,
        "Collection permissions, e.g. `read(\"any\")`, `create(\"users\")`."
        permissions: Option<Vec<String>>,
        "Its attributes."
        attributes: Option<Vec<AttributeInput>>,
        "Its indexes."
        indexes: Option<Vec<IndexInput>>,
    }
}

crate::graphql_input! {
    "Changes to a collection's settings."
    struct UpdateCollectionInput {
        "Its database."
        database_id: String as "ID",
        "The collection."
        id: String as "ID",
        "New display name (its GraphQL names stay)."
        name: Option<String>,
        "Whether each document's own permissions count."
        document_security: Option<bool>,
        "Whether clients can reach it."
        enabled: Option<bool>,
        "Replace the collection permissions."
        permissions: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "The collection to delete, with its documents."
    struct DeleteCollectionInput {
        "Its database."
        database_id: String as "ID",
        "The collection."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "An attribute to add to a collection; existing documents get its default, or null."
    struct CreateAttributeInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The attribute."
        attribute: AttributeInput,
    }
}

crate::graphql_input! {
    "A relationship to add."
    struct CreateRelationshipInput {
        "The database."
        database_id: String as "ID",
        "The collection whose documents get the field `key`."
        collection_id: String as "ID",
        "The field: for MANY_TO_ONE / ONE_TO_ONE the reference (`author`), for ONE_TO_MANY the list (`posts`)."
        key: String,
        "The other collection, in the same database."
        related_collection_id: String as "ID",
        "How they refer to each other."
        r#type: String as "RelationshipType",
        "The field on the other collection: the reverse list (or document); for ONE_TO_MANY the reference. Without it, a ONE_TO_MANY or a `twoWay` relationship names it after this collection's id, as Appwrite does."
        two_way_key: Option<String>,
        "Give the other collection its field (Appwrite's `twoWay`; implied by `twoWayKey`)."
        two_way: Option<bool>,
        "What deleting a referenced document does (default RESTRICT)."
        on_delete: Option<String> as "OnDeleteRule",
    }
}

crate::graphql_input! {
    "An index to add to a collection."
    struct CreateIndexInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The index."
        index: IndexInput,
    }
}

crate::graphql_input! {
    "Changes to an attribute, as Appwrite's `update*Attribute` make them: `required` and `default` are set as given (no default when none is given); the other settings and the key stay unless given. Its type and whether it is a list do not change."
    struct UpdateAttributeInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The attribute's key."
        key: String,
        "Every document must have a value: refused while some document has none."
        required: bool,
        "The value of documents that give none (not with `required`); documents without a value get it now."
        default: Option<serde_json::Value>,
        "STRING: the most characters; refused below the longest stored value."
        size: Option<u32>,
        "INTEGER, FLOAT: the smallest value allowed; refused above a stored value."
        min: Option<serde_json::Value>,
        "INTEGER, FLOAT: the largest value allowed; refused below a stored value."
        max: Option<serde_json::Value>,
        "ENUM: the allowed values; refused without one that a document holds."
        elements: Option<Vec<String>>,
        "A new key: the column, the typed API's field and the indexes using it follow; old queries naming the key stop working."
        new_key: Option<String>,
    }
}

crate::graphql_input! {
    "A change to a relationship (Appwrite's `updateRelationshipAttribute`)."
    struct UpdateRelationshipInput {
        "The database."
        database_id: String as "ID",
        "The collection with the field."
        collection_id: String as "ID",
        "The relationship's field on that collection (either side of a two-way relationship)."
        key: String,
        "What deleting a referenced document does from now on."
        on_delete: String as "OnDeleteRule",
    }
}

crate::graphql_input! {
    "An attribute to remove, with its values and the indexes using it."
    struct DeleteAttributeInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The attribute's key."
        key: String,
    }
}

crate::graphql_input! {
    "An index to remove."
    struct DeleteIndexInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The index's key."
        key: String,
    }
}

crate::graphql_input! {
    "A document for any collection."
    struct CreateDocumentInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "Its id (generated when omitted or `unique()`)."
        id: Option<String> as "ID",
        "Attribute values by key."
        data: serde_json::Value,
        "Its permissions; omitted: the signed-in creator may read, update and delete it."
        permissions: Option<Vec<String>>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "Changes to a document of any collection."
    struct UpdateDocumentInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The document."
        id: String as "ID",
        "Attribute values to set, by key; a value may be one of Appwrite's operators (`{\"method\":\"increment\",\"values\":[1]}`), applied to the current value."
        data: Option<serde_json::Value>,
        "Replace its permissions."
        permissions: Option<Vec<String>>,
        "Refuse (`DOCUMENT_CHANGED`) unless the document's `updatedAt` is still this."
        expected_updated_at: Option<String> as "DateTime",
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "Documents to create in one collection (Appwrite's `createDocuments`)."
    struct CreateDocumentsInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The documents, at most 1000: each an object of attribute values, with `$id` and `$permissions` as Appwrite's clients write them (and, from a key, `$createdAt` and `$updatedAt`)."
        documents: Vec<serde_json::Value>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "Documents to create, or to change where they exist, in one collection (Appwrite's `upsertDocuments`)."
    struct UpsertDocumentsInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The documents, at most 1000: each an object of attribute values, with `$id` (the document to change, or the id of the new one; generated when omitted) and `$permissions` as Appwrite's clients write them."
        documents: Vec<serde_json::Value>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "A document to create, or to change when it exists (Appwrite's `upsertDocument`)."
    struct UpsertDocumentInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The document."
        id: String as "ID",
        "Attribute values by key (all of a new document's; those to set of one that exists, where a value may be one of Appwrite's operators)."
        data: serde_json::Value,
        "Its permissions; omitted: a new one's creator may read, update and delete it, an existing one's stay."
        permissions: Option<Vec<String>>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "The same change to the documents that queries find (Appwrite's `updateDocuments`)."
    struct UpdateDocumentsInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "Attribute values to set on each, by key; a value may be one of Appwrite's operators, applied to each document's own value."
        data: Option<serde_json::Value>,
        "Replace the permissions of each."
        permissions: Option<Vec<String>>,
        "Filter queries (Appwrite's query language): the documents to change, at most 1000; none: every document."
        queries: Option<Vec<String>>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "The documents that queries find, to delete (Appwrite's `deleteDocuments`)."
    struct DeleteDocumentsInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "Filter queries (Appwrite's query language): the documents to delete, at most 1000; none: every document."
        queries: Option<Vec<String>>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "A step of a numeric attribute of one document (Appwrite's `incrementDocumentAttribute` and `decrementDocumentAttribute`)."
    struct DocumentStepInput {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The document."
        id: String as "ID",
        "The numeric attribute."
        attribute: String,
        "How much; default 1."
        value: Option<f64>,
        "The bound the result may not pass: the largest when incrementing, the smallest when decrementing."
        limit: Option<f64>,
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

crate::graphql_input! {
    "A document to delete."
    struct DocumentRefInput as "DeleteDocumentInput" {
        "The database."
        database_id: String as "ID",
        "The collection."
        collection_id: String as "ID",
        "The document."
        id: String as "ID",
        "Stage this write in the transaction instead of making it now (`createTransaction`): it runs, to be checked, and is undone; the answer is what it did."
        transaction_id: Option<String> as "ID",
    }
}

/// The collection a generic document operation names, from the project's model;
/// when there is none, `DATABASE_NOT_FOUND` or `COLLECTION_NOT_FOUND` for what is
/// missing, as Appwrite answers (the database is looked up on that path only).
async fn model_collection(
    ctx: &ResolverContext<'_>,
    database_id: &str,
    collection_id: &str,
) -> AppResult<Arc<Collection>> {
    if let Some(collection) = data_model(ctx)?.collection(database_id, collection_id) {
        return Ok(collection.clone());
    }
    let database =
        super::store::find_database(app(ctx)?.db.pool(), &caller(ctx)?.project.id, database_id)
            .await?;
    Err(match database {
        Some(_) => AppError::NotFound {
            what: "collection",
            id: collection_id.chars().take(64).collect(),
        },
        None => AppError::NotFound {
            what: "database",
            id: database_id.chars().take(64).collect(),
        },
    })
}

/// The keys of `collection`'s datetime attributes.
fn datetime_keys(collection: &Collection) -> Vec<&str> {
    collection
        .attributes
        .iter()
        .filter(|a| a.kind == AttributeKind::Datetime)
        .map(|a| a.key.as_str())
        .collect()
}

/// A datetime value (or a list of them) of the generic API's `data` as
/// Appwrite writes it, `1975-06-12T12:12:55.000+00:00`, where the typed API's
/// `DateTime` writes `…Z`: the same instant, in the form Appwrite's clients
/// compare.
fn with_utc_offset(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) => match text.strip_suffix('Z') {
            Some(local) => serde_json::Value::String(format!("{local}+00:00")),
            None => value.clone(),
        },
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(with_utc_offset).collect())
        }
        other => other.clone(),
    }
}

fn document_value(collection: &Collection, document: &documents::Document) -> Value {
    document_fields(collection, document, DocumentFields::ALL)
}

/// Which fields of a `Document` a query selects, one bit each in the order of
/// [`DocumentFields::NAMES`]: a read by id builds only those (their times
/// formatted, their names allocated) instead of all eight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DocumentFields(u8);

impl DocumentFields {
    const NAMES: [&'static str; 8] = [
        "id",
        "databaseId",
        "collectionId",
        "createdAt",
        "updatedAt",
        "permissions",
        "data",
        "sequence",
    ];
    const ALL: DocumentFields = DocumentFields(0xff);

    /// The fields under `field`, through its fragments too. A field named
    /// twice, aliased or in a fragment of another type counts as selected; a
    /// selection can only take more in, never leave out one the executor
    /// resolves.
    fn selected(field: async_graphql::SelectionField<'_>) -> DocumentFields {
        let mut bits = 0;
        for child in field.selection_set() {
            if let Some(i) = Self::NAMES.iter().position(|n| *n == child.name()) {
                bits |= 1 << i;
            }
        }
        DocumentFields(bits)
    }

    fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

/// [`document_value`] with only `fields`.
fn document_fields(
    collection: &Collection,
    document: &documents::Document,
    fields: DocumentFields,
) -> Value {
    let mut map = async_graphql::indexmap::IndexMap::with_capacity(fields.0.count_ones() as usize);
    for (i, name) in DocumentFields::NAMES.iter().enumerate() {
        if !fields.has(i) {
            continue;
        }
        let value = match i {
            0 => Value::from(document.id.as_str()),
            1 => Value::from(collection.database_id.as_str()),
            2 => Value::from(collection.id.as_str()),
            3 => datetime(document.created_at),
            4 => datetime(document.updated_at),
            5 => Value::List(
                document
                    .permissions
                    .iter()
                    .map(|p| Value::from(p.to_string()))
                    .collect(),
            ),
            6 => {
                let dated = datetime_keys(collection);
                Value::Object(
                    document
                        .data
                        .iter()
                        .map(|(k, v)| {
                            let value = if dated.contains(&k.as_str()) {
                                json_value(&with_utc_offset(v))
                            } else {
                                json_value(v)
                            };
                            (Name::new(k), value)
                        })
                        .collect(),
                )
            }
            _ => Value::from(document.sequence.to_string()),
        };
        map.insert(Name::new(name), value);
    }
    Value::Object(map)
}

#[cfg(test)]
fn document_value_in_full(collection: &Collection, document: &documents::Document) -> Value {
    object([
        ("id", Value::from(document.id.as_str())),
        ("databaseId", Value::from(collection.database_id.as_str())),
        ("collectionId", Value::from(collection.id.as_str())),
        ("createdAt", datetime(document.created_at)),
        ("updatedAt", datetime(document.updated_at)),
        (
            "permissions",
            Value::List(
                document
                    .permissions
                    .iter()
                    .map(|p| Value::from(p.to_string()))
                    .collect(),
            ),
        ),
        (
            "data",
            Value::Object(
                document
                    .data
                    .iter()
                    .map(|(k, v)| (Name::new(k), json_value(v)))
                    .collect(),
            ),
        ),
        ("sequence", Value::from(document.sequence.to_string())),
    ])
}

/// What a document mutation staged in a transaction answers: the document as
/// its run left it (null when the caller may not read it).
fn staged_document(applied: Applied) -> async_graphql::Result<Option<FieldValue<'static>>> {
    Ok(match applied {
        Applied::One(collection, document) => written(&collection, document),
        _ => None,
    })
}

/// What a bulk mutation staged in a transaction answers: the documents as its
/// run left them.
fn staged_list(applied: Applied) -> async_graphql::Result<Option<FieldValue<'static>>> {
    Ok(match applied {
        Applied::Many(collection, documents) => Some(written_list(&collection, &documents)),
        _ => Some(FieldValue::list(Vec::<FieldValue>::new())),
    })
}

/// What a mutation answers for a document it wrote: the document, or null when
/// the documents service answers none (the caller may not read it).
fn written(
    collection: &Collection,
    document: Option<documents::Document>,
) -> Option<FieldValue<'static>> {
    document.map(|d| FieldValue::value(document_value(collection, &d)))
}

/// The related documents a write's `data` gave inline (an object, or a list
/// holding one), as a `select` nesting them: Appwrite answers a write with
/// the documents it nested, not their ids.
fn given_inline(
    collection: &Collection,
    model: &DataModel,
    data: &serde_json::Map<String, serde_json::Value>,
) -> AppResult<Nesting> {
    let inline = |value: &serde_json::Value| match value {
        serde_json::Value::Object(_) => true,
        serde_json::Value::Array(items) => items.iter().any(serde_json::Value::is_object),
        _ => false,
    };
    let select: Vec<String> = data
        .iter()
        .filter(|(key, value)| !key.starts_with('$') && inline(value))
        .map(|(key, _)| format!("{key}.*"))
        .collect();
    Nesting::of(collection, model, Some(&select))
}

/// [`written`], with the related documents the write gave inline nested in it,
/// as the caller may read them.
async fn written_nested(
    ctx: &ResolverContext<'_>,
    collection: &Collection,
    nesting: &Nesting,
    document: Option<documents::Document>,
) -> AppResult<Option<FieldValue<'static>>> {
    let Some(mut document) = document else {
        return Ok(None);
    };
    if !nesting.is_empty() {
        let access = Access::of(caller(ctx)?, documents::DOCUMENTS_READ)?;
        nest(ctx, nesting, &access, &mut [&mut document]).await?;
    }
    Ok(written(collection, Some(document)))
}

crate::graphql_input! {
    "The database to delete, with its collections and documents."
    struct DeleteDatabaseInput {
        "The database."
        id: String as "ID",
    }
}

fn id() -> TypeRef {
    TypeRef::named_nn(TypeRef::ID)
}

fn string() -> TypeRef {
    TypeRef::named_nn(TypeRef::STRING)
}

fn boolean() -> TypeRef {
    TypeRef::named_nn(TypeRef::BOOLEAN)
}

fn time() -> TypeRef {
    TypeRef::named_nn(DATETIME)
}

pub fn register(parts: &mut SchemaParts, _project: &Project, model: &DataModel) {
    register_types(parts);
    typed::register_shared(parts);
    register_structure(parts);
    register_documents(parts);
    super::transactions_schema::register(parts);
    for collection in &model.collections {
        typed::register_collection(parts, collection.clone(), model);
    }
}

fn register_types(parts: &mut SchemaParts) {
    parts.add_type(attribute_type_type());
    parts.add_type(index_type_type());
    parts.add_type(order_direction_type());
    parts.add_type(database_type());
    parts.add_type(attribute_type());
    parts.add_type(index_type());
    parts.add_type(relationship_type_type());
    parts.add_type(on_delete_rule_type());
    parts.add_type(relationship_type());
    parts.add_input::<CreateRelationshipInput>();
    parts.add_type(collection_type());
    parts.add_type(document_type());
    parts.add_type(document_list_type());
    parts.add_input::<AttributeInput>();
    parts.add_input::<IndexInput>();
    parts.add_input::<CreateDatabaseInput>();
    parts.add_input::<UpdateDatabaseInput>();
    parts.add_input::<DeleteDatabaseInput>();
    parts.add_input::<CreateCollectionInput>();
    parts.add_input::<UpdateCollectionInput>();
    parts.add_input::<DeleteCollectionInput>();
    parts.add_input::<CreateAttributeInput>();
    parts.add_input::<UpdateAttributeInput>();
    parts.add_input::<UpdateRelationshipInput>();
    parts.add_input::<DeleteAttributeInput>();
    parts.add_input::<CreateIndexInput>();
    parts.add_input::<DeleteIndexInput>();
    parts.add_input::<CreateDocumentInput>();
    parts.add_input::<UpdateDocumentInput>();
    parts.add_input::<DocumentRefInput>();
    parts.add_input::<CreateDocumentsInput>();
    parts.add_input::<UpsertDocumentInput>();
    parts.add_input::<UpsertDocumentsInput>();
    parts.add_input::<UpdateDocumentsInput>();
    parts.add_input::<DeleteDocumentsInput>();
    parts.add_input::<DocumentStepInput>();
    parts.add_type(
        Object::new("DeleteDocumentsPayload")
            .description("The result of `deleteDocuments`.")
            .field(prop(
                "deletedIds",
                TypeRef::named_nn_list_nn(TypeRef::ID),
                "The documents deleted (not those their relationships took along).",
            )),
    );
    for (name, about) in [
        ("DeleteDatabasePayload", "The result of `deleteDatabase`."),
        (
            "DeleteCollectionPayload",
            "The result of `deleteCollection`.",
        ),
        ("DeleteDocumentPayload", "The result of `deleteDocument`."),
    ] {
        parts.add_type(Object::new(name).description(about).field(prop(
            "deletedId",
            id(),
            "Id of what was deleted.",
        )));
    }
}

fn attribute_type_type() -> Enum {
    Enum::new("AttributeType")
        .description("The type of an attribute's values.")
        .items([
            "STRING",
            "INTEGER",
            "FLOAT",
            "BOOLEAN",
            "DATETIME",
            "EMAIL",
            "URL",
            "IP",
            "ENUM",
            "POINT",
            "LINE",
            "POLYGON",
            "VARCHAR",
            "TEXT",
            "MEDIUMTEXT",
            "LONGTEXT",
        ])
}

fn index_type_type() -> Enum {
    Enum::new("IndexType")
        .description("What an index does: speed up lookups and orders (KEY), also refuse duplicates (UNIQUE), serve `search` (FULLTEXT), or cover one required point, line or polygon (SPATIAL: checked as Appwrite's MariaDB checks it; spatial conditions still compare each document).")
        .items(["KEY", "UNIQUE", "FULLTEXT", "SPATIAL"])
}

fn order_direction_type() -> Enum {
    Enum::new("OrderDirection")
        .description("Ascending (nulls first) or descending (nulls last).")
        .items(["ASC", "DESC"])
}

fn database_type() -> Object {
    Object::new("Database")
        .description("A group of collections.")
        .field(prop("id", id(), "Unique id."))
        .field(prop("name", string(), "Display name."))
        .field(prop(
            "enabled",
            boolean(),
            "Whether clients can reach its documents.",
        ))
        .field(prop("createdAt", time(), "When it was created."))
        .field(prop("updatedAt", time(), "When it last changed."))
        .field(prop(
            "type",
            string(),
            "`legacy`: Appwrite's name for a database of collections and documents.",
        ))
        .field(prop(
            "status",
            string(),
            "`ready`: made, and usable at once (Appwrite's clients that wait for it find it so).",
        ))
}

fn attribute_type() -> Object {
    Object::new("Attribute")
        .description("A field of a collection's documents: one column of its table.")
        .field(prop(
            "key",
            string(),
            "The key: the document field and the GraphQL field.",
        ))
        .field(prop(
            "type",
            TypeRef::named_nn("AttributeType"),
            "The type of its values.",
        ))
        .field(prop(
            "required",
            boolean(),
            "Whether every document must have a value.",
        ))
        .field(prop(
            "array",
            boolean(),
            "Whether it holds a list of values.",
        ))
        .field(prop(
            "default",
            TypeRef::named(JSON),
            "The value of documents that give none.",
        ))
        .field(prop(
            "size",
            TypeRef::named(TypeRef::INT),
            "STRING, VARCHAR: the most characters.",
        ))
        .field(prop(
            "min",
            TypeRef::named(JSON),
            "INTEGER, FLOAT: the smallest value allowed.",
        ))
        .field(prop(
            "max",
            TypeRef::named(JSON),
            "INTEGER, FLOAT: the largest value allowed.",
        ))
        .field(prop(
            "elements",
            TypeRef::named_nn_list(TypeRef::STRING),
            "ENUM: the allowed values.",
        ))
        .field(
            Field::new("encrypt", TypeRef::named_nn(TypeRef::BOOLEAN), |_| {
                FieldFuture::from_value(Some(Value::from(false)))
            })
            .description("Whether its values are encrypted at rest (Appwrite's `encrypt`): never; such attributes are refused."),
        )
        .field(available_status())
}

/// `status`, as Appwrite's attributes and indexes carry it: `available` once made.
/// A change of structure here is made within its request (the table is altered
/// before the answer), so there is no other state to wait through.
fn available_status() -> Field {
    Field::new("status", TypeRef::named_nn(TypeRef::STRING), |_| {
        FieldFuture::from_value(Some(Value::from("available")))
    })
    .description("`available`: made, and usable at once (changes of structure finish within their request). Appwrite's clients that wait for it find it so.")
}

fn index_type() -> Object {
    Object::new("Index")
        .description("An index of a collection: a real index of its table.")
        .field(prop("key", string(), "The index's key."))
        .field(prop("type", TypeRef::named_nn("IndexType"), "What it does."))
        .field(prop("attributes", TypeRef::named_nn_list_nn(TypeRef::STRING), "The attribute keys it covers, in order (`$id`, `$createdAt`, `$updatedAt` for the system fields)."))
        .field(prop("orders", TypeRef::named_nn_list_nn("OrderDirection"), "The order of each attribute (empty: ascending)."))
        .field(prop("lengths", TypeRef::named_list_nn(TypeRef::INT), "One per attribute: the characters of it a MariaDB key covers, as given (null: the whole value, or the first 191 of a longer one)."))
        .field(available_status())
}

fn relationship_type_type() -> Enum {
    Enum::new("RelationshipType")
        .description("How documents of two collections refer to each other. ONE_TO_MANY is stored as the MANY_TO_ONE it mirrors, on the related collection; MANY_TO_MANY links through a table of its own.")
        .items(["MANY_TO_ONE", "ONE_TO_ONE", "ONE_TO_MANY", "MANY_TO_MANY"])
}

fn on_delete_rule_type() -> Enum {
    Enum::new("OnDeleteRule")
        .description("What deleting a referenced document does to the documents pointing at it: refuse (RESTRICT), delete them too (CASCADE), or clear their reference (SET_NULL).")
        .items(["RESTRICT", "CASCADE", "SET_NULL"])
}

fn relationship_type() -> Object {
    Object::new("Relationship")
        .description("A reference from this collection's documents to another collection's: a column holding the referenced id.")
        .field(prop("key", string(), "The field holding the reference (`post.author`)."))
        .field(prop("relatedCollectionId", id(), "The referenced collection."))
        .field(prop("type", TypeRef::named_nn("RelationshipType"), "MANY_TO_ONE, ONE_TO_ONE or MANY_TO_MANY as its collection holds it; seen from the other side (`reverseRelationships`), ONE_TO_MANY for a MANY_TO_ONE."))
        .field(prop("twoWayKey", TypeRef::named(TypeRef::STRING), "The field on the referenced collection that lists (or names) the documents pointing at it."))
        .field(prop("onDelete", TypeRef::named_nn("OnDeleteRule"), "What deleting a referenced document does."))
        .field(available_status())
}

fn collection_type() -> Object {
    Object::new("Collection")
        .description("A set of documents with the same attributes: a table of its own, with GraphQL types of its own.")
        .field(prop("id", id(), "Unique id within its database."))
        .field(prop("databaseId", id(), "Its database."))
        .field(prop("name", string(), "Display name."))
        .field(prop("graphqlName", string(), "The name of its GraphQL type (e.g. `Post`, with the fields `post`, `posts`, `createPost`, …)."))
        .field(prop("documentSecurity", boolean(), "Whether each document's own permissions count beside the collection's."))
        .field(prop("enabled", boolean(), "Whether clients can reach its documents."))
        .field(prop("permissions", TypeRef::named_nn_list_nn(TypeRef::STRING), "Who may read, create, update and delete its documents, e.g. `read(\"any\")`."))
        .field(super::structure_queries::attributes_field())
        .field(super::structure_queries::indexes_field())
        .field(prop("relationships", TypeRef::named_nn_list_nn("Relationship"), "The references its documents hold."))
        .field(reverse_relationships_field())
        .field(prop("createdAt", time(), "When it was created."))
        .field(prop(
            "bytesMax",
            TypeRef::named_nn(TypeRef::INT),
            "The most bytes a document's row may declare on MariaDB (Appwrite's `bytesMax`).",
        ))
        .field(prop(
            "bytesUsed",
            TypeRef::named_nn(TypeRef::INT),
            "The bytes its attributes declare of a row, system columns included (Appwrite's `bytesUsed`).",
        ))
        .field(prop("updatedAt", time(), "When it last changed."))
}

/// What a document's `sequence` field is, in the generic and the typed API.
pub const SEQUENCE_DESCRIPTION: &str = "Its number in the order its collection's documents were made, as a decimal string (Appwrite's `$sequence`): a later document has a larger one. Filter and order by it as `$sequence`.";

fn document_type() -> Object {
    Object::new("Document")
        .description("A document of any collection, in the generic API: its attribute values as one JSON object.")
        .field(prop("id", id(), "Unique id within its collection."))
        .field(prop("sequence", string(), SEQUENCE_DESCRIPTION))
        .field(prop("databaseId", id(), "Its database."))
        .field(prop("collectionId", id(), "Its collection."))
        .field(prop("createdAt", time(), "When it was created."))
        .field(prop("updatedAt", time(), "When it last changed."))
        .field(prop("permissions", TypeRef::named_nn_list_nn(TypeRef::STRING), "Its own permissions (used when the collection has document security)."))
        .field(prop("data", TypeRef::named_nn(JSON), "Its attribute values, by key."))
}

fn document_list_type() -> Object {
    Object::new("DocumentList")
        .description("Documents found by `documents`.")
        .field(prop(
            "total",
            TypeRef::named(TypeRef::INT),
            "How many documents match in all (counted only when selected).",
        ))
        .field(prop(
            "documents",
            TypeRef::named_nn_list_nn("Document"),
            "The documents of this page.",
        ))
}

fn register_structure(parts: &mut SchemaParts) {
    parts.query(databases());
    parts.query(database());
    parts.query(collections());
    parts.query(collection());
    parts.mutation(create_database());
    parts.mutation(update_database());
    parts.mutation(delete_database());
    parts.mutation(create_collection());
    parts.mutation(update_collection());
    parts.mutation(delete_collection());
    parts.mutation(create_attribute());
    parts.mutation(update_attribute());
    parts.mutation(update_relationship());
    parts.mutation(delete_attribute());
    parts.mutation(create_relationship());
    parts.mutation(create_index());
    parts.mutation(delete_index());
}
/// A mutation that changes the structure of a project's data: refused after
/// document writes in the same request.
fn structure_mutation(
    name: &'static str,
    returns: &'static str,
    input_type: &'static str,
    about: &'static str,
    run: fn(ResolverContext<'_>) -> FieldFuture<'_>,
) -> Field {
    Field::new(name, TypeRef::named_nn(returns), move |ctx| {
        // On SQLite the document writes before it hold the only write
        // lock, and DDL cannot join their transaction on MariaDB.
        let mixed = request_tx(&ctx).map(|tx| tx.has_writes()).unwrap_or(false);
        if mixed {
            return FieldFuture::new(async move {
                Err::<Option<FieldValue>, _>(
                    AppError::NotAllowed(
                        "structure changes cannot follow document writes in the same request; send them separately".into(),
                    )
                    .into(),
                )
            });
        }
        run(ctx)
    })
    .description(about)
    .argument(InputValue::new("input", TypeRef::named_nn(input_type)))
}

fn create_database() -> Field {
    structure_mutation(
        "createDatabase",
        "Database",
        "CreateDatabaseInput",
        "Creates a database (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateDatabaseInput = input(&ctx)?;
                let database = structure::create_database(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    input.id.as_deref(),
                    &input.name,
                    input.enabled,
                )
                .await?;
                Ok(Some(FieldValue::value(database_value(&database))))
            })
        },
    )
}

fn update_database() -> Field {
    structure_mutation(
        "updateDatabase",
        "Database",
        "UpdateDatabaseInput",
        "Renames, enables or disables a database (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: UpdateDatabaseInput = input(&ctx)?;
                let database = structure::update_database(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.id,
                    input.name.as_deref(),
                    input.enabled,
                )
                .await?;
                Ok(Some(FieldValue::value(database_value(&database))))
            })
        },
    )
}

fn delete_database() -> Field {
    structure_mutation(
        "deleteDatabase",
        "DeleteDatabasePayload",
        "DeleteDatabaseInput",
        "Deletes a database with its collections and documents (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteDatabaseInput = input(&ctx)?;
                structure::delete_database(app(&ctx)?, &caller(&ctx)?.require()?, &input.id)
                    .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
}

fn create_collection() -> Field {
    structure_mutation(
        "createCollection",
        "Collection",
        "CreateCollectionInput",
        "Creates a collection: a table, and GraphQL types of its own in this project's schema at once (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateCollectionInput = input(&ctx)?;
                let new = NewCollection {
                    database_id: input.database_id,
                    id: input.id,
                    name: input.name,
                    graphql_name: input.graphql_name,
                    document_security: input.document_security.unwrap_or(false),
                    enabled: input.enabled,
                    permissions: input.permissions.unwrap_or_default(),
                    attributes: input
                        .attributes
                        .unwrap_or_default()
                        .into_iter()
                        .map(AttributeInput::into_attribute)
                        .collect::<AppResult<_>>()?,
                    indexes: input
                        .indexes
                        .unwrap_or_default()
                        .into_iter()
                        .map(IndexInput::into_index)
                        .collect::<AppResult<_>>()?,
                };
                let collection =
                    structure::create_collection(app(&ctx)?, &caller(&ctx)?.require()?, new)
                        .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn update_collection() -> Field {
    structure_mutation(
        "updateCollection",
        "Collection",
        "UpdateCollectionInput",
        "Changes a collection's name, permissions, document security or enabled flag (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: UpdateCollectionInput = input(&ctx)?;
                let changes = CollectionChanges {
                    name: input.name,
                    document_security: input.document_security,
                    enabled: input.enabled,
                    permissions: input.permissions,
                };
                let collection = structure::update_collection(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.id,
                    changes,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn delete_collection() -> Field {
    structure_mutation(
        "deleteCollection",
        "DeleteCollectionPayload",
        "DeleteCollectionInput",
        "Deletes a collection with its documents (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteCollectionInput = input(&ctx)?;
                structure::delete_collection(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.id,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
}

fn create_attribute() -> Field {
    structure_mutation(
        "createAttribute",
        "Collection",
        "CreateAttributeInput",
        "Adds an attribute (a column) to a collection (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateAttributeInput = input(&ctx)?;
                let attribute = input.attribute.into_attribute()?;
                let collection = structure::create_attribute(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    attribute,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn update_attribute() -> Field {
    structure_mutation(
        "updateAttribute",
        "Collection",
        "UpdateAttributeInput",
        "Changes an attribute's settings or key, keeping its values (scope `databases.write`). A change stored documents would break is refused (`ATTRIBUTE_INVALID`); a taken `newKey` is `ATTRIBUTE_ALREADY_EXISTS`. Publishes `databases.D.collections.C.attributes.KEY.update` under its key as changed.",
        |ctx| {
            FieldFuture::new(async move {
                let input: UpdateAttributeInput = input(&ctx)?;
                let collection = structure::update_attribute(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    &input.key,
                    structure::AttributeUpdate {
                        required: input.required,
                        default: input.default,
                        size: input.size,
                        min: input.min,
                        max: input.max,
                        elements: input.elements,
                        new_key: input.new_key,
                    },
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn delete_attribute() -> Field {
    structure_mutation(
        "deleteAttribute",
        "Collection",
        "DeleteAttributeInput",
        "Removes an attribute, its values and the indexes using it (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteAttributeInput = input(&ctx)?;
                let collection = structure::delete_attribute(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    &input.key,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn create_relationship() -> Field {
    structure_mutation(
        "createRelationship",
        "Collection",
        "CreateRelationshipInput",
        "Adds a relationship between two collections; returns the collection holding the reference (scope `databases.write`). Remove it with `deleteAttribute` and its key.",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateRelationshipInput = input(&ctx)?;
                let on_delete = on_delete_rule(input.on_delete.as_deref().unwrap_or("RESTRICT"))?;
                // Appwrite names the other side after this collection.
                let two_way_key = input.two_way_key.or_else(|| {
                    (input.two_way == Some(true) || input.r#type == "ONE_TO_MANY")
                        .then(|| input.collection_id.clone())
                });
                let new = structure::NewRelationship {
                    database_id: input.database_id,
                    collection_id: input.collection_id,
                    key: input.key,
                    related_collection_id: input.related_collection_id,
                    kind: input.r#type,
                    two_way_key,
                    on_delete,
                };
                let collection =
                    structure::create_relationship(app(&ctx)?, &caller(&ctx)?.require()?, new)
                        .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn on_delete_rule(name: &str) -> AppResult<OnDelete> {
    match name {
        "RESTRICT" => Ok(OnDelete::Restrict),
        "CASCADE" => Ok(OnDelete::Cascade),
        "SET_NULL" => Ok(OnDelete::SetNull),
        other => Err(AppError::invalid(
            "onDelete",
            format!("unknown rule `{other}`"),
        )),
    }
}

fn update_relationship() -> Field {
    structure_mutation(
        "updateRelationship",
        "Collection",
        "UpdateRelationshipInput",
        "Changes what deleting a referenced document does to a relationship (scope `databases.write`); returns the collection named. Publishes `databases.D.collections.C.attributes.KEY.update` on the collection holding it.",
        |ctx| {
            FieldFuture::new(async move {
                let input: UpdateRelationshipInput = input(&ctx)?;
                let on_delete = on_delete_rule(&input.on_delete)?;
                let collection = structure::update_relationship(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    &input.key,
                    on_delete,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn create_index() -> Field {
    structure_mutation(
        "createIndex",
        "Collection",
        "CreateIndexInput",
        "Adds an index to a collection; a unique index over duplicate values is refused (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateIndexInput = input(&ctx)?;
                let index = input.index.into_index()?;
                let collection = structure::create_index(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    index,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn delete_index() -> Field {
    structure_mutation(
        "deleteIndex",
        "Collection",
        "DeleteIndexInput",
        "Removes an index (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteIndexInput = input(&ctx)?;
                let collection = structure::delete_index(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &input.database_id,
                    &input.collection_id,
                    &input.key,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    )
}

fn databases() -> Field {
    Field::new("databases", TypeRef::named_nn_list_nn("Database"), |ctx| {
        FieldFuture::new(async move {
            let list = structure::list_databases(app(&ctx)?, &caller(&ctx)?.require()?).await?;
            Ok(Some(FieldValue::list(
                list.iter().map(|d| FieldValue::value(database_value(d))),
            )))
        })
    })
    .description("The project's databases (scope `databases.read`).")
}

fn database() -> Field {
    Field::new("database", TypeRef::named_nn("Database"), |ctx| {
        FieldFuture::new(async move {
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let database =
                structure::get_database(app(&ctx)?, &caller(&ctx)?.require()?, &id).await?;
            Ok(Some(FieldValue::value(database_value(&database))))
        })
    })
    .description("A database (scope `databases.read`).")
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
}

fn collections() -> Field {
    Field::new(
        "collections",
        TypeRef::named_nn_list_nn("Collection"),
        |ctx| {
            FieldFuture::new(async move {
                let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
                let list = structure::list_collections(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &database_id,
                )
                .await?;
                Ok(Some(FieldValue::list(
                    list.iter().map(|c| FieldValue::value(collection_value(c))),
                )))
            })
        },
    )
    .description("The collections of a database (scope `databases.read`).")
    .argument(InputValue::new(
        "databaseId",
        TypeRef::named_nn(TypeRef::ID),
    ))
}

fn collection() -> Field {
    Field::new("collection", TypeRef::named_nn("Collection"), |ctx| {
        FieldFuture::new(async move {
            let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let collection =
                structure::get_collection(app(&ctx)?, &caller(&ctx)?.require()?, &database_id, &id)
                    .await?;
            Ok(Some(FieldValue::value(collection_value(&collection))))
        })
    })
    .description("A collection with its attributes and indexes (scope `databases.read`).")
    .argument(InputValue::new(
        "databaseId",
        TypeRef::named_nn(TypeRef::ID),
    ))
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
}

/// The generic document API: each field parses its arguments, calls the
/// documents service and maps what it answers.
fn register_documents(parts: &mut SchemaParts) {
    parts.query(documents_field());
    parts.query(document_field());
    parts.mutation(create_document_field());
    parts.mutation(update_document_field());
    parts.mutation(delete_document_field());
    parts.mutation(create_documents_field());
    parts.mutation(upsert_document_field());
    parts.mutation(upsert_documents_field());
    parts.mutation(update_documents_field());
    parts.mutation(delete_documents_field());
    parts.mutation(step_document_field(true));
    parts.mutation(step_document_field(false));
}

/// The documents service for the request being resolved, as `access` reaches
/// them.
pub(crate) fn documents_of<'a>(
    ctx: &ResolverContext<'a>,
    access: &'a Access,
) -> AppResult<Documents<'a>> {
    let answers = caller(ctx)?.may_see_what_it_writes(crate::auth::scopes::Scope::DocumentsWrite);
    Ok(Documents::new(request_tx(ctx)?, data_model(ctx)?, access).answering(answers))
}

/// `queries` of `documents`: a list of strings.
fn query_strings(ctx: &ResolverContext<'_>) -> AppResult<Vec<String>> {
    let invalid = || AppError::invalid("queries", "expected a list of strings");
    match ctx.args.get("queries") {
        Some(list) if !list.is_null() => list
            .list()
            .map_err(|_| invalid())?
            .iter()
            .map(|q| q.string().map(String::from))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid()),
        _ => Ok(Vec::new()),
    }
}

fn documents_field() -> Field {
    Field::new("documents", TypeRef::named_nn("DocumentList"), |ctx| {
        FieldFuture::new(async move {
            let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
            let collection_id = opt_string(&ctx, "collectionId")?.unwrap_or_default();
            let collection = model_collection(&ctx, &database_id, &collection_id).await?;
            let parsed = parse_query_strings(&query_strings(&ctx)?).map_err(|err| AppError::Invalid {
                code: err.code(),
                field: "queries".into(),
                reason: err.to_string(),
            })?;
            let nesting = Nesting::of(&collection, data_model(&ctx)?, parsed.select.as_deref())?;
            let kept = kept_attributes(&collection, parsed.select.as_deref(), &nesting)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            documents::require_list_reach(&collection, &access)?;
            let filter = super::typed::across_relationships(
                &collection,
                data_model(&ctx)?,
                &access,
                parsed.filter,
                0,
            )?;
            let request = ListByDocument {
                filter,
                orders: parsed.orders,
                cursor_after: parsed.cursor_after,
                cursor_before: parsed.cursor_before,
                limit: parsed.limit.unwrap_or(25) as usize,
                offset: parsed.offset.map(|offset| offset as usize),
                want_total: ctx.look_ahead().field("total").exists(),
            };
            let mut listed = documents_of(&ctx, &access)?.list_by_document(&collection, request).await?;
            let mut page: Vec<&mut documents::Document> =
                listed.documents.iter_mut().map(|(document, _)| document).collect();
            nest(&ctx, &nesting, &access, &mut page).await?;
            let mut documents_value = Vec::with_capacity(listed.documents.len());
            for (document, _) in &listed.documents {
                let mut value = document_value(&collection, document);
                if let (Some(kept), Value::Object(map)) = (&kept, &mut value)
                    && let Some(Value::Object(data)) = map.get_mut("data")
                {
                    data.retain(|k, _| kept.iter().any(|s| s == k.as_str()));
                }
                documents_value.push(value);
            }
            Ok(Some(FieldValue::value(object([
                ("total", listed.total.map(Value::from).unwrap_or(Value::Null)),
                ("documents", Value::List(documents_value)),
            ]))))
        })
    })
    .description("Documents of any collection, found with Appwrite's query language: each query a JSON string such as `{\"method\":\"equal\",\"attribute\":\"title\",\"values\":[\"Hi\"]}`; an attribute may reach across a relationship (`author.name`) for a caller who may read every document of the related collection. Only documents the caller may read are returned and counted; `PERMISSION_DENIED` when the collection's permissions let the caller read none (document security off), `COLLECTION_NOT_FOUND` to a client while the collection is disabled.")
    .argument(InputValue::new("databaseId", TypeRef::named_nn(TypeRef::ID)))
    .argument(InputValue::new("collectionId", TypeRef::named_nn(TypeRef::ID)))
    .argument(InputValue::new("queries", TypeRef::named_nn_list(TypeRef::STRING)).description("Queries (filters, `orderAsc`, `cursorAfter`, `limit` ≤ 1000, default 25, `offset`, `select`, `and`, `or`)."))
}

/// The `select` of a read by id's queries; any other query is refused.
fn selection_only(queries: &[String]) -> AppResult<Option<Vec<String>>> {
    let parsed = parse_query_strings(queries).map_err(|err| AppError::Invalid {
        code: err.code(),
        field: "queries".into(),
        reason: err.to_string(),
    })?;
    let only_select = parsed.filter == super::filter::Filter::default()
        && parsed.orders.is_empty()
        && parsed.cursor_after.is_none()
        && parsed.cursor_before.is_none()
        && parsed.limit.is_none()
        && parsed.offset.is_none();
    if !only_select {
        return Err(AppError::Invalid {
            code: codes::QUERY_INVALID,
            field: "queries".into(),
            reason: "a document read by id takes `select` queries only".into(),
        });
    }
    Ok(parsed.select)
}

/// Fills the related documents `nesting` asks for into `page`, read in the
/// request's transaction as `access` may read them.
async fn nest(
    ctx: &ResolverContext<'_>,
    nesting: &Nesting,
    access: &Access,
    page: &mut [&mut documents::Document],
) -> AppResult<()> {
    if nesting.is_empty() || page.is_empty() {
        return Ok(());
    }
    let mut conn = request_tx(ctx)?.reader().await?;
    nesting
        .fill(&mut conn, access, data_model(ctx)?, page)
        .await
}

/// The attributes of `data` that `select` queries keep: `None` for all of them
/// (no `select`, or `*` among them). A `$` name is a system field, outside
/// `data`, and keeps none of it; `author.name` keeps `author` (nested, by
/// `nesting`, as a reverse field may be). A name the collection has no
/// attribute of is refused: a misspelt selection must not silently answer
/// empty documents.
fn kept_attributes(
    collection: &Collection,
    select: Option<&[String]>,
    nesting: &Nesting,
) -> Result<Option<Vec<String>>, AppError> {
    let Some(select) = select else {
        return Ok(None);
    };
    if select.iter().any(|name| name == "*") {
        return Ok(None);
    }
    let mut kept = Vec::with_capacity(select.len());
    for name in select.iter().filter(|name| !name.starts_with('$')) {
        let key = name.split_once('.').map_or(name.as_str(), |(key, _)| key);
        if !collection.has_key(key) && !nesting.covers(key) {
            return Err(AppError::Invalid {
                code: codes::QUERY_INVALID,
                field: "queries".into(),
                reason: format!(
                    "select names {}, which is not an attribute or relationship of the collection",
                    super::model::shown(name)
                ),
            });
        }
        kept.push(key.to_string());
    }
    Ok(Some(kept))
}

fn document_field() -> Field {
    Field::new("document", TypeRef::named("Document"), |ctx| {
        FieldFuture::new(async move {
            let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
            let collection_id = opt_string(&ctx, "collectionId")?.unwrap_or_default();
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let collection = model_collection(&ctx, &database_id, &collection_id).await?;
            let select = selection_only(&query_strings(&ctx)?)?;
            let nesting = Nesting::of(&collection, data_model(&ctx)?, select.as_deref())?;
            let kept = kept_attributes(&collection, select.as_deref(), &nesting)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
            let with_permissions = ctx.look_ahead().field("permissions").exists();
            let fields = DocumentFields::selected(ctx.field());
            let Some(mut document) = documents_of(&ctx, &access)?
                .get(&collection, &id, with_permissions, References::ReadableOnly)
                .await?
            else {
                return Ok(None);
            };
            nest(&ctx, &nesting, &access, &mut [&mut document]).await?;
            if let Some(kept) = &kept {
                document.data.retain(|k, _| kept.iter().any(|s| s == k.as_str()));
            }
            Ok(Some(FieldValue::value(document_fields(&collection, &document, fields))))
        })
    })
    .description("A document of any collection, or null when it does not exist or the caller may not read it.")
    .argument(InputValue::new("databaseId", TypeRef::named_nn(TypeRef::ID)))
    .argument(InputValue::new("collectionId", TypeRef::named_nn(TypeRef::ID)))
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
    .argument(InputValue::new("queries", TypeRef::named_nn_list(TypeRef::STRING)).description("`select` queries alone (Appwrite's `getDocument`): the attributes kept, and related documents nested (`author.*`, `author.name`)."))
}

fn create_document_field() -> Field {
    Field::new("createDocument", TypeRef::named("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: CreateDocumentInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("create", input.database_id, input.collection_id)
                    .document(input.id)
                    .data(input.data, input.permissions);
                return staged_document(stage_one(&ctx, transaction, operation).await?);
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let by_key = caller(&ctx)?.key().is_some();
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let mut data = data_object(input.data)?;
            let system = SystemFields::take(&mut data, by_key)?;
            let nesting = given_inline(&collection, data_model(&ctx)?, &data)?;
            let new = NewDocument {
                id: input.id.or(system.id),
                data,
                permissions: input.permissions.or(system.permissions),
                times: system.times,
            };
            let document = documents_of(&ctx, &access)?
                .create(&collection, new, Sharing::Sole)
                .await?;
            Ok(written_nested(&ctx, &collection, &nesting, document).await?)
        })
    })
    .description("Creates a document in any collection; needs the collection's `create` permission (or `documents.write`). All document writes of one request commit together or not at all. Answers null for a document the caller may not read once written.")
    .argument(CreateDocumentInput::argument())
}

fn update_document_field() -> Field {
    Field::new("updateDocument", TypeRef::named("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateDocumentInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                if input.expected_updated_at.is_some() {
                    return Err(AppError::invalid(
                        "expectedUpdatedAt",
                        "a staged write runs when its transaction commits: it takes no `expectedUpdatedAt`",
                    )
                    .into());
                }
                let operation = operation("update", input.database_id, input.collection_id)
                    .document(Some(input.id))
                    .data(input.data.unwrap_or_default(), input.permissions);
                return staged_document(stage_one(&ctx, transaction, operation).await?);
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let by_key = caller(&ctx)?.key().is_some();
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let mut data = input.data.map(data_object).transpose()?.unwrap_or_default();
            let system = SystemFields::take(&mut data, by_key)?;
            let nesting = given_inline(&collection, data_model(&ctx)?, &data)?;
            let changes = DocumentChanges {
                data,
                permissions: input.permissions.or(system.permissions),
                times: system.times,
                operators: true,
                expected_updated_at: input
                    .expected_updated_at
                    .as_deref()
                    .map(|t| crate::graphql::types::parse_datetime("expectedUpdatedAt", t))
                    .transpose()?,
            };
            let document = documents_of(&ctx, &access)?
                .update(&collection, &input.id, changes, References::ReadableOnly)
                .await?;
            Ok(written_nested(&ctx, &collection, &nesting, document).await?)
        })
    })
    .description("Changes a document of any collection; needs `update` permission on the collection or (with document security) on the document. Answers null for a document the caller may not read once written.")
    .argument(UpdateDocumentInput::argument())
}

/// The documents a bulk write answers.
fn written_list(collection: &Collection, documents: &[documents::Document]) -> FieldValue<'static> {
    FieldValue::list(
        documents
            .iter()
            .map(|d| FieldValue::value(document_value(collection, d))),
    )
}

fn create_documents_field() -> Field {
    Field::new("createDocuments", TypeRef::named_nn_list_nn("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: CreateDocumentsInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("bulkCreate", input.database_id, input.collection_id)
                    .data(input.documents.into(), None);
                return staged_list(stage_one(&ctx, transaction, operation).await?);
            }
            let (collection, access, given) = bulk_documents(
                &ctx,
                &input.database_id,
                &input.collection_id,
                input.documents,
            )
            .await?;
            let news = given
                .into_iter()
                .map(|(data, system)| system.into_new(data))
                .collect();
            let created = documents_of(&ctx, &access)?.create_many(&collection, news).await?;
            Ok(Some(written_list(&collection, &created)))
        })
    })
    .description("Creates up to 1000 documents of one collection: all or none (Appwrite's `createDocuments`). Answers those the caller may read once written, in input order.")
    .argument(CreateDocumentsInput::argument())
}

/// What a bulk write of whole documents starts from: at most
/// [`documents::MAX_BULK`] of them, their collection, the caller's access to
/// write, and each document's attribute values apart from its system fields.
async fn bulk_documents(
    ctx: &ResolverContext<'_>,
    database_id: &str,
    collection_id: &str,
    given: Vec<serde_json::Value>,
) -> AppResult<(
    Arc<Collection>,
    Access,
    Vec<(Map<String, serde_json::Value>, SystemFields)>,
)> {
    if given.len() > documents::MAX_BULK {
        return Err(AppError::Invalid {
            code: codes::TOO_MANY_DOCUMENTS,
            field: "documents".into(),
            reason: format!("at most {} documents at once", documents::MAX_BULK),
        });
    }
    let collection = model_collection(ctx, database_id, collection_id).await?;
    let by_key = caller(ctx)?.key().is_some();
    let access = Access::of(caller(ctx)?, documents::DOCUMENTS_WRITE)?;
    let documents = given
        .into_iter()
        .map(|document| {
            let mut data = data_object(document)?;
            let system = SystemFields::take(&mut data, by_key)?;
            Ok((data, system))
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok((collection, access, documents))
}

fn upsert_document_field() -> Field {
    Field::new("upsertDocument", TypeRef::named("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: UpsertDocumentInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("upsert", input.database_id, input.collection_id)
                    .document(Some(input.id))
                    .data(input.data, input.permissions);
                return staged_document(stage_one(&ctx, transaction, operation).await?);
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let by_key = caller(&ctx)?.key().is_some();
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let mut data = data_object(input.data)?;
            let system = SystemFields::take(&mut data, by_key)?;
            if system.times != documents::GivenTimes::default() {
                return Err(AppError::invalid(
                    "data",
                    "an upsert takes no `$createdAt` or `$updatedAt`; create or update the document",
                )
                .into());
            }
            let nesting = given_inline(&collection, data_model(&ctx)?, &data)?;
            let documents = documents_of(&ctx, &access)?;
            let document = documents
                .upsert(&collection, input.id, data, input.permissions.or(system.permissions), true)
                .await?;
            let document = documents
                .readable_references(&collection, document.into_iter().collect())
                .await?
                .pop();
            Ok(written_nested(&ctx, &collection, &nesting, document).await?)
        })
    })
    .description("Creates the document with this id, or changes it when it exists (Appwrite's `upsertDocument`); needs `create` or `update` permission accordingly. Answers null for a document the caller may not read once written.")
    .argument(UpsertDocumentInput::argument())
}

fn upsert_documents_field() -> Field {
    Field::new("upsertDocuments", TypeRef::named_nn_list_nn("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: UpsertDocumentsInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("bulkUpsert", input.database_id, input.collection_id)
                    .data(input.documents.into(), None);
                return staged_list(stage_one(&ctx, transaction, operation).await?);
            }
            let (collection, access, given) = bulk_documents(
                &ctx,
                &input.database_id,
                &input.collection_id,
                input.documents,
            )
            .await?;
            let upserts = upserts_of(given, "documents")?;
            let documents = documents_of(&ctx, &access)?;
            let written = documents.upsert_many(&collection, upserts).await?;
            let written = documents.readable_references(&collection, written).await?;
            Ok(Some(written_list(&collection, &written)))
        })
    })
    .description("Creates or changes up to 1000 documents of one collection: all or none (Appwrite's `upsertDocuments`), each needing `create` or `update` permission as `upsertDocument` does. Answers those the caller may read once written, in input order.")
    .argument(UpsertDocumentsInput::argument())
}

fn update_documents_field() -> Field {
    Field::new("updateDocuments", TypeRef::named_nn_list_nn("Document"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateDocumentsInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("bulkUpdate", input.database_id, input.collection_id)
                    .data(
                        serde_json::json!({"queries": input.queries, "data": input.data}),
                        input.permissions,
                    );
                return staged_list(stage_one(&ctx, transaction, operation).await?);
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let filter = filter_queries(input.queries)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let filter = bulk_reach(data_model(&ctx)?, &collection, &access, filter)?;
            let mut data = input.data.map(data_object).transpose()?.unwrap_or_default();
            let system = SystemFields::take(&mut data, false)?;
            let documents = documents_of(&ctx, &access)?;
            let updated = documents
                .update_matching(&collection, filter, data, input.permissions.or(system.permissions))
                .await?;
            let updated = documents.readable_references(&collection, updated).await?;
            Ok(Some(written_list(&collection, &updated)))
        })
    })
    .description("Sets the same values on the documents that `queries` find and the caller may read, at most 1000 (more is `TOO_MANY_DOCUMENTS`): all or none, each needing its `update` permission (Appwrite's `updateDocuments`). Answers those the caller may read once written.")
    .argument(UpdateDocumentsInput::argument())
}

fn delete_documents_field() -> Field {
    Field::new("deleteDocuments", TypeRef::named_nn("DeleteDocumentsPayload"), |ctx| {
        FieldFuture::new(async move {
            let input: DeleteDocumentsInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("bulkDelete", input.database_id, input.collection_id)
                    .data(serde_json::json!({"queries": input.queries}), None);
                let deleted = match stage_one(&ctx, transaction, operation).await? {
                    Applied::Deleted(ids) => ids,
                    _ => Vec::new(),
                };
                return Ok(Some(FieldValue::value(object([(
                    "deletedIds",
                    Value::List(deleted.into_iter().map(Value::from).collect()),
                )]))));
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let filter = filter_queries(input.queries)?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let filter = bulk_reach(data_model(&ctx)?, &collection, &access, filter)?;
            let deleted = documents_of(&ctx, &access)?
                .delete_matching(&collection, filter)
                .await?;
            Ok(Some(FieldValue::value(object([(
                "deletedIds",
                Value::List(deleted.into_iter().map(Value::from).collect()),
            )]))))
        })
    })
    .description("Deletes the documents that `queries` find and the caller may read, at most 1000 (more is `TOO_MANY_DOCUMENTS`): all or none, each needing its `delete` permission (Appwrite's `deleteDocuments`).")
    .argument(DeleteDocumentsInput::argument())
}

fn step_document_field(up: bool) -> Field {
    let name = if up {
        "incrementDocumentAttribute"
    } else {
        "decrementDocumentAttribute"
    };
    Field::new(name, TypeRef::named("Document"), move |ctx| {
        FieldFuture::new(async move {
            let input: DocumentStepInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let bound = if up { "max" } else { "min" };
                let action = if up { "increment" } else { "decrement" };
                let operation = operation(action, input.database_id, input.collection_id)
                    .document(Some(input.id))
                    .data(
                        serde_json::json!({"attribute": input.attribute, "value": input.value, bound: input.limit}),
                        None,
                    );
                return staged_document(stage_one(&ctx, transaction, operation).await?);
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            let by = input.value.unwrap_or(1.0);
            if !by.is_finite() || by <= 0.0 {
                return Err(AppError::invalid("value", "expected a positive number").into());
            }
            if input.limit.is_some_and(|limit| !limit.is_finite()) {
                return Err(AppError::invalid("limit", "expected a finite number").into());
            }
            let documents = documents_of(&ctx, &access)?;
            let document = documents
                .increment(
                    &collection,
                    &input.id,
                    &input.attribute,
                    if up { by } else { -by },
                    input.limit,
                )
                .await?;
            let document = documents
                .readable_references(&collection, document.into_iter().collect())
                .await?
                .pop();
            Ok(written(&collection, document))
        })
    })
    .description(if up {
        "Adds `value` (default 1) to a numeric attribute of a document, atomically; refused past `limit` or the attribute's `max` (Appwrite's `incrementDocumentAttribute`). Needs `update` permission."
    } else {
        "Subtracts `value` (default 1) from a numeric attribute of a document, atomically; refused below `limit` or the attribute's `min` (Appwrite's `decrementDocumentAttribute`). Needs `update` permission."
    })
    .argument(DocumentStepInput::argument())
}

fn delete_document_field() -> Field {
    Field::new("deleteDocument", TypeRef::named_nn("DeleteDocumentPayload"), |ctx| {
        FieldFuture::new(async move {
            let input: DocumentRefInput = input(&ctx)?;
            if let Some(transaction) = input.transaction_id.as_deref() {
                let operation = operation("delete", input.database_id, input.collection_id)
                    .document(Some(input.id.clone()));
                stage_one(&ctx, transaction, operation).await?;
                return Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))));
            }
            let collection = model_collection(&ctx, &input.database_id, &input.collection_id).await?;
            let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
            documents_of(&ctx, &access)?.delete(&collection, &input.id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
        })
    })
    .description("Deletes a document of any collection; needs `delete` permission on the collection or (with document security) on the document.")
    .argument(DocumentRefInput::argument())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> documents::Document {
        documents::Document {
            id: "d1".into(),
            sequence: 7,
            created_at: 1_000,
            updated_at: 2_000,
            permissions: crate::auth::permissions::parse_permissions(&["read(\"any\")"])
                .expect("a valid permission"),
            data: serde_json::from_str(r#"{"title":"Hi","views":3}"#).unwrap(),
        }
    }

    #[test]
    fn a_node_with_every_field_is_the_document_in_full() {
        let collection = super::super::test_collection(Vec::new());
        assert_eq!(
            document_fields(&collection, &document(), DocumentFields::ALL),
            document_value_in_full(&collection, &document())
        );
    }

    #[tokio::test]
    async fn a_node_holds_the_selected_fields_through_fragments_and_aliases() {
        use async_graphql::dynamic::{Schema, TypeRef};
        use std::sync::Mutex;
        // A root field that records what `DocumentFields::selected` saw.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let query = Object::new("Query").field(Field::new(
            "document",
            TypeRef::named("Document"),
            move |ctx| {
                let record = record.clone();
                FieldFuture::new(async move {
                    let fields = DocumentFields::selected(ctx.field());
                    record.lock().unwrap().push(fields);
                    let collection = super::super::test_collection(Vec::new());
                    Ok(Some(FieldValue::value(document_fields(
                        &collection,
                        &document(),
                        fields,
                    ))))
                })
            },
        ));
        let schema = Schema::build("Query", None, None)
            .register(query)
            .register(document_type())
            .register(async_graphql::dynamic::Scalar::new(JSON))
            .register(async_graphql::dynamic::Scalar::new(DATETIME))
            .finish()
            .expect("a schema");
        let run = async |q: &str| {
            let response = schema.execute(q).await;
            assert!(response.errors.is_empty(), "{q}: {:?}", response.errors);
            response.data.into_json().unwrap()
        };
        assert_eq!(
            run("{ document { data } }").await,
            serde_json::json!({"document": {"data": {"title": "Hi", "views": 3}}})
        );
        assert_eq!(
            run(
                "{ document { when: createdAt ...F ... on Document { permissions } } } \
                 fragment F on Document { id data }"
            )
            .await,
            serde_json::json!({"document": {
                "when": "1970-01-01T00:00:01.000Z", "id": "d1", "data": {"title": "Hi", "views": 3},
                "permissions": ["read(\"any\")"],
            }})
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], DocumentFields(1 << 6));
        assert_eq!(seen[1], DocumentFields(1 << 3 | 1 | 1 << 6 | 1 << 5));
    }
}
