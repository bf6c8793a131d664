//! Changing the structure of a project's data (API keys with `databases.write`):
//! databases, collections, attributes and indexes. Each change validates first,
//! then runs its DDL (with the twin indexes it drops and makes, ADR 0022) and
//! writes the metadata so that a failure leaves the collection as it was: on
//! SQLite both happen in one transaction; on MariaDB, where DDL commits by
//! itself, a failed metadata write undoes the DDL, drops run only once the
//! metadata no longer names what they drop, and a change cut short by a dead
//! replica or database is settled by the next holder of the project's lock
//! ([`super::intents`]). The project's schema is rebuilt on every replica
//! afterwards.

use std::collections::HashSet;

use futures_util::future::BoxFuture;

use crate::AppState;
use crate::auth::permissions::Permission;
use crate::auth::scopes::{DatabasesRead, DatabasesWrite};
use crate::auth::{AdminGrant, Grant};
use crate::bus::log;
use crate::db::{DbErrorExt as _, Dialect, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::services::projects::service::{change_message, forget};

use super::ddl::{self, DdlError, Index, IndexKind};
use super::model::{Attribute, ValueError};
use super::naming::GraphqlNames;
use super::{
    Collection, Database, OnDelete, RelationKind, Relationship, intents, sql_dialect, store,
};

const MAX_NAME: usize = 128;

pub(crate) fn ddl_error(err: DdlError) -> AppError {
    match err {
        DdlError::InvalidTable { .. } => AppError::Internal(anyhow::anyhow!("{err}")),
        DdlError::Attribute(value) => value_error(value),
        other => AppError::Invalid {
            code: other.code(),
            field: "input".into(),
            reason: other.to_string(),
        },
    }
}

pub(crate) fn value_error(err: ValueError) -> AppError {
    let field = match &err {
        ValueError::InvalidAttribute { key, .. }
        | ValueError::Invalid { key, .. }
        | ValueError::Required { key }
        | ValueError::OutOfRange { key, .. } => key.trim_matches('`').to_string(),
        ValueError::Unreadable { .. } => return AppError::Internal(anyhow::anyhow!("{err}")),
    };
    AppError::Invalid {
        code: err.code(),
        field,
        reason: err.to_string(),
    }
}

fn check_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(AppError::invalid(
            "name",
            format!("1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

fn check_permissions(permissions: &[String]) -> AppResult<Vec<Permission>> {
    // Collection permissions are set by servers: no grant rule applies.
    crate::auth::Access::container_permissions(permissions)
}

// ---- databases ----

pub async fn create_database(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    id: Option<&str>,
    name: &str,
    enabled: Option<bool>,
) -> AppResult<Database> {
    check_name(name)?;
    let now = now_millis();
    let database = Database {
        project_id: grant.project().to_string(),
        id: ids::resolve("id", id)?,
        name: name.to_string(),
        enabled: enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.pool().begin().await?;
    store::insert_database(&mut tx, &database)
        .await
        .conflict_as("database", &database.id)?;
    log::commit(&state.bus, tx, vec![database_event(&database, "create")]).await?;
    Ok(database)
}

pub async fn get_database(
    state: &AppState,
    grant: &Grant<DatabasesRead>,
    id: &str,
) -> AppResult<Database> {
    load_database(state, grant.project(), id).await
}

async fn load_database(state: &AppState, project_id: &str, id: &str) -> AppResult<Database> {
    ids::validate("databaseId", id)?;
    store::find_database(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "database",
            id: id.into(),
        })
}

pub async fn list_databases(
    state: &AppState,
    grant: &Grant<DatabasesRead>,
) -> AppResult<Vec<Database>> {
    Ok(store::list_databases(state.db.pool(), grant.project()).await?)
}

pub async fn update_database(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    id: &str,
    name: Option<&str>,
    enabled: Option<bool>,
) -> AppResult<Database> {
    let mut database = load_database(state, grant.project(), id).await?;
    if let Some(name) = name {
        check_name(name)?;
        database.name = name.to_string();
    }
    if let Some(enabled) = enabled {
        database.enabled = enabled;
    }
    database.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    store::update_database(&mut *tx, &database).await?;
    let messages = vec![
        change_message(&database.project_id),
        database_event(&database, "update"),
    ];
    log::commit(&state.bus, tx, messages).await?;
    forget(state, &database.project_id).await;
    Ok(database)
}

/// Deletes a database with its collections and their tables.
pub async fn delete_database(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    id: &str,
) -> AppResult<()> {
    let database = load_database(state, grant.project(), id).await?;
    let collections =
        store::list_collections(state.db.pool(), &database.project_id, Some(&database.id)).await?;
    for collection in &collections {
        drop_collection(state, collection, None).await?;
    }
    let mut tx = state.db.pool().begin().await?;
    store::delete_database(&mut *tx, &database.project_id, &database.id).await?;
    let messages = vec![
        change_message(&database.project_id),
        database_event(&database, "delete"),
    ];
    log::commit(&state.bus, tx, messages).await?;
    forget(state, &database.project_id).await;
    Ok(())
}

/// The event of a change to a database: `databases.D.create|update|delete` on
/// `databases` and `databases.D`, for API keys holding `databases.read` and for
/// webhooks.
fn database_event(database: &Database, action: &str) -> crate::bus::BusMessage {
    let name = format!("databases.{}", database.id);
    crate::bus::BusMessage::Event(crate::bus::Event {
        channels: vec!["databases".into(), name.clone()],
        key_scope: <DatabasesRead as crate::auth::scopes::ScopeMarker>::NAME.into(),
        ..crate::bus::Event::change(
            &database.project_id,
            &name,
            "databases.*",
            action,
            super::schema::database_value(database)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

/// Drops the tables of every collection of the grant's project, which is being
/// deleted.
pub async fn drop_project_tables(state: &AppState, admin: &AdminGrant) -> AppResult<()> {
    for collection in store::list_collections(state.db.pool(), admin.project(), None).await? {
        drop_collection(state, &collection, None).await?;
    }
    Ok(())
}

// ---- collections ----

/// A collection to create.
#[derive(Debug, Default)]
pub struct NewCollection {
    pub database_id: String,
    pub id: Option<String>,
    pub name: String,
    pub graphql_name: Option<String>,
    pub document_security: bool,
    pub enabled: Option<bool>,
    pub permissions: Vec<String>,
    pub attributes: Vec<Attribute>,
    pub indexes: Vec<Index>,
}

/// A new physical table name: never derived from client input.
fn new_table_name() -> String {
    format!("c_{}", ids::generate())
}

pub async fn create_collection(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    new: NewCollection,
) -> AppResult<Collection> {
    let project_id = grant.project().to_string();
    let database = load_database(state, &project_id, &new.database_id).await?;
    check_name(&new.name)?;
    let id = ids::resolve("id", new.id.as_deref())?;
    if store::find_collection(state.db.pool(), &project_id, &database.id, &id)
        .await?
        .is_some()
    {
        return Err(AppError::Conflict {
            what: "collection",
            id,
        });
    }
    let names = GraphqlNames::derive(&new.name, new.graphql_name.as_deref())?;
    let others = store::list_collections(state.db.pool(), &project_id, None).await?;
    names.check_free(state.core_names, others.iter().map(|c| &c.names))?;
    let permissions = check_permissions(&new.permissions)?;
    let dialect = sql_dialect(state.db.dialect());
    let table = new_table_name();
    let mut statements =
        ddl::create_table_sql(dialect, &table, &new.attributes).map_err(ddl_error)?;
    ddl::validate_indexes(&new.indexes, &new.attributes).map_err(ddl_error)?;
    check_unique_index_keys(&new.indexes)?;
    check_key_room(&new.indexes, &[])?;
    for index in &new.indexes {
        statements.extend(
            ddl::create_index_sql(dialect, &table, &new.attributes, index).map_err(ddl_error)?,
        );
    }
    let now = now_millis();
    let collection = Collection {
        project_id,
        database_id: database.id.clone(),
        id,
        name: new.name,
        names,
        table,
        document_security: new.document_security,
        enabled: new.enabled.unwrap_or(true),
        permissions,
        attributes: new.attributes,
        indexes: new.indexes,
        relationships: Vec::new(),
        version: 1,
        created_at: now,
        updated_at: now,
        // Its table is made with the sole-reader column and marks.
        readers_ready: true,
    };
    let undo = ddl::drop_table_sql(dialect, &collection.table).map_err(ddl_error)?;
    let (statements, undo) = with_twins(dialect, None, &collection, &statements, &undo)?;
    run_change(
        state,
        &statements,
        &undo,
        Change::Insert(&collection),
        Vec::new(),
    )
    .await?;
    Ok(collection)
}

pub async fn get_collection(
    state: &AppState,
    grant: &Grant<DatabasesRead>,
    database_id: &str,
    id: &str,
) -> AppResult<Collection> {
    load_collection(state, grant.project(), database_id, id).await
}

pub(crate) async fn load_collection(
    state: &AppState,
    project_id: &str,
    database_id: &str,
    id: &str,
) -> AppResult<Collection> {
    ids::validate("databaseId", database_id)?;
    ids::validate("collectionId", id)?;
    store::find_collection(state.db.pool(), project_id, database_id, id)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "collection",
            id: id.into(),
        })
}

pub async fn list_collections(
    state: &AppState,
    grant: &Grant<DatabasesRead>,
    database_id: &str,
) -> AppResult<Vec<Collection>> {
    let database = load_database(state, grant.project(), database_id).await?;
    Ok(store::list_collections(state.db.pool(), &database.project_id, Some(&database.id)).await?)
}

/// Changes to a collection's settings; omitted ones stay.
#[derive(Debug, Default)]
pub struct CollectionChanges {
    pub name: Option<String>,
    pub document_security: Option<bool>,
    pub enabled: Option<bool>,
    pub permissions: Option<Vec<String>>,
}

pub async fn update_collection(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    id: &str,
    changes: CollectionChanges,
) -> AppResult<Collection> {
    let mut collection = load_collection(state, grant.project(), database_id, id).await?;
    let before = collection.clone();
    if let Some(name) = changes.name {
        check_name(&name)?;
        collection.name = name;
    }
    if let Some(flag) = changes.document_security {
        collection.document_security = flag;
    }
    if let Some(flag) = changes.enabled {
        collection.enabled = flag;
    }
    if let Some(permissions) = changes.permissions {
        collection.permissions = check_permissions(&permissions)?;
    }
    apply_update(state, &before, &mut collection, &[], &[], Vec::new()).await?;
    Ok(collection)
}

pub async fn delete_collection(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    id: &str,
) -> AppResult<()> {
    let collection = load_collection(state, grant.project(), database_id, id).await?;
    let all = store::list_collections(state.db.pool(), &collection.project_id, None).await?;
    check_unreferenced(&all, &collection)?;
    // Checked again where relationships are made in turn: one made to it
    // since would be left pointing at a table gone.
    let (project_id, database_id, id) = (
        collection.project_id.clone(),
        collection.database_id.clone(),
        collection.id.clone(),
    );
    let check = stored_check(move |conn| {
        let (project_id, database_id, id) = (project_id.clone(), database_id.clone(), id.clone());
        Box::pin(async move {
            let all = store::list_collections(&mut *conn, &project_id, None).await?;
            match all
                .iter()
                .find(|c| c.database_id == database_id && c.id == id)
            {
                Some(stored) => check_unreferenced(&all, stored),
                None => Ok(()),
            }
        })
    });
    drop_collection(state, &collection, Some(&check)).await?;
    Ok(())
}

/// Refuses to delete `collection` while another collection of its database
/// has a relationship to it.
fn check_unreferenced(all: &[Collection], collection: &Collection) -> AppResult<()> {
    match all.iter().find(|c| {
        c.id != collection.id
            && c.database_id == collection.database_id
            && c.relationships
                .iter()
                .any(|r| r.related_collection == collection.id)
    }) {
        Some(holder) => Err(AppError::Invalid {
            code: codes::COLLECTION_REFERENCED,
            field: "id".into(),
            reason: format!(
                "`{}` has a relationship to this collection; delete that relationship first",
                holder.name
            ),
        }),
        None => Ok(()),
    }
}

/// Drops a collection's tables and metadata, after `check` where changes take
/// turns.
async fn drop_collection(
    state: &AppState,
    collection: &Collection,
    check: Option<StoredCheck<'_>>,
) -> AppResult<()> {
    let dialect = sql_dialect(state.db.dialect());
    // Junction tables reference the collection's table: they go first.
    let mut statements: Vec<String> = collection
        .relationships
        .iter()
        .filter_map(|r| r.junction.as_deref())
        .map(|junction| format!("DROP TABLE {}", dialect.quote(junction)))
        .collect();
    // SQLite's full-text and spatial indexes are tables of their own.
    if dialect == super::model::SqlDialect::Sqlite {
        for index in collection
            .indexes
            .iter()
            .filter(|i| matches!(i.kind, IndexKind::Fulltext | IndexKind::Spatial))
        {
            statements
                .extend(ddl::drop_index_sql(dialect, &collection.table, index).map_err(ddl_error)?);
        }
    }
    statements.extend(ddl::drop_table_sql(dialect, &collection.table).map_err(ddl_error)?);
    run_change_with(
        state,
        &[],
        &[],
        Change::Delete(collection),
        Vec::new(),
        Alongside {
            check,
            finish: &statements,
            ..Alongside::default()
        },
    )
    .await
}

// ---- attributes ----

/// Adds an attribute; existing documents get its default, or null.
pub async fn create_attribute(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    attribute: Attribute,
) -> AppResult<Collection> {
    let mut collection =
        load_collection(state, grant.project(), database_id, collection_id).await?;
    let all = store::list_collections(state.db.pool(), &collection.project_id, None).await?;
    check_key_free(&all, &collection, &attribute.key, "key")?;
    let dialect = sql_dialect(state.db.dialect());
    let statements = ddl::add_column_sql(
        dialect,
        &collection.table,
        &collection.columns(),
        &attribute,
    )
    .map_err(ddl_error)?;
    if attribute.required && attribute.default.is_none() && has_rows(state, &collection).await? {
        return Err(AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: "required".into(),
            reason: "the collection has documents, which would have no value: give a default or make it optional".into(),
        });
    }
    let undo =
        ddl::drop_column_sql(dialect, &collection.table, &attribute.key, &[]).map_err(ddl_error)?;
    let parts = vec![Part::attribute(&attribute, "create")];
    let before = collection.clone();
    let (id, key) = (collection.id.clone(), attribute.key.clone());
    collection.attributes.push(attribute);
    let keys = [(id.as_str(), Some(key.as_str()), "key")];
    apply_update_keeping(
        state,
        &before,
        &mut collection,
        Ddl {
            statements: &statements,
            undo: &undo,
            drops: &[],
        },
        parts,
        &keys,
    )
    .await?;
    Ok(collection)
}

/// What `updateAttribute` changes (Appwrite's `update*Attribute`): `required`
/// and `default` are set as given (no default when none is), the kind's
/// settings and the key stay unless given.
#[derive(Debug, Default)]
pub struct AttributeUpdate {
    pub required: bool,
    pub default: Option<serde_json::Value>,
    pub size: Option<u32>,
    pub min: Option<serde_json::Value>,
    pub max: Option<serde_json::Value>,
    pub elements: Option<Vec<String>>,
    pub new_key: Option<String>,
}

/// Changes an attribute's settings, and its key with `new_key`, keeping its
/// values. A change the stored documents would break is refused before
/// anything changes: made required while some lack a value, a shorter size, a
/// narrower range or fewer enum elements than a stored value needs (for a list
/// attribute, any narrowing). A new default is given to the documents that have
/// no value. The indexes using the attribute are made again over its new column.
pub async fn update_attribute(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    key: &str,
    update: AttributeUpdate,
) -> AppResult<Collection> {
    let mut collection =
        load_collection(state, grant.project(), database_id, collection_id).await?;
    if collection.relationship(key).is_some() {
        return Err(AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: "key".into(),
            reason: format!(
                "`{key}` is a relationship: delete it and create it again to change it"
            ),
        });
    }
    let Some(old) = collection.attribute(key).cloned() else {
        return Err(AppError::NotFound {
            what: "attribute",
            id: key.chars().take(64).collect(),
        });
    };
    let new = updated_attribute(&old, update)?;
    if new.key != old.key {
        let all = store::list_collections(state.db.pool(), &collection.project_id, None).await?;
        check_new_key(&all, &collection, &old.key, &new.key)?;
    }
    if new == old {
        return Ok(collection);
    }
    let dialect = sql_dialect(state.db.dialect());
    let before = collection.clone();
    if let Some(attribute) = collection.attributes.iter_mut().find(|a| a.key == old.key) {
        *attribute = new.clone();
    }
    for index in &mut collection.indexes {
        for attribute in &mut index.attributes {
            if *attribute == old.key {
                attribute.clone_from(&new.key);
            }
        }
    }
    // A spatial index holds only required shapes.
    ddl::validate_indexes(&collection.indexes, &collection.attributes).map_err(ddl_error)?;
    let columns = collection.columns();
    let (change, change_undo) =
        ddl::change_column_sql(dialect, &collection.table, &columns, &old, &new)
            .map_err(ddl_error)?;
    // The indexes using the column that the change does not carry along are made
    // again: every one when SQLite makes the column again, a full-text one when
    // its names or (on MariaDB) its search column follow the key, a MariaDB one
    // whose key part changes (a string's indexed prefix).
    let sqlite_remakes_column =
        dialect == super::model::SqlDialect::Sqlite && old.required && !new.required;
    let old_renamed = Attribute {
        key: new.key.clone(),
        ..old.clone()
    };
    let columns_renamed: Vec<Attribute> = before
        .columns()
        .into_iter()
        .map(|column| {
            if column.key == old.key {
                old_renamed.clone()
            } else {
                column
            }
        })
        .collect();
    let mut remade: Vec<(Index, Index)> = Vec::new();
    for (was, now) in before.indexes.iter().zip(&collection.indexes) {
        if !was.attributes.contains(&old.key) {
            continue;
        }
        let carried = match dialect {
            super::model::SqlDialect::Sqlite => {
                // Their tables and triggers are named after the key.
                let fts_renamed = matches!(now.kind, IndexKind::Fulltext | IndexKind::Spatial)
                    && new.key != old.key;
                !(sqlite_remakes_column || fts_renamed)
            }
            super::model::SqlDialect::MySql if now.kind == IndexKind::Fulltext => change.is_empty(),
            // Its geometry column and triggers are named after the key.
            super::model::SqlDialect::MySql if now.kind == IndexKind::Spatial => {
                change.is_empty() || new.key == old.key
            }
            super::model::SqlDialect::MySql => {
                ddl::create_index_sql(dialect, &collection.table, &columns_renamed, now)
                    .map_err(ddl_error)?
                    == ddl::create_index_sql(dialect, &collection.table, &columns, now)
                        .map_err(ddl_error)?
            }
        };
        if !carried {
            remade.push((was.clone(), now.clone()));
        }
    }
    // Between the two halves of the change the indexes made again are gone, with
    // their twins: a column an index (or a trigger) uses cannot be dropped on
    // SQLite.
    let mut between = before.clone();
    between
        .indexes
        .retain(|index| !remade.iter().any(|(was, _)| was.key == index.key));
    let mut first = Vec::new();
    let mut first_undo = change_undo;
    let mut second = Vec::new();
    let mut second_undo = Vec::new();
    for (was, now) in &remade {
        first.extend(ddl::drop_index_sql(dialect, &collection.table, was).map_err(ddl_error)?);
        first_undo.extend(
            ddl::create_index_sql(dialect, &collection.table, &before.columns(), was)
                .map_err(ddl_error)?,
        );
        second.extend(
            ddl::create_index_sql(dialect, &collection.table, &columns, now).map_err(ddl_error)?,
        );
        second_undo
            .extend(ddl::drop_index_sql(dialect, &collection.table, now).map_err(ddl_error)?);
    }
    first.extend(change);
    let (mut statements, first_undo) =
        with_twins(dialect, Some(&before), &between, &first, &first_undo)?;
    let (second, mut undo) =
        with_twins(dialect, Some(&between), &collection, &second, &second_undo)?;
    statements.extend(second);
    undo.extend(first_undo);
    // A new default reaches the documents without a value with the metadata, in
    // its transaction.
    let fill: Vec<String> = if old.default_sql_value().is_none() {
        ddl::fill_default_sql(dialect, &collection.table, &new)
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };

    collection.version += 1;
    collection.updated_at = now_millis();
    let parts = vec![Part::attribute(&new, "update")];
    let table = collection.table.clone();
    let (was, now) = (old.clone(), new.clone());
    let (project_id, database_id, id) = (
        collection.project_id.clone(),
        collection.database_id.clone(),
        collection.id.clone(),
    );
    let check = stored_check(move |conn| {
        let (table, was, now) = (table.clone(), was.clone(), now.clone());
        let (project_id, database_id, id) = (project_id.clone(), database_id.clone(), id.clone());
        Box::pin(async move {
            // A new key is checked free again where changes take turns: another
            // change may have taken it since it was first checked.
            if now.key != was.key {
                let all = store::list_collections(&mut *conn, &project_id, None).await?;
                if let Some(stored) = all
                    .iter()
                    .find(|c| c.database_id == database_id && c.id == id)
                {
                    check_new_key(&all, stored, &was.key, &now.key)?;
                }
            }
            check_stored_values(conn, dialect, &table, &was, &now).await
        })
    });
    run_change_with(
        state,
        &statements,
        &undo,
        Change::Update(&collection),
        parts,
        Alongside {
            check: Some(&check),
            data: &fill,
            finish: &[],
        },
    )
    .await?;
    Ok(collection)
}

/// `old` with `update` applied, validated.
fn updated_attribute(old: &Attribute, update: AttributeUpdate) -> AppResult<Attribute> {
    use super::model::AttributeKind;
    let not_a_setting = |field: &str| AppError::Invalid {
        code: codes::ATTRIBUTE_INVALID,
        field: field.into(),
        reason: format!("a {} attribute has no `{field}`", old.kind.name()),
    };
    let mut new = old.clone();
    new.required = update.required;
    new.default = update.default.filter(|d| !d.is_null());
    let min = update.min.filter(|v| !v.is_null());
    let max = update.max.filter(|v| !v.is_null());
    fn parse<T: serde::de::DeserializeOwned>(
        field: &str,
        value: serde_json::Value,
    ) -> AppResult<T> {
        serde_json::from_value(value).map_err(|_| AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: field.into(),
            reason: "not a number of the attribute's type".into(),
        })
    }
    match &mut new.kind {
        AttributeKind::String { size } | AttributeKind::Varchar { size } => {
            if let Some(given) = update.size {
                *size = given;
            }
        }
        AttributeKind::Integer {
            min: low,
            max: high,
        } => {
            if let Some(value) = min.clone() {
                *low = Some(parse("min", value)?);
            }
            if let Some(value) = max.clone() {
                *high = Some(parse("max", value)?);
            }
        }
        AttributeKind::Float {
            min: low,
            max: high,
        } => {
            if let Some(value) = min.clone() {
                *low = Some(parse("min", value)?);
            }
            if let Some(value) = max.clone() {
                *high = Some(parse("max", value)?);
            }
        }
        AttributeKind::Enum { elements } => {
            if let Some(given) = update.elements.clone() {
                *elements = given;
            }
        }
        _ => {}
    }
    let kind = &new.kind;
    if update.size.is_some()
        && !matches!(
            kind,
            AttributeKind::String { .. } | AttributeKind::Varchar { .. }
        )
    {
        return Err(not_a_setting("size"));
    }
    let ranged = matches!(
        kind,
        AttributeKind::Integer { .. } | AttributeKind::Float { .. }
    );
    if min.is_some() && !ranged {
        return Err(not_a_setting("min"));
    }
    if max.is_some() && !ranged {
        return Err(not_a_setting("max"));
    }
    if update.elements.is_some() && !matches!(kind, AttributeKind::Enum { .. }) {
        return Err(not_a_setting("elements"));
    }
    if let Some(new_key) = update.new_key {
        new.key = new_key;
    }
    new.validate().map_err(value_error)?;
    Ok(new)
}

/// Refuses a change to an attribute that documents as stored would break: made
/// required while some have no value, or narrowed (size, range, enum elements)
/// past a stored value; a list attribute is not narrowed at all.
async fn check_stored_values(
    conn: &mut sqlx::AnyConnection,
    dialect: super::model::SqlDialect,
    table: &str,
    old: &Attribute,
    new: &Attribute,
) -> AppResult<()> {
    use super::model::AttributeKind;
    let refuse = |field: &str, reason: String| {
        Err(AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: field.into(),
            reason,
        })
    };
    let column = dialect.quote(&old.column());
    let table = dialect.quote(table);
    if new.required
        && !old.required
        && any_row(conn, &table, &format!("{column} IS NULL"), Vec::new()).await?
    {
        return refuse(
            "required",
            "some documents have no value: give them one first".into(),
        );
    }
    let narrowed = match (&old.kind, &new.kind) {
        (AttributeKind::String { size: was }, AttributeKind::String { size: now })
        | (AttributeKind::Varchar { size: was }, AttributeKind::Varchar { size: now }) => now < was,
        (AttributeKind::Integer { min: a, max: b }, AttributeKind::Integer { min: c, max: d }) => {
            c.unwrap_or(i64::MIN) > a.unwrap_or(i64::MIN)
                || d.unwrap_or(i64::MAX) < b.unwrap_or(i64::MAX)
        }
        (AttributeKind::Float { min: a, max: b }, AttributeKind::Float { min: c, max: d }) => {
            c.unwrap_or(f64::MIN) > a.unwrap_or(f64::MIN)
                || d.unwrap_or(f64::MAX) < b.unwrap_or(f64::MAX)
        }
        (AttributeKind::Enum { elements: was }, AttributeKind::Enum { elements: now }) => {
            was.iter().any(|element| !now.contains(element))
        }
        _ => false,
    };
    if !narrowed {
        return Ok(());
    }
    if new.array {
        return refuse(
            "input",
            "a list attribute's size, range or elements may grow, not narrow".into(),
        );
    }
    let (field, outside, binds) = match &new.kind {
        AttributeKind::String { size } | AttributeKind::Varchar { size } => {
            let length = match dialect {
                super::model::SqlDialect::Sqlite => "length",
                super::model::SqlDialect::MySql => "CHAR_LENGTH",
            };
            (
                "size",
                format!("{length}({column}) > ?"),
                vec![super::model::SqlValue::Int(i64::from(*size))],
            )
        }
        AttributeKind::Integer { min, max } => (
            "min",
            format!("({column} < ? OR {column} > ?)"),
            vec![
                super::model::SqlValue::Int(min.unwrap_or(i64::MIN)),
                super::model::SqlValue::Int(max.unwrap_or(i64::MAX)),
            ],
        ),
        AttributeKind::Float { min, max } => (
            "min",
            format!("({column} < ? OR {column} > ?)"),
            vec![
                super::model::SqlValue::Float(min.unwrap_or(f64::MIN)),
                super::model::SqlValue::Float(max.unwrap_or(f64::MAX)),
            ],
        ),
        AttributeKind::Enum { elements } => (
            "elements",
            format!("{column} NOT IN ({})", vec!["?"; elements.len()].join(", ")),
            elements
                .iter()
                .map(|e| super::model::SqlValue::Text(e.clone()))
                .collect(),
        ),
        _ => return Ok(()),
    };
    if any_row(conn, &table, &outside, binds).await? {
        return refuse(
            field,
            "a stored document's value would no longer be allowed: change it first".into(),
        );
    }
    Ok(())
}

/// Whether a row of `table` meets `condition` (its `?`s bound to `binds`).
async fn any_row(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    condition: &str,
    binds: Vec<super::model::SqlValue>,
) -> AppResult<bool> {
    let sql = format!("SELECT 1 FROM {table} WHERE {condition} LIMIT 1");
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = match bind {
            super::model::SqlValue::Int(i) => query.bind(i),
            super::model::SqlValue::Float(f) => query.bind(f),
            super::model::SqlValue::Text(t) => query.bind(t),
            super::model::SqlValue::Bool(b) => query.bind(i16::from(b)),
            super::model::SqlValue::Null => query.bind(None::<String>),
        };
    }
    Ok(query.fetch_optional(conn).await?.is_some())
}

/// Removes an attribute, its column, and the indexes that use it.
pub async fn delete_attribute(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    key: &str,
) -> AppResult<Collection> {
    let mut collection =
        load_collection(state, grant.project(), database_id, collection_id).await?;
    if let Some(relationship) = collection.relationship(key).cloned() {
        return delete_relationship(state, collection, &relationship).await;
    }
    let Some(attribute) = collection.attribute(key).cloned() else {
        return Err(AppError::NotFound {
            what: "attribute",
            id: key.chars().take(64).collect(),
        });
    };
    let dialect = sql_dialect(state.db.dialect());
    let statements = ddl::drop_column_sql(dialect, &collection.table, key, &collection.indexes)
        .map_err(ddl_error)?;
    let mut parts = vec![Part::attribute(&attribute, "delete")];
    let before = collection.clone();
    parts.extend(dropped_indexes(&mut collection, key));
    collection.attributes.retain(|a| a.key != key);
    apply_drops(state, &before, &mut collection, &statements, parts).await?;
    Ok(collection)
}

// ---- relationships ----

/// Every field name a collection's documents have in GraphQL, besides the system
/// ones: its attributes, the relationships it holds, and the reverse fields of
/// relationships pointing at it.
fn taken_keys(all: &[Collection], collection: &Collection) -> Vec<String> {
    let mut keys: Vec<String> = collection
        .attributes
        .iter()
        .map(|a| a.key.clone())
        .chain(collection.relationships.iter().map(|r| r.key.clone()))
        .collect();
    for other in all
        .iter()
        .filter(|c| c.database_id == collection.database_id)
    {
        for relationship in &other.relationships {
            if relationship.related_collection == collection.id
                && let Some(reverse) = &relationship.two_way_key
            {
                keys.push(reverse.clone());
            }
        }
    }
    keys
}

/// Refuses giving `collection` the field `key` (named by input `field`) when
/// another of its fields (its own, or a reverse field another collection gives
/// it) has that key, ignoring case.
fn check_key_free(
    all: &[Collection],
    collection: &Collection,
    key: &str,
    field: &str,
) -> AppResult<()> {
    check_key_free_but(all, collection, key, field, None)
}

/// [`check_key_free`] for renaming `old_key` of `collection` to `new_key`: its
/// own old key does not count.
fn check_new_key(
    all: &[Collection],
    collection: &Collection,
    old_key: &str,
    new_key: &str,
) -> AppResult<()> {
    check_key_free_but(all, collection, new_key, "newKey", Some(old_key))
}

fn check_key_free_but(
    all: &[Collection],
    collection: &Collection,
    key: &str,
    field: &str,
    except: Option<&str>,
) -> AppResult<()> {
    if taken_keys(all, collection)
        .iter()
        .filter(|taken| Some(taken.as_str()) != except)
        .any(|taken| taken.eq_ignore_ascii_case(key))
    {
        return Err(AppError::Invalid {
            code: codes::ATTRIBUTE_ALREADY_EXISTS,
            field: field.into(),
            reason: format!(
                "`{}` already has a field `{key}` (keys are compared ignoring case)",
                collection.name
            ),
        });
    }
    Ok(())
}

/// A relationship to create, as the client describes it.
#[derive(Debug)]
pub struct NewRelationship {
    pub database_id: String,
    pub collection_id: String,
    pub key: String,
    pub related_collection_id: String,
    /// `MANY_TO_ONE`, `ONE_TO_ONE` or `ONE_TO_MANY`.
    pub kind: String,
    pub two_way_key: Option<String>,
    pub on_delete: OnDelete,
}

/// Refuses a structure whose table would need more keys than MariaDB allows:
/// the built-in ones, one per index, and the reference key of each relationship
/// whose column this table holds. Checked before any DDL runs, so the limit is
/// a coded refusal on both backends rather than a database error on one. Twin
/// indexes do not count: they take only the keys left over
/// ([`ddl::reader_twins`]).
fn check_key_room(indexes: &[Index], relationships: &[Relationship]) -> AppResult<()> {
    let references = reference_keys(relationships);
    if ddl::BUILT_IN_TABLE_KEYS + indexes.len() + references > ddl::MAX_TABLE_KEYS {
        return Err(AppError::Invalid {
            code: codes::INDEX_LIMIT_EXCEEDED,
            field: "index".into(),
            reason: format!(
                "a collection has at most {} indexes, counting one for each relationship it holds",
                ddl::MAX_TABLE_KEYS - ddl::BUILT_IN_TABLE_KEYS
            ),
        });
    }
    Ok(())
}

/// Refuses an index whose key is that of a relationship's reference index
/// (`ref_<key>`, [`reference_index`]): both would take one name in the
/// database, and the second `CREATE INDEX` would fail there rather than here.
fn check_reference_names(
    indexes: &[Index],
    relationships: &[Relationship],
    code: &'static str,
    field: &str,
) -> AppResult<()> {
    for relationship in relationships.iter().filter(|r| r.junction.is_none()) {
        let reference = reference_index(relationship).key;
        if let Some(index) = indexes
            .iter()
            .find(|i| i.key.eq_ignore_ascii_case(&reference))
        {
            return Err(AppError::Invalid {
                code,
                field: field.into(),
                reason: format!(
                    "the index `{}` and the relationship `{}` would share a name: \
                     `{reference}` is the relationship's own index",
                    index.key, relationship.key
                ),
            });
        }
    }
    Ok(())
}

/// The index that makes following a reference back cheap (unique for one-to-one).
fn reference_index(relationship: &Relationship) -> Index {
    Index {
        key: reference_index_key(&relationship.key),
        kind: if relationship.kind == RelationKind::OneToOne {
            IndexKind::Unique
        } else {
            IndexKind::Key
        },
        attributes: vec![relationship.key.clone()],
        orders: Vec::new(),
        lengths: Vec::new(),
    }
}

/// The key of a relationship's reference index: `ref_<key>` while that is a
/// valid index key (a relationship key of up to 58 characters: every reference
/// index made before longer keys could have one keeps its name), else
/// `ref_<the key's first 49 characters>_<8 hex digits of its SHA-256>`, 62
/// characters, so that its names in the database (`i_…`, `r_…`) stay within
/// MariaDB's 64. A function of the key alone: a reference index is found again
/// by computing its name, with no migration and nothing stored.
pub(super) fn reference_index_key(key: &str) -> String {
    const PREFIX: &str = "ref_";
    if PREFIX.len() + key.len() <= super::model::MAX_KEY_LEN {
        return format!("{PREFIX}{key}");
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let kept = super::model::MAX_KEY_LEN - PREFIX.len() - 1 - 8;
    // Keys are ASCII (`is_valid_key`), so a byte index is a character index.
    let head = key.get(..kept).unwrap_or(key);
    format!("{PREFIX}{head}_{}", &hex::encode(digest)[..8])
}

/// Creates a relationship; returns the collection that holds its reference
/// column (for `ONE_TO_MANY`, the related one: `authors.posts` is stored as
/// `posts.author`).
pub async fn create_relationship(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    new: NewRelationship,
) -> AppResult<Collection> {
    let project_id = grant.project().to_string();
    let this = load_collection(state, &project_id, &new.database_id, &new.collection_id).await?;
    let other = load_collection(
        state,
        &project_id,
        &new.database_id,
        &new.related_collection_id,
    )
    .await
    .map_err(|_| AppError::NotFound {
        what: "related collection",
        id: new.related_collection_id.chars().take(64).collect(),
    })?;
    let (mut holder, target, relationship) = match new.kind.as_str() {
        "MANY_TO_ONE" | "ONE_TO_ONE" => {
            let kind = if new.kind == "ONE_TO_ONE" {
                RelationKind::OneToOne
            } else {
                RelationKind::ManyToOne
            };
            let relationship = Relationship {
                key: new.key.clone(),
                related_collection: other.id.clone(),
                kind,
                two_way_key: new.two_way_key.clone(),
                on_delete: new.on_delete,
                junction: None,
            };
            (this, other, relationship)
        }
        "MANY_TO_MANY" => {
            let relationship = Relationship {
                key: new.key.clone(),
                related_collection: other.id.clone(),
                kind: RelationKind::ManyToMany,
                two_way_key: new.two_way_key.clone(),
                on_delete: new.on_delete,
                junction: Some(format!("j_{}", ids::generate())),
            };
            (this, other, relationship)
        }
        "ONE_TO_MANY" => {
            let Some(reference) = new.two_way_key.clone() else {
                return Err(AppError::Invalid {
                    code: codes::ATTRIBUTE_INVALID,
                    field: "twoWayKey".into(),
                    reason: "a one-to-many relationship needs `twoWayKey`: the field of the related documents that names their owner".into(),
                });
            };
            let relationship = Relationship {
                key: reference,
                related_collection: this.id.clone(),
                kind: RelationKind::ManyToOne,
                two_way_key: Some(new.key.clone()),
                on_delete: new.on_delete,
                junction: None,
            };
            (other, this, relationship)
        }
        other => {
            return Err(AppError::Invalid {
                code: codes::ATTRIBUTE_INVALID,
                field: "type".into(),
                reason: format!("unknown relationship type `{other}`"),
            });
        }
    };
    relationship.column().validate().map_err(value_error)?;
    let all = store::list_collections(state.db.pool(), &project_id, None).await?;
    check_key_free(&all, &holder, &relationship.key, "key")?;
    if let Some(reverse) = &relationship.two_way_key {
        let reverse_column = Relationship {
            key: reverse.clone(),
            ..relationship.clone()
        };
        reverse_column.column().validate().map_err(value_error)?;
        check_key_free(&all, &target, reverse, "twoWayKey")?;
        if holder.id == target.id && reverse.eq_ignore_ascii_case(&relationship.key) {
            return Err(AppError::invalid("twoWayKey", "the two keys must differ"));
        }
    }
    let dialect = sql_dialect(state.db.dialect());
    let before = holder.clone();
    let (holder_id, key) = (holder.id.clone(), relationship.key.clone());
    let reverse = relationship.two_way_key.clone();
    // The related collection, still there where changes take turns (its
    // reverse key free too, for a two-way relationship).
    let taken = [
        (holder_id.as_str(), Some(key.as_str()), "key"),
        (target.id.as_str(), reverse.as_deref(), "twoWayKey"),
    ];
    let (statements, undo) = match &relationship.junction {
        Some(junction) => (
            junction_sql(dialect, junction, &holder.table, &target.table)?,
            vec![format!("DROP TABLE {}", dialect.quote(junction))],
        ),
        None => {
            let mut with_reference = holder.relationships.clone();
            with_reference.push(relationship.clone());
            check_key_room(&holder.indexes, &with_reference)?;
            check_reference_names(
                &holder.indexes,
                &with_reference,
                codes::ATTRIBUTE_INVALID,
                "key",
            )?;
            let columns = holder.columns();
            let mut statements =
                ddl::add_column_sql(dialect, &holder.table, &columns, &relationship.column())
                    .map_err(ddl_error)?;
            let mut with_column = columns;
            with_column.push(relationship.column());
            let index = reference_index(&relationship);
            statements.extend(
                ddl::create_index_sql(dialect, &holder.table, &with_column, &index)
                    .map_err(ddl_error)?,
            );
            let mut undo =
                ddl::drop_index_sql(dialect, &holder.table, &index).map_err(ddl_error)?;
            undo.extend(
                ddl::drop_column_sql(dialect, &holder.table, &relationship.key, &[])
                    .map_err(ddl_error)?,
            );
            (statements, undo)
        }
    };
    let parts = vec![Part::relationship(&relationship, "create")];
    holder.relationships.push(relationship);
    apply_update_keeping(
        state,
        &before,
        &mut holder,
        Ddl {
            statements: &statements,
            undo: &undo,
            drops: &[],
        },
        parts,
        &taken,
    )
    .await?;
    Ok(holder)
}

/// The junction table of a many-to-many relationship: one row per link, removed
/// with either document (the database keeps that even if the server did not).
fn junction_sql(
    dialect: super::model::SqlDialect,
    junction: &str,
    holder: &str,
    related: &str,
) -> AppResult<Vec<String>> {
    ddl::check_table_name(junction).map_err(ddl_error)?;
    let q = |name: &str| dialect.quote(name);
    Ok(match dialect {
        super::model::SqlDialect::Sqlite => vec![
            format!(
                "CREATE TABLE {j} (a_id TEXT NOT NULL REFERENCES {h} (id) ON DELETE CASCADE, \
                 b_id TEXT NOT NULL REFERENCES {r} (id) ON DELETE CASCADE, PRIMARY KEY (a_id, b_id))",
                j = q(junction),
                h = q(holder),
                r = q(related)
            ),
            format!(
                "CREATE INDEX {} ON {} (b_id, a_id)",
                q(&format!("{junction}_b")),
                q(junction)
            ),
        ],
        super::model::SqlDialect::MySql => vec![format!(
            "CREATE TABLE {j} (a_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             b_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
             PRIMARY KEY (a_id, b_id), KEY j_b (b_id, a_id), \
             FOREIGN KEY (a_id) REFERENCES {h} (id) ON DELETE CASCADE, \
             FOREIGN KEY (b_id) REFERENCES {r} (id) ON DELETE CASCADE) \
             ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
            j = q(junction),
            h = q(holder),
            r = q(related)
        )],
    })
}

/// Changes what deleting a referenced document does to a relationship named by
/// `key` on collection `collection_id`: the field it holds, or the reverse field
/// of one held by another collection (a one-to-many is held by its many side).
/// Answers the collection named, as it now is.
pub async fn update_relationship(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    key: &str,
    on_delete: OnDelete,
) -> AppResult<Collection> {
    let named = load_collection(state, grant.project(), database_id, collection_id).await?;
    let held_here = named.relationship(key).is_some();
    let mut holder = if held_here {
        named.clone()
    } else {
        store::list_collections(state.db.pool(), &named.project_id, None)
            .await?
            .into_iter()
            .find(|other| {
                other.database_id == named.database_id
                    && other.relationships.iter().any(|r| {
                        r.related_collection == named.id && r.two_way_key.as_deref() == Some(key)
                    })
            })
            .ok_or_else(|| {
                if named.attribute(key).is_some() {
                    AppError::Invalid {
                        code: codes::ATTRIBUTE_INVALID,
                        field: "key".into(),
                        reason: format!(
                            "`{key}` is an attribute, not a relationship: use updateAttribute"
                        ),
                    }
                } else {
                    AppError::NotFound {
                        what: "attribute",
                        id: key.chars().take(64).collect(),
                    }
                }
            })?
    };
    let before = holder.clone();
    let is_it = |r: &Relationship| {
        if held_here {
            r.key == key
        } else {
            r.related_collection == named.id && r.two_way_key.as_deref() == Some(key)
        }
    };
    let Some(relationship) = holder.relationships.iter_mut().find(|r| is_it(r)) else {
        return Err(AppError::NotFound {
            what: "attribute",
            id: key.chars().take(64).collect(),
        });
    };
    if relationship.on_delete == on_delete {
        return Ok(named);
    }
    relationship.on_delete = on_delete;
    let parts = vec![Part::relationship(relationship, "update")];
    apply_update(state, &before, &mut holder, &[], &[], parts).await?;
    if held_here {
        return Ok(holder);
    }
    load_collection(state, grant.project(), database_id, collection_id).await
}

/// Removes a relationship: its reference column and index (or its junction
/// table), and the reverse field.
async fn delete_relationship(
    state: &AppState,
    mut collection: Collection,
    relationship: &Relationship,
) -> AppResult<Collection> {
    let key = relationship.key.as_str();
    let dialect = sql_dialect(state.db.dialect());
    let before = collection.clone();
    if let Some(junction) = &relationship.junction {
        let statements = vec![format!("DROP TABLE {}", dialect.quote(junction))];
        let parts = vec![Part::relationship(relationship, "delete")];
        collection.relationships.retain(|r| r.key != key);
        apply_drops(state, &before, &mut collection, &statements, parts).await?;
        return Ok(collection);
    }
    let mut statements =
        ddl::drop_index_sql(dialect, &collection.table, &reference_index(relationship))
            .map_err(ddl_error)?;
    statements.extend(
        ddl::drop_column_sql(dialect, &collection.table, key, &collection.indexes)
            .map_err(ddl_error)?,
    );
    let mut parts = vec![Part::relationship(relationship, "delete")];
    parts.extend(dropped_indexes(&mut collection, key));
    collection.relationships.retain(|r| r.key != key);
    apply_drops(state, &before, &mut collection, &statements, parts).await?;
    Ok(collection)
}

// ---- indexes ----

fn check_unique_index_keys(indexes: &[Index]) -> AppResult<()> {
    let mut seen = HashSet::new();
    for index in indexes {
        if !seen.insert(index.key.to_ascii_lowercase()) {
            return Err(AppError::Invalid {
                code: codes::INDEX_INVALID,
                field: "indexes".into(),
                reason: format!("two indexes have the key `{}`", index.key),
            });
        }
    }
    Ok(())
}

pub async fn create_index(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    index: Index,
) -> AppResult<Collection> {
    let mut collection =
        load_collection(state, grant.project(), database_id, collection_id).await?;
    if index.kind == IndexKind::Fulltext
        && let Some(key) = index.attributes.first()
        && ddl::fulltext_index_covers(&collection.indexes, key)
    {
        return Err(AppError::Invalid {
            code: codes::INDEX_INVALID,
            field: "index".into(),
            reason: format!("`{key}` already has a FULLTEXT index"),
        });
    }
    // Its R-tree's column or table is named after the attribute.
    if index.kind == IndexKind::Spatial
        && let Some(key) = index.attributes.first()
        && collection
            .indexes
            .iter()
            .any(|i| i.kind == IndexKind::Spatial && i.attributes.first() == Some(key))
    {
        return Err(AppError::Invalid {
            code: codes::INDEX_INVALID,
            field: "index".into(),
            reason: format!("`{key}` already has a SPATIAL index"),
        });
    }
    if collection
        .indexes
        .iter()
        .any(|existing| existing.key.eq_ignore_ascii_case(&index.key))
    {
        return Err(AppError::Invalid {
            code: codes::INDEX_ALREADY_EXISTS,
            field: "index".into(),
            reason: format!("`{}` already has an index `{}`", collection.name, index.key),
        });
    }
    let dialect = sql_dialect(state.db.dialect());
    let statements =
        ddl::create_index_sql(dialect, &collection.table, &collection.columns(), &index)
            .map_err(ddl_error)?;
    let undo = ddl::drop_index_sql(dialect, &collection.table, &index).map_err(ddl_error)?;
    let parts = vec![Part::index(&index, "create")];
    let before = collection.clone();
    collection.indexes.push(index);
    check_unique_index_keys(&collection.indexes)?;
    check_reference_names(
        &collection.indexes,
        &collection.relationships,
        codes::INDEX_INVALID,
        "index",
    )?;
    check_key_room(&collection.indexes, &collection.relationships)?;
    apply_update(state, &before, &mut collection, &statements, &undo, parts).await?;
    Ok(collection)
}

pub async fn delete_index(
    state: &AppState,
    grant: &Grant<DatabasesWrite>,
    database_id: &str,
    collection_id: &str,
    key: &str,
) -> AppResult<Collection> {
    let mut collection =
        load_collection(state, grant.project(), database_id, collection_id).await?;
    let Some(index) = collection.indexes.iter().find(|i| i.key == key).cloned() else {
        return Err(AppError::NotFound {
            what: "index",
            id: key.chars().take(64).collect(),
        });
    };
    let dialect = sql_dialect(state.db.dialect());
    let statements = ddl::drop_index_sql(dialect, &collection.table, &index).map_err(ddl_error)?;
    let before = collection.clone();
    collection.indexes.retain(|i| i.key != key);
    let parts = vec![Part::index(&index, "delete")];
    apply_drops(state, &before, &mut collection, &statements, parts).await?;
    Ok(collection)
}

// ---- applying a change ----

async fn has_rows(state: &AppState, collection: &Collection) -> AppResult<bool> {
    let dialect = sql_dialect(state.db.dialect());
    let sql = format!("SELECT 1 FROM {} LIMIT 1", dialect.quote(&collection.table));
    Ok(sqlx::query(&sql)
        .fetch_optional(state.db.pool())
        .await?
        .is_some())
}

/// Writes a changed collection (`before` as it was read) as its next version,
/// with its DDL, the twin indexes the change drops and creates, and the events
/// of the `parts` that changed with it, and tells every replica to rebuild the
/// project's schema.
async fn apply_update(
    state: &AppState,
    before: &Collection,
    collection: &mut Collection,
    statements: &[String],
    undo: &[String],
    parts: Vec<Part>,
) -> AppResult<()> {
    let ddl = Ddl {
        statements,
        undo,
        drops: &[],
    };
    apply_update_keeping(state, before, collection, ddl, parts, &[]).await
}

/// [`apply_update`] of a change that drops what the collection no longer
/// names (`drops`, which cannot be undone: run once the metadata committed).
async fn apply_drops(
    state: &AppState,
    before: &Collection,
    collection: &mut Collection,
    drops: &[String],
    parts: Vec<Part>,
) -> AppResult<()> {
    let ddl = Ddl {
        statements: &[],
        undo: &[],
        drops,
    };
    apply_update_keeping(state, before, collection, ddl, parts, &[]).await
}

/// A change's statements: those run before its metadata with what reverses
/// them, and the drops run after it.
struct Ddl<'a> {
    statements: &'a [String],
    undo: &'a [String],
    drops: &'a [String],
}

/// [`apply_update`] of a change that gives collections new keys (`keys`: the
/// collection, the key, the input field naming it), checked free again where
/// no other structure change slips in (SQLite's transaction, MariaDB's
/// structure lock): two changes checked side by side could otherwise both
/// take one key, and a collection's type would have the field twice. Each
/// collection named must still be there (a key of `None`: only that), as a
/// relationship's target deleted meanwhile would leave it pointing at nothing.
async fn apply_update_keeping(
    state: &AppState,
    before: &Collection,
    collection: &mut Collection,
    ddl: Ddl<'_>,
    parts: Vec<Part>,
    keys: &[(&str, Option<&str>, &'static str)],
) -> AppResult<()> {
    collection.version += 1;
    collection.updated_at = now_millis();
    let dialect = sql_dialect(state.db.dialect());
    let (statements, undo, finish) = if ddl.drops.is_empty() {
        let (statements, undo) =
            with_twins(dialect, Some(before), collection, ddl.statements, ddl.undo)?;
        (statements, undo, Vec::new())
    } else {
        // Twins dropped go before the metadata (undone by making them again);
        // those made take room (MariaDB's 64 keys a table) the drops free, so
        // they follow them.
        let (dropped, created) = twin_changes(dialect, Some(before), collection)?;
        let mut statements: Vec<String> = dropped.iter().map(|twin| twin.drop.clone()).collect();
        statements.extend_from_slice(ddl.statements);
        let mut undo = ddl.undo.to_vec();
        undo.extend(dropped.iter().map(|twin| twin.create.clone()));
        let mut finish = ddl.drops.to_vec();
        finish.extend(created.iter().map(|twin| twin.create.clone()));
        (statements, undo, finish)
    };
    let (project_id, database_id) = (
        collection.project_id.clone(),
        collection.database_id.clone(),
    );
    let keys: Vec<(String, Option<String>, &'static str)> = keys
        .iter()
        .map(|(collection_id, key, field)| {
            (collection_id.to_string(), key.map(str::to_string), *field)
        })
        .collect();
    let check = stored_check(move |conn| {
        let (project_id, database_id, keys) =
            (project_id.clone(), database_id.clone(), keys.clone());
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let all = store::list_collections(&mut *conn, &project_id, None).await?;
            for (collection_id, key, field) in &keys {
                let Some(holder) = all
                    .iter()
                    .find(|c| c.database_id == database_id && &c.id == collection_id)
                else {
                    // Deleted since it was read: a relationship to it would
                    // point at a table gone.
                    return Err(AppError::NotFound {
                        what: if *field == "key" {
                            "collection"
                        } else {
                            "related collection"
                        },
                        id: collection_id.clone(),
                    });
                };
                if let Some(key) = key {
                    check_key_free(&all, holder, key, field)?;
                }
            }
            Ok(())
        })
    });
    run_change_with(
        state,
        &statements,
        &undo,
        Change::Update(collection),
        parts,
        Alongside {
            check: Some(&check),
            data: &[],
            finish: &finish,
        },
    )
    .await
}

/// The relationships whose reference column, and so whose reference key, the
/// table holds.
fn reference_keys(relationships: &[Relationship]) -> usize {
    relationships
        .iter()
        .filter(|relationship| relationship.junction.is_none())
        .count()
}

/// The twin indexes (ADR 0022) of `collection`, a function of its metadata.
pub(super) fn reader_twins(
    dialect: super::model::SqlDialect,
    collection: &Collection,
) -> Result<Vec<ddl::Twin>, DdlError> {
    let columns = collection.columns();
    ddl::reader_twins(
        dialect,
        &collection.table,
        &twin_source(collection, &columns),
    )
}

fn twin_source<'a>(collection: &'a Collection, columns: &'a [Attribute]) -> ddl::TwinSource<'a> {
    ddl::TwinSource {
        document_security: collection.document_security,
        columns,
        indexes: &collection.indexes,
        references: reference_keys(&collection.relationships),
    }
}

/// A change's statements and undo with the twins it drops and creates around
/// them: drops first (they free keys for the change's own and release the
/// columns it may drop), creates last; the undo drops what was created and
/// makes again what was dropped. Twins live and die in the change's own
/// transaction (SQLite) or beside its own DDL (MariaDB).
fn with_twins(
    dialect: super::model::SqlDialect,
    before: Option<&Collection>,
    after: &Collection,
    statements: &[String],
    undo: &[String],
) -> AppResult<(Vec<String>, Vec<String>)> {
    let (dropped, created) = twin_changes(dialect, before, after)?;
    let mut run: Vec<String> = dropped.iter().map(|twin| twin.drop.clone()).collect();
    run.extend_from_slice(statements);
    run.extend(created.iter().map(|twin| twin.create.clone()));
    let mut reverse: Vec<String> = created.iter().map(|twin| twin.drop.clone()).collect();
    reverse.extend_from_slice(undo);
    reverse.extend(dropped.iter().map(|twin| twin.create.clone()));
    Ok((run, reverse))
}

/// The twins a change from `before` to `after` drops and creates.
fn twin_changes(
    dialect: super::model::SqlDialect,
    before: Option<&Collection>,
    after: &Collection,
) -> AppResult<(Vec<ddl::Twin>, Vec<ddl::Twin>)> {
    let before_columns = before.map(Collection::columns);
    let before_source = before
        .zip(before_columns.as_deref())
        .map(|(collection, columns)| twin_source(collection, columns));
    let after_columns = after.columns();
    ddl::twin_changes(
        dialect,
        &after.table,
        before_source.as_ref(),
        &twin_source(after, &after_columns),
    )
    .map_err(ddl_error)
}

/// An attribute (a relationship counts as one, as in Appwrite) or an index that
/// changed with its collection. Besides the collection's `update`, it has its own
/// event under Appwrite's name, `databases.D.collections.C.attributes.A.create`
/// or `…indexes.I.delete`, for webhooks and realtime channels that name it.
struct Part {
    /// `attributes` or `indexes`.
    kind: &'static str,
    key: String,
    action: &'static str,
    /// The attribute or index as the API shows it (before a delete).
    payload: serde_json::Value,
}

impl Part {
    fn attribute(attribute: &Attribute, action: &'static str) -> Part {
        Part {
            kind: "attributes",
            key: attribute.key.clone(),
            action,
            payload: super::schema::attribute_value(attribute)
                .into_json()
                .unwrap_or_default(),
        }
    }

    fn relationship(relationship: &Relationship, action: &'static str) -> Part {
        Part {
            kind: "attributes",
            key: relationship.key.clone(),
            action,
            payload: super::schema::relationship_value(relationship)
                .into_json()
                .unwrap_or_default(),
        }
    }

    fn index(index: &Index, action: &'static str) -> Part {
        Part {
            kind: "indexes",
            key: index.key.clone(),
            action,
            payload: super::schema::index_value(index)
                .into_json()
                .unwrap_or_default(),
        }
    }
}

/// Removes the indexes of `collection` that use `key` (its column is dropped with
/// them); answers their deletions.
fn dropped_indexes(collection: &mut Collection, key: &str) -> Vec<Part> {
    let dropped: HashSet<String> = ddl::indexes_using(&collection.indexes, key)
        .map(|i| i.key.clone())
        .collect();
    let parts = collection
        .indexes
        .iter()
        .filter(|i| dropped.contains(&i.key))
        .map(|i| Part::index(i, "delete"))
        .collect();
    collection.indexes.retain(|i| !dropped.contains(&i.key));
    parts
}

/// The event of `part` of `collection`: on `attributes` (or `indexes`), on the
/// collection's `databases.D.collections.C.attributes` and on the part's own
/// channel, for API keys holding `databases.read` and for webhooks, like the
/// collection's.
fn part_event(collection: &Collection, part: &Part) -> crate::bus::BusMessage {
    let parts = format!(
        "databases.{}.collections.{}.{}",
        collection.database_id, collection.id, part.kind
    );
    let name = format!("{parts}.{}", part.key);
    crate::bus::BusMessage::Event(crate::bus::Event {
        channels: vec![part.kind.into(), parts, name.clone()],
        key_scope: <DatabasesRead as crate::auth::scopes::ScopeMarker>::NAME.into(),
        ..crate::bus::Event::change(
            &collection.project_id,
            &name,
            &format!("databases.*.collections.*.{}.*", part.kind),
            part.action,
            part.payload.clone(),
        )
    })
}

impl Change<'_> {
    fn project_id(&self) -> &str {
        match self {
            Change::Insert(c) | Change::Update(c) | Change::Delete(c) => &c.project_id,
        }
    }
}

/// What a structural change does to the metadata.
enum Change<'a> {
    Insert(&'a Collection),
    Update(&'a Collection),
    Delete(&'a Collection),
}

/// The event of a change to a collection (its settings, attributes or indexes):
/// `databases.D.collections.C.create|update|delete`, for API keys holding
/// `databases.read` and for webhooks. Structure is configuration, not data any
/// client reads.
fn collection_event(change: &Change<'_>) -> crate::bus::BusMessage {
    let (collection, action) = match change {
        Change::Insert(c) => (c, "create"),
        Change::Update(c) => (c, "update"),
        Change::Delete(c) => (c, "delete"),
    };
    let name = format!(
        "databases.{}.collections.{}",
        collection.database_id, collection.id
    );
    crate::bus::BusMessage::Event(crate::bus::Event {
        channels: vec!["collections".into(), name.clone()],
        key_scope: <DatabasesRead as crate::auth::scopes::ScopeMarker>::NAME.into(),
        ..crate::bus::Event::change(
            &collection.project_id,
            &name,
            "databases.*.collections.*",
            action,
            super::schema::collection_value(collection)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

async fn write_metadata(conn: &mut sqlx::AnyConnection, change: &Change<'_>) -> AppResult<()> {
    match change {
        Change::Insert(c) => store::insert_collection(&mut *conn, c)
            .await
            .conflict_as("collection", &c.id),
        Change::Update(c) => {
            if store::update_collection(&mut *conn, c).await? {
                Ok(())
            } else {
                Err(changed_meanwhile())
            }
        }
        Change::Delete(c) => {
            if store::delete_collection(&mut *conn, &c.project_id, &c.database_id, &c.id, c.version)
                .await?
            {
                Ok(())
            } else {
                Err(changed_meanwhile())
            }
        }
    }
}

/// A DDL statement failed: data that breaks a new unique index is the client's
/// problem; anything else is logged.
fn ddl_failure(err: sqlx::Error) -> AppError {
    let unique = err
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation() || e.code().as_deref() == Some("23000"));
    // MariaDB's data exceptions (a value too long, a null, out of range) and
    // truncation: a stored document does not fit a column redefined.
    let unfit = err
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code == "01000");
    if unique {
        AppError::Invalid {
            code: codes::INDEX_DUPLICATE_VALUES,
            field: "attributes".into(),
            reason: "documents already hold duplicate values for a unique index".into(),
        }
    } else if unfit {
        AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: "attributes".into(),
            reason: "a stored document's value does not fit the attribute as changed".into(),
        }
    } else {
        AppError::Internal(anyhow::Error::new(err).context("collection DDL failed"))
    }
}

/// Runs `statements` and writes the metadata, all or nothing: one transaction on
/// SQLite; on MariaDB (whose DDL commits by itself) `undo` reverses the
/// statements when a later step fails.
async fn run_change(
    state: &AppState,
    statements: &[String],
    undo: &[String],
    change: Change<'_>,
    parts: Vec<Part>,
) -> AppResult<()> {
    run_change_with(state, statements, undo, change, parts, Alongside::default()).await
}

/// A check of the stored documents that a change needs to hold.
type StoredCheck<'a> =
    &'a (dyn for<'c> Fn(&'c mut sqlx::AnyConnection) -> BoxFuture<'c, AppResult<()>> + Sync);

/// `check` as a [`StoredCheck`]: a closure's borrow of its connection is
/// inferred for every lifetime only where the bound names it.
fn stored_check<F>(check: F) -> F
where
    F: for<'c> Fn(&'c mut sqlx::AnyConnection) -> BoxFuture<'c, AppResult<()>> + Sync,
{
    check
}

/// What a change runs besides its DDL: a check of the stored documents, made
/// where no write slips in before the change on SQLite (in its transaction) and
/// under the project's structure lock on MariaDB (where the DDL enforces the rest),
/// data statements, committed with the metadata, and drops, run once the
/// metadata no longer names what they drop.
#[derive(Default)]
struct Alongside<'a> {
    check: Option<StoredCheck<'a>>,
    data: &'a [String],
    /// What runs once the metadata committed: statements that cannot be undone
    /// (dropped columns, indexes, tables), and the twin indexes made in the
    /// room they free. A change cut short leaves at worst something the
    /// metadata does not name, which the next holder of the lock drops
    /// ([`intents`]), never metadata naming what is gone.
    finish: &'a [String],
}

/// [`run_change`] with what runs `alongside` it. On MariaDB the project's
/// structure changes take turns (a named lock, across replicas), and a change to
/// a collection read before another's committed is refused before its DDL runs
/// (`COLLECTION_CHANGED`): its statements, and their undo, were made from what
/// it read.
async fn run_change_with(
    state: &AppState,
    statements: &[String],
    undo: &[String],
    change: Change<'_>,
    parts: Vec<Part>,
    alongside: Alongside<'_>,
) -> AppResult<()> {
    let pool = state.db.pool();
    let project_id = change.project_id().to_string();
    let mut messages = vec![change_message(&project_id), collection_event(&change)];
    if let Change::Update(collection) = &change {
        messages.extend(parts.iter().map(|part| part_event(collection, part)));
    }
    match state.db.dialect() {
        Dialect::Sqlite => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            if let Some(check) = alongside.check {
                check(&mut tx).await?;
            }
            for statement in statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(ddl_failure)?;
            }
            for statement in alongside.data {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(ddl_failure)?;
            }
            write_metadata(&mut tx, &change).await?;
            for statement in alongside.finish {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(ddl_failure)?;
            }
            log::commit(&state.bus, tx, messages).await?;
        }
        Dialect::MySql => {
            // Never handed back to the pool: the named lock is its session's, and
            // goes with it, whether the change ends, fails or its request goes
            // away mid-way. It keeps its place in the pool until closed.
            let mut conn = pool.acquire().await?;
            conn.close_on_drop();
            if !intents::lock_structure(state, &mut conn, &project_id, 60).await? {
                let _ = conn.close().await;
                return Err(AppError::Invalid {
                    code: codes::COLLECTION_CHANGED,
                    field: "collectionId".into(),
                    reason: "another change to the project's collections took too long; try again"
                        .into(),
                });
            }
            // A change whose replica or database died before it ended is
            // settled before this one reads what it changes.
            if intents::settle(state, &mut conn, &project_id).await? {
                forget(state, &project_id).await;
            }
            let mut in_flight = InFlight {
                conn: Some(conn),
                state: state.clone(),
                intent: intent_of(&change, undo, alongside.finish),
                begun: false,
            };
            let result = change_locked(
                state,
                &mut in_flight,
                statements,
                &change,
                messages,
                &alongside,
            )
            .await;
            in_flight.finish().await;
            result?;
        }
    }
    forget(state, &project_id).await;
    Ok(())
}

/// A MariaDB structure change on its locked session. DDL commits by itself, so
/// a change its request dropped mid-way (the client went away) would leave a
/// column or index the metadata does not name, and the next change of the same
/// key failing on it: dropped before it ends, the change is settled by a task
/// of its own on the same session (the lock still held), from its recorded
/// intent. A replica that dies mid-way leaves the intent to the next holder of
/// the lock ([`intents`]).
struct InFlight {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    state: AppState,
    intent: intents::Intent,
    /// Whether its intent may be recorded, and is not yet cleared: only then
    /// is there anything to settle.
    begun: bool,
}

impl InFlight {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("the session is held until the change ends")
    }

    /// Ends the change: closing the session releases its lock.
    async fn finish(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.begun {
            // Closed as it drops, which releases the lock.
            return;
        }
        let state = self.state.clone();
        let project_id = self.intent.project_id.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            // What the dropped request still had running on the session ends
            // first: the session answers in order.
            match intents::settle(&state, &mut conn, &project_id).await {
                Ok(_) => forget(&state, &project_id).await,
                Err(err) => tracing::error!(
                    project = %project_id,
                    error = %err,
                    "a structure change whose request went away could not be settled; \
                     the next change of the project settles it"
                ),
            }
            let _ = conn.close().await;
        });
    }
}

/// The MariaDB half of [`run_change_with`], under the project's structure lock.
async fn change_locked(
    state: &AppState,
    in_flight: &mut InFlight,
    statements: &[String],
    change: &Change<'_>,
    messages: Vec<crate::bus::BusMessage>,
    alongside: &Alongside<'_>,
) -> AppResult<()> {
    let conn = in_flight.conn();
    // The version the change was made from: one less for an update, the same
    // for a delete.
    let read = match change {
        Change::Update(collection) => Some((collection, collection.version - 1)),
        Change::Delete(collection) => Some((collection, collection.version)),
        Change::Insert(_) => None,
    };
    if let Some((collection, version)) = read {
        let stored = store::collection_version(
            conn,
            &collection.project_id,
            &collection.database_id,
            &collection.id,
        )
        .await?;
        if stored != Some(version) {
            return Err(changed_meanwhile());
        }
    }
    if let Some(check) = alongside.check {
        check(conn).await?;
    }
    // DDL commits by itself on MariaDB: the intent is written down first, and
    // the metadata and its log entry commit together after the DDL, or the DDL
    // is undone.
    in_flight.begun = true;
    let InFlight { conn, intent, .. } = in_flight;
    let conn = conn.as_deref_mut().expect("held until the change ends");
    intent.record(conn).await?;
    // An index built over a large collection may rightly run past the statement
    // deadline; its undo too.
    let dialect = state.db.dialect();
    let mut result = Ok(());
    for statement in statements {
        let statement = dialect.unbounded(statement);
        if let Err(err) = sqlx::query(&statement).execute(&mut *conn).await {
            result = Err(ddl_failure(err));
            break;
        }
    }
    if result.is_ok() {
        result = write_logged_metadata(state, conn, change, messages, alongside.data).await;
    }
    let settling = if result.is_ok() {
        &intent.finish
    } else {
        &intent.undo
    };
    // Left behind when a statement or the session failed: the next holder of
    // the lock settles it again.
    let settled = match intents::run_tolerant(state, conn, settling).await {
        Ok(()) => intents::clear(conn, &intent.project_id).await,
        Err(err) => Err(err),
    };
    if let Err(err) = settled {
        tracing::warn!(project = %intent.project_id, error = %err,
            "a structure change's intent stays for the next change to settle");
    }
    in_flight.begun = false;
    result
}

/// What settles `change` should it not end: `undo` until its metadata
/// commits, `finish` after.
fn intent_of(change: &Change<'_>, undo: &[String], finish: &[String]) -> intents::Intent {
    let (collection, version) = match change {
        Change::Insert(c) | Change::Update(c) => (c, Some(c.version)),
        Change::Delete(c) => (c, None),
    };
    intents::Intent {
        project_id: collection.project_id.clone(),
        database_id: collection.database_id.clone(),
        collection_id: collection.id.clone(),
        version,
        undo: undo.to_vec(),
        finish: finish.to_vec(),
    }
}

fn changed_meanwhile() -> AppError {
    AppError::Invalid {
        code: codes::COLLECTION_CHANGED,
        field: "collectionId".into(),
        reason: "the collection was changed by another request at the same time; try again".into(),
    }
}

/// The metadata of a change, its `data` statements and its log entry, in one
/// transaction on `conn`.
async fn write_logged_metadata(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    change: &Change<'_>,
    messages: Vec<crate::bus::BusMessage>,
    data: &[String],
) -> AppResult<()> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for statement in data {
        sqlx::query(&state.db.dialect().unbounded(statement))
            .execute(&mut *tx)
            .await
            .map_err(ddl_failure)?;
    }
    write_metadata(&mut tx, change).await?;
    let logged = crate::db::event_log::append(&mut tx, log::entries(messages)).await?;
    tx.commit().await?;
    state.bus.announce(logged).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_index_keys_keep_old_names_and_fit_past_them() {
        assert_eq!(reference_index_key("author"), "ref_author");
        let longest_plain = "k".repeat(58);
        assert_eq!(
            reference_index_key(&longest_plain),
            format!("ref_{longest_plain}")
        );
        for len in 59..=super::super::model::MAX_KEY_LEN {
            let key = "k".repeat(len);
            let name = reference_index_key(&key);
            assert_eq!(name.len(), super::super::model::MAX_KEY_LEN, "{name}");
            assert!(super::super::model::is_valid_key(&name), "{name}");
            assert_eq!(name, reference_index_key(&key), "stable");
        }
        // Keys that share their first 49 characters still get names of their own.
        let a = format!("{}_a", "k".repeat(59));
        let b = format!("{}_b", "k".repeat(59));
        assert_ne!(reference_index_key(&a), reference_index_key(&b));
    }
}
