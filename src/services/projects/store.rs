//! SQL of projects.

use sqlx::{Any, AnyPool, Executor, FromRow};

use crate::db::{Dialect, Page};

use super::Project;

#[derive(Debug, FromRow)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub description: String,
    /// JSON of `AuthSettings`.
    pub auth: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<ProjectRow> for Project {
    fn from(row: ProjectRow) -> Self {
        Project {
            id: row.id,
            name: row.name,
            description: row.description,
            // Written only by this module from `AuthSettings`; unreadable JSON (a
            // hand-edited row) falls back to the defaults.
            auth: serde_json::from_str(&row.auth).unwrap_or_default(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "id, name, description, auth, created_at, updated_at";

pub async fn insert_project<'e>(
    db: impl Executor<'e, Database = Any>,
    project: &Project,
) -> Result<(), sqlx::Error> {
    insert(db, "INSERT", project).await
}

/// Inserts the project unless one with its id exists.
pub async fn insert_project_if_missing<'e>(
    db: impl Executor<'e, Database = Any>,
    dialect: Dialect,
    project: &Project,
) -> Result<(), sqlx::Error> {
    insert(db, dialect.insert_ignore(), project).await
}

async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    verb: &str,
    project: &Project,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "{verb} INTO projects ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(&project.id)
    .bind(&project.name)
    .bind(&project.description)
    .bind(auth_json(project))
    .bind(project.created_at)
    .bind(project.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_project<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM projects WHERE id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Takes the project's row lock for the rest of the transaction (a no-op write,
/// which both backends lock), so that a read-modify-write of its settings sees the
/// last committed change.
pub async fn lock_project(conn: &mut sqlx::AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projects SET updated_at = updated_at WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn list_projects(pool: &AnyPool, page: &Page) -> Result<Vec<ProjectRow>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!("SELECT {COLUMNS} FROM projects WHERE 1 = 1{keyset}");
    binds
        .iter()
        .fold(sqlx::query_as(&sql), |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

pub async fn count_projects(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM projects")
        .fetch_one(pool)
        .await
}

fn auth_json(project: &Project) -> String {
    serde_json::to_string(&project.auth).unwrap_or_else(|_| "{}".into())
}

/// Writes name, description and auth settings; false when no such project exists.
pub async fn update_project<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project: &Project,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE projects SET name = ?, description = ?, auth = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&project.name)
    .bind(&project.description)
    .bind(auth_json(project))
    .bind(project.updated_at)
    .bind(&project.id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Deletes the project and, by cascade, everything in it; false when it did not exist.
pub async fn delete_project<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM projects WHERE id = ?")
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}
