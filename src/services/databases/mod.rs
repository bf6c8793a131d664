//! Databases: a project's databases and their collections, each collection a real
//! table with one typed column per attribute, real indexes, and a side table of
//! document permissions (DESIGN decision 4). Every collection also gets GraphQL
//! types of its own (`typed`), beside a generic, Appwrite-shaped document API.

pub mod appwrite_query;
pub mod create_batch;
pub mod ddl;
pub mod documents;
pub mod filter;
pub mod intents;
pub mod loader;
pub mod matcher;
pub mod model;
pub mod naming;
pub mod nested;
pub mod operators;
pub mod schema;
pub mod service;
pub mod spatial;
pub mod store;
pub mod structure;
pub mod structure_queries;
pub mod transactions;
pub mod transactions_schema;
pub mod tx;
pub mod typed;
pub mod upgrade;
pub mod writes;

use std::sync::Arc;

use crate::auth::permissions::Permission;
use crate::db::Dialect;

pub use schema::register;

use ddl::Index;
use model::{Attribute, SqlDialect};
use naming::GraphqlNames;

/// A database: a named group of collections.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A collection: its table, its attributes and indexes, who may do what, and the
/// names of its GraphQL types.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub project_id: String,
    pub database_id: String,
    pub id: String,
    pub name: String,
    pub names: GraphqlNames,
    /// The physical table (`c_<generated id>`); its permissions are in
    /// `<table>_perms`.
    pub table: String,
    /// Whether each document's own permissions count, beside the collection's.
    pub document_security: bool,
    pub enabled: bool,
    pub permissions: Vec<Permission>,
    pub attributes: Vec<Attribute>,
    pub indexes: Vec<Index>,
    /// The relationships whose reference column is in this collection's table.
    pub relationships: Vec<Relationship>,
    /// Bumped by every structural change; a change applies only to the version it
    /// read.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Whether every document's sole reader (`nimbus_reader`) and its grants'
    /// `sole` marks are filled in (ADR 0022): set for collections made with
    /// them, and by the start-up conversion once it has filled in an older one.
    /// Until then no list reads them.
    pub readers_ready: bool,
}

impl Collection {
    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.key == key)
    }

    pub fn relationship(&self, key: &str) -> Option<&Relationship> {
        self.relationships.iter().find(|r| r.key == key)
    }

    /// Every stored column as an attribute: the attributes, then one id column
    /// per relationship held here (the SQL builders see references as strings).
    pub fn columns(&self) -> Vec<Attribute> {
        let mut columns = self.attributes.clone();
        columns.extend(
            self.relationships
                .iter()
                .filter(|r| r.has_column())
                .map(Relationship::column),
        );
        columns
    }

    /// Whether `key` names an attribute or a relationship of this collection.
    pub fn has_key(&self, key: &str) -> bool {
        self.attribute(key).is_some() || self.relationship(key).is_some()
    }

    /// The channel of the collection's document events.
    pub fn channel(&self) -> String {
        format!(
            "databases.{}.collections.{}.documents",
            self.database_id, self.id
        )
    }
}

/// How many documents a reference joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RelationKind {
    /// Many documents here point at one there (`post.author`); the other side may
    /// list them (`author.posts`).
    ManyToOne,
    /// One document here points at one there, and no two point at the same one.
    OneToOne,
    /// Documents here and there are linked freely, through a junction table.
    ManyToMany,
}

/// What deleting a referenced document does to the documents pointing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnDelete {
    /// The delete is refused while documents point at it.
    Restrict,
    /// They are deleted too.
    Cascade,
    /// Their reference becomes null.
    SetNull,
}

/// A relationship, held by the collection whose table has the reference column
/// (`a_<key>`, the related document's id). A one-to-many relationship is kept as
/// the many-to-one it mirrors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub key: String,
    /// The related collection, in the same database.
    pub related_collection: String,
    pub kind: RelationKind,
    /// The field on the related collection listing (or naming) the documents that
    /// point at it; none for a one-way relationship.
    #[serde(default)]
    pub two_way_key: Option<String>,
    pub on_delete: OnDelete,
    /// The junction table of a many-to-many relationship: `(a_id, b_id)`, this
    /// collection's document and the related one.
    #[serde(default)]
    pub junction: Option<String>,
}

impl Relationship {
    /// Whether the reference is a column of the holder's table (not a junction).
    pub fn has_column(&self) -> bool {
        self.kind != RelationKind::ManyToMany
    }

    /// The reference column, as an attribute the SQL builders understand.
    pub fn column(&self) -> Attribute {
        Attribute {
            key: self.key.clone(),
            kind: model::AttributeKind::String { size: 36 },
            required: false,
            array: false,
            default: None,
        }
    }
}

/// Everything a project's schema needs to know about its data: the collections,
/// in a stable order.
#[derive(Debug, Clone, Default)]
pub struct DataModel {
    pub collections: Vec<Arc<Collection>>,
}

impl DataModel {
    pub fn collection(&self, database_id: &str, id: &str) -> Option<&Arc<Collection>> {
        self.collections
            .iter()
            .find(|c| c.database_id == database_id && c.id == id)
    }

    /// The relationships that point at `target`, with the collection holding each.
    pub fn references_to<'a>(
        &'a self,
        target: &'a Collection,
    ) -> impl Iterator<Item = (&'a Arc<Collection>, &'a Relationship)> + 'a {
        self.collections
            .iter()
            .filter(move |c| c.database_id == target.database_id)
            .flat_map(move |c| {
                c.relationships
                    .iter()
                    .filter(move |r| r.related_collection == target.id)
                    .map(move |r| (c, r))
            })
    }
}

/// The dialect as the SQL builders of this service name it.
pub fn sql_dialect(dialect: Dialect) -> SqlDialect {
    match dialect {
        Dialect::Sqlite => SqlDialect::Sqlite,
        Dialect::MySql => SqlDialect::MySql,
    }
}

/// A `posts` collection in table `c_1` with `attributes`, for tests that need no
/// stored structure.
#[cfg(test)]
pub(crate) fn test_collection(attributes: Vec<Attribute>) -> Collection {
    Collection {
        project_id: "p".into(),
        database_id: "d".into(),
        id: "posts".into(),
        name: "posts".into(),
        names: GraphqlNames::derive("posts", None).expect("a valid name"),
        table: "c_1".into(),
        document_security: false,
        enabled: true,
        permissions: Vec::new(),
        attributes,
        indexes: Vec::new(),
        relationships: Vec::new(),
        version: 1,
        created_at: 0,
        updated_at: 0,
        readers_ready: true,
    }
}
