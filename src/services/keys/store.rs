//! SQL of API keys and of the one-time bootstrap marker.

use sqlx::{Any, AnyPool, Executor, FromRow};

use crate::auth::scopes::Scope;
use crate::db::{Dialect, Page};

use super::ApiKey;

#[derive(Debug, FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub secret_hash: String,
    /// JSON array of scope names.
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ApiKeyRow {
    pub fn to_key(&self) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            project_id: self.project_id.clone(),
            name: self.name.clone(),
            scopes: self.parse_scopes(),
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl ApiKeyRow {
    /// The stored scope names, parsed once. Written by this module only, from known
    /// scopes; an unreadable value or an unknown name would mean a hand-edited row
    /// (or a scope since removed), and grants nothing.
    fn parse_scopes(&self) -> Vec<Scope> {
        let names: Vec<String> = serde_json::from_str(&self.scopes).unwrap_or_else(|_| {
            tracing::warn!(key = %self.id, "an API key's stored scopes are unreadable");
            Vec::new()
        });
        names
            .iter()
            .filter_map(|name| {
                let scope = Scope::from_name(name);
                if scope.is_none() {
                    tracing::warn!(key = %self.id, scope = %name, "an API key holds an unknown scope, ignored");
                }
                scope
            })
            .collect()
    }
}

/// The JSON array of scope names a key row stores.
fn scope_names(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|scope| scope.name()).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

const COLUMNS: &str =
    "id, project_id, name, secret_hash, scopes, expires_at, created_at, updated_at";

pub async fn insert_key<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &ApiKey,
    secret_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&key.id)
    .bind(&key.project_id)
    .bind(&key.name)
    .bind(secret_hash)
    .bind(scope_names(&key.scopes))
    .bind(key.expires_at)
    .bind(key.created_at)
    .bind(key.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_key(pool: &AnyPool, id: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list_keys(
    pool: &AnyPool,
    project_id: &str,
    page: &Page,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE project_id = ?{keyset}");
    binds
        .iter()
        .fold(sqlx::query_as(&sql).bind(project_id), |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

pub async fn count_keys(pool: &AnyPool, project_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE project_id = ?")
        .bind(project_id)
        .fetch_one(pool)
        .await
}

/// Deletes key `id`; false when it did not exist.
pub async fn delete_key<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM api_keys WHERE id = ?")
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Records the server fact `name`; true only for the caller that recorded it first.
pub async fn claim_server_fact<'e>(
    db: impl Executor<'e, Database = Any>,
    dialect: Dialect,
    name: &str,
    value: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "{} INTO server_state (name, value) VALUES (?, ?)",
        dialect.insert_ignore()
    );
    sqlx::query(&sql)
        .bind(name)
        .bind(value)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}
