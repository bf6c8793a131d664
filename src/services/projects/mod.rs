//! Projects: the isolated tenants of a server. A `default` project always exists;
//! admin keys create, change and delete the others. Every other service keys its
//! rows by project id, with `ON DELETE CASCADE` to `projects`, so deleting a project
//! deletes everything in it.

pub mod schema;
pub mod service;
pub mod store;

pub use crate::auth::principal::{AuthSettings, Project};
pub use schema::register;

/// The project every server has, addressed when a request names none.
pub const DEFAULT_PROJECT: &str = "default";
