//! Documents: reading and writing the rows of a collection's table, with the
//! permission model applied — collection permissions always, each document's own
//! (from the side table) when the collection has document security; API keys with
//! `documents.*` bypass both. The documents service ([`super::service`]) comes
//! through here, on a connection the request chooses (its transaction for writes)
//! and whose SQL dialect the statements are built in; a write here neither ends
//! its operation nor announces its events: the service does.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::query_builder::Separated;
use sqlx::{Any, AnyConnection, QueryBuilder, Row as _};

use crate::auth::permissions::{
    Action, Permission, Role, RoleSet, SideRows, allows, granted, permission_grants,
    push_grant_count, push_permission_filter, push_permitted_resources, push_role_marks,
    sole_reader,
};
use crate::bus::Event;
use crate::db::{Dialect, ids, now_millis};
use crate::error::{AppError, AppResult, codes};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ddl::IndexKind;
use super::ddl::{READER_COLUMN, SEQUENCE_COLUMN, perms_table};
use super::filter::{
    self, Cursor, CursorColumns, Filter, FilterError, KeysetPart, OrderBy, ResolvedFilter,
    cursor_for_row,
};
use super::model::{Attribute, SqlDialect, SqlValue, millis_to_rfc3339};
use super::structure::value_error;
use super::tx::Conn;
use super::{Collection, DataModel, OnDelete};

/// The most documents one list returns.
pub const MAX_PAGE: usize = 1000;
/// The most documents one bulk write takes.
pub const MAX_BULK: usize = 1000;
const ALIAS: &str = "d";

/// A document: its system fields and its attribute values (JSON, as the
/// attributes' types say).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    /// Its number in the order its collection's documents were made
    /// (`$sequence`, [`super::ddl::SEQUENCE_COLUMN`]); 0 when not read.
    pub sequence: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub permissions: Vec<Permission>,
    pub data: Map<String, Value>,
}

impl Document {
    /// Appwrite's shape: `$id`, `$sequence`, `$createdAt`, `$updatedAt`,
    /// `$permissions`, `$collectionId`, `$databaseId`, then the attributes.
    pub fn to_json(&self, collection: &Collection) -> Value {
        let mut object = Map::new();
        object.insert("$id".into(), Value::from(self.id.as_str()));
        object.insert("$sequence".into(), Value::from(self.sequence.to_string()));
        object.insert("$collectionId".into(), Value::from(collection.id.as_str()));
        object.insert(
            "$databaseId".into(),
            Value::from(collection.database_id.as_str()),
        );
        let created = time(self.created_at);
        // A created document's two times are one: written once.
        let updated = match self.updated_at == self.created_at {
            true => created.clone(),
            false => time(self.updated_at),
        };
        object.insert("$createdAt".into(), created);
        object.insert("$updatedAt".into(), updated);
        object.insert(
            "$permissions".into(),
            Value::Array(
                self.permissions
                    .iter()
                    .map(|p| Value::from(p.to_string()))
                    .collect(),
            ),
        );
        for (key, value) in &self.data {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }
}

fn time(millis: i64) -> Value {
    millis_to_rfc3339(millis)
        .map(Value::from)
        .unwrap_or(Value::Null)
}

pub use crate::auth::Access;
use crate::auth::scopes::{DocumentsRead, DocumentsWrite};
use crate::auth::{Container, Reach};

/// The scopes a key needs to read or write documents, as [`Access::of`] takes them.
pub const DOCUMENTS_READ: DocumentsRead = DocumentsRead;
pub const DOCUMENTS_WRITE: DocumentsWrite = DocumentsWrite;

fn reach(collection: &Collection, access: &Access, action: Action) -> Reach {
    access.reach(
        Container {
            enabled: collection.enabled,
            permissions: &collection.permissions,
            item_security: collection.document_security,
        },
        action,
    )
}

/// Whether `access` may read at least some documents of the collection: all of
/// them by its permissions, or those whose own permissions allow it.
pub fn may_read_any(collection: &Collection, access: &Access) -> bool {
    !matches!(reach(collection, access, Action::Read), Reach::None)
}

/// Refuses a list to a client the collection lets read none of its documents,
/// as Appwrite and PocketBase do, rather than answering an empty page that
/// looks like a collection with nothing in it: a disabled collection is not
/// found, and one whose permissions grant the caller no read (with document
/// security off) is `PERMISSION_DENIED`. A list inside a document (a
/// relationship) stays empty instead, so that it does not fail the whole read.
pub fn require_list_reach(collection: &Collection, access: &Access) -> AppResult<()> {
    if !matches!(reach(collection, access, Action::Read), Reach::None) {
        return Ok(());
    }
    if !collection.enabled {
        return Err(AppError::NotFound {
            what: "collection",
            id: collection.id.clone(),
        });
    }
    Err(AppError::PermissionDenied {
        reason: format!(
            "the permissions of collection `{}` let you read none of its documents",
            collection.id
        ),
    })
}

/// Whether `access` may `action` a document with `permissions`: by the
/// collection's permissions, or by the document's own with document security.
fn may(
    collection: &Collection,
    access: &Access,
    action: Action,
    permissions: &[Permission],
) -> bool {
    match reach(collection, access, action) {
        Reach::All => true,
        Reach::PerItem(roles) => allows(&roles, action, permissions),
        Reach::None => false,
    }
}

/// Whether `access` may read `document` (its permissions loaded): a write
/// answers with the document only then, and with null otherwise.
pub fn may_read(collection: &Collection, access: &Access, document: &Document) -> bool {
    may(collection, access, Action::Read, &document.permissions)
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "document",
        id: id.chars().take(64).collect(),
    }
}

fn denied(action: Action) -> AppError {
    AppError::PermissionDenied {
        reason: format!(
            "no permission to {} documents of this collection",
            action.as_str()
        ),
    }
}

pub(crate) fn filter_error(err: FilterError) -> AppError {
    err.into_app_error()
}

fn q(dialect: SqlDialect, name: &str) -> String {
    dialect.quote(name)
}

/// `SELECT d.id, d.created_at, d.updated_at, d.rowid, d.a_… FROM <table> d`.
fn select_from(dialect: SqlDialect, collection: &Collection) -> String {
    select_columns_from(dialect, collection, &collection.columns())
}

/// [`select_from`] for `columns`, the collection's [`Collection::columns`] when
/// the caller needs them again to read the row.
fn select_columns_from(
    dialect: SqlDialect,
    collection: &Collection,
    columns: &[Attribute],
) -> String {
    let mut sql = String::with_capacity(64 + 24 * columns.len() + collection.table.len());
    sql.push_str("SELECT ");
    push_column_list(&mut sql, dialect, SystemColumns::All, columns);
    sql.push_str(" FROM ");
    dialect.push_quoted(&mut sql, "", &collection.table);
    sql.push(' ');
    sql.push_str(ALIAS);
    sql
}

/// `d.id, d.created_at, d.updated_at, d.rowid, d.a_…`: what a document is read from.
fn selected_columns(dialect: SqlDialect, collection: &Collection) -> String {
    column_list(dialect, SystemColumns::All, &collection.columns())
}

/// Which of a document's own columns a read selects, before its attributes'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemColumns {
    /// `id`, `created_at`, `updated_at`, `rowid` (the sequence).
    All,
    /// `id` alone, for a list whose caller shows neither time nor the
    /// sequence and wants no cursors: its documents' are 0.
    Id,
}

impl SystemColumns {
    fn count(self) -> usize {
        match self {
            SystemColumns::All => 4,
            SystemColumns::Id => 1,
        }
    }
}

fn column_list(dialect: SqlDialect, system: SystemColumns, columns: &[Attribute]) -> String {
    let mut sql = String::with_capacity(48 + 24 * columns.len());
    push_column_list(&mut sql, dialect, system, columns);
    sql
}

/// [`column_list`] appended to `sql`: one text grown in place, no allocation per
/// column (a read by id builds it on every call).
fn push_column_list(
    sql: &mut String,
    dialect: SqlDialect,
    system: SystemColumns,
    columns: &[Attribute],
) {
    let column = |sql: &mut String, prefix: &str, name: &str| {
        sql.push_str(ALIAS);
        sql.push('.');
        dialect.push_quoted(sql, prefix, name);
    };
    column(sql, "", "id");
    if system == SystemColumns::All {
        sql.push_str(", ");
        column(sql, "", "created_at");
        sql.push_str(", ");
        column(sql, "", "updated_at");
        sql.push_str(", ");
        column(sql, "", SEQUENCE_COLUMN);
    }
    for attribute in columns {
        sql.push_str(", ");
        column(sql, "a_", &attribute.key);
    }
}

/// A document from a row whose first columns are [`column_list`]'s for `system`
/// and `columns` (the collection's [`Collection::columns`], or those a list
/// reads), computed once per query, not per row. Read by position: no column
/// name is made or looked up per row.
fn document_from(
    system: SystemColumns,
    columns: &[Attribute],
    row: &AnyRow,
) -> AppResult<Document> {
    let mut data = Map::new();
    for (i, attribute) in columns.iter().enumerate() {
        data.insert(
            attribute.key.clone(),
            attribute
                .from_sql_column(row, system.count() + i)
                .map_err(value_error)?,
        );
    }
    let (created_at, updated_at, sequence) = match system {
        SystemColumns::All => (
            row.try_get(1)?,
            row.try_get(2)?,
            // None only in a MariaDB table that had no room for its key
            // (`upgrade::sequences`).
            row.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
        ),
        SystemColumns::Id => (0, 0, 0),
    };
    Ok(Document {
        id: row.try_get(0)?,
        sequence,
        created_at,
        updated_at,
        permissions: Vec::new(),
        data,
    })
}

/// Fills in the permissions of `documents` from the side table, in one query.
async fn load_permissions(
    conn: &mut Conn<'_>,
    collection: &Collection,
    documents: &mut [Document],
) -> AppResult<()> {
    let dialect = conn.dialect();
    if documents.is_empty() {
        return Ok(());
    }
    let mut builder = QueryBuilder::<Any>::new(format!(
        "SELECT resource_id, role, actions FROM {} WHERE resource_id IN (",
        q(dialect, &perms_table(&collection.table))
    ));
    let mut list = builder.separated(", ");
    for document in documents.iter() {
        list.push_bind(document.id.clone());
    }
    list.push_unseparated(")");
    let rows = builder.build().fetch_all(&mut **conn).await?;
    let mut by_document: HashMap<String, Vec<Permission>> = HashMap::new();
    for row in rows {
        let id: String = row.try_get("resource_id")?;
        let role: String = row.try_get("role")?;
        let actions: i64 = row.try_get("actions")?;
        // Stored rows were validated when written; a row that no longer parses is
        // skipped rather than failing every read of the document.
        if let Ok(mut parsed) = granted(&role, actions) {
            by_document.entry(id).or_default().append(&mut parsed);
        }
    }
    for document in documents.iter_mut() {
        let mut permissions = by_document.remove(&document.id).unwrap_or_default();
        permissions.sort_by_key(|p| (p.action, p.role.to_string()));
        document.permissions = permissions;
    }
    Ok(())
}

/// Appends ` AND <may read>` for a client that reads per document: the
/// permission probe of [`push_permission_filter`]. On SQLite the probe seeks
/// the document's grants once, by `resource_id`, and checks their roles as it
/// reads them (`+role`, SQLite's way to keep a term out of the index search)
/// rather than seeking once per role of the reader: a document carries a few
/// grants, a reader five roles or more, and a list walking its order probes
/// every row it passes (ADR 0017: half the time of the probe). MariaDB plans
/// the `EXISTS` as a semi-join of its own.
fn push_reach(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    collection: &Collection,
    roles: &RoleSet,
    action: Action,
) -> AppResult<()> {
    builder.push(" AND ");
    let perms = perms_table(&collection.table);
    match dialect {
        SqlDialect::Sqlite => {
            // The side table's name is a checked identifier (ddl::check_table_name).
            builder.push(format!(
                "EXISTS (SELECT 1 FROM {} nimbus_perm WHERE nimbus_perm.resource_id = {ALIAS}.id \
                 AND +nimbus_perm.role IN (",
                q(dialect, &perms)
            ));
            let mut list = builder.separated(", ");
            for role in roles {
                list.push_bind(role.to_string());
            }
            list.push_unseparated(") AND (nimbus_perm.actions & ");
            builder.push_bind(action.bit()).push(") <> 0)");
            Ok(())
        }
        SqlDialect::MySql => {
            push_permission_filter(builder, &format!("{ALIAS}.id"), &perms, action, roles)
                .map_err(|err| AppError::Internal(anyhow::anyhow!("permission filter: {err}")))
        }
    }
}

/// A document by id, as `access` may read it (`None` when absent or hidden),
/// with its permissions when `with_permissions` (one more query).
/// See [`get_impl`]; boxed so that resolvers can hold the future across awaits.
pub fn get<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    id: &'a str,
    with_permissions: bool,
) -> BoxFuture<'a, AppResult<Option<Document>>> {
    Box::pin(get_impl(conn, collection, access, id, with_permissions))
}

async fn get_impl(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    id: &str,
    with_permissions: bool,
) -> AppResult<Option<Document>> {
    let dialect = conn.dialect();
    if ids::validate("id", id).is_err() {
        return Ok(None);
    }
    let reach = reach(collection, access, Action::Read);
    if matches!(reach, Reach::None) {
        return Ok(None);
    }
    let columns = collection.columns();
    let mut builder = QueryBuilder::<Any>::new(select_columns_from(dialect, collection, &columns));
    builder
        .push(" WHERE ")
        .push(ALIAS)
        .push(".id = ")
        .push_bind(id.to_string());
    if let Reach::PerItem(roles) = &reach {
        push_reach(&mut builder, dialect, collection, roles, Action::Read)?;
    }
    let Some(row) = builder.build().fetch_optional(&mut **conn).await? else {
        return Ok(None);
    };
    let mut documents = vec![document_from(SystemColumns::All, &columns, &row)?];
    if with_permissions {
        load_permissions(conn, collection, &mut documents).await?;
    }
    Ok(documents.pop())
}

/// The documents among `ids` that `access` may read, in one query.
pub fn get_many<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    ids: &'a [String],
) -> BoxFuture<'a, AppResult<Vec<Document>>> {
    Box::pin(async move {
        let dialect = conn.dialect();
        let reach = reach(collection, access, Action::Read);
        let ids: Vec<&String> = ids
            .iter()
            .filter(|id| ids::validate("id", id).is_ok())
            .collect();
        if matches!(reach, Reach::None) || ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut builder = QueryBuilder::<Any>::new(select_from(dialect, collection));
        builder.push(format!(" WHERE {ALIAS}.id IN ("));
        let mut list = builder.separated(", ");
        for id in &ids {
            list.push_bind((*id).clone());
        }
        list.push_unseparated(")");
        if let Reach::PerItem(roles) = &reach {
            push_reach(&mut builder, dialect, collection, roles, Action::Read)?;
        }
        let rows = builder.build().fetch_all(&mut **conn).await?;
        let columns = collection.columns();
        let mut documents = rows
            .iter()
            .map(|row| document_from(SystemColumns::All, &columns, row))
            .collect::<AppResult<Vec<_>>>()?;
        load_permissions(conn, collection, &mut documents).await?;
        Ok(documents)
    })
}

/// Refuses a filter or an order on a reference column (a many-to-one or one-to-one
/// field, as the generic query language names it) unless `access` may read every
/// document of the related collection: matching or sorting by the ids it holds
/// would tell which documents the reader may not read exist, and what points at
/// them. The typed filters follow the same rule for conditions on related fields.
pub fn check_reference_conditions(
    collection: &Collection,
    model: &DataModel,
    access: &Access,
    filter: &Filter,
    orders: &[OrderBy],
) -> AppResult<()> {
    /// A condition on the documents a relationship reaches: by its key, or
    /// (many-to-many) by its junction.
    enum Via<'f> {
        Key(&'f str),
        Junction(&'f str),
    }
    fn fields<'f>(
        filter: &'f Filter,
        out: &mut Vec<&'f str>,
        nested: &mut Vec<(Via<'f>, &'f Filter)>,
    ) {
        let field = match filter {
            Filter::And(all) | Filter::Or(all) => {
                for inner in all {
                    fields(inner, out, nested);
                }
                return;
            }
            Filter::Not(inner) => return fields(inner, out, nested),
            Filter::Related {
                field,
                filter: inner,
                ..
            } => {
                if let super::filter::Field::Attribute(key) = field {
                    nested.push((Via::Key(key), inner));
                }
                field
            }
            Filter::RelatedThrough {
                link,
                filter: inner,
                ..
            } => {
                nested.push((Via::Junction(&link.junction), inner));
                return;
            }
            leaf => match leaf.field() {
                Some(field) => field,
                None => return,
            },
        };
        if let super::filter::Field::Attribute(key) = field {
            out.push(key.as_str());
        }
    }
    let mut keys = Vec::new();
    let mut nested = Vec::new();
    fields(filter, &mut keys, &mut nested);
    for order in orders {
        if let filter::Field::Attribute(key) = &order.field {
            keys.push(key.as_str());
        }
    }
    for relationship in collection.relationships.iter().filter(|r| r.has_column()) {
        if !keys.contains(&relationship.key.as_str()) {
            continue;
        }
        let Some(related) =
            model.collection(&collection.database_id, &relationship.related_collection)
        else {
            continue;
        };
        // `All` only when the collection's own permissions let it read every one.
        if !matches!(reach(related, access, Action::Read), Reach::All) {
            return Err(AppError::PermissionDenied {
                reason: format!(
                    "filtering or ordering on `{}` needs permission to read every document of `{}`",
                    relationship.key, related.name
                ),
            });
        }
    }
    // A condition on related documents holds them to the same rule: one
    // comparing their own references reads those too.
    for (via, inner) in nested {
        let relationship = collection.relationships.iter().find(|r| match via {
            Via::Key(key) => r.key == key,
            Via::Junction(junction) => r.junction.as_deref() == Some(junction),
        });
        let Some(related) = relationship
            .and_then(|r| model.collection(&collection.database_id, &r.related_collection))
        else {
            continue;
        };
        check_reference_conditions(related, model, access, inner, &[])?;
    }
    Ok(())
}

/// Clears in `documents` (of `collection`) the references to documents `access`
/// may not read: a many-to-one or one-to-one field shows a related document's id
/// only to who may read that document, as the typed fields resolve it. One query
/// per relationship whose related documents are readable one by one; none when
/// the caller reads all of them or none.
pub fn hide_unreadable_references<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    model: &'a DataModel,
    documents: &'a mut [Document],
) -> BoxFuture<'a, AppResult<()>> {
    Box::pin(async move {
        let dialect = conn.dialect();
        for relationship in collection.relationships.iter().filter(|r| r.has_column()) {
            let Some(related) =
                model.collection(&collection.database_id, &relationship.related_collection)
            else {
                continue;
            };
            let mut targets: Vec<String> = documents
                .iter()
                .filter_map(|d| d.data.get(&relationship.key)?.as_str().map(String::from))
                .collect();
            if targets.is_empty() {
                continue;
            }
            targets.sort();
            targets.dedup();
            let readable: Vec<String> = match reach(related, access, Action::Read) {
                Reach::All => continue,
                Reach::None => Vec::new(),
                Reach::PerItem(roles) => {
                    let mut builder = QueryBuilder::<Any>::new(format!(
                        "SELECT {ALIAS}.id FROM {} {ALIAS} WHERE {ALIAS}.id IN (",
                        q(dialect, &related.table)
                    ));
                    let mut list = builder.separated(", ");
                    for id in &targets {
                        list.push_bind(id.clone());
                    }
                    list.push_unseparated(")");
                    push_reach(&mut builder, dialect, related, &roles, Action::Read)?;
                    builder
                        .build_query_scalar::<String>()
                        .fetch_all(&mut **conn)
                        .await?
                }
            };
            for document in documents.iter_mut() {
                if let Some(value) = document.data.get_mut(&relationship.key)
                    && value
                        .as_str()
                        .is_some_and(|id| !readable.iter().any(|r| r.as_str() == id))
                {
                    *value = Value::Null;
                }
            }
        }
        Ok(())
    })
}

/// The cursor of document `id` in the order `orders`: Appwrite's `cursorAfter`
/// names a document, not a position.
/// See [`cursor_of_impl`]; boxed so that resolvers can hold the future across awaits.
pub fn cursor_of<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    orders: &'a [OrderBy],
    id: &'a str,
) -> BoxFuture<'a, AppResult<Cursor>> {
    Box::pin(cursor_of_impl(conn, collection, access, orders, id))
}

async fn cursor_of_impl(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    orders: &[OrderBy],
    id: &str,
) -> AppResult<Cursor> {
    let dialect = conn.dialect();
    let invalid = || {
        filter::cursor_error(
            "queries",
            format!(
                "the cursor names document `{}`, which does not exist or cannot be read",
                id.chars().take(64).collect::<String>()
            ),
        )
    };
    ids::validate("cursor", id).map_err(|_| invalid())?;
    let reach = reach(collection, access, Action::Read);
    if matches!(reach, Reach::None) {
        return Err(invalid());
    }
    let mut builder = QueryBuilder::<Any>::new(select_from(dialect, collection));
    builder
        .push(format!(" WHERE {ALIAS}.id = "))
        .push_bind(id.to_string());
    if let Reach::PerItem(roles) = &reach {
        push_reach(&mut builder, dialect, collection, roles, Action::Read)?;
    }
    let row = builder
        .build()
        .fetch_optional(&mut **conn)
        .await?
        .ok_or_else(invalid)?;
    cursor_for_row(&row, &collection.columns(), orders).map_err(filter_error)
}

/// Which part of a list to read.
#[derive(Debug, Clone)]
pub enum Paging {
    /// Rows after `after` (or before `before`, reading from the end), `limit` of them.
    Keyset {
        after: Option<Cursor>,
        before: Option<Cursor>,
        limit: usize,
        from_end: bool,
    },
    /// Appwrite's `limit` and `offset`.
    Offset { limit: usize, offset: usize },
}

/// A list request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: ResolvedFilter,
    pub orders: Vec<OrderBy>,
    pub paging: Paging,
    /// Count every matching document too (a second query; only when asked).
    pub want_total: bool,
    /// Read the documents' permissions (one more query); when not asked for,
    /// the listed documents carry none.
    pub want_permissions: bool,
    /// Read only these attributes (and relationship columns) of each document,
    /// besides those the order needs; `None` reads them all.
    pub only: Option<Vec<String>>,
    /// Tell whether more documents follow the page ([`Listed::has_more`]): one
    /// row more is read. Without it, `has_more` is false.
    pub want_more: bool,
    /// Give each document its cursor; without it, every cursor is empty.
    pub want_cursors: bool,
}

impl ListQuery {
    /// The documents matching `filter` on the page `paging`, in id order, with
    /// their permissions and every attribute, and whether more follow.
    pub fn all_of(filter: ResolvedFilter, paging: Paging) -> ListQuery {
        ListQuery {
            filter,
            orders: Vec::new(),
            paging,
            want_total: false,
            want_permissions: true,
            only: None,
            want_more: true,
            want_cursors: false,
        }
    }

    /// The first `limit` documents matching `filter`, as [`ListQuery::all_of`].
    pub fn first(filter: ResolvedFilter, limit: usize) -> ListQuery {
        ListQuery::all_of(
            filter,
            Paging::Keyset {
                after: None,
                before: None,
                limit,
                from_end: false,
            },
        )
    }
}

/// One page of documents, each with its cursor.
#[derive(Debug, Clone)]
pub struct Listed {
    pub documents: Vec<(Document, Cursor)>,
    /// More rows beyond the page in the reading direction.
    pub has_more: bool,
    pub total: Option<i64>,
}

/// The documents `access` may read that match `query`.
/// See [`list_impl`]; boxed so that resolvers can hold the future across awaits.
pub fn list<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    query: &'a ListQuery,
) -> BoxFuture<'a, AppResult<Listed>> {
    Box::pin(list_impl(conn, collection, access, query))
}

async fn list_impl(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    query: &ListQuery,
) -> AppResult<Listed> {
    let dialect = conn.dialect();
    let reach = reach(collection, access, Action::Read);
    if matches!(reach, Reach::None) {
        return Ok(Listed {
            documents: Vec::new(),
            has_more: false,
            total: query.want_total.then_some(0),
        });
    }
    let columns = collection.columns();
    let by_reader = match by_reader(collection, &reach, dialect, &query.filter)? {
        Some(roles) => Some(Branches::of(conn, dialect, collection, roles).await?),
        None => None,
    };
    // Read by sole reader, the grants left are those of shared documents.
    let side_rows = match by_reader {
        Some(_) => SideRows::Shared,
        None => SideRows::All,
    };
    let grants = match &by_reader {
        // No shared document to read: no plan to choose for them.
        Some(branches) if !branches.shared => Grants::NONE,
        _ => Grants::count(conn, collection, &reach, side_rows, query.want_total).await?,
    };
    let matching = Matching {
        collection,
        filter: &query.filter,
        reach: &reach,
        drive: grants.page_drive(),
        side_rows,
    };
    let read = read_columns(&columns, query);
    let system = system_columns(query);
    // A page that walks the list's order probes each row it passes: MariaDB
    // would rather materialise every grant of the reader first, which costs
    // what the reader may read when the walk costs a page (ADR 0017).
    let walk = match (matching.drive, &reach) {
        (Drive::Documents, Reach::PerItem(_)) => db_dialect(dialect).probe_each_row(),
        _ => "",
    };
    let (rows, limit, from_end) = match &by_reader {
        Some(branches) => {
            let page = Page {
                read: &read,
                system,
                query,
            };
            read_page_by_reader(conn, walk, &matching, branches, &columns, page).await?
        }
        None => {
            let selected = column_list(dialect, system, &read);
            read_page(conn, &matching, walk, &selected, &columns, query).await?
        }
    };
    let has_more = rows.len() > limit;
    let cursor_columns = if query.want_cursors {
        Some(CursorColumns::new(&columns, &query.orders).map_err(filter_error)?)
    } else {
        None
    };
    let (mut documents, mut cursors) =
        page_of(&rows, limit, system, &read, cursor_columns.as_ref())?;
    if from_end {
        documents.reverse();
        cursors.reverse();
    }
    if query.want_permissions {
        load_permissions(conn, collection, &mut documents).await?;
    }
    let total = if query.want_total {
        let counting = Matching {
            drive: grants.count_drive(),
            ..matching
        };
        Some(match &by_reader {
            Some(branches) => counting.count_by_reader(conn, branches).await?,
            None => counting.count(conn).await?,
        })
    } else {
        None
    };
    Ok(Listed {
        documents: documents.into_iter().zip(cursors).collect(),
        has_more,
        total,
    })
}

/// Below this many side-table rows naming a reader's roles, a page of a list
/// drives from them ([`Drive::Grants`]) whatever the collection's size: reading
/// every grant and looking each document up by id costs at most this many
/// lookups and a sort of as many rows (about 1 ms). Measured in ADR 0017.
const PAGE_FROM_GRANTS_BELOW: i64 = 1000;

/// Past [`PAGE_FROM_GRANTS_BELOW`], a page still drives from the grants while
/// `grants² < PAGE_GRANTS_SQUARED_PER_DOCUMENT × documents`. Walking the list's
/// order with a probe per row reads about `page × documents / grants` rows
/// before it fills a page, where the grants plan reads `grants` of them, each a
/// few times dearer: the two meet near that curve (ADR 0017: 1,000,000
/// documents, 4,000 readable, 26 ms through the probe, 15 through the grants;
/// 10,000 documents, 1,000 readable, 0.2 and 0.6 ms). Below the curve the
/// probe would cost what the collection holds; the grants plan costs what the
/// reader may read, however large the collection grows.
const PAGE_GRANTS_SQUARED_PER_DOCUMENT: i64 = 30;

/// The same for a list's total, and the most a page's threshold grows to.
/// Counting through the permission probe reads every document the filter
/// matches, so counting through the grants is the cheaper plan as long as they
/// are fewer than the documents; past this many, the grants' `DISTINCT` costs
/// more than the probes on MariaDB (ADR 0017), and the count of grants itself
/// stops.
const COUNT_FROM_GRANTS_BELOW: i64 = 20_000;

/// How many grants a page drives from, for a collection of about `documents`
/// (from [`Dialect::row_estimate`]): [`PAGE_FROM_GRANTS_BELOW`] at least, then
/// up to the curve of [`PAGE_GRANTS_SQUARED_PER_DOCUMENT`], at most
/// [`COUNT_FROM_GRANTS_BELOW`].
fn page_threshold(documents: i64) -> i64 {
    let curve = (PAGE_GRANTS_SQUARED_PER_DOCUMENT.saturating_mul(documents.max(0)) as f64).sqrt();
    (curve as i64).clamp(PAGE_FROM_GRANTS_BELOW, COUNT_FROM_GRANTS_BELOW)
}

/// Which side a list reads first when the reader reads per document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// The collection table in the list's order, each row probed in the side
    /// table (`EXISTS`): the plan for a reader who may read much of it.
    Documents,
    /// The reader's grants in the side table (through its `(role, resource_id,
    /// actions)` index), each document looked up by id: the plan for a reader who may
    /// read few documents of a large collection.
    Grants,
}

/// How many side-table rows the reader's roles name (`None` when the reader
/// does not read per document), counted up to a cap, and below how many of them
/// a page of this collection drives from them.
#[derive(Debug, Clone, Copy)]
struct Grants {
    grants: Option<i64>,
    page_below: i64,
}

impl Grants {
    /// A reader without grants to count: every page of its shared documents
    /// would drive from none.
    const NONE: Grants = Grants {
        grants: Some(0),
        page_below: PAGE_FROM_GRANTS_BELOW,
    };

    /// One index-only count over `(role, resource_id, actions)`, stopped at
    /// [`PAGE_FROM_GRANTS_BELOW`], or at [`COUNT_FROM_GRANTS_BELOW`] for a list
    /// that wants its total (whose count reads far more than this anyway). A
    /// reader with more grants than the first cap pays two more statements, both
    /// cheap beside the list it is about to read: the collection's estimated
    /// size, which scales the page's threshold ([`page_threshold`]), and, when
    /// that threshold is higher, the count again up to it.
    async fn count(
        conn: &mut Conn<'_>,
        collection: &Collection,
        reach: &Reach,
        side_rows: SideRows,
        want_total: bool,
    ) -> AppResult<Grants> {
        let Reach::PerItem(roles) = reach else {
            return Ok(Grants {
                grants: None,
                page_below: PAGE_FROM_GRANTS_BELOW,
            });
        };
        let cap = if want_total {
            COUNT_FROM_GRANTS_BELOW
        } else {
            PAGE_FROM_GRANTS_BELOW
        };
        let mut grants = count_grants(conn, collection, roles, side_rows, cap).await?;
        let mut page_below = PAGE_FROM_GRANTS_BELOW;
        if grants >= PAGE_FROM_GRANTS_BELOW {
            page_below = page_threshold(row_estimate(conn, collection).await?);
            if grants == cap && page_below > cap {
                grants = count_grants(conn, collection, roles, side_rows, page_below).await?;
            }
        }
        Ok(Grants {
            grants: Some(grants),
            page_below,
        })
    }

    fn drive(self, below: i64) -> Drive {
        match self.grants {
            Some(grants) if grants < below => Drive::Grants,
            _ => Drive::Documents,
        }
    }

    /// The plan of a page of the list.
    fn page_drive(self) -> Drive {
        self.drive(self.page_below)
    }

    /// The plan of the list's total.
    fn count_drive(self) -> Drive {
        self.drive(COUNT_FROM_GRANTS_BELOW)
    }
}

/// How many side-table rows of `collection` (`side_rows` of them) name one of
/// `roles`, up to `cap`.
async fn count_grants(
    conn: &mut Conn<'_>,
    collection: &Collection,
    roles: &RoleSet,
    side_rows: SideRows,
    cap: i64,
) -> AppResult<i64> {
    let mut builder = QueryBuilder::<Any>::new("");
    push_grant_count(
        &mut builder,
        &perms_table(&collection.table),
        roles,
        side_rows,
        cap,
    )
    .map_err(|err| AppError::Internal(anyhow::anyhow!("permission filter: {err}")))?;
    Ok(builder.build_query_scalar().fetch_one(&mut **conn).await?)
}

/// About how many documents `collection` holds, from what the database already
/// keeps ([`Dialect::row_estimate`]): no scan of the table.
async fn row_estimate(conn: &mut Conn<'_>, collection: &Collection) -> AppResult<i64> {
    let dialect = db_dialect(conn.dialect());
    let (sql, bind_name) = dialect.row_estimate(&q(conn.dialect(), &collection.table));
    let mut query = sqlx::query_scalar::<Any, i64>(&sql);
    if bind_name {
        query = query.bind(collection.table.as_str());
    }
    Ok(query.fetch_one(&mut **conn).await?)
}

fn db_dialect(dialect: SqlDialect) -> Dialect {
    match dialect {
        SqlDialect::Sqlite => Dialect::Sqlite,
        SqlDialect::MySql => Dialect::MySql,
    }
}

/// The documents a list matches: its filter, and what the reader may read.
struct Matching<'q> {
    collection: &'q Collection,
    filter: &'q ResolvedFilter,
    reach: &'q Reach,
    /// Set to [`Drive::Grants`] only by a caller that reads through
    /// [`Matching::push_from`]: the conditions then leave the permission out.
    drive: Drive,
    /// [`SideRows::Shared`] for the last branch of a list read by sole reader
    /// ([`push_page_by_reader`]): only the documents without one, through the
    /// grants not marked `sole`.
    side_rows: SideRows,
}

impl Matching<'_> {
    /// ` FROM <table> d`, or, driving from the grants, ` FROM (<the documents
    /// the reader may read>) nimbus_reach JOIN <table> d ON d.id =
    /// nimbus_reach.resource_id` with the join order fixed (`CROSS JOIN` on
    /// SQLite, `STRAIGHT_JOIN` on MariaDB): without statistics the planners
    /// would rather walk an index in the list's order.
    fn push_from(&self, builder: &mut QueryBuilder<'_, Any>, dialect: SqlDialect) -> AppResult<()> {
        let table = q(dialect, &self.collection.table);
        match (self.drive, self.reach) {
            (Drive::Grants, Reach::PerItem(roles)) => {
                builder.push(" FROM ");
                push_permitted_resources(
                    builder,
                    &perms_table(&self.collection.table),
                    Action::Read,
                    roles,
                    self.side_rows,
                )
                .map_err(|err| AppError::Internal(anyhow::anyhow!("permission filter: {err}")))?;
                let join = db_dialect(dialect).ordered_join();
                builder.push(format!(
                    " nimbus_reach {join} {table} {ALIAS} ON {ALIAS}.id = nimbus_reach.resource_id"
                ));
            }
            _ => {
                builder.push(format!(" FROM {table} {ALIAS}"));
            }
        }
        Ok(())
    }

    /// ` WHERE <filter> AND <may read>`.
    fn push_where(
        &self,
        builder: &mut QueryBuilder<'_, Any>,
        dialect: SqlDialect,
    ) -> AppResult<()> {
        builder.push(" WHERE ");
        self.push_conditions(builder, dialect)
    }

    /// `<filter> AND <may read>`, and, for [`SideRows::Shared`], `AND
    /// d.nimbus_reader IS NULL`: the documents a branch of their own reads by
    /// their sole reader are never read twice, whatever the grants say.
    fn push_conditions(
        &self,
        builder: &mut QueryBuilder<'_, Any>,
        dialect: SqlDialect,
    ) -> AppResult<()> {
        filter::push_filter(builder, dialect, ALIAS, self.filter).map_err(filter_error)?;
        if self.side_rows == SideRows::Shared {
            builder.push(format!(
                " AND {ALIAS}.{} IS NULL",
                q(dialect, READER_COLUMN)
            ));
        }
        if let (Reach::PerItem(roles), Drive::Documents) = (self.reach, self.drive) {
            push_reach(builder, dialect, self.collection, roles, Action::Read)?;
        }
        Ok(())
    }

    /// How many documents match when read by sole reader: the documents whose
    /// sole reader is one of the `branches`' roles (a range of an index led by
    /// the column) and, when the shared documents' branch runs, those of this
    /// [`SideRows::Shared`] matching, in one statement; none without a branch.
    async fn count_by_reader(
        &self,
        conn: &mut Conn<'_>,
        branches: &Branches<'_>,
    ) -> AppResult<i64> {
        if branches.is_empty() {
            return Ok(0);
        }
        let dialect = conn.dialect();
        let mut count = QueryBuilder::<Any>::new("");
        self.push_count_by_reader(&mut count, dialect, branches)?;
        Ok(count
            .build_query_scalar::<i64>()
            .fetch_one(&mut **conn)
            .await?)
    }

    /// `SELECT COUNT(*) FROM <table> d WHERE d.nimbus_reader IN (…) AND
    /// <filter>`, the shared documents' count added as a second scalar
    /// subquery when their branch runs (one of the two alone when the other
    /// has nothing to count: a plain count is a range count on MariaDB, with
    /// no subquery to set up). `branches` is not empty.
    fn push_count_by_reader(
        &self,
        builder: &mut QueryBuilder<'_, Any>,
        dialect: SqlDialect,
        branches: &Branches<'_>,
    ) -> AppResult<()> {
        let both = !branches.roles.is_empty() && branches.shared;
        if both {
            builder.push("SELECT (");
        }
        if !branches.roles.is_empty() {
            builder.push(format!(
                "SELECT COUNT(*) FROM {} {ALIAS} WHERE {ALIAS}.{} IN (",
                q(dialect, &self.collection.table),
                q(dialect, READER_COLUMN)
            ));
            let mut list = builder.separated(", ");
            for role in &branches.roles {
                list.push_bind(role.to_string());
            }
            list.push_unseparated(") AND ");
            filter::push_filter(builder, dialect, ALIAS, self.filter).map_err(filter_error)?;
        }
        if both {
            builder.push(") + (");
        }
        if branches.shared {
            builder.push("SELECT COUNT(*)");
            self.push_from(builder, dialect)?;
            self.push_where(builder, dialect)?;
        }
        if both {
            builder.push(")");
        }
        Ok(())
    }

    /// How many documents match, whatever the page.
    async fn count(&self, conn: &mut Conn<'_>) -> AppResult<i64> {
        let dialect = conn.dialect();
        let mut count = QueryBuilder::<Any>::new("SELECT COUNT(*)");
        self.push_from(&mut count, dialect)?;
        self.push_where(&mut count, dialect)?;
        Ok(count
            .build_query_scalar::<i64>()
            .fetch_one(&mut **conn)
            .await?)
    }
}

/// The most roles whose documents a list reads by sole reader, one branch
/// each ([`push_page_by_reader`]). A signed-in user holds five roles and three
/// more per team it belongs to: sixteen are a user in three teams (fourteen)
/// with two labels. Each branch is an index range of at most a page, so a page
/// of sixteen branches reads at most sixteen pages of entries, about what
/// ADR 0017's grants plan reads for a few hundred grants; a reader with more
/// roles keeps that plan, whose cost does not grow with its roles.
const MAX_READER_BRANCHES: usize = 16;

/// The most values the branches of a list read by sole reader bind for their
/// filter, all branches together (each repeats it). A filter binds at most
/// 10,000 values (100 conditions, each 100 values of a list counting as one):
/// repeated in seventeen branches, the largest would pass both databases'
/// limits on the values of one statement (32,766 on SQLite, 65,535 on MariaDB), and the statement would
/// grow as much. A filter past this keeps ADR 0017's plans, a statement with
/// the filter once; a typical one (a few values) is far below it.
const MAX_BRANCHED_VALUES: usize = 1_000;

/// The roles a list of `collection` reads by sole reader (ADR 0022): those of
/// a reader who reads per document, once the collection's sole readers are
/// filled in ([`Collection::readers_ready`]), while the reader holds at most
/// [`MAX_READER_BRANCHES`] of them and the filter repeated in every branch
/// binds at most [`MAX_BRANCHED_VALUES`]. `None` keeps ADR 0017's plans.
fn by_reader<'r>(
    collection: &Collection,
    reach: &'r Reach,
    dialect: SqlDialect,
    filter: &ResolvedFilter,
) -> AppResult<Option<&'r RoleSet>> {
    let Reach::PerItem(roles) = reach else {
        return Ok(None);
    };
    if !collection.readers_ready || roles.len() > MAX_READER_BRANCHES {
        return Ok(None);
    }
    let values = filter::bound_values(dialect, ALIAS, filter).map_err(filter_error)?;
    let branches = roles.len() + 1;
    Ok((branches.saturating_mul(values) <= MAX_BRANCHED_VALUES).then_some(roles))
}

/// The branches of a list read by sole reader ([`push_page_by_reader`]): one
/// per role in `roles`, and one of the documents with several readers when
/// `shared`.
struct Branches<'r> {
    /// The reader's roles whose documents a branch of their own reads.
    roles: Vec<&'r Role>,
    /// Whether the documents with several readers are read too.
    shared: bool,
}

impl<'r> Branches<'r> {
    /// The branches a list of `collection` by a reader of `roles` runs.
    ///
    /// On MariaDB, only those that can find a document: the roles that are the
    /// sole reader of some document of the collection, and the shared
    /// documents' branch when the reader holds a grant not marked `sole`, both
    /// read from the side table's `(role, sole, …)` index in one statement
    /// ([`push_role_marks`]) that takes the place of the count of shared
    /// grants for a reader without any. MariaDB materialises each branch of a
    /// union before merging them (about 45 µs of its CPU each, measured in
    /// ADR 0022), and a page of one branch needs no union at all. A role
    /// whose first sole document is written between this statement and the
    /// page is not read by that page, as if the list had been read just
    /// before the write; no branch ever reads a document its role may not.
    ///
    /// SQLite runs every branch: an empty one costs it one seek of its index,
    /// less than the statement that would leave it out.
    async fn of(
        conn: &mut AnyConnection,
        dialect: SqlDialect,
        collection: &Collection,
        roles: &'r RoleSet,
    ) -> AppResult<Branches<'r>> {
        if dialect == SqlDialect::Sqlite {
            return Ok(Branches {
                roles: roles.iter().collect(),
                shared: true,
            });
        }
        let mut marks = QueryBuilder::<Any>::new("");
        push_role_marks(&mut marks, &perms_table(&collection.table), roles)
            .map_err(|err| AppError::Internal(anyhow::anyhow!("permission filter: {err}")))?;
        let marks = marks.build().fetch_one(conn).await?;
        let marked = |i: usize| -> AppResult<bool> { Ok(marks.try_get::<i64, _>(i)? != 0) };
        let mut sole_readers = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            if marked(i + 1)? {
                sole_readers.push(role);
            }
        }
        Ok(Branches {
            roles: sole_readers,
            shared: marked(0)?,
        })
    }

    /// No branch: nothing to read.
    fn is_empty(&self) -> bool {
        self.roles.is_empty() && !self.shared
    }

    /// How many branches run.
    fn len(&self) -> usize {
        self.roles.len() + usize::from(self.shared)
    }
}

/// What a page shows of each document: the columns read and the system ones.
#[derive(Clone, Copy)]
struct Page<'q> {
    read: &'q [Attribute],
    system: SystemColumns,
    query: &'q ListQuery,
}

/// Appends a page of the documents of `matching` read by sole reader (ADR
/// 0022): one branch per role of `branches` over the documents whose sole
/// reader it is, and, when `branches.shared`, one over the documents with
/// none ([`SideRows::Shared`] in `matching`: ADR 0017's plan, through the
/// grants not marked `sole`), each with the page's filter, keyset and order
/// and as many rows as the page could take from it, merged in the same order:
///
/// ```sql
/// SELECT <columns> FROM (
///   SELECT * FROM (SELECT … FROM t d WHERE d.nimbus_reader = ? AND <filter>
///     AND <keyset> ORDER BY <order>, id LIMIT n + 1) nimbus_b0
///   UNION ALL …
///   UNION ALL SELECT * FROM (SELECT … <the shared documents' plan>
///     AND d.nimbus_reader IS NULL ORDER BY <order>, id LIMIT n + 1) nimbus_bK
/// ) d ORDER BY <order>, id LIMIT n + 1
/// ```
///
/// (MariaDB takes each branch in parentheses instead; SQLite allows an order
/// and a limit in a compound select's member only inside a subquery). With an
/// offset each branch reads `offset + n + 1` rows and the merge skips
/// `offset`. A single branch is the page itself, with no merge: `SELECT
/// <columns> FROM t d WHERE d.nimbus_reader = ? AND <filter> AND <keyset>
/// ORDER BY <order>, id LIMIT n + 1 [OFFSET offset]`. A document has one sole
/// reader or none, and the shared branch reads only those with none, so no
/// document comes twice; a document a role branch reads is readable by that
/// role alone, which the reader holds. `branches` is not empty.
fn push_page_by_reader(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    matching: &Matching<'_>,
    branches: &Branches<'_>,
    columns: &[Attribute],
    page: Page<'_>,
    slice: Slice,
) -> AppResult<(usize, bool)> {
    let table = q(dialect, &matching.collection.table);
    let reader = q(dialect, READER_COLUMN);
    let roles = branches.roles.iter().copied().map(Some);
    let branch_list = roles.chain(branches.shared.then_some(None));
    if branches.len() == 1 {
        builder.push(format!(
            "SELECT {}",
            column_list(dialect, page.system, page.read)
        ));
        for role in branch_list {
            push_branch(builder, dialect, matching, &table, &reader, role)?;
        }
        return push_paging(builder, dialect, columns, page.query, Step::Whole, slice);
    }
    // The branches read the times too: the merge may order by them.
    let branch_columns = column_list(dialect, SystemColumns::All, page.read);
    builder.push(format!(
        "SELECT {} FROM (",
        column_list(dialect, page.system, page.read)
    ));
    for (i, role) in branch_list.enumerate() {
        if i > 0 {
            builder.push(" UNION ALL ");
        }
        builder.push(match dialect {
            SqlDialect::Sqlite => "SELECT * FROM (",
            SqlDialect::MySql => "(",
        });
        builder.push(format!("SELECT {branch_columns}"));
        push_branch(builder, dialect, matching, &table, &reader, role)?;
        push_paging(builder, dialect, columns, page.query, Step::Branch, slice)?;
        match dialect {
            SqlDialect::Sqlite => builder.push(format!(") nimbus_b{i}")),
            SqlDialect::MySql => builder.push(")"),
        };
    }
    builder.push(format!(") {ALIAS}"));
    push_paging(builder, dialect, columns, page.query, Step::Merge, slice)
}

/// The `FROM` and `WHERE` of one branch of [`push_page_by_reader`]: the
/// documents whose sole reader is `role`, or, for `None`, the shared
/// documents of `matching`; the filter in both.
fn push_branch(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    matching: &Matching<'_>,
    table: &str,
    reader: &str,
    role: Option<&Role>,
) -> AppResult<()> {
    match role {
        Some(role) => {
            builder.push(format!(" FROM {table} {ALIAS} WHERE {ALIAS}.{reader} = "));
            builder.push_bind(role.to_string()).push(" AND ");
            filter::push_filter(builder, dialect, ALIAS, matching.filter).map_err(filter_error)?;
        }
        None => {
            matching.push_from(builder, dialect)?;
            matching.push_where(builder, dialect)?;
        }
    }
    Ok(())
}

/// The columns a list reads: those asked for ([`ListQuery::only`]) and those
/// its order needs, or all of them.
fn read_columns(columns: &[Attribute], query: &ListQuery) -> Vec<Attribute> {
    match &query.only {
        Some(only) => columns
            .iter()
            .filter(|c| {
                only.contains(&c.key)
                    || query
                        .orders
                        .iter()
                        .any(|o| matches!(&o.field, filter::Field::Attribute(key) if *key == c.key))
            })
            .cloned()
            .collect(),
        None => columns.to_vec(),
    }
}

/// The system columns a list reads: the times and the sequence only when
/// shown or needed for cursors.
fn system_columns(query: &ListQuery) -> SystemColumns {
    if query.want_cursors
        || query.only.as_ref().is_none_or(|only| {
            only.iter()
                .any(|field| field == "createdAt" || field == "updatedAt" || field == "sequence")
        })
    {
        SystemColumns::All
    } else {
        SystemColumns::Id
    }
}

/// The rows of the page `query` asks for, with the columns `selected` (and
/// `walk` before the statement): at most its page size and one more, in
/// reading order (reversed when read from the end); answers the page size and
/// whether it is read from the end.
async fn read_page(
    conn: &mut Conn<'_>,
    matching: &Matching<'_>,
    walk: &str,
    selected: &str,
    columns: &[Attribute],
    query: &ListQuery,
) -> AppResult<(Vec<AnyRow>, usize, bool)> {
    let dialect = conn.dialect();
    let select = format!("{walk}SELECT {selected}");
    let select = select.as_str();
    match &query.paging {
        Paging::Keyset {
            after,
            before,
            limit,
            from_end,
        } => {
            if after.is_some() && before.is_some() {
                return Err(AppError::invalid(
                    "before",
                    "give `after` or `before`, not both",
                ));
            }
            let cursor = if *from_end { before } else { after };
            let limit = (*limit).min(MAX_PAGE);
            let wanted = limit + usize::from(query.want_more);
            let parts = filter::keyset_parts(columns, &query.orders, cursor.as_ref(), *from_end)
                .map_err(filter_error)?;
            let until = match bounded_by_lead(dialect, matching, query) {
                Some(lead) => {
                    let mut probe = QueryBuilder::<Any>::new(format!(
                        "{walk}SELECT {ALIAS}.{}, {lead}",
                        q(dialect, "id")
                    ));
                    matching.push_from(&mut probe, dialect)?;
                    matching.push_where(&mut probe, dialect)?;
                    filter::push_lead_probe(
                        &mut probe,
                        dialect,
                        ALIAS,
                        columns,
                        &query.orders,
                        cursor.as_ref(),
                        *from_end,
                        wanted,
                    )
                    .map_err(filter_error)?;
                    match probe.build().fetch_optional(&mut **conn).await? {
                        Some(row) => cursor_for_row(&row, columns, &query.orders[..1])
                            .map_err(filter_error)?
                            .values
                            .pop(),
                        None => None,
                    }
                }
                None => None,
            };
            let mut rows = Vec::with_capacity(wanted);
            // Each part follows the one before in the list's order: the next
            // is read only when the page is not full yet.
            for part in parts {
                if rows.len() >= wanted {
                    break;
                }
                let mut builder = QueryBuilder::<Any>::new(select);
                matching.push_from(&mut builder, dialect)?;
                matching.push_where(&mut builder, dialect)?;
                if let (KeysetPart::Near, Some(until)) = (part, &until) {
                    filter::push_lead_bound(
                        &mut builder,
                        dialect,
                        ALIAS,
                        columns,
                        &query.orders,
                        *from_end,
                        until,
                    )
                    .map_err(filter_error)?;
                }
                filter::push_order_and_cursor(
                    &mut builder,
                    dialect,
                    ALIAS,
                    columns,
                    &query.orders,
                    cursor.as_ref(),
                    *from_end,
                    *part,
                    wanted - rows.len(),
                )
                .map_err(filter_error)?;
                rows.extend(builder.build().fetch_all(&mut **conn).await?);
            }
            Ok((rows, limit, *from_end))
        }
        Paging::Offset { limit, offset } => {
            let limit = (*limit).min(MAX_PAGE);
            let mut builder = QueryBuilder::<Any>::new(select);
            // Past the first page, a deferred join: the rows skipped are read
            // for their id and order columns only (from an index covering the
            // order when one exists), and only the page's rows are read whole,
            // by id. Ordering whole rows to skip them cost 2–3× as much (ADR
            // 0029).
            let deferred = *offset > 0;
            let id = q(dialect, "id");
            if deferred {
                builder.push(format!(
                    " FROM {} {ALIAS} JOIN (SELECT {ALIAS}.{id} AS nimbus_id",
                    q(dialect, &matching.collection.table)
                ));
            }
            matching.push_from(&mut builder, dialect)?;
            matching.push_where(&mut builder, dialect)?;
            filter::push_order_and_offset(
                &mut builder,
                dialect,
                ALIAS,
                columns,
                &query.orders,
                limit + 1,
                *offset,
            )
            .map_err(filter_error)?;
            if deferred {
                let order = filter::order_by_sql(dialect, ALIAS, columns, &query.orders)
                    .map_err(filter_error)?;
                builder.push(format!(
                    ") nimbus_page ON {ALIAS}.{id} = nimbus_page.nimbus_id{order}"
                ));
            }
            Ok((builder.build().fetch_all(&mut **conn).await?, limit, false))
        }
    }
}

/// The rows of the page `query` asks for, read by sole reader
/// ([`push_page_by_reader`]), as [`read_page`] answers them: a keyset page one
/// statement per part of it ([`filter::keyset_parts`]), the next only while the
/// page is not full; no statement without a branch.
async fn read_page_by_reader(
    conn: &mut Conn<'_>,
    walk: &str,
    matching: &Matching<'_>,
    branches: &Branches<'_>,
    columns: &[Attribute],
    page: Page<'_>,
) -> AppResult<(Vec<AnyRow>, usize, bool)> {
    let dialect = conn.dialect();
    let query = page.query;
    if branches.is_empty() {
        let (limit, from_end) = page_size(query)?;
        return Ok((Vec::new(), limit, from_end));
    }
    let (parts, wanted) = match &query.paging {
        Paging::Keyset {
            after,
            before,
            limit,
            from_end,
        } => {
            let cursor = if *from_end { before } else { after };
            (
                filter::keyset_parts(columns, &query.orders, cursor.as_ref(), *from_end)
                    .map_err(filter_error)?,
                (*limit).min(MAX_PAGE) + usize::from(query.want_more),
            )
        }
        Paging::Offset { .. } => (&[KeysetPart::Near][..], 0),
    };
    let mut rows = Vec::new();
    let mut answer = (0, false);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && rows.len() >= wanted {
            break;
        }
        let mut builder = QueryBuilder::<Any>::new(walk);
        answer = push_page_by_reader(
            &mut builder,
            dialect,
            matching,
            branches,
            columns,
            page,
            Slice {
                part: *part,
                wanted: wanted.saturating_sub(rows.len()),
            },
        )?;
        rows.extend(builder.build().fetch_all(&mut **conn).await?);
    }
    Ok((rows, answer.0, answer.1))
}

/// Which rows of a keyset page one statement by sole reader reads: the part
/// of the page ([`filter::keyset_parts`]) and how many rows it still wants.
#[derive(Debug, Clone, Copy)]
struct Slice {
    part: KeysetPart,
    wanted: usize,
}

/// Which statement of a page [`push_paging`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// One branch of a page read by sole reader: the keyset as the page's, and
    /// as many rows as the page could take from it (with an offset, the rows
    /// skipped too: any of them may be the branch's).
    Branch,
    /// The merge of the branches: the order and the page, no keyset (each
    /// branch applied it).
    Merge,
    /// The one branch of a page that has one: its keyset, its order and its
    /// page (with an offset, the rows skipped), as a page read without
    /// branches.
    Whole,
}

/// The page size of `query` (at most [`MAX_PAGE`]) and whether it is read
/// from the end; a keyset page given both `after` and `before` is refused.
fn page_size(query: &ListQuery) -> AppResult<(usize, bool)> {
    match &query.paging {
        Paging::Keyset {
            after,
            before,
            limit,
            from_end,
        } => {
            if after.is_some() && before.is_some() {
                return Err(AppError::invalid(
                    "before",
                    "give `after` or `before`, not both",
                ));
            }
            Ok(((*limit).min(MAX_PAGE), *from_end))
        }
        Paging::Offset { limit, .. } => Ok(((*limit).min(MAX_PAGE), false)),
    }
}

/// Appends the order and the page of `query` to one `step` of a page read by
/// sole reader (for a keyset page, its `part` and the `wanted` rows left);
/// answers the page size and whether it is read from the end.
fn push_paging(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    columns: &[Attribute],
    query: &ListQuery,
    step: Step,
    slice: Slice,
) -> AppResult<(usize, bool)> {
    let (limit, from_end) = page_size(query)?;
    match &query.paging {
        Paging::Keyset { after, before, .. } => {
            let cursor = match step {
                Step::Merge => None,
                Step::Branch | Step::Whole if from_end => before.as_ref(),
                Step::Branch | Step::Whole => after.as_ref(),
            };
            filter::push_order_and_cursor(
                builder,
                dialect,
                ALIAS,
                columns,
                &query.orders,
                cursor,
                from_end,
                // The merge has no cursor: its part is the whole of what the
                // branches read.
                if step == Step::Merge {
                    KeysetPart::Near
                } else {
                    slice.part
                },
                slice.wanted,
            )
            .map_err(filter_error)?;
        }
        Paging::Offset { offset, .. } => {
            let (rows, skipped) = match step {
                Step::Merge | Step::Whole => (limit + 1, *offset),
                Step::Branch => (offset.saturating_add(limit + 1), 0),
            };
            filter::push_order_and_offset(
                builder,
                dialect,
                ALIAS,
                columns,
                &query.orders,
                rows,
                skipped,
            )
            .map_err(filter_error)?;
        }
    }
    Ok((limit, from_end))
}

/// The first order column of a keyset page that MariaDB should bound before
/// reading it ([`filter::push_lead_probe`]), quoted: on MariaDB, for an order
/// its index cannot give as it is (descending, or more than one column, since
/// ties always go to id ascending), when an index leads with that column and
/// the list has no filter (a filter the index does not cover could make the
/// walk of the probe read much of the table for a few matches). SQLite sorts
/// such an order by groups of equal values as it walks the index, and needs
/// no bound.
fn bounded_by_lead(
    dialect: SqlDialect,
    matching: &Matching<'_>,
    query: &ListQuery,
) -> Option<String> {
    let [first, rest @ ..] = query.orders.as_slice() else {
        return None;
    };
    let indexed = match &first.field {
        filter::Field::CreatedAt | filter::Field::UpdatedAt => true,
        filter::Field::Attribute(key) => matching.collection.indexes.iter().any(|index| {
            matches!(index.kind, IndexKind::Key | IndexKind::Unique)
                && index.attributes.first() == Some(key)
        }),
        filter::Field::Id | filter::Field::Sequence => false,
    };
    let unfiltered = matches!(matching.filter, ResolvedFilter::And(all) if all.is_empty());
    let sorted_apart = first.desc || !rest.is_empty();
    if dialect != SqlDialect::MySql || !indexed || !unfiltered || !sorted_apart {
        return None;
    }
    filter::lead_column_sql(
        dialect,
        ALIAS,
        &matching.collection.columns(),
        &query.orders,
    )
    .ok()
    .flatten()
}

/// The first `limit` documents of `rows`, each with its cursor (empty without
/// `cursor_columns`).
fn page_of(
    rows: &[AnyRow],
    limit: usize,
    system: SystemColumns,
    read: &[Attribute],
    cursor_columns: Option<&CursorColumns>,
) -> AppResult<(Vec<Document>, Vec<Cursor>)> {
    let mut documents = Vec::with_capacity(rows.len().min(limit));
    let mut cursors = Vec::with_capacity(documents.capacity());
    for row in rows.iter().take(limit) {
        documents.push(document_from(system, read, row)?);
        cursors.push(match cursor_columns {
            Some(cursor_columns) => cursor_columns.read(row).map_err(filter_error)?,
            None => Cursor::default(),
        });
    }
    Ok((documents, cursors))
}

/// The value a write gives an attribute: an explicit null for an attribute
/// with a default means the default, so such attributes are never null.
fn given<'v>(attribute: &Attribute, value: Option<&'v Value>) -> Option<&'v Value> {
    match value {
        Some(Value::Null) if attribute.default.is_some() => None,
        other => other,
    }
}

/// How the documents of a batched list belong to their parents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParentScope {
    /// The listed documents' reference column `a_<key>` holds the parent's id.
    Reference(String),
    /// A junction links them: `near` holds the listed ids, `far` the parents'.
    Junction(super::filter::Link),
}

/// The first page of a list for each of many parents, in one query (a window
/// per parent) and, when asked, their totals in one more: `author.posts` of a
/// whole page of authors costs two statements, not one per author.
#[allow(clippy::too_many_arguments)]
pub fn list_for_parents<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    scope: &'a ParentScope,
    filter: &'a ResolvedFilter,
    orders: &'a [OrderBy],
    limit: usize,
    want_total: bool,
    parents: &'a [String],
) -> BoxFuture<'a, AppResult<HashMap<String, Listed>>> {
    Box::pin(async move {
        let dialect = conn.dialect();
        let mut pages = empty_pages(parents, want_total);
        let reach = reach(collection, access, Action::Read);
        if matches!(reach, Reach::None) || parents.is_empty() {
            return Ok(pages);
        }
        let columns = collection.columns();
        let limit = limit.min(MAX_PAGE);
        let by_parent = ByParent::new(dialect, scope, parents)?;
        let matching = Matching {
            collection,
            filter,
            reach: &reach,
            // The parents' window reads the collection table itself.
            drive: Drive::Documents,
            side_rows: SideRows::All,
        };
        let order = filter::order_by_sql(dialect, ALIAS, &columns, orders).map_err(filter_error)?;
        let parent = &by_parent.parent;
        let mut builder = QueryBuilder::<Any>::new(format!(
            "SELECT * FROM (SELECT {}, {parent} AS nimbus_parent, ROW_NUMBER() OVER (PARTITION BY {parent}{order}) AS nimbus_rn FROM {} {ALIAS}{}",
            selected_columns(dialect, collection),
            q(dialect, &collection.table),
            by_parent.join
        ));
        by_parent.push_where(&mut builder, &matching, dialect)?;
        builder
            .push(") nimbus_ranked WHERE nimbus_rn <= ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .push(" ORDER BY nimbus_parent, nimbus_rn");
        let rows = builder.build().fetch_all(&mut **conn).await?;
        let cursor_columns = CursorColumns::new(&columns, orders).map_err(filter_error)?;
        let mut found: Vec<(String, Document, Cursor)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let owner: String = row.try_get("nimbus_parent")?;
            let rank: i64 = row.try_get("nimbus_rn")?;
            if let Some(page) = pages.get_mut(&owner)
                && usize::try_from(rank).unwrap_or(usize::MAX) > limit
            {
                page.has_more = true;
                continue;
            }
            found.push((
                owner,
                document_from(SystemColumns::All, &columns, row)?,
                cursor_columns.read(row).map_err(filter_error)?,
            ));
        }
        let mut documents: Vec<Document> = found.iter().map(|(_, d, _)| d.clone()).collect();
        load_permissions(conn, collection, &mut documents).await?;
        for ((owner, _, cursor), document) in found.into_iter().zip(documents) {
            if let Some(page) = pages.get_mut(&owner) {
                page.documents.push((document, cursor));
            }
        }
        if want_total {
            by_parent.count(conn, &matching, &mut pages).await?;
        }
        Ok(pages)
    })
}

/// An empty page for each parent.
fn empty_pages(parents: &[String], want_total: bool) -> HashMap<String, Listed> {
    parents
        .iter()
        .map(|p| {
            (
                p.clone(),
                Listed {
                    documents: Vec::new(),
                    has_more: false,
                    total: want_total.then_some(0),
                },
            )
        })
        .collect()
}

/// How a batched list tells its parents apart: the column naming each listed
/// document's parent, and the join that brings it when a junction holds it.
struct ByParent<'q> {
    parent: String,
    join: String,
    parents: &'q [String],
}

impl<'q> ByParent<'q> {
    fn new(dialect: SqlDialect, scope: &ParentScope, parents: &'q [String]) -> AppResult<Self> {
        let (parent, join) = match scope {
            ParentScope::Reference(key) => (
                format!("{ALIAS}.{}", q(dialect, &format!("a_{key}"))),
                String::new(),
            ),
            ParentScope::Junction(link) => {
                super::ddl::check_table_name(&link.junction)
                    .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
                (
                    format!("nimbus_j.{}", q(dialect, link.far)),
                    format!(
                        " JOIN {} nimbus_j ON nimbus_j.{} = {ALIAS}.{}",
                        q(dialect, &link.junction),
                        q(dialect, link.near),
                        q(dialect, "id")
                    ),
                )
            }
        };
        Ok(ByParent {
            parent,
            join,
            parents,
        })
    }

    /// ` WHERE <parent> IN (…) AND <filter> AND <may read>`.
    fn push_where(
        &self,
        builder: &mut QueryBuilder<'_, Any>,
        matching: &Matching<'_>,
        dialect: SqlDialect,
    ) -> AppResult<()> {
        builder.push(format!(" WHERE {} IN (", self.parent));
        let mut list = builder.separated(", ");
        for id in self.parents {
            list.push_bind(id.clone());
        }
        list.push_unseparated(") AND ");
        matching.push_conditions(builder, dialect)
    }

    /// Fills in each parent's total.
    async fn count(
        &self,
        conn: &mut Conn<'_>,
        matching: &Matching<'_>,
        pages: &mut HashMap<String, Listed>,
    ) -> AppResult<()> {
        let dialect = conn.dialect();
        let mut count = QueryBuilder::<Any>::new(format!(
            "SELECT {} AS nimbus_parent, COUNT(*) AS nimbus_count FROM {} {ALIAS}{}",
            self.parent,
            q(dialect, &matching.collection.table),
            self.join
        ));
        self.push_where(&mut count, matching, dialect)?;
        count.push(format!(" GROUP BY {}", self.parent));
        for row in count.build().fetch_all(&mut **conn).await? {
            let owner: String = row.try_get("nimbus_parent")?;
            let total: i64 = row.try_get("nimbus_count")?;
            if let Some(page) = pages.get_mut(&owner) {
                page.total = Some(total);
            }
        }
        Ok(())
    }
}

/// A document to create.
#[derive(Debug, Clone, Default)]
pub struct NewDocument {
    pub id: Option<String>,
    pub data: Map<String, Value>,
    pub permissions: Option<Vec<String>>,
    /// Its creation and update times as a server imports them (Appwrite's
    /// `$createdAt` and `$updatedAt`); now when not given.
    pub times: GivenTimes,
}

/// A document's times given by a server rather than taken from the clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenTimes {
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

fn check_keys(collection: &Collection, data: &Map<String, Value>) -> AppResult<()> {
    if let Some(unknown) = data.keys().find(|k| !collection.has_key(k)) {
        return Err(AppError::Invalid {
            code: codes::ATTRIBUTE_NOT_FOUND,
            field: "data".into(),
            reason: format!(
                "the collection has no attribute `{}`",
                unknown.chars().take(64).collect::<String>()
            ),
        });
    }
    Ok(())
}

async fn write_permissions(
    conn: &mut Conn<'_>,
    collection: &Collection,
    id: &str,
    permissions: &[Permission],
    replace: bool,
) -> AppResult<()> {
    let dialect = conn.dialect();
    let table = q(dialect, &perms_table(&collection.table));
    if replace {
        sqlx::query(&format!("DELETE FROM {table} WHERE resource_id = ?"))
            .bind(id)
            .execute(&mut **conn)
            .await?;
    }
    let rows = permission_grants(id, permissions);
    if rows.is_empty() {
        return Ok(());
    }
    let reader = sole_reader(permissions);
    let mut builder = QueryBuilder::<Any>::new(format!("INSERT INTO {table} {GRANT_COLUMNS} "));
    builder.push_values(rows, |mut b, (resource, role, actions)| {
        let sole = is_sole(reader.as_deref(), &role);
        b.push_bind(resource)
            .push_bind(role)
            .push_bind(actions)
            .push_bind(sole);
    });
    builder.build().execute(&mut **conn).await?;
    Ok(())
}

/// The columns of a side-table insert, in the order [`write_permissions`] and
/// [`NewRow::push_grants`] bind them.
pub const GRANT_COLUMNS: &str = "(resource_id, role, actions, sole)";

/// The side table's `sole` of the grant of `role` to a document whose sole
/// reader is `reader` ([`sole_reader`]): 1 on that reader's grant (the one
/// row of its role, which holds its `read`), 0 on every other.
fn is_sole(reader: Option<&str>, role: &str) -> i64 {
    i64::from(reader == Some(role))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation() || e.code().as_deref() == Some("23000"))
}

/// Creates a document. A client needs the collection's `create` permission;
/// without `permissions`, a signed-in client's document is theirs to read, update
/// and delete.
/// See [`create_impl`]; boxed so that resolvers can hold the future across awaits.
/// `first_write` is set while the insert runs and stays set should anything fail
/// after it (see [`super::tx::RequestTx::tracked_writer`]).
pub fn create<'a>(
    conn: &'a mut Conn<'_>,
    first_write: &'a AtomicBool,
    collection: &'a Collection,
    access: &'a Access,
    new: NewDocument,
    model: &'a DataModel,
) -> BoxFuture<'a, AppResult<Document>> {
    Box::pin(create_impl(
        conn,
        first_write,
        collection,
        access,
        new,
        model,
    ))
}

async fn create_impl(
    conn: &mut Conn<'_>,
    first_write: &AtomicBool,
    collection: &Collection,
    access: &Access,
    new: NewDocument,
    model: &DataModel,
) -> AppResult<Document> {
    let prepared = prepare_create(collection, access, new)?;
    create_prepared(conn, first_write, collection, access, model, prepared).await
}

/// A document checked and ready to insert: its row, its permission rows, and the
/// document to answer with.
#[derive(Debug)]
pub struct PreparedCreate {
    pub row: NewRow,
    data: Map<String, Value>,
    permissions: Vec<Permission>,
    /// The data as given, for the references and links it sets.
    input: Map<String, Value>,
}

/// The rows one create inserts: the document's (its id, creation time and one
/// value per column of [`Collection::columns`]) and its permission grants.
#[derive(Debug, Default)]
pub struct NewRow {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub values: Vec<SqlValue>,
    pub grants: Vec<(String, String, i64)>,
    /// The document's sole reader ([`sole_reader`]), kept in its row.
    pub reader: Option<String>,
}

impl NewRow {
    /// Binds the row as one `(…)` of a `VALUES` list, in the order of
    /// [`insert_columns`].
    pub fn push_values<'a>(&'a self, mut row: Separated<'_, 'a, Any, &str>) {
        row.push_bind(self.id.as_str())
            .push_bind(self.created_at)
            .push_bind(self.updated_at)
            .push_bind(self.reader.as_deref());
        for value in &self.values {
            value.push_bind_separated(&mut row);
        }
    }

    /// Binds the row's grants as `(…)`s of a `VALUES` list, in the order of
    /// [`GRANT_COLUMNS`].
    pub fn push_grants<'a>(&'a self, builder: &mut QueryBuilder<'a, Any>) {
        builder.push_values(&self.grants, |mut b, (resource, role, actions)| {
            b.push_bind(resource.as_str())
                .push_bind(role.as_str())
                .push_bind(*actions)
                .push_bind(is_sole(self.reader.as_deref(), role));
        });
    }

    /// The grants of `rows` together as one `VALUES` list ([`GRANT_COLUMNS`]).
    pub fn push_all_grants<'a>(builder: &mut QueryBuilder<'a, Any>, rows: &[&'a NewRow]) {
        builder.push_values(
            rows.iter()
                .copied()
                .flat_map(|row| row.grants.iter().map(move |grant| (row, grant))),
            |mut b, (row, (resource, role, actions))| {
                b.push_bind(resource.as_str())
                    .push_bind(role.as_str())
                    .push_bind(*actions)
                    .push_bind(is_sole(row.reader.as_deref(), role));
            },
        );
    }

    /// About how many bytes the row sends, to bound a statement of many rows.
    pub fn size(&self) -> usize {
        let values: usize = self.values.iter().map(SqlValue::size).sum();
        let grants: usize = self.grants.iter().map(|(_, role, _)| role.len() + 40).sum();
        let reader = self.reader.as_ref().map_or(0, String::len);
        self.id.len() + 16 + reader + values + grants
    }
}

impl PreparedCreate {
    /// Whether the create sets relationships: then it reads the documents it
    /// links to, and may write junction rows, besides its own two inserts.
    pub fn sets_relationships(&self, collection: &Collection) -> bool {
        collection
            .relationships
            .iter()
            .any(|relationship| self.input.contains_key(&relationship.key))
    }

    /// The document as it will be created, its rows kept for the insert: its
    /// sequence is 0 until the insert gives it one.
    pub fn to_document(&self) -> Document {
        let mut permissions = self.permissions.clone();
        // Each role written once, not once per comparison.
        permissions.sort_by_cached_key(|p| (p.action, p.role.to_string()));
        permissions.dedup();
        Document {
            id: self.row.id.clone(),
            sequence: 0,
            created_at: self.row.created_at,
            updated_at: self.row.updated_at,
            permissions,
            data: self.data.clone(),
        }
    }

    /// The created document, answered from what was written rather than read
    /// back, with the `sequence` its insert was given.
    pub fn into_document(self, sequence: i64) -> Document {
        let mut permissions = self.permissions;
        // Each role written once, not once per comparison.
        permissions.sort_by_cached_key(|p| (p.action, p.role.to_string()));
        permissions.dedup();
        Document {
            id: self.row.id,
            sequence,
            created_at: self.row.created_at,
            updated_at: self.row.updated_at,
            permissions,
            data: self.data,
        }
    }
}

/// Checks a create against the caller's permissions and the collection's
/// attributes, and makes its rows; references to other documents are checked
/// when it is inserted.
pub fn prepare_create(
    collection: &Collection,
    access: &Access,
    new: NewDocument,
) -> AppResult<PreparedCreate> {
    if !matches!(reach(collection, access, Action::Create), Reach::All) {
        return Err(denied(Action::Create));
    }
    let id = ids::resolve("id", new.id.as_deref())?;
    check_keys(collection, &new.data)?;
    let permissions = access.permissions_of_new(new.permissions.as_deref())?;
    let columns = collection.columns();
    let mut values = Vec::with_capacity(columns.len());
    let mut data = Map::new();
    for attribute in &columns {
        let value = attribute
            .value_for_write(given(attribute, new.data.get(&attribute.key)))
            .map_err(value_error)?;
        data.insert(
            attribute.key.clone(),
            attribute.from_stored(&value).map_err(value_error)?,
        );
        values.push(value);
    }
    let grants = permission_grants(&id, &permissions);
    let reader = sole_reader(&permissions);
    let now = now_millis();
    Ok(PreparedCreate {
        row: NewRow {
            id,
            created_at: new.times.created_at.unwrap_or(now),
            updated_at: new.times.updated_at.unwrap_or(now),
            values,
            grants,
            reader,
        },
        data,
        permissions,
        input: new.data,
    })
}

/// The columns of a collection's insert, in the order of [`NewRow::push_values`].
pub fn insert_columns(dialect: SqlDialect, collection: &Collection) -> String {
    let mut columns = String::with_capacity(64 + 24 * collection.attributes.len());
    push_insert_columns(&mut columns, dialect, collection);
    columns
}

/// Appends [`insert_columns`] to `out`, each name quoted in place: a create
/// writes its statement's text once, without a string per column.
fn push_insert_columns(out: &mut String, dialect: SqlDialect, collection: &Collection) {
    for (n, system) in ["id", "created_at", "updated_at", READER_COLUMN]
        .into_iter()
        .enumerate()
    {
        if n > 0 {
            out.push_str(", ");
        }
        dialect.push_quoted(out, "", system);
    }
    // The order of [`Collection::columns`]: attributes, then the reference
    // columns of relationships (named as attributes are).
    let keys = collection.attributes.iter().map(|a| a.key.as_str()).chain(
        collection
            .relationships
            .iter()
            .filter(|r| r.has_column())
            .map(|r| r.key.as_str()),
    );
    for key in keys {
        out.push_str(", ");
        dialect.push_quoted(out, "a_", key);
    }
}

/// ` RETURNING rowid`: what follows a document's insert, for its sequence.
pub fn returning_sequence(dialect: SqlDialect) -> String {
    format!(" RETURNING {}", dialect.quote(SEQUENCE_COLUMN))
}

/// `INSERT INTO <table> (<columns>) `, to which the values are pushed; with
/// `grants`, the text that follows them for the permission rows' insert.
fn create_statement(dialect: SqlDialect, collection: &Collection) -> String {
    let mut sql = String::with_capacity(128 + 24 * collection.attributes.len());
    sql.push_str("INSERT INTO ");
    dialect.push_quoted(&mut sql, "", &collection.table);
    sql.push_str(" (");
    push_insert_columns(&mut sql, dialect, collection);
    sql.push_str(") ");
    sql
}

/// Inserts a prepared document, after checking the documents it references
/// (`access` must be able to read them). `first_write` as for [`create`].
pub async fn create_prepared(
    conn: &mut Conn<'_>,
    first_write: &AtomicBool,
    collection: &Collection,
    access: &Access,
    model: &DataModel,
    prepared: PreparedCreate,
) -> AppResult<Document> {
    let dialect = conn.dialect();
    check_references(conn, collection, access, model, &prepared.input).await?;
    let row = &prepared.row;
    let mut builder = QueryBuilder::<Any>::new(create_statement(dialect, collection));
    builder.push_values(std::iter::once(row), |values, row| row.push_values(values));
    builder.push(returning_sequence(dialect));
    // SQLite takes both inserts in one round trip to its thread; MariaDB prepares
    // one statement at a time.
    let permissions_along = dialect == SqlDialect::Sqlite && !row.grants.is_empty();
    if permissions_along {
        let mut grants = String::with_capacity(collection.table.len() + 64);
        grants.push_str("; INSERT INTO ");
        dialect.push_quoted(&mut grants, "", &perms_table(&collection.table));
        grants.push(' ');
        grants.push_str(GRANT_COLUMNS);
        grants.push(' ');
        builder.push(grants);
        row.push_grants(&mut builder);
    }
    first_write.store(true, Ordering::SeqCst);
    let inserted = builder
        .build_query_scalar::<Option<i64>>()
        // All of it: the grants' statement runs after the document's.
        .fetch_all(&mut **conn)
        .await;
    let sequence = match inserted {
        // None only in a MariaDB table that had no room for the sequence's key.
        Ok(sequences) => sequences
            .first()
            .copied()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("an insert returned no sequence")))?
            .unwrap_or(0),
        Err(err) => return Err(create_failed(conn, collection, row, first_write, err).await),
    };
    if !permissions_along {
        write_permissions(conn, collection, &row.id, &prepared.permissions, false).await?;
    }
    write_links(conn, collection, access, model, &row.id, &prepared.input).await?;
    Ok(prepared.into_document(sequence))
}

/// The error of a document's insert that failed: a conflict when its id is
/// taken, a unique index's refusal, or the database's error.
async fn create_failed(
    conn: &mut Conn<'_>,
    collection: &Collection,
    row: &NewRow,
    first_write: &AtomicBool,
    err: sqlx::Error,
) -> AppError {
    let dialect = conn.dialect();
    let perms_table = perms_table(&collection.table);
    if is_unique_violation(&err) && !err.to_string().contains(perms_table.as_str()) {
        // The document's own insert failed, whole: nothing was written.
        first_write.store(false, Ordering::SeqCst);
        let exists = match sqlx::query(&format!(
            "SELECT 1 FROM {} WHERE id = ?",
            q(dialect, &collection.table)
        ))
        .bind(&row.id)
        .fetch_optional(&mut **conn)
        .await
        {
            Ok(found) => found.is_some(),
            Err(err) => return err.into(),
        };
        return if exists {
            AppError::Conflict {
                what: "document",
                id: row.id.clone(),
            }
        } else {
            AppError::Invalid {
                code: codes::DOCUMENT_NOT_UNIQUE,
                field: "data".into(),
                reason: "another document holds the same values for a unique index".into(),
            }
        };
    }
    err.into()
}

/// A change to a document.
#[derive(Debug, Clone, Default)]
pub struct DocumentChanges {
    /// Attributes to set; others keep their values.
    pub data: Map<String, Value>,
    /// Replace the document's permissions.
    pub permissions: Option<Vec<String>>,
    /// Refuse the change unless the document's `updatedAt` is still this.
    pub expected_updated_at: Option<i64>,
    /// Times a server sets (else the update time is now, the creation time kept).
    pub times: GivenTimes,
    /// Whether `data`'s values may be Appwrite's operators ([`super::operators`]).
    pub operators: bool,
}

/// Loads a document with its permissions for a write, locking its row on
/// MariaDB so that concurrent writes of it take turns (SQLite has one writer
/// anyway); `None` when there is none.
async fn load_locked(
    conn: &mut Conn<'_>,
    collection: &Collection,
    id: &str,
) -> AppResult<Option<Document>> {
    let dialect = conn.dialect();
    if ids::validate("id", id).is_err() {
        return Ok(None);
    }
    let mut builder = QueryBuilder::<Any>::new(select_from(dialect, collection));
    builder
        .push(format!(" WHERE {ALIAS}.id = "))
        .push_bind(id.to_string());
    if dialect == SqlDialect::MySql {
        builder.push(" FOR UPDATE");
    }
    let Some(row) = builder.build().fetch_optional(&mut **conn).await? else {
        return Ok(None);
    };
    let mut documents = vec![document_from(
        SystemColumns::All,
        &collection.columns(),
        &row,
    )?];
    load_permissions(conn, collection, &mut documents).await?;
    Ok(documents.pop())
}

/// Loads a document the caller asked to `action`: a document it may not read
/// is as missing as one that does not exist.
async fn load_for_write(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    id: &str,
    action: Action,
) -> AppResult<Document> {
    let document = load_locked(conn, collection, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if may(collection, access, action, &document.permissions) {
        Ok(document)
    } else if may(collection, access, Action::Read, &document.permissions) {
        Err(denied(action))
    } else {
        Err(not_found(id))
    }
}

/// A write that would reach, through a relationship, a document the caller may
/// not change. Names no document: the caller may not be able to read it.
fn cascade_denied() -> AppError {
    AppError::PermissionDenied {
        reason: "the delete would delete or change related documents you have no permission to delete or change".into(),
    }
}

/// See [`update_impl`]; boxed so that resolvers can hold the future across awaits.
/// Returns the document before and after the change.
pub fn update<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    id: &'a str,
    changes: DocumentChanges,
    model: &'a DataModel,
) -> BoxFuture<'a, AppResult<(Document, Document)>> {
    Box::pin(update_impl(conn, collection, access, id, changes, model))
}

async fn update_impl(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    id: &str,
    mut changes: DocumentChanges,
    model: &DataModel,
) -> AppResult<(Document, Document)> {
    let dialect = conn.dialect();
    let current = load_for_write(conn, collection, access, id, Action::Update).await?;
    if let Some(expected) = changes.expected_updated_at
        && expected != current.updated_at
    {
        // Its new time only to a caller that may read the document.
        let reason = if may_read(collection, access, &current) {
            format!(
                "the document changed since (its updatedAt is now {})",
                millis_to_rfc3339(current.updated_at).unwrap_or_default()
            )
        } else {
            "the document changed since".into()
        };
        return Err(AppError::Invalid {
            code: codes::DOCUMENT_CHANGED,
            field: "expectedUpdatedAt".into(),
            reason,
        });
    }
    // Appwrite's operators apply to the values read under the write's lock,
    // for a caller who may read them: what one refuses tells the value.
    if changes.operators && super::operators::any(&changes.data) {
        if !may_read(collection, access, &current) {
            return Err(AppError::PermissionDenied {
                reason: "update operators need permission to read the document".into(),
            });
        }
        super::operators::apply(collection, &current.data, &mut changes.data, now_millis())?;
    }
    check_keys(collection, &changes.data)?;
    check_references(conn, collection, access, model, &changes.data).await?;
    let permissions = changes
        .permissions
        .as_deref()
        .map(|given| {
            access.permissions_replacing(given, &current.permissions, |action| {
                may(collection, access, action, &current.permissions)
            })
        })
        .transpose()?;
    let columns = collection.columns();
    // Strictly later than before, so `expectedUpdatedAt` tells every change
    // apart; unless a server sets it.
    let updated_at = changes
        .times
        .updated_at
        .unwrap_or_else(|| now_millis().max(current.updated_at + 1));
    let mut builder = QueryBuilder::<Any>::new(format!(
        "UPDATE {} SET {} = ",
        q(dialect, &collection.table),
        q(dialect, "updated_at")
    ));
    builder.push_bind(updated_at);
    if let Some(created_at) = changes.times.created_at {
        builder.push(format!(", {} = ", q(dialect, "created_at")));
        builder.push_bind(created_at);
    }
    for (key, value) in &changes.data {
        let Some(attribute) = columns.iter().find(|a| &a.key == key) else {
            continue;
        };
        let value = attribute
            .value_for_write(given(attribute, Some(value)))
            .map_err(value_error)?;
        builder.push(format!(", {} = ", q(dialect, &attribute.column())));
        value.push_bind(&mut builder);
    }
    if let Some(permissions) = &permissions {
        // In the statement that changes the row, beside the grants replaced below.
        builder.push(format!(", {} = ", q(dialect, READER_COLUMN)));
        builder.push_bind(sole_reader(permissions));
    }
    builder.push(" WHERE id = ").push_bind(id.to_string());
    if let Err(err) = builder.build().execute(&mut **conn).await {
        if is_unique_violation(&err) {
            return Err(AppError::Invalid {
                code: codes::DOCUMENT_NOT_UNIQUE,
                field: "data".into(),
                reason: "another document holds the same values for a unique index".into(),
            });
        }
        return Err(err.into());
    }
    if let Some(permissions) = &permissions {
        write_permissions(conn, collection, id, permissions, true).await?;
    }
    write_links(conn, collection, access, model, id, &changes.data).await?;
    let updated = get(conn, collection, &Access::Server, id, true)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((current, updated))
}

/// Adds `by` (negative to subtract) to a numeric attribute, refusing a result
/// past `bound` (a maximum when adding, a minimum when subtracting) or outside
/// the attribute's own range. Atomic: the row is locked by the request's
/// transaction between reading and writing it.
#[allow(clippy::too_many_arguments)]
pub fn increment<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    id: &'a str,
    key: &'a str,
    by: f64,
    bound: Option<f64>,
) -> BoxFuture<'a, AppResult<(Document, Document)>> {
    Box::pin(async move {
        let dialect = conn.dialect();
        let attribute = numeric_attribute(collection, key)?;
        if !by.is_finite() {
            return Err(AppError::invalid("by", "expected a finite number"));
        }
        if by == 0.0 {
            return Err(AppError::Invalid {
                code: codes::VALUE_INVALID,
                field: "by".into(),
                reason: "changing by 0 changes nothing; give a positive amount".into(),
            });
        }
        let current = load_for_write(conn, collection, access, id, Action::Update).await?;
        // Whether the result passes a bound tells the value, one bit a request
        // (and the request can be made to roll back): only a reader may ask, and
        // for a writer who may not read, the result is held within the
        // attribute's range rather than refused for leaving it.
        let reader = may(collection, access, Action::Read, &current.permissions);
        if bound.is_some() && !reader {
            return Err(AppError::PermissionDenied {
                reason: "a `max` or `min` needs permission to read the document".into(),
            });
        }
        let value = if reader {
            stepped_value(attribute, current.data.get(key), by, bound)?
        } else {
            saturated_value(attribute, current.data.get(key), by)?
        };
        let updated_at = now_millis().max(current.updated_at + 1);
        let mut builder = QueryBuilder::<Any>::new(format!(
            "UPDATE {} SET {} = ",
            q(dialect, &collection.table),
            q(dialect, &attribute.column())
        ));
        value.push_bind(&mut builder);
        builder
            .push(", updated_at = ")
            .push_bind(updated_at)
            .push(" WHERE id = ")
            .push_bind(id.to_string());
        builder.build().execute(&mut **conn).await?;
        let updated = get(conn, collection, &Access::Server, id, true)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok((current, updated))
    })
}

/// The attribute `key` of an increment: a numeric one, not a list.
fn numeric_attribute<'c>(collection: &'c Collection, key: &str) -> AppResult<&'c Attribute> {
    let attribute = collection.attribute(key);
    if attribute.is_none() && collection.relationship(key).is_none() {
        return Err(AppError::Invalid {
            code: codes::ATTRIBUTE_NOT_FOUND,
            field: "field".into(),
            reason: format!(
                "the collection has no attribute `{}`",
                key.chars().take(64).collect::<String>()
            ),
        });
    }
    attribute
        .filter(|a| {
            !a.array
                && matches!(
                    a.kind,
                    super::model::AttributeKind::Integer { .. }
                        | super::model::AttributeKind::Float { .. }
                )
        })
        .ok_or_else(|| AppError::Invalid {
            code: codes::ATTRIBUTE_INVALID,
            field: "field".into(),
            reason: format!(
                "`{}` is not a numeric attribute",
                key.chars().take(64).collect::<String>()
            ),
        })
}

/// The stored value of `before + by`, refused past `bound` (a maximum when
/// adding, a minimum when subtracting) or outside the attribute's own range.
/// An integer attribute steps in whole numbers, exactly (an `f64` sum would
/// round past 2^53). The reasons name no number: a caller that may update but
/// not read the document must not learn its value from a refusal.
fn stepped_value(
    attribute: &Attribute,
    before: Option<&Value>,
    by: f64,
    bound: Option<f64>,
) -> AppResult<SqlValue> {
    let key = &attribute.key;
    let out_of_range = |reason: &str| AppError::Invalid {
        code: codes::VALUE_OUT_OF_RANGE,
        field: key.to_string(),
        reason: reason.into(),
    };
    let past_bound = || out_of_range("the result would pass the bound you gave");
    let integer = matches!(attribute.kind, super::model::AttributeKind::Integer { .. });
    let after_json = if integer {
        let by = integer_step(by)?;
        let before = before.and_then(Value::as_i64).unwrap_or(0);
        let after = before
            .checked_add(by)
            .ok_or_else(|| out_of_range("the result would leave the attribute's range"))?;
        let passed = match bound {
            // Whole numbers compared exactly: past `max` is past its floor.
            Some(max) if by >= 0 => i128::from(after) > max.floor() as i128,
            Some(min) => i128::from(after) < min.ceil() as i128,
            None => false,
        };
        if passed {
            return Err(past_bound());
        }
        Value::from(after)
    } else {
        let after = before.and_then(Value::as_f64).unwrap_or(0.0) + by;
        let passed = match bound {
            Some(max) if by >= 0.0 => after > max,
            Some(min) => after < min,
            None => false,
        };
        if passed {
            return Err(past_bound());
        }
        serde_json::Number::from_f64(after)
            .map(Value::Number)
            .ok_or_else(|| AppError::invalid("by", "expected a finite number"))?
    };
    attribute
        .to_sql_value(&after_json)
        .map_err(|err| match err.code() {
            codes::INTERNAL => value_error(err),
            code => AppError::Invalid {
                code,
                field: key.to_string(),
                reason: "the result would leave the attribute's range".into(),
            },
        })
}

/// `by` as the whole number an integer attribute changes by.
fn integer_step(by: f64) -> AppResult<i64> {
    // `i64::MAX as f64` is 2^63, one past the largest i64.
    if by.fract() != 0.0 || !(-(2f64.powi(63))..2f64.powi(63)).contains(&by) {
        return Err(AppError::Invalid {
            code: codes::VALUE_INVALID,
            field: "by".into(),
            reason: "an integer attribute changes by whole numbers".into(),
        });
    }
    Ok(by as i64)
}

/// The value of a numeric attribute after a step by a writer who may not read
/// it: held within the attribute's range (and an integer's) instead of refused
/// for leaving it, since a refusal would tell the value.
fn saturated_value(attribute: &Attribute, before: Option<&Value>, by: f64) -> AppResult<SqlValue> {
    use super::model::AttributeKind;
    let after_json = match &attribute.kind {
        AttributeKind::Integer { min, max } => {
            let after = before
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .saturating_add(integer_step(by)?);
            Value::from(
                after
                    .max(min.unwrap_or(i64::MIN))
                    .min(max.unwrap_or(i64::MAX)),
            )
        }
        AttributeKind::Float { min, max } => {
            let after = before.and_then(Value::as_f64).unwrap_or(0.0) + by;
            let held = after
                .max(min.unwrap_or(f64::MIN))
                .min(max.unwrap_or(f64::MAX));
            serde_json::Number::from_f64(held)
                .map(Value::Number)
                .ok_or_else(|| AppError::invalid("by", "expected a finite number"))?
        }
        _ => return Err(AppError::invalid("field", "expected a numeric attribute")),
    };
    attribute.to_sql_value(&after_json).map_err(value_error)
}

/// Whether a document exists, whoever may read it: for upserts.
pub fn exists<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    id: &'a str,
) -> BoxFuture<'a, AppResult<bool>> {
    Box::pin(async move {
        let dialect = conn.dialect();
        if ids::validate("id", id).is_err() {
            return Ok(false);
        }
        Ok(sqlx::query(&format!(
            "SELECT 1 FROM {} WHERE id = ?",
            q(dialect, &collection.table)
        ))
        .bind(id)
        .fetch_optional(&mut **conn)
        .await?
        .is_some())
    })
}

/// Whether an upsert of `id` by `access` updates (else it creates): the document
/// exists and the caller may update or read it. One it may do neither with is,
/// to it, an id it may only try to create, answered as a missing one would be
/// (`PERMISSION_DENIED` without `create`, else the id is taken): an upsert tells
/// no more of what exists than a create does.
pub fn upsert_updates<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Collection,
    access: &'a Access,
    id: &'a str,
) -> BoxFuture<'a, AppResult<bool>> {
    Box::pin(async move {
        if matches!(access, Access::Server) {
            return exists(conn, collection, id).await;
        }
        if ids::validate("id", id).is_err() {
            return Ok(false);
        }
        Ok(load_locked(conn, collection, id)
            .await?
            .is_some_and(|document| {
                may(collection, access, Action::Update, &document.permissions)
                    || may(collection, access, Action::Read, &document.permissions)
            }))
    })
}

/// What one delete changed, in the order it changed it: the document asked for
/// first, then those a cascade took along and those whose reference a
/// `SET_NULL` cleared, each with its collection.
pub type Deleted = Vec<DeleteEffect>;

/// One document a delete changed.
pub enum DeleteEffect {
    /// Deleted: the one asked for, or one a cascade took along.
    Removed(Arc<Collection>, Document),
    /// Its reference to a deleted document cleared (`SET_NULL`), as it was
    /// before and as it is now.
    Cleared {
        holder: Arc<Collection>,
        before: Document,
        after: Document,
    },
}

/// How deep deletes may cascade through relationships.
const MAX_CASCADE_DEPTH: usize = 16;

/// Deletes a document (its permissions go with it), applying the on-delete rule
/// of every relationship pointing at it; returns every deleted document, this
/// one first, then those a cascade took along. Cascades run with the caller's
/// access: one that would delete a document the caller may not delete, or clear
/// a reference in one it may not update, fails the whole delete.
pub fn delete<'a>(
    conn: &'a mut Conn<'_>,
    collection: &'a Arc<Collection>,
    access: &'a Access,
    id: &'a str,
    model: &'a DataModel,
) -> BoxFuture<'a, AppResult<Deleted>> {
    Box::pin(delete_impl(conn, collection, access, id, model, 0))
}

/// `depth` 0 is the document asked for; deeper ones are a cascade's.
async fn delete_impl(
    conn: &mut Conn<'_>,
    collection: &Arc<Collection>,
    access: &Access,
    id: &str,
    model: &DataModel,
    depth: usize,
) -> AppResult<Deleted> {
    if depth > MAX_CASCADE_DEPTH {
        return Err(AppError::NotAllowed(format!(
            "deleting cascades more than {MAX_CASCADE_DEPTH} relationships deep"
        )));
    }
    let Some(current) = load_for_delete(conn, collection, access, id, depth).await? else {
        // Deleted by an earlier branch of the same cascade.
        return Ok(Vec::new());
    };
    conn.spend_deletions(1)?;
    let cascade_linked = held_links(conn, collection, model, id).await?;
    let references: Vec<_> = model.references_to(collection).collect();
    check_references_to(conn, &references, access, id).await?;
    delete_rows(conn, collection, id).await?;
    let mut deleted = vec![DeleteEffect::Removed(collection.clone(), current)];
    // The document is gone before its dependents are visited, so a cycle of
    // cascades ends instead of coming back to it.
    for (holder, relationship) in references {
        let (dependents, cleared) = apply_on_delete(conn, holder, relationship, id).await?;
        deleted.extend(cleared);
        for dependent in dependents {
            let more = Box::pin(delete_impl(
                conn,
                holder,
                access,
                &dependent,
                model,
                depth + 1,
            ))
            .await?;
            deleted.extend(more);
        }
    }
    for (related, linked) in cascade_linked {
        let more = Box::pin(delete_impl(
            conn,
            &related,
            access,
            &linked,
            model,
            depth + 1,
        ))
        .await?;
        deleted.extend(more);
    }
    Ok(deleted)
}

/// The document a delete removes: the one asked for needs the caller's
/// `delete` permission (see [`load_for_write`]); one a cascade reaches, too,
/// or the whole delete fails. `None` when a cascade finds it gone already.
async fn load_for_delete(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    id: &str,
    depth: usize,
) -> AppResult<Option<Document>> {
    if depth == 0 {
        return load_for_write(conn, collection, access, id, Action::Delete)
            .await
            .map(Some);
    }
    match load_locked(conn, collection, id).await? {
        None => Ok(None),
        Some(document) if may(collection, access, Action::Delete, &document.permissions) => {
            Ok(Some(document))
        }
        Some(_) => Err(cascade_denied()),
    }
}

/// The documents a deleted document links to (it holding a many-to-many
/// relationship) that its deletion takes along; refuses the delete when a
/// restricting relationship links it.
async fn held_links(
    conn: &mut Conn<'_>,
    collection: &Collection,
    model: &DataModel,
    id: &str,
) -> AppResult<Vec<(Arc<Collection>, String)>> {
    let dialect = conn.dialect();
    let mut cascade_linked: Vec<(Arc<Collection>, String)> = Vec::new();
    for relationship in collection.relationships.iter().filter(|r| !r.has_column()) {
        let Some(junction) = relationship.junction.as_deref() else {
            continue;
        };
        // At most one more than the request may still delete: a cascade past
        // it is refused before its ids are all read.
        let left = conn.deletions_left();
        let linked: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT b_id FROM {} WHERE a_id = ? LIMIT {}",
            q(dialect, junction),
            left.saturating_add(1)
        ))
        .bind(id)
        .fetch_all(&mut **conn)
        .await?;
        match relationship.on_delete {
            OnDelete::Restrict if !linked.is_empty() => {
                return Err(AppError::Invalid {
                    code: codes::DOCUMENT_REFERENCED,
                    field: "id".into(),
                    reason: format!(
                        "the document is linked through `{}` (on delete: restrict); unlink first",
                        relationship.key
                    ),
                });
            }
            OnDelete::Cascade => {
                // Each linked document is counted as its own delete begins.
                if linked.len() > left {
                    return Err(super::tx::too_many_deletions());
                }
                if let Some(related) =
                    model.collection(&collection.database_id, &relationship.related_collection)
                {
                    cascade_linked.extend(linked.into_iter().map(|b| (related.clone(), b)));
                }
            }
            // The junction's foreign keys remove the links with the document:
            // as many rows as it holds.
            _ => conn.spend_deletions(linked.len())?,
        }
    }
    Ok(cascade_linked)
}

/// Refuses a delete that a relationship pointing at the document restricts, or
/// whose `SET_NULL` would change a document the caller may not update.
async fn check_references_to(
    conn: &mut Conn<'_>,
    references: &[(&Arc<Collection>, &super::Relationship)],
    access: &Access,
    id: &str,
) -> AppResult<()> {
    let dialect = conn.dialect();
    for (holder, relationship) in references {
        if relationship.on_delete == OnDelete::Restrict {
            let sql = match &relationship.junction {
                // Links pointing here from a many-to-many holder.
                Some(junction) => format!(
                    "SELECT 1 FROM {} WHERE b_id = ? LIMIT 1",
                    q(dialect, junction)
                ),
                None => format!(
                    "SELECT 1 FROM {} WHERE {} = ? LIMIT 1",
                    q(dialect, &holder.table),
                    q(dialect, &relationship.column().column())
                ),
            };
            let used = sqlx::query(&format!("{sql}{}", locking_read(dialect)))
                .bind(id)
                .fetch_optional(&mut **conn)
                .await?
                .is_some();
            // Restrict holds whoever may read the documents pointing here; the
            // answer names the relationship, never one of them.
            if used {
                return Err(AppError::Invalid {
                    code: codes::DOCUMENT_REFERENCED,
                    field: "id".into(),
                    reason: format!(
                        "documents of `{}` point at this one through `{}` (on delete: restrict); delete or change them first",
                        holder.name, relationship.key
                    ),
                });
            }
        }
        // What the delete changes besides its documents counts against the
        // request's deletions before any of it is looked at further: the
        // references `SET_NULL` clears (one statement, but as many rows, and the
        // writer held, as point here), and the links to the document that go with
        // it.
        match &relationship.junction {
            Some(junction) => spend_pointing(conn, junction, "b_id", id).await?,
            None if relationship.on_delete == OnDelete::SetNull && relationship.has_column() => {
                let column = relationship.column().column();
                spend_pointing(conn, &holder.table, &column, id).await?;
            }
            None => {}
        }
        if relationship.on_delete == OnDelete::SetNull && relationship.has_column() {
            check_may_clear(conn, holder, relationship, access, id).await?;
        }
    }
    Ok(())
}

/// Counts the rows of `table` whose `column` is `id` (at most one more than the
/// request may still spend) against the request's deletions.
async fn spend_pointing(conn: &mut Conn<'_>, table: &str, column: &str, id: &str) -> AppResult<()> {
    let dialect = conn.dialect();
    let left = conn.deletions_left();
    let pointing: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE {} = ? LIMIT {}) pointing",
        q(dialect, table),
        q(dialect, column),
        left.saturating_add(1)
    ))
    .bind(id)
    .fetch_one(&mut **conn)
    .await?;
    conn.spend_deletions(usize::try_from(pointing).unwrap_or(usize::MAX))
}

/// Deletes a document's row and its permissions.
async fn delete_rows(conn: &mut Conn<'_>, collection: &Collection, id: &str) -> AppResult<()> {
    let dialect = conn.dialect();
    sqlx::query(&format!(
        "DELETE FROM {} WHERE resource_id = ?",
        q(dialect, &perms_table(&collection.table))
    ))
    .bind(id)
    .execute(&mut **conn)
    .await?;
    sqlx::query(&format!(
        "DELETE FROM {} WHERE id = ?",
        q(dialect, &collection.table)
    ))
    .bind(id)
    .execute(&mut **conn)
    .await?;
    Ok(())
}

/// Applies the on-delete rule of a reference column pointing at deleted
/// document `id`: clears the references (`SET_NULL`, answering the documents
/// cleared, as they were and are), or answers the ids of the documents of
/// `holder` to delete in turn (`CASCADE`). Links pointing here go with the
/// document (foreign keys).
async fn apply_on_delete(
    conn: &mut Conn<'_>,
    holder: &Arc<Collection>,
    relationship: &super::Relationship,
    id: &str,
) -> AppResult<(Vec<String>, Vec<DeleteEffect>)> {
    if !relationship.has_column() {
        return Ok(Default::default());
    }
    let dialect = conn.dialect();
    let column = q(dialect, &relationship.column().column());
    match relationship.on_delete {
        OnDelete::Restrict => Ok(Default::default()),
        OnDelete::SetNull => {
            // Counted against the request's deletions by `check_references_to`,
            // so as many as the request may still delete at most. Read (and
            // held) before they change: their events carry both states, as an
            // update's do.
            let pointing = load_pointing_locked(conn, holder, &column, id).await?;
            // Strictly later than before, as every update is, whatever time a
            // server gave the document.
            let now = now_millis();
            let later = match dialect {
                SqlDialect::Sqlite => "MAX(updated_at + 1, ?)",
                SqlDialect::MySql => "GREATEST(updated_at + 1, ?)",
            };
            sqlx::query(&format!(
                "UPDATE {} SET {column} = NULL, updated_at = {later} WHERE {column} = ?",
                q(dialect, &holder.table)
            ))
            .bind(now)
            .bind(id)
            .execute(&mut **conn)
            .await?;
            let cleared = pointing
                .into_iter()
                .map(|before| {
                    let mut after = before.clone();
                    after.data.insert(relationship.key.clone(), Value::Null);
                    after.updated_at = (before.updated_at + 1).max(now);
                    DeleteEffect::Cleared {
                        holder: holder.clone(),
                        before,
                        after,
                    }
                })
                .collect();
            Ok((Vec::new(), cleared))
        }
        OnDelete::Cascade => {
            let left = conn.deletions_left();
            let dependents: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT id FROM {} WHERE {column} = ? LIMIT {}{}",
                q(dialect, &holder.table),
                left.saturating_add(1),
                locking_read(dialect)
            ))
            .bind(id)
            .fetch_all(&mut **conn)
            .await?;
            if dependents.len() > left {
                return Err(super::tx::too_many_deletions());
            }
            Ok((dependents, Vec::new()))
        }
    }
}

/// The documents of `holder` whose reference `column` (quoted) is `id`, with
/// their permissions, locked until the transaction ends on MariaDB.
async fn load_pointing_locked(
    conn: &mut Conn<'_>,
    holder: &Collection,
    column: &str,
    id: &str,
) -> AppResult<Vec<Document>> {
    let dialect = conn.dialect();
    let mut builder = QueryBuilder::<Any>::new(select_from(dialect, holder));
    builder
        .push(format!(" WHERE {ALIAS}.{column} = "))
        .push_bind(id.to_string());
    builder.push(locking_read(dialect));
    let rows = builder.build().fetch_all(&mut **conn).await?;
    let columns = holder.columns();
    let mut documents = rows
        .iter()
        .map(|row| document_from(SystemColumns::All, &columns, row))
        .collect::<AppResult<Vec<_>>>()?;
    for chunk in documents.chunks_mut(500) {
        load_permissions(conn, holder, chunk).await?;
    }
    Ok(documents)
}

/// Refuses a delete whose `SET_NULL` would clear the reference of a document
/// of `holder` that the caller may not update.
async fn check_may_clear(
    conn: &mut Conn<'_>,
    holder: &Collection,
    relationship: &super::Relationship,
    access: &Access,
    id: &str,
) -> AppResult<()> {
    let dialect = conn.dialect();
    let roles = match reach(holder, access, Action::Update) {
        Reach::All => return Ok(()),
        Reach::PerItem(roles) => Some(roles),
        Reach::None => None,
    };
    let mut builder = QueryBuilder::<Any>::new(format!(
        "SELECT 1 FROM {} {ALIAS} WHERE {ALIAS}.{} = ",
        q(dialect, &holder.table),
        q(dialect, &relationship.column().column())
    ));
    builder.push_bind(id.to_string());
    if let Some(roles) = &roles {
        builder.push(" AND NOT ");
        push_permission_filter(
            &mut builder,
            &format!("{ALIAS}.id"),
            &perms_table(&holder.table),
            Action::Update,
            roles,
        )
        .map_err(|err| AppError::Internal(anyhow::anyhow!("permission filter: {err}")))?;
    }
    builder.push(" LIMIT 1");
    builder.push(locking_read(dialect));
    if builder.build().fetch_optional(&mut **conn).await?.is_some() {
        return Err(cascade_denied());
    }
    Ok(())
}

/// What makes a read in a write's transaction see, and hold, the rows as they
/// are now. On MariaDB a plain read in a transaction reads its snapshot, so a
/// check made by it could miss a row committed since, and the write it allows
/// would act on rows it never checked: the reads that decide whether a delete
/// may clear or cascade to the documents pointing at it, or whether a reference
/// names a document that exists, lock what they read (and, through the index
/// they use, keep new such rows out) until the transaction ends. SQLite writes
/// one transaction at a time: a write's reads are current already.
fn locking_read(dialect: SqlDialect) -> &'static str {
    match dialect {
        SqlDialect::MySql => " FOR UPDATE",
        SqlDialect::Sqlite => "",
    }
}

/// The most documents one many-to-many field links at once.
pub const MAX_LINKS: usize = 1000;

/// Replaces the links of the many-to-many fields `data` names (a list of ids;
/// null or an empty list unlinks all), after checking every id exists.
async fn write_links(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    model: &DataModel,
    id: &str,
    data: &Map<String, Value>,
) -> AppResult<()> {
    for relationship in collection.relationships.iter().filter(|r| !r.has_column()) {
        let (Some(value), Some(junction)) = (
            data.get(&relationship.key),
            relationship.junction.as_deref(),
        ) else {
            continue;
        };
        let invalid = |reason: String| AppError::Invalid {
            code: codes::VALUE_INVALID,
            field: relationship.key.clone(),
            reason,
        };
        let targets: Vec<String> = match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .filter(|s| ids::validate(&relationship.key, s).is_ok())
                        .map(String::from)
                        .ok_or_else(|| invalid("expected a list of document ids".into()))
                })
                .collect::<AppResult<_>>()?,
            _ => return Err(invalid("expected a list of document ids".into())),
        };
        let related = model
            .collection(&collection.database_id, &relationship.related_collection)
            .ok_or_else(|| {
                AppError::Internal(anyhow::anyhow!("a relationship names a missing collection"))
            })?;
        let links = Links {
            junction,
            own: "a_id",
            other: "b_id",
            field: &relationship.key,
        };
        replace_links(conn, &links, related, access, id, targets).await?;
    }
    Ok(())
}

/// The links of a many-to-many junction that one document's field lists.
pub struct Links<'a> {
    pub junction: &'a str,
    /// The junction's column holding the document's id (`a_id` for the
    /// collection holding the relationship, `b_id` for the related one).
    pub own: &'static str,
    /// The column holding the ids it links to.
    pub other: &'static str,
    /// The field, as errors name it.
    pub field: &'a str,
}

/// Replaces the links of document `id` in `links` to documents of `other` (the
/// linked collection) that the caller may read by links to `targets`, which must
/// all be such documents; at most [`MAX_LINKS`]. Links to documents it may not
/// read stay.
pub async fn replace_links(
    conn: &mut Conn<'_>,
    links: &Links<'_>,
    other: &Collection,
    access: &Access,
    id: &str,
    mut targets: Vec<String>,
) -> AppResult<()> {
    let dialect = conn.dialect();
    targets.sort();
    targets.dedup();
    if targets.len() > MAX_LINKS {
        return Err(AppError::Invalid {
            code: codes::VALUE_INVALID,
            field: links.field.to_string(),
            reason: format!("at most {MAX_LINKS} links at once"),
        });
    }
    conn.spend_links(targets.len())?;
    if !targets.is_empty() {
        let found = count_readable(conn, other, access, &targets).await?;
        if found != targets.len() {
            return Err(AppError::Invalid {
                code: codes::RELATED_DOCUMENT_NOT_FOUND,
                field: links.field.to_string(),
                reason: format!("some ids name no document of `{}`", other.name),
            });
        }
    }
    let junction = q(dialect, links.junction);
    // Only the links to documents the caller may read are its to replace: the
    // field it reads lists no other, and a link to a document it may not read
    // is that document's as much as this one's.
    let mut unlink =
        QueryBuilder::<Any>::new(format!("DELETE FROM {junction} WHERE {} = ", links.own));
    unlink.push_bind(id.to_string());
    match reach(other, access, Action::Read) {
        Reach::None => {}
        Reach::All => {
            unlink.build().execute(&mut **conn).await?;
        }
        Reach::PerItem(roles) => {
            unlink.push(format!(
                " AND {} IN (SELECT {ALIAS}.id FROM {} {ALIAS} WHERE 1 = 1",
                links.other,
                q(dialect, &other.table)
            ));
            push_reach(&mut unlink, dialect, other, &roles, Action::Read)?;
            unlink.push(")");
            unlink.build().execute(&mut **conn).await?;
        }
    }
    if !targets.is_empty() {
        let mut insert = QueryBuilder::<Any>::new(format!(
            "INSERT INTO {junction} ({}, {}) ",
            links.own, links.other
        ));
        insert.push_values(targets, |mut b, target| {
            b.push_bind(id.to_string()).push_bind(target);
        });
        insert.build().execute(&mut **conn).await?;
    }
    Ok(())
}

/// How many of `ids` (valid ids, no two alike) name documents of `collection`
/// that `access` may read. A link or reference may only name those: to the
/// caller, a document it may not read is as missing as one that does not exist,
/// so a write can't tell them apart.
async fn count_readable(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    ids: &[String],
) -> AppResult<usize> {
    let dialect = conn.dialect();
    let reach = reach(collection, access, Action::Read);
    if matches!(reach, Reach::None) || ids.is_empty() {
        return Ok(0);
    }
    let mut builder = QueryBuilder::<Any>::new(format!(
        "SELECT COUNT(*) FROM {} {ALIAS} WHERE {ALIAS}.id IN (",
        q(dialect, &collection.table)
    ));
    let mut list = builder.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
    list.push_unseparated(")");
    if let Reach::PerItem(roles) = &reach {
        push_reach(&mut builder, dialect, collection, roles, Action::Read)?;
    }
    // Shared: a delete of one of them waits until this write has committed the
    // reference, and then finds it.
    if dialect == SqlDialect::MySql {
        builder.push(" LOCK IN SHARE MODE");
    }
    let found: i64 = builder.build_query_scalar().fetch_one(&mut **conn).await?;
    Ok(usize::try_from(found).unwrap_or(0))
}

/// Every reference a write sets must name an existing document the caller may
/// read.
async fn check_references(
    conn: &mut Conn<'_>,
    collection: &Collection,
    access: &Access,
    model: &DataModel,
    data: &Map<String, Value>,
) -> AppResult<()> {
    for relationship in collection.relationships.iter().filter(|r| r.has_column()) {
        let Some(Value::String(target)) = data.get(&relationship.key) else {
            continue;
        };
        let related = model
            .collection(&collection.database_id, &relationship.related_collection)
            .ok_or_else(|| {
                AppError::Internal(anyhow::anyhow!("a relationship names a missing collection"))
            })?;
        let missing = ids::validate(&relationship.key, target).is_err()
            || count_readable(conn, related, access, std::slice::from_ref(target)).await? == 0;
        if missing {
            return Err(AppError::Invalid {
                code: codes::RELATED_DOCUMENT_NOT_FOUND,
                field: relationship.key.clone(),
                reason: format!(
                    "`{}` names no document of `{}`",
                    target.chars().take(64).collect::<String>(),
                    related.name
                ),
            });
        }
    }
    Ok(())
}

/// The roles that may read `document` of `collection`: those the collection
/// grants `read`, and with document security those the document grants.
fn read_roles(collection: &Collection, document: &Document) -> Vec<String> {
    read_roles_with(collection, &document.permissions)
}

/// [`read_roles`] of a document as an event logged it (its JSON, whose
/// `$permissions` are its own), by `collection` as it is now: who may still read
/// that version. A permission that does not parse grants nothing.
pub fn read_roles_now(collection: &Collection, logged: &serde_json::Value) -> Vec<String> {
    let own = crate::auth::permissions::logged_permissions(logged, "$permissions");
    read_roles_with(collection, &own)
}

fn read_roles_with(collection: &Collection, own: &[Permission]) -> Vec<String> {
    if !collection.enabled {
        return Vec::new();
    }
    let mut roles: Vec<String> = collection
        .permissions
        .iter()
        .filter(|p| p.action == Action::Read)
        .map(|p| p.role.to_string())
        .collect();
    if collection.document_security {
        roles.extend(
            own.iter()
                .filter(|p| p.action == Action::Read)
                .map(|p| p.role.to_string()),
        );
    }
    roles.sort();
    roles.dedup();
    roles
}

/// The realtime event of a document change (`create`, `update`, `delete`):
/// readable by the roles that may read the document as the change left it; the
/// document before the change, `previous`, by those that could read it then.
pub fn event(
    collection: &Collection,
    document: &Document,
    action: &str,
    previous: Option<&Document>,
) -> Event {
    let channel = collection.channel();
    let prefix = format!(
        "databases.{}.collections.{}.documents",
        collection.database_id, collection.id
    );
    Event {
        id: crate::bus::new_event_id(),
        project_id: collection.project_id.clone(),
        events: vec![
            format!("{prefix}.{}.{action}", document.id),
            format!("{prefix}.*.{action}"),
            format!(
                "databases.{}.collections.*.documents.*.{action}",
                collection.database_id
            ),
            format!("databases.*.collections.*.documents.*.{action}"),
        ],
        channels: vec![
            "documents".into(),
            channel.clone(),
            format!("{channel}.{}", document.id),
        ],
        timestamp: now_millis(),
        payload: document.to_json(collection),
        previous: previous.map(|d| d.to_json(collection)),
        position: 0,
        read_roles: read_roles(collection, document),
        previous_read_roles: previous
            .map(|d| read_roles(collection, d))
            .unwrap_or_default(),
        key_scope: <DocumentsRead as crate::auth::scopes::ScopeMarker>::NAME.into(),
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::{CmpOp, Field, Target, Use};
    use super::super::model::AttributeKind;
    use super::super::model::test_support::{self, TestDb, attribute as attr};
    use super::*;

    /// Integers step exactly past 2^53, and overflow or a bound is refused
    /// without naming the value.
    #[test]
    fn integers_step_exactly_and_refuse_overflow() {
        let counter = attr(
            "n",
            AttributeKind::Integer {
                min: None,
                max: None,
            },
        );
        let step = |before: i64, by: f64, bound: Option<f64>| {
            stepped_value(&counter, Some(&Value::from(before)), by, bound)
        };
        let big = 9_007_199_254_740_993;
        assert!(matches!(step(big, 1.0, None), Ok(SqlValue::Int(n)) if n == big + 1));
        assert!(matches!(step(big, -1.0, None), Ok(SqlValue::Int(n)) if n == big - 1));
        let overflow = step(i64::MAX, 1.0, None).unwrap_err();
        assert_eq!(overflow.code(), codes::VALUE_OUT_OF_RANGE);
        assert!(!overflow.message().contains(&i64::MAX.to_string()));
        let past = step(10, 1.0, Some(10.5)).unwrap_err();
        assert_eq!(past.code(), codes::VALUE_OUT_OF_RANGE);
        assert!(matches!(step(10, 1.0, Some(11.5)), Ok(SqlValue::Int(11))));
        assert!(step(10, -1.0, Some(9.5)).is_err());
        assert!(matches!(step(10, -1.0, Some(8.5)), Ok(SqlValue::Int(9))));
        assert_eq!(step(1, 0.5, None).unwrap_err().code(), codes::VALUE_INVALID);
        assert_eq!(
            step(1, 1e19, None).unwrap_err().code(),
            codes::VALUE_INVALID
        );
    }

    #[test]
    fn a_page_drives_from_a_thousand_grants_in_a_small_collection_and_more_in_a_large_one() {
        assert_eq!(page_threshold(0), PAGE_FROM_GRANTS_BELOW);
        assert_eq!(page_threshold(10_000), PAGE_FROM_GRANTS_BELOW);
        assert_eq!(page_threshold(1_000_000), 5_477);
        assert_eq!(page_threshold(i64::MAX), COUNT_FROM_GRANTS_BELOW);
        let middle = Grants {
            grants: Some(4_000),
            page_below: page_threshold(1_000_000),
        };
        assert_eq!(middle.page_drive(), Drive::Grants);
        let small = Grants {
            grants: Some(4_000),
            page_below: page_threshold(10_000),
        };
        assert_eq!(small.page_drive(), Drive::Documents);
        assert_eq!(small.count_drive(), Drive::Grants);
    }

    /// A collection as ADR 0022 measured it (`title`, `published`, `views`, an
    /// index on `(published, views)`), its twins as that ADR names them made by
    /// hand, 3,000 documents each with one of 300 owners for sole reader and
    /// 30 shared by `u1` and their owner; statistics taken on MariaDB, which
    /// picks its indexes from them.
    async fn seeded(db: &TestDb) -> Collection {
        let dialect = db.dialect;
        let mut collection = crate::services::databases::test_collection(vec![
            attr("title", AttributeKind::String { size: 50 }),
            attr("published", AttributeKind::Boolean),
            attr(
                "views",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            ),
        ]);
        collection.document_security = true;
        let mut statements =
            super::super::ddl::create_table_sql(dialect, "c_1", &collection.attributes).unwrap();
        statements.extend(match dialect {
            SqlDialect::Sqlite => [
                "CREATE INDEX i_pv ON c_1 (a_published, a_views)",
                "CREATE INDEX r_pv ON c_1 (nimbus_reader, a_published, a_views, id)",
                "CREATE INDEX r_id ON c_1 (nimbus_reader, id)",
            ]
            .map(String::from),
            // The index declared `(published, views DESC)`: MariaDB keeps the
            // declared orders in its keys and in its twin's, and then reads a
            // page of the twin for a list in that order instead of sorting the
            // reader's range (ADR 0022).
            SqlDialect::MySql => [
                "CREATE INDEX i_pv ON c_1 (a_published, a_views DESC)",
                "CREATE INDEX r_pv ON c_1 (nimbus_reader, a_published, a_views DESC, id)",
                "CREATE INDEX r_id ON c_1 (nimbus_reader, id)",
            ]
            .map(String::from),
        });
        for statement in &statements {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        for chunk in (0..3_000).collect::<Vec<i64>>().chunks(500) {
            let mut documents = QueryBuilder::<Any>::new(
                "INSERT INTO c_1 (id, created_at, updated_at, nimbus_reader, a_title, a_published, a_views) ",
            );
            documents.push_values(chunk, |mut row, n| {
                let shared = n % 100 == 0;
                row.push_bind(format!("d{n:05}"))
                    .push_bind(*n)
                    .push_bind(*n)
                    .push_bind((!shared).then(|| format!("user:u{}", n % 300)))
                    .push_bind("t")
                    .push_bind(i64::from(n % 3 != 0))
                    .push_bind(n % 97);
            });
            documents.build().execute(&db.pool).await.unwrap();
            let mut grants =
                QueryBuilder::<Any>::new(format!("INSERT INTO c_1_perms {GRANT_COLUMNS} "));
            // A shared document's two grants are not marked sole; an owner's is.
            let rows: Vec<(String, String, i64)> = chunk
                .iter()
                .flat_map(|n| {
                    let id = format!("d{n:05}");
                    let owner = format!("user:u{}", n % 300);
                    match n % 100 {
                        0 => vec![(id.clone(), owner, 0), (id, "user:u1".to_string(), 0)],
                        _ => vec![(id, owner, 1)],
                    }
                })
                .collect();
            grants.push_values(rows, |mut row, (id, role, sole)| {
                row.push_bind(id)
                    .push_bind(role)
                    .push_bind(Action::Read.bit())
                    .push_bind(sole);
            });
            grants.build().execute(&db.pool).await.unwrap();
        }
        if dialect == SqlDialect::MySql {
            sqlx::query("ANALYZE TABLE c_1, c_1_perms")
                .execute(&db.pool)
                .await
                .unwrap();
        }
        collection
    }

    /// The page of `reader`'s 20 most-viewed published documents of the
    /// collection [`seeded`] made and its total, as `EXPLAIN` shows them, and
    /// how many branches they ran.
    async fn explained(
        db: &TestDb,
        collection: &Collection,
        reader: i64,
    ) -> (Vec<String>, Vec<String>, usize) {
        let dialect = db.dialect;
        let filter = Filter::Cmp {
            field: Field::attribute("published"),
            op: CmpOp::Eq,
            value: serde_json::json!(true),
        }
        .resolve(&Target::of(collection), Use::Query)
        .unwrap();
        let query = ListQuery {
            orders: vec![OrderBy::desc(Field::attribute("views"))],
            want_total: true,
            ..ListQuery::first(filter, 20)
        };
        let roles = RoleSet::for_user(&format!("u{reader}"), false, &[], &[]);
        let reach = Reach::PerItem(roles.clone());
        let mut conn = db.pool.acquire().await.unwrap();
        let branches = Branches::of(&mut conn, dialect, collection, &roles)
            .await
            .unwrap();
        drop(conn);
        let matching = Matching {
            collection,
            filter: &query.filter,
            reach: &reach,
            drive: Drive::Grants,
            side_rows: SideRows::Shared,
        };
        let columns = collection.columns();
        let explain = match dialect {
            SqlDialect::Sqlite => "EXPLAIN QUERY PLAN ",
            SqlDialect::MySql => "EXPLAIN ",
        };
        // The page and the total return what the reader reads, and then how.
        let mut page = QueryBuilder::<Any>::new("");
        let page_sql = |builder: &mut QueryBuilder<'_, Any>| {
            push_page_by_reader(
                builder,
                dialect,
                &matching,
                &branches,
                &columns,
                Page {
                    read: &columns,
                    system: SystemColumns::All,
                    query: &query,
                },
                Slice {
                    part: KeysetPart::Near,
                    wanted: 21,
                },
            )
            .unwrap();
        };
        page_sql(&mut page);
        let ids: Vec<String> = page
            .build()
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>(0).unwrap())
            .collect();
        let mut total = QueryBuilder::<Any>::new("");
        matching
            .push_count_by_reader(&mut total, dialect, &branches)
            .unwrap();
        let total: i64 = total
            .build_query_scalar()
            .fetch_one(&db.pool)
            .await
            .unwrap();
        // u1 owns d00001, d00301, … (10, two in three published) and shares
        // the 30 documents d…00 (20 published); u2 owns d00002, d00302, ….
        let readable: Vec<i64> = (0..3_000)
            .filter(|n| n % 300 == reader || (reader == 1 && n % 100 == 0))
            .filter(|n| n % 3 != 0)
            .collect();
        assert_eq!(total, readable.len() as i64);
        let mut want = readable.clone();
        want.sort_by_key(|n| (-(n % 97), *n));
        let want: Vec<String> = want.iter().take(21).map(|n| format!("d{n:05}")).collect();
        assert_eq!(ids, want);

        let plan = |rows: Vec<AnyRow>| -> Vec<String> {
            rows.iter()
                .map(|row| match dialect {
                    SqlDialect::Sqlite => row.try_get::<String, _>(3).unwrap(),
                    SqlDialect::MySql => format!(
                        "{} {} key={} {}",
                        row.try_get::<String, _>("select_type").unwrap_or_default(),
                        row.try_get::<Option<String>, _>("table")
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        row.try_get::<Option<String>, _>("key")
                            .ok()
                            .flatten()
                            .unwrap_or_default(),
                        row.try_get::<Option<String>, _>("Extra")
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                    ),
                })
                .collect()
        };
        let mut page = QueryBuilder::<Any>::new(explain);
        page_sql(&mut page);
        let page_plan = plan(page.build().fetch_all(&db.pool).await.unwrap());
        let mut total = QueryBuilder::<Any>::new(explain);
        matching
            .push_count_by_reader(&mut total, dialect, &branches)
            .unwrap();
        let total_plan = plan(total.build().fetch_all(&db.pool).await.unwrap());
        (page_plan, total_plan, branches.len())
    }

    /// How many lines of `plan` contain `needle`.
    fn lines_with(plan: &[String], needle: &str) -> usize {
        plan.iter().filter(|line| line.contains(needle)).count()
    }

    #[tokio::test]
    async fn on_sqlite_each_role_of_a_reader_seeks_its_range_of_the_twin_index() {
        let db = test_support::sqlite().await;
        let collection = seeded(&db).await;
        let (page, total, branches) = explained(&db, &collection, 1).await;
        let roles = RoleSet::for_user("u1", false, &[], &[]).len();
        // SQLite runs a branch for every role, whether it finds any or not.
        assert_eq!(branches, roles + 1);
        assert_eq!(
            lines_with(
                &page,
                "USING INDEX r_pv (nimbus_reader=? AND a_published=?)"
            ),
            roles,
            "{page:#?}"
        );
        // The shared documents come from the reader's grants not marked sole.
        assert!(lines_with(&page, "(role=? AND sole=?)") >= 1, "{page:#?}");
        assert_eq!(
            lines_with(
                &total,
                "USING COVERING INDEX r_pv (nimbus_reader=? AND a_published=?)"
            ),
            1,
            "{total:#?}"
        );
        db.close().await;
    }

    #[tokio::test]
    async fn on_mariadb_only_the_roles_that_sole_read_a_document_seek_the_twin_index() {
        let Some(db) = test_support::mariadb().await else {
            return;
        };
        // u1 is the sole reader of its own documents through one of its four
        // roles and shares others: two branches, a union.
        let collection = seeded(&db).await;
        let (page, total, branches) = explained(&db, &collection, 1).await;
        assert_eq!(branches, 2);
        assert_eq!(lines_with(&page, "key=r_pv"), 1, "{page:#?}");
        // In the index's order: the branch reads a page of it, no sort.
        assert!(
            page.iter()
                .filter(|line| line.contains("key=r_pv"))
                .all(|line| !line.contains("filesort")),
            "{page:#?}"
        );
        // The range count, and the shared documents' lookups, which find the
        // documents without a sole reader there too.
        assert!(lines_with(&total, "key=r_pv") >= 1, "{total:#?}");

        // u2 shares nothing: its page is one range of the twin index, read in
        // order, with no union, no derived table and no sort; its total a
        // range count of the same index.
        let (page, total, branches) = explained(&db, &collection, 2).await;
        assert_eq!(branches, 1);
        assert_eq!(page.len(), 1, "{page:#?}");
        assert!(page[0].starts_with("SIMPLE d key=r_pv"), "{page:#?}");
        assert!(!page[0].contains("filesort"), "{page:#?}");
        assert_eq!(total.len(), 1, "{total:#?}");
        assert!(total[0].starts_with("SIMPLE d key=r_pv"), "{total:#?}");
        assert!(total[0].contains("Using index"), "{total:#?}");
        db.close().await;
    }
}
