//! The SQL of usage: additive upserts into the bucket rows (`usage_counters`), the
//! reads of `usage(…)`, pruning, the positions the log consumer counted, and the
//! aggregate reads of snapshots (how many users, sessions, files and documents a
//! project has: read-only counts over other services' tables, nothing more).

use sqlx::{AnyConnection, AnyPool, Row as _};

use super::Kind;
use crate::db::Dialect;

/// Rows per upsert statement (7 values each, well under SQLite's bind limit).
const ROWS_PER_STATEMENT: usize = 100;

/// One bucket row to add to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub project_id: String,
    /// `h` or `d`.
    pub period: &'static str,
    /// Start of the bucket, milliseconds since the epoch.
    pub bucket: i64,
    pub metric: &'static str,
    pub dimension: String,
    /// '' but for peaks, kept per replica.
    pub replica: String,
    pub value: i64,
    pub kind: Kind,
}

/// The upsert of `rows` rows of `kind`: a counter adds, a peak keeps the highest,
/// a gauge takes the new value.
fn upsert_sql(dialect: Dialect, kind: Kind, rows: usize) -> String {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    let head = format!(
        "INSERT INTO usage_counters (project_id, period, bucket, metric, dimension, replica, value) \
         VALUES {values}"
    );
    match dialect {
        Dialect::Sqlite => {
            let set = match kind {
                Kind::Counter => "usage_counters.value + excluded.value",
                Kind::Peak => "MAX(usage_counters.value, excluded.value)",
                Kind::Gauge => "excluded.value",
            };
            format!(
                "{head} ON CONFLICT (project_id, period, bucket, metric, dimension, replica) \
                 DO UPDATE SET value = {set}"
            )
        }
        Dialect::MySql => {
            let set = match kind {
                Kind::Counter => "value + VALUES(value)",
                Kind::Peak => "GREATEST(value, VALUES(value))",
                Kind::Gauge => "VALUES(value)",
            };
            format!("{head} ON DUPLICATE KEY UPDATE value = {set}")
        }
    }
}

/// Adds `rows` to their buckets on `conn` (inside the caller's transaction).
/// Rows go in key order, so that replicas flushing at once lock rows in the same
/// order and do not deadlock each other.
pub async fn add(
    conn: &mut AnyConnection,
    dialect: Dialect,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (
            &a.project_id,
            a.period,
            a.bucket,
            a.metric,
            &a.dimension,
            &a.replica,
        )
            .cmp(&(
                &b.project_id,
                b.period,
                b.bucket,
                b.metric,
                &b.dimension,
                &b.replica,
            ))
    });
    for kind in [Kind::Counter, Kind::Peak, Kind::Gauge] {
        let of_kind: Vec<&Row> = sorted.iter().copied().filter(|r| r.kind == kind).collect();
        for chunk in of_kind.chunks(ROWS_PER_STATEMENT) {
            let sql = upsert_sql(dialect, kind, chunk.len());
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(row.project_id.as_str())
                    .bind(row.period)
                    .bind(row.bucket)
                    .bind(row.metric)
                    .bind(row.dimension.as_str())
                    .bind(row.replica.as_str())
                    .bind(row.value);
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Adds `rows` in a transaction of their own: all of them, or none.
pub async fn add_all(pool: &AnyPool, dialect: Dialect, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    add(&mut tx, dialect, rows).await?;
    tx.commit().await
}

/// `SUM(…)` as a 64-bit integer on both backends (MariaDB's is a decimal).
fn sum(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("CAST(COALESCE(SUM({column}), 0) AS INTEGER)"),
        Dialect::MySql => format!("CAST(COALESCE(SUM({column}), 0) AS SIGNED)"),
    }
}

/// One read value: a bucket's value of a metric's key, summed over replicas.
#[derive(Debug, Clone)]
pub struct Read {
    pub bucket: i64,
    pub metric: String,
    pub dimension: String,
    pub value: i64,
}

/// The values of `project_id` in the buckets of `period` from `from` (included) to
/// `to` (excluded), of the metrics named (all when empty).
pub async fn read(
    pool: &AnyPool,
    dialect: Dialect,
    project_id: &str,
    period: &str,
    from: i64,
    to: i64,
    metrics: &[&str],
) -> Result<Vec<Read>, sqlx::Error> {
    let only = if metrics.is_empty() {
        String::new()
    } else {
        format!(" AND metric IN ({})", vec!["?"; metrics.len()].join(", "))
    };
    let sql = format!(
        "SELECT bucket, metric, dimension, {} AS value FROM usage_counters \
         WHERE project_id = ? AND period = ? AND bucket >= ? AND bucket < ?{only} \
         GROUP BY bucket, metric, dimension",
        sum(dialect, "value")
    );
    let mut query = sqlx::query(&sql)
        .bind(project_id)
        .bind(period)
        .bind(from)
        .bind(to);
    for metric in metrics {
        query = query.bind(*metric);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            Ok(Read {
                bucket: row.try_get("bucket")?,
                metric: row.try_get("metric")?,
                dimension: row.try_get("dimension")?,
                value: row.try_get("value")?,
            })
        })
        .collect()
}

/// Deletes the buckets of `period` that start before `before`.
pub async fn prune(pool: &AnyPool, period: &str, before: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM usage_counters WHERE period = ? AND bucket < ?")
            .bind(period)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Deletes every bucket of a deleted project.
pub async fn delete_project<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM usage_counters WHERE project_id = ?")
        .bind(project_id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn project_exists(pool: &AnyPool, project_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM projects WHERE id = ?")
        .bind(project_id)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// `(project, count)` of a `GROUP BY project_id` count over `table`.
async fn counts_by_project(pool: &AnyPool, sql: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("project_id")?, row.try_get("n")?)))
        .collect()
}

/// What exists now, per project, as `(project, metric name, value)`.
pub async fn snapshot(
    pool: &AnyPool,
    dialect: Dialect,
) -> Result<Vec<(String, &'static str, i64)>, sqlx::Error> {
    use super::Metric;
    let mut out = Vec::new();
    for (metric, sql) in [
        (
            Metric::Users,
            "SELECT project_id, COUNT(*) AS n FROM users GROUP BY project_id".to_string(),
        ),
        (
            Metric::Sessions,
            "SELECT project_id, COUNT(*) AS n FROM sessions GROUP BY project_id".to_string(),
        ),
        (
            Metric::Files,
            "SELECT project_id, COUNT(*) AS n FROM storage_files WHERE status = 'ready' \
             GROUP BY project_id"
                .to_string(),
        ),
        (
            Metric::StorageBytes,
            format!(
                "SELECT project_id, {} AS n FROM storage_files WHERE status = 'ready' \
                 GROUP BY project_id",
                sum(dialect, "size")
            ),
        ),
    ] {
        for (project, n) in counts_by_project(pool, &sql).await? {
            out.push((project, metric.stored(), n));
        }
    }
    // Documents live in one table per collection.
    let collections: Vec<(String, String)> =
        sqlx::query("SELECT project_id, table_name FROM db_collections ORDER BY project_id")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("project_id")?, row.try_get("table_name")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let mut documents: std::collections::BTreeMap<String, i64> = Default::default();
    for (project, table) in collections {
        let quote = match dialect {
            Dialect::Sqlite => '"',
            Dialect::MySql => '`',
        };
        // Table names are made by Nimbus, never by clients; quotes are doubled anyway.
        let quoted = format!(
            "{quote}{}{quote}",
            table.replace(quote, &format!("{quote}{quote}"))
        );
        let count = sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {quoted}"))
            .fetch_one(pool)
            .await;
        match count {
            Ok(n) => *documents.entry(project).or_default() += n,
            // A collection dropped since it was listed: nothing to count.
            Err(err) => tracing::debug!(error = %err, "a collection vanished while counted"),
        }
    }
    for (project, n) in documents {
        out.push((project, Metric::Documents.stored(), n));
    }
    Ok(out)
}
