//! The event log's SQL: appending a transaction's events at the positions it takes,
//! reading a range of positions back, and pruning what is older than the retention.
//! What an entry holds (a bus message, as JSON) is the bus's business, not this
//! module's; here it is text with a project and a position.
//!
//! Positions come from one counter row (`event_head`), bumped by [`append`] as the
//! last statements before COMMIT. Its row lock is then held only until the commit,
//! so positions are handed out in commit order: a reader that has seen position
//! `p` committed knows every position below `p` is committed too (or never will
//! be, if rolled back with its transaction, which gives the positions back).
//! Auto-increment ids would not do: MariaDB takes them at insert, not at commit.

use sqlx::{Any, AnyConnection, QueryBuilder, Row as _};

use super::Dialect;

/// An event to log: the project it belongs to and its body (JSON).
#[derive(Debug, Clone)]
pub struct Entry {
    pub project_id: String,
    pub body: String,
}

/// An entry as logged, at its position.
#[derive(Debug, Clone)]
pub struct Logged {
    pub position: i64,
    pub project_id: String,
    pub body: String,
}

/// Most rows one `INSERT` of [`append`] carries (4 placeholders each).
const ROWS_PER_INSERT: usize = 1000;

/// Logs `entries` in the transaction open on `conn`, at consecutive positions,
/// and returns them as logged. Run it last before COMMIT: the counter row stays
/// locked until the transaction ends.
pub async fn append(
    conn: &mut AnyConnection,
    dialect: Dialect,
    entries: Vec<Entry>,
) -> Result<Vec<Logged>, sqlx::Error> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let count = entries.len() as i64;
    let last = match dialect {
        // `LAST_INSERT_ID(expr)` hands the new value back in the statement's own
        // answer: no second round trip under the lock.
        Dialect::MySql => sqlx::query(
            "UPDATE event_head SET position = LAST_INSERT_ID(position + ?) WHERE id = 1",
        )
        .bind(count)
        .execute(&mut *conn)
        .await?
        .last_insert_id()
        .ok_or(sqlx::Error::RowNotFound)?,
        Dialect::Sqlite => {
            sqlx::query_scalar::<_, i64>(
                "UPDATE event_head SET position = position + ? WHERE id = 1 RETURNING position",
            )
            .bind(count)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    let first = last - count + 1;
    let now = super::now_millis();
    let logged: Vec<Logged> = entries
        .into_iter()
        .zip(first..)
        .map(|(entry, position)| Logged {
            position,
            project_id: entry.project_id,
            body: entry.body,
        })
        .collect();
    for chunk in logged.chunks(ROWS_PER_INSERT) {
        let mut insert =
            QueryBuilder::<Any>::new("INSERT INTO event_log (position, project_id, created_at, body) ");
        insert.push_values(chunk, |mut row, entry| {
            row.push_bind(entry.position)
                .push_bind(entry.project_id.as_str())
                .push_bind(now)
                .push_bind(entry.body.as_str());
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(logged)
}

/// The last position given out.
pub async fn head<'e>(db: impl sqlx::Executor<'e, Database = Any>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT position FROM event_head WHERE id = 1")
        .fetch_one(db)
        .await
}

/// Up to `limit` entries after `position`, in position order.
pub async fn after<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    position: i64,
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, project_id, body FROM event_log WHERE position > ? \
         ORDER BY position LIMIT ?",
    )
    .bind(position)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(logged).collect()
}

/// Up to `limit` entries of one project after `position`, in position order.
pub async fn project_after<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    project_id: &str,
    position: i64,
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, project_id, body FROM event_log WHERE project_id = ? AND position > ? \
         ORDER BY position LIMIT ?",
    )
    .bind(project_id)
    .bind(position)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(logged).collect()
}

/// The oldest position still kept, if any entry is.
pub async fn oldest<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(position) FROM event_log")
        .fetch_one(db)
        .await
}

fn logged(row: &sqlx::any::AnyRow) -> Result<Logged, sqlx::Error> {
    Ok(Logged {
        position: row.try_get("position")?,
        project_id: row.try_get("project_id")?,
        body: super::columns::text(row, "body")?,
    })
}

/// Deletes up to `limit` entries logged before `before` (milliseconds), oldest
/// first; returns how many went. Bounded, so that no single statement holds locks
/// for long; idempotent, so replicas may prune at the same time.
pub async fn prune<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    dialect: Dialect,
    before: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let sql = match dialect {
        Dialect::MySql => {
            "DELETE FROM event_log WHERE created_at < ? ORDER BY position LIMIT ?"
        }
        Dialect::Sqlite => {
            "DELETE FROM event_log WHERE position IN \
             (SELECT position FROM event_log WHERE created_at < ? ORDER BY position LIMIT ?)"
        }
    };
    Ok(sqlx::query(sql)
        .bind(before)
        .bind(limit)
        .execute(db)
        .await?
        .rows_affected())
}
