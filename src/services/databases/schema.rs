//! GraphQL of databases: the structure API (`createDatabase`, `createCollection`,
//! `createAttribute`, `createIndex`, … for API keys with `databases.*`), the
//! generic document API that works for any collection (`documents(queries:)` with
//! Appwrite's query language, `createDocument(data: JSON)`, …), and, through
//! `typed`, the types and fields of each collection.

use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, TypeRef,
};
use async_graphql::{Name, Value};
use serde::Deserialize;
use serde_json::Map;

use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, JSON, app, caller, datetime, input, input_object, json_value, object, opt_string,
    prop,
};
use crate::services::projects::Project;

use super::appwrite_query::parse_query_strings;
use super::ddl::{Index, IndexKind, IndexOrder};
use super::documents::{self, Access, DocumentChanges, ListQuery, NewDocument, Paging};
use super::model::{Attribute, AttributeKind};
use super::structure::{self, CollectionChanges, NewCollection};
use super::tx::{RequestTx, Sharing};
use super::{
    Collection, DataModel, Database, OnDelete, RelationKind, Relationship, sql_dialect, typed,
};

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
    let caller = caller(ctx)?;
    let hidden = || AppError::NotFound {
        what: "document",
        id: id.chars().take(64).collect(),
    };
    let Some(collection) = data_model(ctx)?
        .collection(database_id, collection_id)
        .cloned()
    else {
        return Err(hidden());
    };
    let access = crate::auth::access::Access::of(caller, documents::DOCUMENTS_READ)?;
    let state = app(ctx)?;
    let mut conn = request_tx(ctx)?.reader().await?;
    let found = documents::get(
        &mut conn,
        sql_dialect(state.db.dialect()),
        &collection,
        &access,
        id,
        false,
    )
    .await?;
    found.map(|_| ()).ok_or_else(hidden)
}

fn database_value(database: &Database) -> Value {
    object([
        ("id", Value::from(database.id.as_str())),
        ("name", Value::from(database.name.as_str())),
        ("enabled", Value::from(database.enabled)),
        ("createdAt", datetime(database.created_at)),
        ("updatedAt", datetime(database.updated_at)),
    ])
}

fn attribute_value(attribute: &Attribute) -> Value {
    let (size, min, max, elements) = match &attribute.kind {
        AttributeKind::String { size } => {
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

fn index_value(index: &Index) -> Value {
    let kind = match index.kind {
        IndexKind::Key => "KEY",
        IndexKind::Unique => "UNIQUE",
        IndexKind::Fulltext => "FULLTEXT",
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
    ])
}

fn relationship_value(relationship: &Relationship) -> Value {
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

fn collection_value(collection: &Collection) -> Value {
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
        ("createdAt", datetime(collection.created_at)),
        ("updatedAt", datetime(collection.updated_at)),
    ])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttributeInput {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    size: Option<u32>,
    min: Option<serde_json::Value>,
    max: Option<serde_json::Value>,
    elements: Option<Vec<String>>,
    required: Option<bool>,
    array: Option<bool>,
    default: Option<serde_json::Value>,
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
                code: "ATTRIBUTE_INVALID",
                field: field.into(),
                reason: "not a number of the attribute's type".into(),
            }),
    }
}

impl AttributeInput {
    fn into_attribute(self) -> AppResult<Attribute> {
        let kind = match self.kind.as_str() {
            "STRING" => AttributeKind::String {
                size: self.size.ok_or_else(|| AppError::Invalid {
                    code: "ATTRIBUTE_INVALID",
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
            other => {
                return Err(AppError::Invalid {
                    code: "ATTRIBUTE_INVALID",
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IndexInput {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    attributes: Vec<String>,
    orders: Option<Vec<String>>,
}

impl IndexInput {
    fn into_index(self) -> AppResult<Index> {
        let invalid = |reason: String| AppError::Invalid {
            code: "INDEX_INVALID",
            field: "index".into(),
            reason,
        };
        let kind = match self.kind.as_str() {
            "KEY" => IndexKind::Key,
            "UNIQUE" => IndexKind::Unique,
            "FULLTEXT" => IndexKind::Fulltext,
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
        Ok(Index {
            key: self.key,
            kind,
            attributes: self.attributes,
            orders,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateDatabaseInput {
    id: Option<String>,
    name: String,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateDatabaseInput {
    id: String,
    name: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateCollectionInput {
    database_id: String,
    id: Option<String>,
    name: String,
    graphql_name: Option<String>,
    document_security: Option<bool>,
    enabled: Option<bool>,
    permissions: Option<Vec<String>>,
    attributes: Option<Vec<AttributeInput>>,
    indexes: Option<Vec<IndexInput>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateCollectionInput {
    database_id: String,
    id: String,
    name: Option<String>,
    document_security: Option<bool>,
    enabled: Option<bool>,
    permissions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CollectionRefInput {
    database_id: String,
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAttributeInput {
    database_id: String,
    collection_id: String,
    attribute: AttributeInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRelationshipInput {
    database_id: String,
    collection_id: String,
    key: String,
    related_collection_id: String,
    #[serde(rename = "type")]
    kind: String,
    two_way_key: Option<String>,
    on_delete: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateIndexInput {
    database_id: String,
    collection_id: String,
    index: IndexInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRefInput {
    database_id: String,
    collection_id: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateDocumentInput {
    database_id: String,
    collection_id: String,
    id: Option<String>,
    data: serde_json::Value,
    permissions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateDocumentInput {
    database_id: String,
    collection_id: String,
    id: String,
    data: Option<serde_json::Value>,
    permissions: Option<Vec<String>>,
    expected_updated_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DocumentRefInput {
    database_id: String,
    collection_id: String,
    id: String,
}

/// `data` of a document write: a JSON object.
pub(crate) fn data_object(value: serde_json::Value) -> AppResult<Map<String, serde_json::Value>> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(AppError::invalid(
            "data",
            "expected a JSON object of attribute values",
        )),
    }
}

/// The collection a generic document operation names, from the project's model.
fn model_collection(
    ctx: &ResolverContext<'_>,
    database_id: &str,
    collection_id: &str,
) -> AppResult<Arc<Collection>> {
    data_model(ctx)?
        .collection(database_id, collection_id)
        .cloned()
        .ok_or_else(|| AppError::NotFound {
            what: "collection",
            id: collection_id.chars().take(64).collect(),
        })
}

fn document_value(collection: &Collection, document: &documents::Document) -> Value {
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
    ])
}

/// What a mutation answers for a document it wrote: the document when the
/// caller may read it as the write left it, null otherwise (a caller may write
/// what it may not read, and learns no more of it by writing).
fn written(
    collection: &Collection,
    access: &Access,
    document: &documents::Document,
) -> Option<FieldValue<'static>> {
    documents::may_read(collection, access, document)
        .then(|| FieldValue::value(document_value(collection, document)))
}

pub fn register(parts: &mut SchemaParts, _project: &Project, model: &DataModel) {
    register_types(parts);
    typed::register_shared(parts);
    register_structure(parts);
    register_documents(parts);
    for collection in &model.collections {
        typed::register_collection(parts, collection.clone(), model);
    }
}

fn register_types(parts: &mut SchemaParts) {
    let id = || TypeRef::named_nn(TypeRef::ID);
    let string = || TypeRef::named_nn(TypeRef::STRING);
    let boolean = || TypeRef::named_nn(TypeRef::BOOLEAN);
    let time = || TypeRef::named_nn(DATETIME);
    parts.add_type(
        Enum::new("AttributeType")
            .description("The type of an attribute's values.")
            .items([
                "STRING", "INTEGER", "FLOAT", "BOOLEAN", "DATETIME", "EMAIL", "URL", "IP", "ENUM",
            ]),
    );
    parts.add_type(
        Enum::new("IndexType")
            .description("What an index does: speed up lookups and orders (KEY), also refuse duplicates (UNIQUE), or serve `search` (FULLTEXT).")
            .items(["KEY", "UNIQUE", "FULLTEXT"]),
    );
    parts.add_type(
        Enum::new("OrderDirection")
            .description("Ascending (nulls first) or descending (nulls last).")
            .items(["ASC", "DESC"]),
    );
    parts.add_type(
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
            .field(prop("updatedAt", time(), "When it last changed.")),
    );
    parts.add_type(
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
                "STRING: the most characters.",
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
            )),
    );
    parts.add_type(
        Object::new("Index")
            .description("An index of a collection: a real index of its table.")
            .field(prop("key", string(), "The index's key."))
            .field(prop("type", TypeRef::named_nn("IndexType"), "What it does."))
            .field(prop("attributes", TypeRef::named_nn_list_nn(TypeRef::STRING), "The attribute keys it covers, in order (`$id`, `$createdAt`, `$updatedAt` for the system fields)."))
            .field(prop("orders", TypeRef::named_nn_list_nn("OrderDirection"), "The order of each attribute (empty: ascending).")),
    );
    parts.add_type(
        Enum::new("RelationshipType")
            .description("How documents of two collections refer to each other. ONE_TO_MANY is stored as the MANY_TO_ONE it mirrors, on the related collection; MANY_TO_MANY links through a table of its own.")
            .items(["MANY_TO_ONE", "ONE_TO_ONE", "ONE_TO_MANY", "MANY_TO_MANY"]),
    );
    parts.add_type(
        Enum::new("OnDeleteRule")
            .description("What deleting a referenced document does to the documents pointing at it: refuse (RESTRICT), delete them too (CASCADE), or clear their reference (SET_NULL).")
            .items(["RESTRICT", "CASCADE", "SET_NULL"]),
    );
    parts.add_type(
        Object::new("Relationship")
            .description("A reference from this collection's documents to another collection's: a column holding the referenced id.")
            .field(prop("key", string(), "The field holding the reference (`post.author`)."))
            .field(prop("relatedCollectionId", id(), "The referenced collection."))
            .field(prop("type", TypeRef::named_nn("RelationshipType"), "MANY_TO_ONE, ONE_TO_ONE or MANY_TO_MANY."))
            .field(prop("twoWayKey", TypeRef::named(TypeRef::STRING), "The field on the referenced collection that lists (or names) the documents pointing at it."))
            .field(prop("onDelete", TypeRef::named_nn("OnDeleteRule"), "What deleting a referenced document does.")),
    );
    parts.add_type(input_object(
        "CreateRelationshipInput",
        "A relationship to add.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection whose documents get the field `key`."),
            ("key", string(), "The field: for MANY_TO_ONE / ONE_TO_ONE the reference (`author`), for ONE_TO_MANY the list (`posts`)."),
            ("relatedCollectionId", id(), "The other collection, in the same database."),
            ("type", TypeRef::named_nn("RelationshipType"), "How they refer to each other."),
            ("twoWayKey", TypeRef::named(TypeRef::STRING), "The field on the other collection: the reverse list (or document); for ONE_TO_MANY the reference, required."),
            ("onDelete", TypeRef::named("OnDeleteRule"), "What deleting a referenced document does (default RESTRICT)."),
        ],
    ));
    parts.add_type(
        Object::new("Collection")
            .description("A set of documents with the same attributes: a table of its own, with GraphQL types of its own.")
            .field(prop("id", id(), "Unique id within its database."))
            .field(prop("databaseId", id(), "Its database."))
            .field(prop("name", string(), "Display name."))
            .field(prop("graphqlName", string(), "The name of its GraphQL type (e.g. `Post`, with the fields `post`, `posts`, `createPost`, …)."))
            .field(prop("documentSecurity", boolean(), "Whether each document's own permissions count beside the collection's."))
            .field(prop("enabled", boolean(), "Whether clients can reach its documents."))
            .field(prop("permissions", TypeRef::named_nn_list_nn(TypeRef::STRING), "Who may read, create, update and delete its documents, e.g. `read(\"any\")`."))
            .field(prop("attributes", TypeRef::named_nn_list_nn("Attribute"), "Its attributes."))
            .field(prop("indexes", TypeRef::named_nn_list_nn("Index"), "Its indexes."))
            .field(prop("relationships", TypeRef::named_nn_list_nn("Relationship"), "The references its documents hold."))
            .field(prop("createdAt", time(), "When it was created."))
            .field(prop("updatedAt", time(), "When it last changed.")),
    );
    parts.add_type(
        Object::new("Document")
            .description("A document of any collection, in the generic API: its attribute values as one JSON object.")
            .field(prop("id", id(), "Unique id within its collection."))
            .field(prop("databaseId", id(), "Its database."))
            .field(prop("collectionId", id(), "Its collection."))
            .field(prop("createdAt", time(), "When it was created."))
            .field(prop("updatedAt", time(), "When it last changed."))
            .field(prop("permissions", TypeRef::named_nn_list_nn(TypeRef::STRING), "Its own permissions (used when the collection has document security)."))
            .field(prop("data", TypeRef::named_nn(JSON), "Its attribute values, by key.")),
    );
    parts.add_type(
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
            )),
    );
    parts.add_type(
        InputObject::new("AttributeInput")
            .description("An attribute to add.")
            .field(InputValue::new("key", string()).description("1-64 of a-z, A-Z, 0-9, `_`, starting with a letter; not `id`, `createdAt`, `updatedAt`, `permissions`."))
            .field(InputValue::new("type", TypeRef::named_nn("AttributeType")).description("The type of its values."))
            .field(InputValue::new("size", TypeRef::named(TypeRef::INT)).description("STRING: the most characters (required)."))
            .field(InputValue::new("min", TypeRef::named(JSON)).description("INTEGER, FLOAT: the smallest value allowed."))
            .field(InputValue::new("max", TypeRef::named(JSON)).description("INTEGER, FLOAT: the largest value allowed."))
            .field(InputValue::new("elements", TypeRef::named_nn_list(TypeRef::STRING)).description("ENUM: the allowed values."))
            .field(InputValue::new("required", TypeRef::named(TypeRef::BOOLEAN)).description("Every document must have a value (default false)."))
            .field(InputValue::new("array", TypeRef::named(TypeRef::BOOLEAN)).description("A list of values (default false)."))
            .field(InputValue::new("default", TypeRef::named(JSON)).description("The value of documents that give none (not with `required`).")),
    );
    parts.add_type(
        InputObject::new("IndexInput")
            .description("An index to add.")
            .field(
                InputValue::new("key", string())
                    .description("The index's key, unique in the collection."),
            )
            .field(
                InputValue::new("type", TypeRef::named_nn("IndexType"))
                    .description("What it does."),
            )
            .field(
                InputValue::new("attributes", TypeRef::named_nn_list_nn(TypeRef::STRING))
                    .description("1 to 8 attribute keys."),
            )
            .field(
                InputValue::new("orders", TypeRef::named_nn_list("OrderDirection"))
                    .description("The order of each attribute."),
            ),
    );
    parts.add_type(input_object(
        "CreateDatabaseInput",
        "A new database.",
        &[
            (
                "id",
                TypeRef::named(TypeRef::ID),
                "Its id (generated when omitted or `unique()`).",
            ),
            ("name", string(), "Display name."),
            (
                "enabled",
                TypeRef::named(TypeRef::BOOLEAN),
                "Whether clients can reach it (default true).",
            ),
        ],
    ));
    parts.add_type(input_object(
        "UpdateDatabaseInput",
        "Changes to a database.",
        &[
            ("id", id(), "The database."),
            ("name", TypeRef::named(TypeRef::STRING), "New name."),
            (
                "enabled",
                TypeRef::named(TypeRef::BOOLEAN),
                "Whether clients can reach it.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "DeleteDatabaseInput",
        "The database to delete, with its collections and documents.",
        &[("id", id(), "The database.")],
    ));
    parts.add_type(input_object(
        "CreateCollectionInput",
        "A new collection.",
        &[
            ("databaseId", id(), "Its database."),
            ("id", TypeRef::named(TypeRef::ID), "Its id (generated when omitted or `unique()`)."),
            ("name", string(), "Display name; its GraphQL names derive from it (`blog posts` → `BlogPost`, `blogPosts`) unless `graphqlName` is given."),
            ("graphqlName", TypeRef::named(TypeRef::STRING), "The GraphQL type name to use, e.g. `Post`."),
            ("documentSecurity", TypeRef::named(TypeRef::BOOLEAN), "Whether each document's own permissions count (default false)."),
            ("enabled", TypeRef::named(TypeRef::BOOLEAN), "Whether clients can reach it (default true)."),
            ("permissions", TypeRef::named_nn_list(TypeRef::STRING), "Collection permissions, e.g. `read(\"any\")`, `create(\"users\")`."),
            ("attributes", TypeRef::named_nn_list("AttributeInput"), "Its attributes."),
            ("indexes", TypeRef::named_nn_list("IndexInput"), "Its indexes."),
        ],
    ));
    parts.add_type(input_object(
        "UpdateCollectionInput",
        "Changes to a collection's settings.",
        &[
            ("databaseId", id(), "Its database."),
            ("id", id(), "The collection."),
            (
                "name",
                TypeRef::named(TypeRef::STRING),
                "New display name (its GraphQL names stay).",
            ),
            (
                "documentSecurity",
                TypeRef::named(TypeRef::BOOLEAN),
                "Whether each document's own permissions count.",
            ),
            (
                "enabled",
                TypeRef::named(TypeRef::BOOLEAN),
                "Whether clients can reach it.",
            ),
            (
                "permissions",
                TypeRef::named_nn_list(TypeRef::STRING),
                "Replace the collection permissions.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "DeleteCollectionInput",
        "The collection to delete, with its documents.",
        &[
            ("databaseId", id(), "Its database."),
            ("id", id(), "The collection."),
        ],
    ));
    parts.add_type(input_object(
        "CreateAttributeInput",
        "An attribute to add to a collection; existing documents get its default, or null.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            (
                "attribute",
                TypeRef::named_nn("AttributeInput"),
                "The attribute.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "DeleteAttributeInput",
        "An attribute to remove, with its values and the indexes using it.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            ("key", string(), "The attribute's key."),
        ],
    ));
    parts.add_type(input_object(
        "CreateIndexInput",
        "An index to add to a collection.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            ("index", TypeRef::named_nn("IndexInput"), "The index."),
        ],
    ));
    parts.add_type(input_object(
        "DeleteIndexInput",
        "An index to remove.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            ("key", string(), "The index's key."),
        ],
    ));
    parts.add_type(input_object(
        "CreateDocumentInput",
        "A document for any collection.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            (
                "id",
                TypeRef::named(TypeRef::ID),
                "Its id (generated when omitted or `unique()`).",
            ),
            ("data", TypeRef::named_nn(JSON), "Attribute values by key."),
            (
                "permissions",
                TypeRef::named_nn_list(TypeRef::STRING),
                "Its permissions; omitted: the signed-in creator may read, update and delete it.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "UpdateDocumentInput",
        "Changes to a document of any collection.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            ("id", id(), "The document."),
            (
                "data",
                TypeRef::named(JSON),
                "Attribute values to set, by key.",
            ),
            (
                "permissions",
                TypeRef::named_nn_list(TypeRef::STRING),
                "Replace its permissions.",
            ),
            (
                "expectedUpdatedAt",
                TypeRef::named(DATETIME),
                "Refuse (`DOCUMENT_CHANGED`) unless the document's `updatedAt` is still this.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "DeleteDocumentInput",
        "A document to delete.",
        &[
            ("databaseId", id(), "The database."),
            ("collectionId", id(), "The collection."),
            ("id", id(), "The document."),
        ],
    ));
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

fn register_structure(parts: &mut SchemaParts) {
    parts.query(
        Field::new("databases", TypeRef::named_nn_list_nn("Database"), |ctx| {
            FieldFuture::new(async move {
                let list = structure::list_databases(app(&ctx)?, &caller(&ctx)?.require()?).await?;
                Ok(Some(FieldValue::list(
                    list.iter().map(|d| FieldValue::value(database_value(d))),
                )))
            })
        })
        .description("The project's databases (scope `databases.read`)."),
    );
    parts.query(
        Field::new("database", TypeRef::named_nn("Database"), |ctx| {
            FieldFuture::new(async move {
                let id = opt_string(&ctx, "id")?.unwrap_or_default();
                let database =
                    structure::get_database(app(&ctx)?, &caller(&ctx)?.require()?, &id).await?;
                Ok(Some(FieldValue::value(database_value(&database))))
            })
        })
        .description("A database (scope `databases.read`).")
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
    );
    parts.query(
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
        )),
    );
    parts.query(
        Field::new("collection", TypeRef::named_nn("Collection"), |ctx| {
            FieldFuture::new(async move {
                let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
                let id = opt_string(&ctx, "id")?.unwrap_or_default();
                let collection = structure::get_collection(
                    app(&ctx)?,
                    &caller(&ctx)?.require()?,
                    &database_id,
                    &id,
                )
                .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        })
        .description("A collection with its attributes and indexes (scope `databases.read`).")
        .argument(InputValue::new(
            "databaseId",
            TypeRef::named_nn(TypeRef::ID),
        ))
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
    );
    let mutation = |parts: &mut SchemaParts,
                    name: &'static str,
                    returns: &'static str,
                    input_type: &'static str,
                    about: &'static str,
                    run: fn(ResolverContext<'_>) -> FieldFuture<'_>| {
        parts.mutation(
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
                .argument(InputValue::new("input", TypeRef::named_nn(input_type))),
        );
    };
    mutation(
        parts,
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
    );
    mutation(
        parts,
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
    );
    mutation(
        parts,
        "deleteDatabase",
        "DeleteDatabasePayload",
        "DeleteDatabaseInput",
        "Deletes a database with its collections and documents (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: crate::graphql::types::IdInput = input(&ctx)?;
                structure::delete_database(app(&ctx)?, &caller(&ctx)?.require()?, &input.id)
                    .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    );
    mutation(
        parts,
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
    );
    mutation(
        parts,
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
    );
    mutation(
        parts,
        "deleteCollection",
        "DeleteCollectionPayload",
        "DeleteCollectionInput",
        "Deletes a collection with its documents (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: CollectionRefInput = input(&ctx)?;
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
    );
    mutation(
        parts,
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
    );
    mutation(
        parts,
        "deleteAttribute",
        "Collection",
        "DeleteAttributeInput",
        "Removes an attribute, its values and the indexes using it (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: KeyRefInput = input(&ctx)?;
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
    );
    mutation(
        parts,
        "createRelationship",
        "Collection",
        "CreateRelationshipInput",
        "Adds a relationship between two collections; returns the collection holding the reference (scope `databases.write`). Remove it with `deleteAttribute` and its key.",
        |ctx| {
            FieldFuture::new(async move {
                let input: CreateRelationshipInput = input(&ctx)?;
                let on_delete = match input.on_delete.as_deref() {
                    None | Some("RESTRICT") => OnDelete::Restrict,
                    Some("CASCADE") => OnDelete::Cascade,
                    Some("SET_NULL") => OnDelete::SetNull,
                    Some(other) => {
                        return Err(AppError::invalid(
                            "onDelete",
                            format!("unknown rule `{other}`"),
                        )
                        .into());
                    }
                };
                let new = structure::NewRelationship {
                    database_id: input.database_id,
                    collection_id: input.collection_id,
                    key: input.key,
                    related_collection_id: input.related_collection_id,
                    kind: input.kind,
                    two_way_key: input.two_way_key,
                    on_delete,
                };
                let collection =
                    structure::create_relationship(app(&ctx)?, &caller(&ctx)?.require()?, new)
                        .await?;
                Ok(Some(FieldValue::value(collection_value(&collection))))
            })
        },
    );
    mutation(
        parts,
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
    );
    mutation(
        parts,
        "deleteIndex",
        "Collection",
        "DeleteIndexInput",
        "Removes an index (scope `databases.write`).",
        |ctx| {
            FieldFuture::new(async move {
                let input: KeyRefInput = input(&ctx)?;
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
    );
}

fn register_documents(parts: &mut SchemaParts) {
    parts.query(
        Field::new("documents", TypeRef::named_nn("DocumentList"), |ctx| {
            FieldFuture::new(async move {
                let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
                let collection_id = opt_string(&ctx, "collectionId")?.unwrap_or_default();
                let collection = model_collection(&ctx, &database_id, &collection_id)?;
                let queries: Vec<String> = match ctx.args.get("queries") {
                    Some(list) if !list.is_null() => list
                        .list()
                        .map_err(|_| AppError::invalid("queries", "expected a list of strings"))?
                        .iter()
                        .map(|q| q.string().map(String::from))
                        .collect::<Result<_, _>>()
                        .map_err(|_| AppError::invalid("queries", "expected a list of strings"))?,
                    _ => Vec::new(),
                };
                let parsed = parse_query_strings(&queries).map_err(|err| AppError::Invalid {
                    code: err.code(),
                    field: "queries".into(),
                    reason: err.to_string(),
                })?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
                documents::check_reference_conditions(&collection, data_model(&ctx)?, &access, &parsed.filter, &parsed.orders)?;
                let state = app(&ctx)?;
                let dialect = sql_dialect(state.db.dialect());
                let tx = request_tx(&ctx)?;
                let mut conn = tx.reader().await?;
                let after = match &parsed.cursor_after {
                    Some(id) => Some(documents::cursor_of(&mut conn, dialect, &collection, &access, &parsed.orders, id).await?),
                    None => None,
                };
                let before = match &parsed.cursor_before {
                    Some(id) => Some(documents::cursor_of(&mut conn, dialect, &collection, &access, &parsed.orders, id).await?),
                    None => None,
                };
                let limit = parsed.limit.unwrap_or(25) as usize;
                let paging = match (parsed.offset, &after, &before) {
                    (Some(offset), None, None) => Paging::Offset { limit, offset: offset as usize },
                    (Some(_), _, _) => return Err(AppError::invalid("queries", "use `offset` or a cursor, not both").into()),
                    _ => Paging::Keyset { from_end: before.is_some(), after, before, limit },
                };
                let query = ListQuery {
                    filter: parsed.filter,
                    orders: parsed.orders,
                    paging,
                    want_total: ctx.look_ahead().field("total").exists(),
                    want_permissions: true,
                    only: None,
                    want_more: true,
                    want_cursors: false,
                };
                let mut listed = documents::list(&mut conn, dialect, &collection, &access, &query).await?;
                let mut page: Vec<documents::Document> = listed.documents.drain(..).map(|(d, _)| d).collect();
                documents::hide_unreadable_references(&mut conn, dialect, &collection, &access, data_model(&ctx)?, &mut page).await?;
                let mut documents_value = Vec::with_capacity(page.len());
                for document in &page {
                    let mut value = document_value(&collection, document);
                    if let (Some(select), Value::Object(map)) = (&parsed.select, &mut value)
                        && let Some(Value::Object(data)) = map.get_mut("data")
                    {
                        data.retain(|k, _| select.iter().any(|s| s == k.as_str()));
                    }
                    documents_value.push(value);
                }
                Ok(Some(FieldValue::value(object([
                    ("total", listed.total.map(Value::from).unwrap_or(Value::Null)),
                    ("documents", Value::List(documents_value)),
                ]))))
            })
        })
        .description("Documents of any collection, found with Appwrite's query language: each query a JSON string such as `{\"method\":\"equal\",\"attribute\":\"title\",\"values\":[\"Hi\"]}`. Only documents the caller may read are returned and counted.")
        .argument(InputValue::new("databaseId", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new("collectionId", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new("queries", TypeRef::named_nn_list(TypeRef::STRING)).description("Queries (filters, `orderAsc`, `cursorAfter`, `limit` ≤ 1000, `offset`, `select`, `and`, `or`).")),
    );
    parts.query(
        Field::new("document", TypeRef::named("Document"), |ctx| {
            FieldFuture::new(async move {
                let database_id = opt_string(&ctx, "databaseId")?.unwrap_or_default();
                let collection_id = opt_string(&ctx, "collectionId")?.unwrap_or_default();
                let id = opt_string(&ctx, "id")?.unwrap_or_default();
                let collection = model_collection(&ctx, &database_id, &collection_id)?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_READ)?;
                let state = app(&ctx)?;
                let mut conn = request_tx(&ctx)?.reader().await?;
                let with_permissions = ctx.look_ahead().field("permissions").exists();
                let dialect = sql_dialect(state.db.dialect());
                let Some(document) = documents::get(&mut conn, dialect, &collection, &access, &id, with_permissions).await? else {
                    return Ok(None);
                };
                let mut found = [document];
                documents::hide_unreadable_references(&mut conn, dialect, &collection, &access, data_model(&ctx)?, &mut found).await?;
                let [document] = found;
                Ok(Some(FieldValue::value(document_value(&collection, &document))))
            })
        })
        .description("A document of any collection, or null when it does not exist or the caller may not read it.")
        .argument(InputValue::new("databaseId", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new("collectionId", TypeRef::named_nn(TypeRef::ID)))
        .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
    );
    parts.mutation(
        Field::new("createDocument", TypeRef::named("Document"), |ctx| {
            FieldFuture::new(async move {
                let input: CreateDocumentInput = input(&ctx)?;
                let collection = model_collection(&ctx, &input.database_id, &input.collection_id)?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let tx = request_tx(&ctx)?;
                let new = NewDocument {
                    id: input.id,
                    data: data_object(input.data)?,
                    permissions: input.permissions,
                };
                let document = tx.create(&collection, &access, new, data_model(&ctx)?, Sharing::Sole).await?;
                tx.publish_after_commit(documents::event(&collection, &document, "create", None));
                Ok(written(&collection, &access, &document))
            })
        })
        .description("Creates a document in any collection; needs the collection's `create` permission (or `documents.write`). All document writes of one request commit together or not at all. Answers null for a document the caller may not read once written.")
        .argument(InputValue::new("input", TypeRef::named_nn("CreateDocumentInput"))),
    );
    parts.mutation(
        Field::new("updateDocument", TypeRef::named("Document"), |ctx| {
            FieldFuture::new(async move {
                let input: UpdateDocumentInput = input(&ctx)?;
                let collection = model_collection(&ctx, &input.database_id, &input.collection_id)?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let state = app(&ctx)?;
                let tx = request_tx(&ctx)?;
                let changes = DocumentChanges {
                    data: input.data.map(data_object).transpose()?.unwrap_or_default(),
                    permissions: input.permissions,
                    expected_updated_at: input
                        .expected_updated_at
                        .as_deref()
                        .map(|t| crate::graphql::types::parse_datetime("expectedUpdatedAt", t))
                        .transpose()?,
                };
                let dialect = sql_dialect(state.db.dialect());
                let model = data_model(&ctx)?;
                let (previous, document, shown) = {
                    let mut op = tx.writer().await?;
                    let result = async {
                        let (previous, document) = documents::update(&mut op, dialect, &collection, &access, &input.id, changes, model).await?;
                        // The answer, like a read, shows only references the caller may read.
                        let mut shown = [document.clone()];
                        documents::hide_unreadable_references(&mut op, dialect, &collection, &access, model, &mut shown).await?;
                        let [shown] = shown;
                        Ok((previous, document, shown))
                    }
                    .await;
                    op.end(result)?
                };
                tx.publish_after_commit(documents::event(&collection, &document, "update", Some(&previous)));
                Ok(written(&collection, &access, &shown))
            })
        })
        .description("Changes a document of any collection; needs `update` permission on the collection or (with document security) on the document. Answers null for a document the caller may not read once written.")
        .argument(InputValue::new("input", TypeRef::named_nn("UpdateDocumentInput"))),
    );
    parts.mutation(
        Field::new("deleteDocument", TypeRef::named_nn("DeleteDocumentPayload"), |ctx| {
            FieldFuture::new(async move {
                let input: DocumentRefInput = input(&ctx)?;
                let collection = model_collection(&ctx, &input.database_id, &input.collection_id)?;
                let access = Access::of(caller(&ctx)?, documents::DOCUMENTS_WRITE)?;
                let state = app(&ctx)?;
                let tx = request_tx(&ctx)?;
                let deleted = {
                    let mut op = tx.writer().await?;
                    let result = documents::delete(&mut op, sql_dialect(state.db.dialect()), &collection, &access, &input.id, data_model(&ctx)?).await;
                    op.end(result)?
                };
                for (holder, document) in &deleted {
                    tx.publish_after_commit(documents::event(holder, document, "delete", None));
                }
                Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
            })
        })
        .description("Deletes a document of any collection; needs `delete` permission on the collection or (with document security) on the document.")
        .argument(InputValue::new("input", TypeRef::named_nn("DeleteDocumentInput"))),
    );
}
