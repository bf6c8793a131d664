//! Databases: a project's databases and their collections, each collection a real
//! table with one typed column per attribute, real indexes, and a side table of
//! document permissions (DESIGN decision 4). Every collection also gets GraphQL
//! types of its own (`typed`), beside a generic, Appwrite-shaped document API.

pub mod appwrite_query;
pub mod ddl;
pub mod documents;
pub mod filter;
pub mod model;
pub mod naming;
pub mod schema;
pub mod store;
pub mod structure;
pub mod tx;
pub mod typed;

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
    /// Bumped by every structural change; a change applies only to the version it
    /// read.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Collection {
    pub fn attribute(&self, key: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.key == key)
    }

    /// The channel of the collection's document events.
    pub fn channel(&self) -> String {
        format!(
            "databases.{}.collections.{}.documents",
            self.database_id, self.id
        )
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
}

/// The dialect as the SQL builders of this service name it.
pub fn sql_dialect(dialect: Dialect) -> SqlDialect {
    match dialect {
        Dialect::Sqlite => SqlDialect::Sqlite,
        Dialect::MySql => SqlDialect::MySql,
    }
}
