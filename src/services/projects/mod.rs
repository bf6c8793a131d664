//! Projects: the isolated tenants of a server. A `default` project always exists;
//! admin keys create, change and delete the others. Every other service keys its
//! rows by project id, with `ON DELETE CASCADE` to `projects`, so deleting a project
//! deletes everything in it.

pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// The project every server has, addressed when a request names none.
pub const DEFAULT_PROJECT: &str = "default";

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Project {
    /// A project that exists only in memory, for printing a schema without a database.
    pub fn placeholder(id: &str) -> Self {
        Project {
            id: id.to_string(),
            name: id.to_string(),
            description: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }
}
