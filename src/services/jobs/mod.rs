//! The administrators' view of a project's background jobs (see [`crate::jobs`]):
//! list them by status and kind, read one, retry a dead one, delete one.

pub mod schema;
pub mod service;

pub use schema::register;
