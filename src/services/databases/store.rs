//! The metadata rows of databases and collections. A collection's attributes,
//! indexes and permissions are JSON columns of its row; `version` guards each
//! structural change against a concurrent one.

use sqlx::any::AnyRow;

use crate::db::columns::{corrupt, json, text};
use sqlx::{Any, AnyPool, Executor, Row as _};

use crate::auth::permissions::parse_permissions;

use super::naming::GraphqlNames;
use super::{Collection, Database};

fn database_from(row: &AnyRow) -> Result<Database, sqlx::Error> {
    Ok(Database {
        project_id: row.try_get("project_id")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        enabled: row.try_get::<i16, _>("enabled")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const DATABASE_COLUMNS: &str = "project_id, id, name, enabled, created_at, updated_at";

pub async fn insert_database(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO db_databases ({DATABASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(&db.project_id)
    .bind(&db.id)
    .bind(&db.name)
    .bind(i16::from(db.enabled))
    .bind(db.created_at)
    .bind(db.updated_at)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn find_database(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<Database>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {DATABASE_COLUMNS} FROM db_databases WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(database_from)
    .transpose()
}

pub async fn list_databases(
    pool: &AnyPool,
    project_id: &str,
) -> Result<Vec<Database>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {DATABASE_COLUMNS} FROM db_databases WHERE project_id = ? ORDER BY id"
    ))
    .bind(project_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(database_from)
    .collect()
}

pub async fn update_database<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    db: &Database,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE db_databases SET name = ?, enabled = ?, updated_at = ? WHERE project_id = ? AND id = ?",
    )
    .bind(&db.name)
    .bind(i16::from(db.enabled))
    .bind(db.updated_at)
    .bind(&db.project_id)
    .bind(&db.id)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn delete_database<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM db_databases WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

const COLLECTION_COLUMNS: &str = "project_id, database_id, id, name, type_name, table_name, document_security, enabled, permissions, attributes, indexes, relationships, version, created_at, updated_at";

/// What a read of collections selects: [`COLLECTION_COLUMNS`] and the mark the
/// start-up conversion sets (written by it alone; a new row takes its default, 1).
const COLLECTION_READ_COLUMNS: &str = "project_id, database_id, id, name, type_name, table_name, document_security, enabled, permissions, attributes, indexes, relationships, version, created_at, updated_at, readers_ready";

fn collection_from(row: &AnyRow) -> Result<Collection, sqlx::Error> {
    let type_name: String = row.try_get("type_name")?;
    // Every name derives from the type name alone.
    let names = GraphqlNames::derive(&type_name, Some(&type_name))
        .map_err(|e| corrupt("GraphQL names", e.message()))?;
    let permissions: Vec<String> =
        serde_json::from_str(&text(row, "permissions")?).map_err(|e| corrupt("permissions", e))?;
    Ok(Collection {
        project_id: row.try_get("project_id")?,
        database_id: row.try_get("database_id")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        names,
        table: row.try_get("table_name")?,
        document_security: row.try_get::<i16, _>("document_security")? != 0,
        enabled: row.try_get::<i16, _>("enabled")? != 0,
        permissions: parse_permissions(&permissions).map_err(|e| corrupt("permissions", e))?,
        attributes: serde_json::from_str(&text(row, "attributes")?)
            .map_err(|e| corrupt("attributes", e))?,
        indexes: serde_json::from_str(&text(row, "indexes")?).map_err(|e| corrupt("indexes", e))?,
        relationships: serde_json::from_str(&text(row, "relationships")?)
            .map_err(|e| corrupt("relationships", e))?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        readers_ready: row.try_get::<i16, _>("readers_ready")? != 0,
    })
}

fn permission_strings(collection: &Collection) -> Vec<String> {
    collection
        .permissions
        .iter()
        .map(|p| p.to_string())
        .collect()
}

pub async fn insert_collection<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &Collection,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO db_collections ({COLLECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&c.project_id)
    .bind(&c.database_id)
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.names.type_name)
    .bind(&c.table)
    .bind(i16::from(c.document_security))
    .bind(i16::from(c.enabled))
    .bind(json(&permission_strings(c)))
    .bind(json(&c.attributes))
    .bind(json(&c.indexes))
    .bind(json(&c.relationships))
    .bind(c.version)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Writes a changed collection if nobody changed it since `c.version - 1` was
/// read; false when someone did.
pub async fn update_collection<'e>(
    db: impl Executor<'e, Database = Any>,
    c: &Collection,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE db_collections SET name = ?, document_security = ?, enabled = ?, permissions = ?, \
         attributes = ?, indexes = ?, relationships = ?, version = ?, updated_at = ? \
         WHERE project_id = ? AND database_id = ? AND id = ? AND version = ?",
    )
    .bind(&c.name)
    .bind(i16::from(c.document_security))
    .bind(i16::from(c.enabled))
    .bind(json(&permission_strings(c)))
    .bind(json(&c.attributes))
    .bind(json(&c.indexes))
    .bind(json(&c.relationships))
    .bind(c.version)
    .bind(c.updated_at)
    .bind(&c.project_id)
    .bind(&c.database_id)
    .bind(&c.id)
    .bind(c.version - 1)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find_collection(
    pool: &AnyPool,
    project_id: &str,
    database_id: &str,
    id: &str,
) -> Result<Option<Collection>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLLECTION_READ_COLUMNS} FROM db_collections WHERE project_id = ? AND database_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(database_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(collection_from)
    .transpose()
}

/// The collections of a project (of one database when given), by database and id.
pub async fn list_collections<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    database_id: Option<&str>,
) -> Result<Vec<Collection>, sqlx::Error> {
    let filter = if database_id.is_some() {
        " AND database_id = ?"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLLECTION_READ_COLUMNS} FROM db_collections WHERE project_id = ?{filter} ORDER BY database_id, id"
    );
    let mut query = sqlx::query(&sql).bind(project_id);
    if let Some(database_id) = database_id {
        query = query.bind(database_id);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(collection_from)
        .collect()
}

/// The collections whose table may lack the twin indexes its metadata calls
/// for (`reader_twins = 0`, ADR 0022), by table.
pub async fn collections_awaiting_twins(
    conn: &mut sqlx::AnyConnection,
) -> Result<Vec<Collection>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLLECTION_READ_COLUMNS} FROM db_collections WHERE reader_twins = 0 ORDER BY table_name"
    ))
    .fetch_all(conn)
    .await?
    .iter()
    .map(collection_from)
    .collect()
}

/// Marks the collection of `table` as having the twins its metadata calls for.
pub async fn mark_twins_made<'e>(
    db: impl Executor<'e, Database = Any>,
    table: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE db_collections SET reader_twins = 1 WHERE table_name = ?")
        .bind(table)
        .execute(db)
        .await
        .map(|_| ())
}

/// The stored version of a collection; `None` when there is none.
pub async fn collection_version(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    database_id: &str,
    id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT version FROM db_collections WHERE project_id = ? AND database_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(database_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Deletes a collection's metadata if it is still at `version`; false when it
/// changed since (or is gone).
pub async fn delete_collection<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    database_id: &str,
    id: &str,
    version: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM db_collections WHERE project_id = ? AND database_id = ? AND id = ? \
         AND version = ?",
    )
    .bind(project_id)
    .bind(database_id)
    .bind(id)
    .bind(version)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// The collections of a project, for building its schema and serving requests.
/// A collection of a disabled database counts as disabled: clients reach none of
/// its documents, and none of its events, until the database is enabled again
/// (keys still do, as with a disabled collection).
pub async fn load_model(
    state: &crate::AppState,
    project_id: &str,
) -> crate::error::AppResult<super::DataModel> {
    let pool = state.db.pool();
    let disabled: Vec<String> = list_databases(pool, project_id)
        .await?
        .into_iter()
        .filter(|database| !database.enabled)
        .map(|database| database.id)
        .collect();
    let collections = list_collections(pool, project_id, None).await?;
    Ok(super::DataModel {
        collections: collections
            .into_iter()
            .map(|mut collection| {
                if disabled.contains(&collection.database_id) {
                    collection.enabled = false;
                }
                std::sync::Arc::new(collection)
            })
            .collect(),
    })
}
