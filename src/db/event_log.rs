//! The event log's SQL: appending a transaction's events at the positions it takes,
//! reading a range of positions back, and pruning what is older than the retention.
//! What an entry holds (a bus message, as JSON) is the bus's business, not this
//! module's; here it is text with a project and a position.
//!
//! Positions are auto-increment ids, taken by [`append`] as the transaction's last
//! statement before COMMIT. They are handed out at insert, not at commit (on
//! MariaDB, concurrent transactions commit in another order than they inserted), so
//! a reader may find a gap that a still-open transaction will fill, or that a
//! rollback left for good: the relay (`crate::bus::log`) waits on gaps, bounded,
//! and watches the positions it passed for a while longer. Writes to one row take
//! its lock until they commit, so the positions of one document's events follow the
//! order of its writes. ADR 18 has the measurements that chose this over a counter
//! row bumped at commit.

use sqlx::{Any, AnyConnection, QueryBuilder, Row as _};

/// An event to log: the project it belongs to and its body (JSON).
#[derive(Debug)]
pub struct Entry {
    pub project_id: String,
    pub body: String,
    /// Handed on untouched to the entry as logged.
    pub carried: Option<Carried>,
}

/// An entry as logged, at its position.
#[derive(Debug)]
pub struct Logged {
    pub position: i64,
    pub project_id: String,
    pub body: String,
    /// What the writer handed along with the entry; none for one read back.
    pub carried: Option<Carried>,
}

/// What a writer hands along with an entry, untouched, to whoever announces it
/// once committed: the message its body encodes, so that the announcement need
/// not decode it again (decoding an event costs more than encoding it).
pub struct Carried(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carried")
    }
}

/// Most rows one `INSERT` of [`append`] carries (3 placeholders each).
const ROWS_PER_INSERT: usize = 1000;

/// Logs `entries` in the transaction open on `conn`, and returns them as logged,
/// in order. Run it last before COMMIT, so that the gap its positions leave until
/// then is short.
pub async fn append(
    conn: &mut AnyConnection,
    entries: Vec<Entry>,
) -> Result<Vec<Logged>, sqlx::Error> {
    let now = super::now_millis();
    let mut logged: Vec<Logged> = entries
        .into_iter()
        .map(|entry| Logged {
            position: 0,
            project_id: entry.project_id,
            body: entry.body,
            carried: entry.carried,
        })
        .collect();
    for chunk in logged.chunks_mut(ROWS_PER_INSERT) {
        let mut insert =
            QueryBuilder::<Any>::new("INSERT INTO event_log (project_id, created_at, body) ");
        insert.push_values(chunk.iter(), |mut row, entry| {
            row.push_bind(entry.project_id.as_str())
                .push_bind(now)
                // As bytes: MariaDB scans a string parameter's characters and
                // checks them again into a text column (migration 0031, ADR 39).
                .push_bind(entry.body.as_bytes());
        });
        // Both MariaDB (10.5+) and SQLite (3.35+) hand each row's id back, in the
        // order of the rows, whatever the auto-increment lock mode.
        insert.push(" RETURNING position");
        let positions: Vec<i64> = insert
            .build_query_scalar::<i64>()
            .fetch_all(&mut *conn)
            .await?;
        if positions.len() != chunk.len() {
            return Err(sqlx::Error::RowNotFound);
        }
        for (entry, position) in chunk.iter_mut().zip(positions) {
            entry.position = position;
        }
    }
    Ok(logged)
}

/// The highest position committed so far (0 for an empty log).
pub async fn head<'e>(db: impl sqlx::Executor<'e, Database = Any>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(position), 0) FROM event_log")
        .fetch_one(db)
        .await
}

/// Those of `positions` that the log holds, in position order.
pub async fn at<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    positions: &[i64],
) -> Result<Vec<Logged>, sqlx::Error> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<Any>::new(
        "SELECT position, project_id, body FROM event_log WHERE position IN (",
    );
    let mut list = query.separated(", ");
    for position in positions {
        list.push_bind(*position);
    }
    query.push(") ORDER BY position");
    let rows = query.build().fetch_all(db).await?;
    rows.iter().map(logged).collect()
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

/// The positions and projects of up to `limit` entries after `position`, in
/// position order, without their bodies: what a reader that acts on some
/// projects only looks at first.
pub async fn listed_after<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    position: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, project_id FROM event_log WHERE position > ? \
         ORDER BY position LIMIT ?",
    )
    .bind(position)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("position")?, row.try_get("project_id")?)))
        .collect()
}

/// Up to `limit` entries of one project after `position` and at most `upto`, in
/// position order.
pub async fn project_between<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    project_id: &str,
    position: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, project_id, body FROM event_log WHERE project_id = ? AND position > ? \
         AND position <= ? ORDER BY position LIMIT ?",
    )
    .bind(project_id)
    .bind(position)
    .bind(upto)
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
        carried: None,
    })
}

/// Up to `limit` entries whose positions lie in one of `ranges` (each inclusive),
/// in position order: the positions a reader found missing, looked for again.
pub async fn in_ranges<'e>(
    db: impl sqlx::Executor<'e, Database = Any>,
    ranges: &[(i64, i64)],
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let mut query =
        QueryBuilder::<Any>::new("SELECT position, project_id, body FROM event_log WHERE ");
    for (n, (from, to)) in ranges.iter().enumerate() {
        if n > 0 {
            query.push(" OR ");
        }
        query
            .push("(position >= ")
            .push_bind(*from)
            .push(" AND position <= ")
            .push_bind(*to)
            .push(")");
    }
    query.push(" ORDER BY position LIMIT ").push_bind(limit);
    let rows = query.build().fetch_all(db).await?;
    rows.iter().map(logged).collect()
}

/// Deletes the oldest entries, in position order, up to the first one logged at
/// or after `before` (milliseconds) or above `kept_above` (what the log's
/// consumers have not handled stays), looking at no more than `limit` of them;
/// returns how many went. It walks the primary key from the oldest entry rather
/// than an index on the time of logging: positions are taken at the time of
/// logging, so the time rises with them (up to the clocks of the replicas, an
/// entry further on may be a moment older), and one index less is one insert
/// less for every logged event. Bounded, so that no single statement holds locks
/// for long; idempotent, so replicas may prune at the same time.
pub async fn prune(
    pool: &sqlx::AnyPool,
    before: i64,
    kept_above: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let oldest: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT position, created_at FROM event_log WHERE position <= ? \
         ORDER BY position LIMIT ?",
    )
    .bind(kept_above)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let Some(last) = oldest
        .iter()
        .take_while(|(_, logged_at)| *logged_at < before)
        .last()
        .map(|(position, _)| *position)
    else {
        return Ok(0);
    };
    Ok(sqlx::query("DELETE FROM event_log WHERE position <= ?")
        .bind(last)
        .execute(pool)
        .await?
        .rows_affected())
}
