//! Ids that, once given out, are never given out again in a project (teams, users).
//! Permissions name their holders by id and outlive them, so a second holder of a
//! deleted holder's id would inherit its grants. Only the claim is kept: no SQL here
//! reads or removes it, and a project's claims go with the project.

use sqlx::{Any, Executor};

/// A kind of id that permissions name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `team:ID`, `team:ID/ROLE`.
    Team,
    /// `user:ID`, `user:ID/verified`.
    User,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Team => "team",
            Kind::User => "user",
        }
    }
}

/// Claims `id` for good; a unique violation when it was ever claimed before (the
/// holder may since have been deleted). Run it in the transaction that creates the
/// holder, so a failed creation leaves the id free.
pub async fn claim<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    kind: Kind,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO claimed_ids (project_id, kind, id) VALUES (?, ?, ?)")
        .bind(project_id)
        .bind(kind.as_str())
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}
