//! Users and their sessions: the people who sign in to a project's apps. The
//! `users` API is the server side (API keys with `users.*` scopes); the `account`
//! service is the same data seen by the signed-in user.

pub mod schema;
pub mod service;
pub mod store;

pub use crate::auth::principal::{Session, User};
pub use schema::register;
