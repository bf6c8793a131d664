//! Transactions of document writes, as Appwrite's transactions API has them: a
//! client opens one, stages operations in it over several requests, then
//! commits them all at once, or rolls them back.
//!
//! A transaction is a row holding its operations as given (Appwrite's shape:
//! `action`, `databaseId`, `collectionId`, `documentId`, `data`), at most
//! [`MAX_OPERATIONS`]. Staging checks every operation staged so far by running
//! them all, as the caller, in a database transaction of their own that is then
//! rolled back. What Appwrite's staging refuses (an operation's form, a missing
//! document, a permission) refuses it then; what the data makes of it (a bad
//! value, a unique index, an id taken, a related document) refuses it then
//! when it comes from a document mutation given `transactionId`, which answers
//! the document, and is left to the commit for `createOperations`, as Appwrite
//! leaves it (the operations after such a one are checked at commit only). A
//! commit runs them again, as the committing caller, in one database
//! transaction that also marks the transaction committed; a document an
//! operation changes that someone else changed after the operation was staged
//! refuses it (`TRANSACTION_CONFLICT`, as Appwrite's request timestamps do), and
//! any refusal undoes all of them and marks it failed. A user sees only the
//! transactions it opened; a key, every transaction of its project. Rows are
//! kept until they expire, and pruned after.

use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::db::{ids, now_millis};
use crate::error::{AppError, AppResult, codes};

use super::documents::{self, Access, Document, DocumentChanges, NewDocument};
use super::service::{Documents, References, Upsert};
use super::tx::{Mode, RequestTx, Sharing};
use super::writes::{SystemFields, bulk_reach, data_object, filter_queries, upserts_of};
use super::{Collection, DataModel};

/// The most operations one transaction holds (Appwrite's
/// `APP_DATABASE_TXN_MAX_OPERATIONS`).
pub const MAX_OPERATIONS: usize = 100;
/// The shortest and longest a transaction may stay open, in seconds.
pub const MIN_TTL: i64 = 60;
pub const MAX_TTL: i64 = 3600;
/// How long a transaction stays open when the client does not say.
pub const DEFAULT_TTL: i64 = 300;
/// The most pending transactions one owner keeps at once.
pub const MAX_PER_OWNER: i64 = 50;
/// The most `bulkUpdate` and `bulkDelete` operations one transaction holds:
/// each runs its filter, under the writer, at every staging and the commit.
pub const MAX_BY_QUERIES: usize = 20;
/// The most bytes of operations one transaction holds, as stored.
pub const MAX_STAGED_BYTES: usize = 1 << 20;

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Committed,
    RolledBack,
    Failed,
}

impl Status {
    /// As it is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Committed => "committed",
            Status::RolledBack => "rolledBack",
            Status::Failed => "failed",
        }
    }

    /// As Appwrite answers it: a transaction rolled back is `failed` there too.
    pub fn answered(self) -> &'static str {
        match self {
            Status::RolledBack => Status::Failed.as_str(),
            status => status.as_str(),
        }
    }

    /// What a refusal says of it.
    fn described(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Committed => "committed",
            Status::RolledBack => "rolled back",
            Status::Failed => "failed",
        }
    }

    fn parse(stored: &str) -> Status {
        match stored {
            "committed" => Status::Committed,
            "rolledBack" => Status::RolledBack,
            "failed" => Status::Failed,
            _ => Status::Pending,
        }
    }
}

/// A transaction as its clients see it.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: String,
    pub status: Status,
    /// How many operations it holds.
    pub operations: usize,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
}

/// What one operation did, as a mutation answers it.
pub enum Applied {
    /// A document written (none when the caller may not read it).
    One(Arc<Collection>, Option<Document>),
    /// Documents written by a bulk operation, those the caller may read.
    Many(Arc<Collection>, Vec<Document>),
    /// The ids of the documents deleted.
    Deleted(Vec<String>),
}

/// Whose a caller's transactions are: `user:<id>` for a signed-in user, `None`
/// for a key (which reaches every transaction of its project); a guest has none.
fn owner_of(caller: &Caller) -> AppResult<Option<String>> {
    if caller.key().is_some() {
        return Ok(None);
    }
    match caller.signed_in()? {
        Some(session) => Ok(Some(format!("user:{}", session.user.id))),
        None => Err(AppError::Unauthenticated),
    }
}

fn refused(code: &'static str, field: &str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code,
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "transaction",
        id: id.chars().take(64).collect(),
    }
}

fn transaction_from(row: &sqlx::any::AnyRow) -> AppResult<Transaction> {
    Ok(Transaction {
        id: row.try_get("id")?,
        status: Status::parse(&row.try_get::<String, _>("status")?),
        operations: usize::try_from(row.try_get::<i64, _>("operations")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const COLUMNS: &str = "id, status, operations, created_at, updated_at, expires_at";

/// Opens a transaction for `caller`, open `ttl` seconds (default
/// [`DEFAULT_TTL`]). Prunes the project's expired ones first.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    request: &RequestTx,
    ttl: Option<i64>,
) -> AppResult<Transaction> {
    check_alone(request)?;
    Access::of(caller, documents::DOCUMENTS_WRITE)?;
    let owner = owner_of(caller)?.unwrap_or_else(|| "key".into());
    let ttl = ttl.unwrap_or(DEFAULT_TTL);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(AppError::invalid(
            "ttl",
            format!("expected {MIN_TTL} to {MAX_TTL} seconds"),
        ));
    }
    let project = &caller.project.id;
    let now = now_millis();
    let pool = state.db.pool();
    let _turn = state.db.writer_turn().await;
    sqlx::query("DELETE FROM document_transactions WHERE project_id = ? AND expires_at < ?")
        .bind(project)
        .bind(now)
        .execute(pool)
        .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM document_transactions \
         WHERE project_id = ? AND owner = ? AND status = ?",
    )
    .bind(project)
    .bind(&owner)
    .bind(Status::Pending.as_str())
    .fetch_one(pool)
    .await?;
    if held >= MAX_PER_OWNER {
        return Err(refused(
            codes::TRANSACTION_LIMIT_EXCEEDED,
            "ttl",
            format!(
                "at most {MAX_PER_OWNER} transactions open at once: commit, roll back or delete some"
            ),
        ));
    }
    let transaction = Transaction {
        id: ids::generate(),
        status: Status::Pending,
        operations: 0,
        created_at: now,
        updated_at: now,
        expires_at: now + ttl * 1000,
    };
    sqlx::query(
        "INSERT INTO document_transactions \
         (project_id, id, owner, status, operations, staged, created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, 0, '[]', ?, ?, ?)",
    )
    .bind(project)
    .bind(&transaction.id)
    .bind(&owner)
    .bind(Status::Pending.as_str())
    .bind(now)
    .bind(now)
    .bind(transaction.expires_at)
    .execute(pool)
    .await?;
    Ok(transaction)
}

/// The transaction `id` if the caller may reach it, with its operations.
async fn load(state: &AppState, caller: &Caller, id: &str) -> AppResult<(Transaction, Vec<Value>)> {
    load_held(state, caller, id)
        .await
        .map(|(transaction, staged, _)| (transaction, staged))
}

/// [`load`], with whose the transaction is (`user:<id>`, or `key`).
async fn load_held(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> AppResult<(Transaction, Vec<Value>, String)> {
    Access::of(caller, documents::DOCUMENTS_WRITE)?;
    let owner = owner_of(caller)?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, owner, staged FROM document_transactions WHERE project_id = ? AND id = ?"
    ))
    .bind(&caller.project.id)
    .bind(id)
    .fetch_optional(state.db.pool())
    .await?
    .ok_or_else(|| not_found(id))?;
    let held_by: String = row.try_get("owner")?;
    if owner.is_some_and(|owner| owner != held_by) {
        return Err(not_found(id));
    }
    let staged = crate::db::columns::text(&row, "staged")?;
    let staged: Vec<Value> = serde_json::from_str(&staged)
        .map_err(|err| AppError::Internal(anyhow::anyhow!("a transaction's operations: {err}")))?;
    Ok((transaction_from(&row)?, staged, held_by))
}

/// The transaction `id`, if the caller may reach it.
pub async fn get(state: &AppState, caller: &Caller, id: &str) -> AppResult<Transaction> {
    load(state, caller, id)
        .await
        .map(|(transaction, _)| transaction)
}

/// The caller's transactions (a key's: the project's), newest first, and how
/// many there are.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    limit: usize,
    offset: usize,
) -> AppResult<(Vec<Transaction>, i64)> {
    Access::of(caller, documents::DOCUMENTS_WRITE)?;
    let owner = owner_of(caller)?;
    let project = &caller.project.id;
    let pool = state.db.pool();
    let by_owner = if owner.is_some() {
        " AND owner = ?"
    } else {
        ""
    };
    let rows_sql = format!(
        "SELECT {COLUMNS} FROM document_transactions WHERE project_id = ?{by_owner} \
         ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
    );
    let total_sql =
        format!("SELECT COUNT(*) FROM document_transactions WHERE project_id = ?{by_owner}");
    let mut rows = sqlx::query(&rows_sql).bind(project);
    let mut total = sqlx::query_scalar(&total_sql).bind(project);
    if let Some(owner) = &owner {
        rows = rows.bind(owner);
        total = total.bind(owner);
    }
    let rows = rows
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    let total: i64 = total.fetch_one(pool).await?;
    let transactions = rows
        .iter()
        .map(transaction_from)
        .collect::<AppResult<_>>()?;
    Ok((transactions, total))
}

/// Deletes the transaction `id` (its operations never run, if it was pending).
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    request: &RequestTx,
    id: &str,
) -> AppResult<()> {
    check_alone(request)?;
    load(state, caller, id).await?;
    let _turn = state.db.writer_turn().await;
    sqlx::query("DELETE FROM document_transactions WHERE project_id = ? AND id = ?")
        .bind(&caller.project.id)
        .bind(id)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

/// Refuses a transaction that takes no more changes.
fn check_open(transaction: &Transaction) -> AppResult<()> {
    if transaction.status != Status::Pending {
        return Err(refused(
            codes::TRANSACTION_NOT_READY,
            "transactionId",
            format!(
                "the transaction is {} already",
                transaction.status.described()
            ),
        ));
    }
    if transaction.expires_at < now_millis() {
        return Err(refused(
            codes::TRANSACTION_EXPIRED,
            "transactionId",
            "the transaction expired; open another",
        ));
    }
    Ok(())
}

/// A transaction runs its operations on a database transaction of its own,
/// which the request's own, once written to, would keep waiting: the writer's
/// turn on SQLite, the rows it locked on MariaDB. And it does so once a
/// request: each run starts the request's bounds (links, deletions, related
/// documents) afresh.
fn check_alone(request: &RequestTx) -> AppResult<()> {
    if !request.take_transaction_turn() {
        return Err(AppError::invalid(
            "transactionId",
            "a request opens, stages in, commits, rolls back or deletes one transaction once",
        ));
    }
    if request.has_writes() {
        return Err(AppError::invalid(
            "transactionId",
            "stage, commit or roll back a transaction before any other write of the request, \
             or in a request of its own",
        ));
    }
    Ok(())
}

/// Adds `operations` to the transaction `id` once all of it runs as the
/// caller; answers the transaction and what its new operations did.
pub async fn stage(
    state: &AppState,
    caller: &Caller,
    request: &RequestTx,
    model: &DataModel,
    id: &str,
    operations: Vec<Value>,
    data_at_commit: bool,
) -> AppResult<(Transaction, Vec<Applied>)> {
    check_alone(request)?;
    if operations.is_empty() {
        return Err(AppError::invalid(
            "operations",
            "expected one operation or more",
        ));
    }
    let (mut transaction, mut staged) = load(state, caller, id).await?;
    check_open(&transaction)?;
    let before = staged.len();
    if before + operations.len() > MAX_OPERATIONS {
        return Err(refused(
            codes::TRANSACTION_LIMIT_EXCEEDED,
            "operations",
            format!("a transaction holds at most {MAX_OPERATIONS} operations"),
        ));
    }
    if data_at_commit {
        for (index, raw) in operations.iter().enumerate() {
            check_given(raw).map_err(|err| named(err, 0, index))?;
        }
    }
    let by_key = caller.key().is_some();
    let now = now_millis();
    staged.extend(
        operations
            .into_iter()
            .map(|operation| stamped(as_stored(operation, by_key), now)),
    );
    let by_queries = staged
        .iter()
        .filter(|op| {
            matches!(
                op.get("action").and_then(Value::as_str),
                Some("bulkUpdate" | "bulkDelete")
            )
        })
        .count();
    if by_queries > MAX_BY_QUERIES {
        return Err(refused(
            codes::TRANSACTION_LIMIT_EXCEEDED,
            "operations",
            format!(
                "a transaction holds at most {MAX_BY_QUERIES} bulkUpdate and bulkDelete operations"
            ),
        ));
    }
    let given: usize = staged.iter().map(documents_given).sum();
    if given > documents::MAX_BULK {
        return Err(refused(
            codes::TRANSACTION_LIMIT_EXCEEDED,
            "operations",
            format!(
                "a transaction's bulk creates and upserts give at most {} documents in all",
                documents::MAX_BULK
            ),
        ));
    }
    let encoded = serde_json::to_string(&staged)
        .map_err(|err| AppError::Internal(anyhow::anyhow!("encoding operations: {err}")))?;
    if encoded.len() > MAX_STAGED_BYTES {
        return Err(refused(
            codes::TRANSACTION_LIMIT_EXCEEDED,
            "operations",
            format!(
                "a transaction holds at most {} MiB of operations",
                MAX_STAGED_BYTES >> 20
            ),
        ));
    }
    // The form of each operation given is its own to answer for, whatever the
    // data.
    let access = Access::of(caller, documents::DOCUMENTS_WRITE)?;
    for (index, raw) in staged.iter().enumerate().skip(before) {
        Operation::parse(raw.clone(), model, &access, by_key)
            .map_err(|err| named(err, before, index))?;
    }
    let run = RequestTx::new(state, Mode::Exclusive);
    let (mut applied, refusal) = apply_all(&run, model, caller, &staged, before, None).await;
    let ended = run.finish(false).await;
    match refusal {
        Some(err) if data_at_commit && waits_for_commit(&err) => {}
        Some(err) => return Err(err),
        None => {}
    }
    ended?;
    let _turn = state.db.writer_turn().await;
    // Only if no one staged, committed or rolled back meanwhile.
    let saved = sqlx::query(
        "UPDATE document_transactions SET staged = ?, operations = ?, updated_at = ? \
         WHERE project_id = ? AND id = ? AND operations = ? AND status = ?",
    )
    .bind(&encoded)
    .bind(i64::try_from(staged.len()).unwrap_or(i64::MAX))
    .bind(now)
    .bind(&caller.project.id)
    .bind(id)
    .bind(i64::try_from(before).unwrap_or(i64::MAX))
    .bind(Status::Pending.as_str())
    .execute(state.db.pool())
    .await?;
    if saved.rows_affected() != 1 {
        return Err(refused(
            codes::TRANSACTION_CONFLICT,
            "transactionId",
            "the transaction changed while this was staged; try again",
        ));
    }
    transaction.operations = staged.len();
    transaction.updated_at = now;
    Ok((transaction, applied.split_off(before.min(applied.len()))))
}

/// Commits the transaction `id`: all its operations, as the caller, or none.
pub async fn commit(
    state: &AppState,
    caller: &Caller,
    request: &RequestTx,
    model: &DataModel,
    id: &str,
) -> AppResult<Transaction> {
    check_alone(request)?;
    let (mut transaction, staged, held_by) = load_held(state, caller, id).await?;
    check_open(&transaction)?;
    // A commit runs its operations with the committer's permissions: a key
    // committing what a user staged would give the user's operations the
    // key's reach. A key may read and roll back a user's transaction.
    if caller.key().is_some() && held_by.starts_with("user:") {
        return Err(AppError::PermissionDenied {
            reason: "a user's transaction is committed by that user, whose permissions its \
                     operations were staged with"
                .into(),
        });
    }
    let now = now_millis();
    let run = RequestTx::new(state, Mode::Exclusive);
    let result = async {
        // Claimed first, in the same database transaction: a second commit, or
        // a staging, waits for this one and then finds it no longer pending.
        let mut op = run.writer().await?;
        let claimed = sqlx::query(
            "UPDATE document_transactions SET status = ?, updated_at = ?, staged = '[]' \
             WHERE project_id = ? AND id = ? AND status = ? AND operations = ?",
        )
        .bind(Status::Committed.as_str())
        .bind(now)
        .bind(&caller.project.id)
        .bind(id)
        .bind(Status::Pending.as_str())
        .bind(i64::try_from(staged.len()).unwrap_or(i64::MAX))
        .execute(&mut **op)
        .await
        .map_err(AppError::from);
        let claimed = op.end(claimed)?;
        if claimed.rows_affected() != 1 {
            return Err(refused(
                codes::TRANSACTION_CONFLICT,
                "transactionId",
                "the transaction changed while this was committed; read it again",
            ));
        }
        match apply_all(&run, model, caller, &staged, 0, Some(now)).await {
            (applied, None) => Ok(applied),
            (_, Some(err)) => Err(err),
        }
    }
    .await;
    match result {
        Ok(_) => {
            run.finish(true).await?;
            transaction.status = Status::Committed;
            transaction.updated_at = now;
            Ok(transaction)
        }
        Err(err) => {
            // The refusal is the answer, whatever ending the run says.
            if let Err(ending) = run.finish(false).await {
                tracing::warn!(error = ?ending, "rolling back a refused commit");
            }
            if is_refusal(&err) {
                let _turn = state.db.writer_turn().await;
                set_status(state, caller, id, Status::Failed, Some(staged.len())).await?;
            }
            Err(err)
        }
    }
}

/// Whether `err` refuses an operation for good (its data, a permission, a
/// missing document), which fails the transaction; anything else (a lock, a
/// deadline, the database away, a concurrent change) leaves it pending, to be
/// committed again.
fn is_refusal(err: &AppError) -> bool {
    match err {
        // The transaction's own row changed: named by `transactionId`. A
        // document changed since its operation was staged is a refusal.
        AppError::Invalid { code, field, .. } => {
            *code != codes::TRANSACTION_CONFLICT || field != "transactionId"
        }
        AppError::NotFound { .. }
        | AppError::PermissionDenied { .. }
        | AppError::Conflict { .. } => true,
        _ => false,
    }
}

/// Rolls the transaction `id` back: none of its operations will run.
pub async fn roll_back(
    state: &AppState,
    caller: &Caller,
    request: &RequestTx,
    id: &str,
) -> AppResult<Transaction> {
    check_alone(request)?;
    let (mut transaction, _) = load(state, caller, id).await?;
    check_open(&transaction)?;
    let _turn = state.db.writer_turn().await;
    if !set_status(state, caller, id, Status::RolledBack, None).await? {
        return Err(refused(
            codes::TRANSACTION_CONFLICT,
            "transactionId",
            "the transaction changed while this was rolled back; read it again",
        ));
    }
    transaction.status = Status::RolledBack;
    transaction.updated_at = now_millis();
    Ok(transaction)
}

/// Moves a pending transaction (holding `operations`, when given) to
/// `status`; false when it was so no more.
async fn set_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: Status,
    operations: Option<usize>,
) -> AppResult<bool> {
    let held = if operations.is_some() {
        " AND operations = ?"
    } else {
        ""
    };
    // An ended transaction keeps its count of operations, not the operations.
    let sql = format!(
        "UPDATE document_transactions SET status = ?, updated_at = ?, staged = '[]' \
         WHERE project_id = ? AND id = ? AND status = ?{held}"
    );
    let mut update = sqlx::query(&sql)
        .bind(status.as_str())
        .bind(now_millis())
        .bind(&caller.project.id)
        .bind(id)
        .bind(Status::Pending.as_str());
    if let Some(operations) = operations {
        update = update.bind(i64::try_from(operations).unwrap_or(i64::MAX));
    }
    let changed = update.execute(state.db.pool()).await?;
    Ok(changed.rows_affected() == 1)
}

/// Whether a dry run's refusal of an operation waits for the commit when the
/// operations come from `createOperations`: Appwrite's staging checks an
/// operation's form, the documents it names and the caller's permissions, and
/// leaves what the data makes of it (values, unique indexes, ids taken, related
/// documents) to the commit. Queries and the transaction's own limits are
/// form, and refuse at once.
fn waits_for_commit(err: &AppError) -> bool {
    match err {
        AppError::Invalid { code, .. } => !matches!(
            *code,
            codes::TRANSACTION_NOT_FOUND
                | codes::TRANSACTION_NOT_READY
                | codes::TRANSACTION_EXPIRED
                | codes::TRANSACTION_LIMIT_EXCEEDED
                | codes::TRANSACTION_CONFLICT
                | codes::QUERY_INVALID
                | codes::INVALID_CURSOR
                | codes::FILTER_INVALID
                | codes::FILTER_UNKNOWN_FIELD
                | codes::FILTER_TOO_COMPLEX
                | codes::SEARCH_NEEDS_FULLTEXT_INDEX
        ),
        AppError::Conflict { .. } => true,
        _ => false,
    }
}

/// What Appwrite's validator of operations refuses before anything runs, and
/// what would otherwise be filled in: the document's id of a single-document
/// action (`documentId` or `rowId`, a non-empty string; `unique()` makes one),
/// `data` for every action but `delete` (an object, a list for the bulk
/// creates and upserts), `queries` in a bulk update's or delete's data and the
/// changes (`data`) in a bulk update's, and the attribute of a step. A `null`
/// counts as absent.
fn check_given(raw: &Value) -> AppResult<()> {
    let Value::Object(raw) = raw else {
        return Err(AppError::invalid("operation", "expected an object"));
    };
    let present = |map: &Map<String, Value>, name: &str| {
        map.get(name).filter(|value| !value.is_null()).cloned()
    };
    let action = raw
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let single = matches!(
        action,
        "create" | "update" | "upsert" | "delete" | "increment" | "decrement"
    );
    let id = present(raw, "documentId").or_else(|| present(raw, "rowId"));
    match id {
        None if single => {
            return Err(AppError::invalid(
                "documentId",
                format!("required for `{action}` (`unique()` makes one)"),
            ));
        }
        Some(Value::String(id)) if id.trim().is_empty() => {
            return Err(AppError::invalid("documentId", "must not be empty"));
        }
        Some(Value::String(_)) | None => {}
        Some(_) => return Err(AppError::invalid("documentId", "expected a string")),
    }
    let data = present(raw, "data");
    let bulk_list = matches!(action, "bulkCreate" | "bulkUpsert");
    match (&data, action) {
        (None, "delete") => return Ok(()),
        (None, _) => {
            return Err(AppError::invalid(
                "data",
                format!("required for `{action}`"),
            ));
        }
        (Some(Value::Array(_)), _) if bulk_list => return Ok(()),
        (Some(_), _) if bulk_list => {
            return Err(AppError::invalid("data", "expected a list of documents"));
        }
        (Some(Value::Object(_)), _) => {}
        (Some(_), _) => return Err(AppError::invalid("data", "expected an object")),
    }
    let Some(Value::Object(data)) = data else {
        return Ok(());
    };
    let needs = |name: &str, what: &str| -> AppResult<()> {
        match present(&data, name) {
            Some(_) => Ok(()),
            None => Err(AppError::invalid(
                format!("data.{name}"),
                format!("required for `{action}`: {what}"),
            )),
        }
    };
    match action {
        "bulkUpdate" => {
            needs("queries", "the queries finding the documents")?;
            needs("data", "the changes")
        }
        "bulkDelete" => needs("queries", "the queries finding the documents"),
        "increment" | "decrement" => {
            if present(&data, "attribute").is_none() && present(&data, "column").is_none() {
                return Err(AppError::invalid(
                    "data.attribute",
                    format!("required for `{action}`"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The member of a staged operation holding when it was staged.
const STAGED_AT: &str = "$stagedAt";

/// `operation` with the time it is staged (what a client gave there replaced).
fn stamped(mut operation: Value, now: i64) -> Value {
    if let Value::Object(raw) = &mut operation {
        raw.insert(STAGED_AT.into(), Value::from(now));
    }
    operation
}

/// The id of the document a single-document operation changes.
fn changed_document(raw: &Value) -> Option<&str> {
    let action = raw.get("action")?.as_str()?;
    if !matches!(
        action,
        "update" | "upsert" | "delete" | "increment" | "decrement"
    ) {
        return None;
    }
    ["documentId", "rowId"]
        .iter()
        .find_map(|name| raw.get(*name)?.as_str())
}

/// Whether the document `id` of `collection` was changed by someone else after
/// `staged_at` and before this commit began (`commit_at`): this commit's own
/// writes are later. Its row stays locked on MariaDB until the commit ends.
async fn changed_since(
    run: &RequestTx,
    collection: &Collection,
    id: &str,
    staged_at: i64,
    commit_at: i64,
) -> AppResult<bool> {
    let mut op = run.writer().await?;
    let dialect = op.dialect();
    let lock = match dialect {
        super::model::SqlDialect::MySql => " FOR UPDATE",
        super::model::SqlDialect::Sqlite => "",
    };
    let sql = format!(
        "SELECT updated_at FROM {} WHERE id = ?{lock}",
        dialect.quote(&collection.table)
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut **op)
        .await
        .map_err(AppError::from);
    let row = op.end(row)?;
    let updated_at = row.and_then(|row| row.try_get::<i64, _>(0).ok());
    Ok(updated_at.is_some_and(|at| at > staged_at && at < commit_at))
}

/// How many documents a bulk create or upsert gives (every staging runs them
/// all again, so a transaction's are bounded together).
fn documents_given(operation: &Value) -> usize {
    match operation.get("action").and_then(Value::as_str) {
        Some("bulkCreate" | "bulkUpsert") => operation
            .get("data")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        _ => 0,
    }
}

/// `operation` as a transaction keeps it: without the times only a key may
/// set, when `by_key` is false (a key committing it later must not set them
/// for a user), and with ids fixed ([`with_ids`]).
fn as_stored(mut operation: Value, by_key: bool) -> Value {
    if !by_key {
        let strip = |document: &mut Value| {
            if let Value::Object(fields) = document {
                fields.remove("$createdAt");
                fields.remove("$updatedAt");
            }
        };
        if let Some(data) = operation.get_mut("data") {
            match data {
                Value::Array(documents) => documents.iter_mut().for_each(strip),
                data => {
                    if let Some(changes) = data.get_mut("data") {
                        strip(changes);
                    }
                    strip(data);
                }
            }
        }
    }
    with_ids(operation)
}

/// `operation` with an id for each document it creates that has none (or
/// `unique()`): made once, when staged, so that the staging's answer, a later
/// operation of the transaction and the commit all name the same document.
fn with_ids(mut operation: Value) -> Value {
    let fresh = |id: Option<&Value>| match id {
        Some(Value::String(id)) => id == ids::UNIQUE,
        None | Some(Value::Null) => true,
        Some(_) => false,
    };
    let Value::Object(raw) = &mut operation else {
        return operation;
    };
    let action = raw
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match action {
        "create" | "upsert" => {
            let given = ["documentId", "rowId"]
                .iter()
                .filter_map(|name| raw.get(*name))
                .chain(raw.get("data").and_then(|data| data.get("$id")))
                .find(|id| !fresh(Some(id)))
                .cloned();
            let id = given.unwrap_or_else(|| Value::String(ids::generate()));
            raw.insert("documentId".into(), id);
        }
        "bulkCreate" | "bulkUpsert" => {
            if let Some(Value::Array(items)) = raw.get_mut("data") {
                for item in items.iter_mut() {
                    if let Value::Object(document) = item
                        && fresh(document.get("$id"))
                    {
                        document.insert("$id".into(), Value::String(ids::generate()));
                    }
                }
            }
        }
        _ => {}
    }
    operation
}

/// `err`, refusing the operation at `index`, named by its place among the
/// operations given (`operations[3].data`), counted from `first` on, or, for
/// one staged before, in the transaction (`staged[1]`).
fn named(err: AppError, first: usize, index: usize) -> AppError {
    let named = match index.checked_sub(first) {
        Some(given) => format!("operations[{given}]"),
        None => format!("staged[{index}]"),
    };
    match err {
        AppError::Invalid {
            code,
            field,
            reason,
        } => AppError::Invalid {
            code,
            field: format!("{named}.{field}"),
            reason,
        },
        AppError::PermissionDenied { reason } => AppError::PermissionDenied {
            reason: format!("{named}: {reason}"),
        },
        other => other,
    }
}

/// Runs `operations` in order on `run`, as `caller`: what each did, up to the
/// first refused, and that refusal ([`named`]). A commit (begun at
/// `commit_at`) first refuses an operation whose document someone else
/// changed after it was staged; the commit's own changes are later than its
/// start, so an earlier operation of the transaction changing it is no
/// conflict.
async fn apply_all(
    run: &RequestTx,
    model: &DataModel,
    caller: &Caller,
    operations: &[Value],
    first: usize,
    commit_at: Option<i64>,
) -> (Vec<Applied>, Option<AppError>) {
    let mut applied = Vec::with_capacity(operations.len());
    let access = match Access::of(caller, documents::DOCUMENTS_WRITE) {
        Ok(access) => access,
        Err(err) => return (applied, Some(err)),
    };
    let answers = caller.may_see_what_it_writes(crate::auth::scopes::Scope::DocumentsWrite);
    let documents = Documents::new(run, model, &access).answering(answers);
    let by_key = caller.key().is_some();
    for (index, raw) in operations.iter().enumerate() {
        let done = async {
            let operation = Operation::parse(raw.clone(), model, &access, by_key)?;
            let stale = match (
                commit_at,
                changed_document(raw),
                raw.get(STAGED_AT).and_then(Value::as_i64),
            ) {
                (Some(commit_at), Some(id), Some(staged_at)) => {
                    // Told only of a document the caller may read: the operation's
                    // own refusal answers for one it may not, so a commit tells
                    // no one of a change they could not see.
                    changed_since(run, operation.collection(), id, staged_at, commit_at).await? && {
                        let mut conn = run.reader().await?;
                        documents::get(&mut conn, operation.collection(), &access, id, false)
                            .await?
                            .is_some()
                    }
                }
                _ => false,
            };
            if stale {
                return Err(AppError::Invalid {
                    code: codes::TRANSACTION_CONFLICT,
                    field: "documentId".into(),
                    reason: format!(
                        "the document {} changed after this operation was staged",
                        crate::error::shown(changed_document(raw).unwrap_or_default())
                    ),
                });
            }
            operation.apply(&documents).await
        }
        .await;
        match done {
            Ok(done) => applied.push(done),
            Err(err) => return (applied, Some(named(err, first, index))),
        }
    }
    (applied, None)
}

/// One operation, read against the data model as it is now.
enum Operation {
    Create(Arc<Collection>, NewDocument),
    Update(Arc<Collection>, String, DocumentChanges),
    Upsert(Arc<Collection>, Upsert),
    Delete(Arc<Collection>, String),
    Step {
        collection: Arc<Collection>,
        id: String,
        attribute: String,
        by: f64,
        bound: Option<f64>,
    },
    CreateMany(Arc<Collection>, Vec<NewDocument>),
    UpsertMany(Arc<Collection>, Vec<Upsert>),
    UpdateMany(
        Arc<Collection>,
        super::filter::Filter,
        Map<String, Value>,
        Option<Vec<String>>,
    ),
    DeleteMany(Arc<Collection>, super::filter::Filter),
}

/// A string member of an operation, by any of `names` (Appwrite's and its
/// TablesDB's: `collectionId` or `tableId`, `documentId` or `rowId`).
fn member(raw: &Map<String, Value>, names: &[&str]) -> AppResult<Option<String>> {
    for name in names {
        match raw.get(*name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) if !text.trim().is_empty() => return Ok(Some(text.clone())),
            Some(_) => return Err(AppError::invalid(*name, "expected a non-empty string")),
        }
    }
    Ok(None)
}

fn required(raw: &Map<String, Value>, names: &[&str]) -> AppResult<String> {
    member(raw, names)?.ok_or_else(|| AppError::invalid(names[0], "required"))
}

/// A document of a bulk create or upsert: its attribute values and system
/// fields.
fn documents_of(data: Value, by_key: bool) -> AppResult<Vec<(Map<String, Value>, SystemFields)>> {
    let Value::Array(items) = data else {
        return Err(AppError::invalid("data", "expected a list of documents"));
    };
    if items.len() > documents::MAX_BULK {
        return Err(refused(
            codes::TOO_MANY_DOCUMENTS,
            "data",
            format!("at most {} documents at once", documents::MAX_BULK),
        ));
    }
    items
        .into_iter()
        .map(|item| {
            let mut data = data_object(item)?;
            let system = SystemFields::take(&mut data, by_key)?;
            Ok((data, system))
        })
        .collect()
}

/// The queries of a bulk update or delete (`data.queries`), as its filter.
fn queries_of(data: &mut Map<String, Value>) -> AppResult<super::filter::Filter> {
    let queries = match data.remove("queries") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<Vec<String>>(value)
                .map_err(|_| AppError::invalid("queries", "expected a list of query strings"))?,
        ),
    };
    filter_queries(queries)
}

fn number(data: &Map<String, Value>, name: &str) -> AppResult<Option<f64>> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| AppError::invalid(name, "expected a finite number")),
    }
}

impl Operation {
    /// The collection it writes.
    fn collection(&self) -> &Collection {
        match self {
            Operation::Create(collection, _)
            | Operation::Update(collection, ..)
            | Operation::Upsert(collection, _)
            | Operation::Delete(collection, _)
            | Operation::Step { collection, .. }
            | Operation::CreateMany(collection, _)
            | Operation::UpsertMany(collection, _)
            | Operation::UpdateMany(collection, ..)
            | Operation::DeleteMany(collection, _) => collection,
        }
    }

    fn parse(raw: Value, model: &DataModel, access: &Access, by_key: bool) -> AppResult<Operation> {
        let Value::Object(mut raw) = raw else {
            return Err(AppError::invalid("operation", "expected an object"));
        };
        let action = required(&raw, &["action"])?;
        let database_id = required(&raw, &["databaseId"])?;
        let collection_id = required(&raw, &["collectionId", "tableId"])?;
        let document_id = member(&raw, &["documentId", "rowId"])?;
        let collection = match model.collection(&database_id, &collection_id) {
            Some(collection) => collection.clone(),
            None if model
                .collections
                .iter()
                .any(|c| c.database_id == database_id) =>
            {
                return Err(AppError::NotFound {
                    what: "collection",
                    id: collection_id.chars().take(64).collect(),
                });
            }
            None => {
                return Err(AppError::NotFound {
                    what: "database",
                    id: database_id.chars().take(64).collect(),
                });
            }
        };
        let data = raw.remove("data").unwrap_or(Value::Null);
        let permissions = match raw.remove("permissions") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<Vec<String>>(value)
                    .map_err(|_| AppError::invalid("permissions", "expected a list of strings"))?,
            ),
        };
        let id_of = |document_id: Option<String>| {
            document_id.ok_or_else(|| AppError::invalid("documentId", "required for this action"))
        };
        let object = |data: Value| match data {
            Value::Null => Ok(Map::new()),
            data => data_object(data),
        };
        Ok(match action.as_str() {
            "create" => {
                let mut data = object(data)?;
                let system = SystemFields::take(&mut data, by_key)?;
                Operation::Create(
                    collection,
                    NewDocument {
                        id: document_id.or(system.id),
                        data,
                        permissions: permissions.or(system.permissions),
                        times: system.times,
                    },
                )
            }
            "update" => {
                let mut data = object(data)?;
                let system = SystemFields::take(&mut data, by_key)?;
                Operation::Update(
                    collection,
                    id_of(document_id)?,
                    DocumentChanges {
                        data,
                        permissions: permissions.or(system.permissions),
                        times: system.times,
                        operators: true,
                        expected_updated_at: None,
                    },
                )
            }
            "upsert" => {
                let mut data = object(data)?;
                let system = SystemFields::take(&mut data, by_key)?;
                let id = ids::resolve("documentId", Some(&id_of(document_id)?))?;
                Operation::Upsert(
                    collection,
                    Upsert {
                        id,
                        data,
                        permissions: permissions.or(system.permissions),
                    },
                )
            }
            "delete" => Operation::Delete(collection, id_of(document_id)?),
            "increment" | "decrement" => {
                let data = object(data)?;
                let attribute = required(&data, &["attribute"])?;
                let by = number(&data, "value")?.unwrap_or(1.0);
                if by <= 0.0 {
                    return Err(AppError::invalid("value", "expected a positive number"));
                }
                let up = action == "increment";
                let bound = number(&data, if up { "max" } else { "min" })?;
                Operation::Step {
                    collection,
                    id: id_of(document_id)?,
                    attribute,
                    by: if up { by } else { -by },
                    bound,
                }
            }
            "bulkCreate" => {
                let news = documents_of(data, by_key)?
                    .into_iter()
                    .map(|(data, system)| system.into_new(data))
                    .collect();
                Operation::CreateMany(collection, news)
            }
            "bulkUpsert" => {
                let upserts = upserts_of(documents_of(data, by_key)?, "data")?;
                Operation::UpsertMany(collection, upserts)
            }
            "bulkUpdate" => {
                let mut data = object(data)?;
                let filter = queries_of(&mut data)?;
                let filter = bulk_reach(model, &collection, access, filter)?;
                let mut changes = match data.remove("data") {
                    None | Some(Value::Null) => Map::new(),
                    Some(changes) => data_object(changes)?,
                };
                let system = SystemFields::take(&mut changes, false)?;
                Operation::UpdateMany(
                    collection,
                    filter,
                    changes,
                    permissions.or(system.permissions),
                )
            }
            "bulkDelete" => {
                let mut data = object(data)?;
                let filter = queries_of(&mut data)?;
                let filter = bulk_reach(model, &collection, access, filter)?;
                Operation::DeleteMany(collection, filter)
            }
            other => {
                return Err(AppError::invalid(
                    "action",
                    format!(
                        "`{}` is none of create, update, upsert, delete, increment, decrement, \
                         bulkCreate, bulkUpdate, bulkUpsert, bulkDelete",
                        other.chars().take(32).collect::<String>()
                    ),
                ));
            }
        })
    }

    async fn apply(self, documents: &Documents<'_>) -> AppResult<Applied> {
        Ok(match self {
            Operation::Create(collection, new) => {
                let document = documents.create(&collection, new, Sharing::Among).await?;
                Applied::One(collection, document)
            }
            Operation::Update(collection, id, changes) => {
                let document = documents
                    .update(&collection, &id, changes, References::ReadableOnly)
                    .await?;
                Applied::One(collection, document)
            }
            Operation::Upsert(collection, upsert) => {
                let document = documents
                    .upsert(
                        &collection,
                        upsert.id,
                        upsert.data,
                        upsert.permissions,
                        true,
                    )
                    .await?;
                Applied::One(collection, document)
            }
            Operation::Delete(collection, id) => {
                documents.delete(&collection, &id).await?;
                Applied::Deleted(vec![id])
            }
            Operation::Step {
                collection,
                id,
                attribute,
                by,
                bound,
            } => {
                let document = documents
                    .increment(&collection, &id, &attribute, by, bound)
                    .await?;
                Applied::One(collection, document)
            }
            Operation::CreateMany(collection, news) => {
                let created = documents.create_many(&collection, news).await?;
                Applied::Many(collection, created)
            }
            Operation::UpsertMany(collection, upserts) => {
                let written = documents.upsert_many(&collection, upserts).await?;
                Applied::Many(collection, written)
            }
            Operation::UpdateMany(collection, filter, data, permissions) => {
                let updated = documents
                    .update_matching(&collection, filter, data, permissions)
                    .await?;
                Applied::Many(collection, updated)
            }
            Operation::DeleteMany(collection, filter) => {
                let deleted = documents.delete_matching(&collection, filter).await?;
                Applied::Deleted(deleted)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction(status: Status, expires_in: i64) -> Transaction {
        let now = now_millis();
        Transaction {
            id: "t".into(),
            status,
            operations: 0,
            created_at: now,
            updated_at: now,
            expires_at: now + expires_in,
        }
    }

    fn code(result: AppResult<()>) -> String {
        result.map_or_else(|err| err.code(), |()| "ok".into())
    }

    #[test]
    fn only_a_pending_transaction_within_its_time_takes_changes() {
        assert_eq!(
            code(check_open(&transaction(Status::Pending, 60_000))),
            "ok"
        );
        assert_eq!(
            code(check_open(&transaction(Status::Pending, -1))),
            codes::TRANSACTION_EXPIRED
        );
        for done in [Status::Committed, Status::RolledBack, Status::Failed] {
            assert_eq!(
                code(check_open(&transaction(done, 60_000))),
                codes::TRANSACTION_NOT_READY
            );
        }
    }

    #[test]
    fn documents_a_staged_operation_creates_are_named_once() {
        let created = with_ids(serde_json::json!({"action": "create", "documentId": "unique()"}));
        let id = created["documentId"].as_str().unwrap().to_string();
        assert_ne!(id, "unique()");
        assert_eq!(with_ids(created.clone())["documentId"], id.as_str());
        let from_data = with_ids(serde_json::json!({"action": "upsert", "data": {"$id": "given"}}));
        assert_eq!(from_data["documentId"], "given");
        let bulk =
            with_ids(serde_json::json!({"action": "bulkCreate", "data": [{"$id": "a"}, {}]}));
        assert_eq!(bulk["data"][0]["$id"], "a");
        assert!(
            bulk["data"][1]["$id"]
                .as_str()
                .is_some_and(|id| id != "unique()")
        );
        let update = serde_json::json!({"action": "update", "documentId": "unique()"});
        assert_eq!(with_ids(update.clone()), update);
    }
}
