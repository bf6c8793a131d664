//! The services of Nimbus, one folder each. Every service owns its part of the
//! schema (`register`), its domain logic (`service`) and its SQL (`store`).

pub mod account;
pub mod databases;
pub mod keys;
pub mod projects;
pub mod realtime;
pub mod storage;
pub mod teams;
pub mod users;

use crate::graphql::SchemaParts;
use databases::DataModel;
use projects::Project;

/// Adds every service's fields and types to a project's schema.
pub fn register_all(parts: &mut SchemaParts, project: &Project, model: &DataModel) {
    projects::register(parts, project);
    keys::register(parts, project);
    users::register(parts, project);
    account::register(parts, project);
    teams::register(parts, project);
    realtime::register(parts, project);
    databases::register(parts, project, model);
    storage::register(parts, project);
}
