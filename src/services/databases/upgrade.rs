//! Conversions of the per-collection tables that SQL migrations cannot reach
//! (there is one table per collection), run at startup after the migrations:
//! permission side tables from one row per permission to one row per role
//! ([`ddl::upgrade_perms_sql`]), then their index on `(role, resource_id)` to one
//! that also covers `actions` ([`ddl::cover_perms_index_sql`]), then each
//! document's sole reader beside it and the side table's `sole` marks (ADR
//! 0022, [`ddl::add_readers_sql`], filled in by [`ddl::backfill_readers_sql`] in
//! bounded batches), then the twin indexes of collections read per document
//! ([`ddl::reader_twins`]). Each conversion is done once; a server stopped
//! half-way finishes it at its next start.

use std::collections::HashSet;

use anyhow::Context as _;

use sqlx::{AnyConnection, Connection as _, Executor as _};

use crate::db::Db;

use super::ddl::{self, UPGRADE_PERMS_NEW, UPGRADE_PERMS_OLD, perms_table};
use super::model::SqlDialect;
use super::{sql_dialect, store, structure};

/// Name of the MariaDB lock that keeps replicas starting together from
/// converting the same table at once.
const LOCK: &str = "nimbus_upgrade_perms";

/// Converts every permission side table still in the older layout.
pub async fn permission_tables(db: &Db) -> anyhow::Result<()> {
    let dialect = sql_dialect(db.dialect());
    let mut conn = db.pool().acquire().await?.detach();
    // Converting a large table may rightly run past the statement deadline.
    conn.execute(
        crate::db::deadline::limit_statement(db.dialect(), std::time::Duration::ZERO).as_str(),
    )
    .await?;
    let result = match convert_all(&mut conn, dialect).await {
        Ok(()) => match sole_readers(&mut conn, dialect).await {
            // The sequences first: one may give a twin's room to its key.
            Ok(()) => match sequences(&mut conn, dialect).await {
                Ok(()) => reader_twins(&mut conn, dialect).await,
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    if dialect == SqlDialect::MySql && result.is_ok() {
        sqlx::query("DO RELEASE_LOCK(?)")
            .bind(LOCK)
            .execute(&mut conn)
            .await?;
    }
    // A connection that held the lock or a transaction is not handed back.
    let _ = conn.close().await;
    result
}

async fn convert_all(conn: &mut AnyConnection, dialect: SqlDialect) -> anyhow::Result<()> {
    let pending = older_layout_tables(conn, dialect).await?;
    if dialect == SqlDialect::MySql {
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 600)")
            .bind(LOCK)
            .fetch_one(&mut *conn)
            .await?;
        anyhow::ensure!(
            locked == Some(1),
            "another server held the permission-table upgrade lock for 10 minutes"
        );
        drop_leftovers(conn).await?;
    }
    for table in pending {
        // Another replica may have converted it while this one waited for the lock.
        if !in_older_layout(conn, dialect, &perms_table(&table)).await? {
            continue;
        }
        tracing::info!(table, "converting the permission table to one row per role");
        let statements = ddl::upgrade_perms_sql(dialect, &table)?;
        match dialect {
            SqlDialect::Sqlite => {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                for statement in &statements {
                    tx.execute(statement.as_str()).await?;
                }
                tx.commit().await?;
            }
            SqlDialect::MySql => {
                for statement in &statements {
                    conn.execute(statement.as_str()).await?;
                }
                drop_leftovers(conn).await?;
            }
        }
    }
    for table in uncovered_tables(conn, dialect).await? {
        tracing::info!(
            table,
            "covering the actions in the permission table's index"
        );
        let statements = ddl::cover_perms_index_sql(dialect, &table)?;
        match dialect {
            SqlDialect::Sqlite => {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                for statement in &statements {
                    tx.execute(statement.as_str()).await?;
                }
                tx.commit().await?;
            }
            SqlDialect::MySql => {
                for statement in &statements {
                    conn.execute(statement.as_str()).await?;
                }
            }
        }
    }
    Ok(())
}

/// Documents one transaction of the sole readers' backfill reads.
const BACKFILL_BATCH: i64 = 10_000;

/// Gives every collection not yet marked `readers_ready` its sole-reader column
/// and `sole` marks, fills them in batches of [`BACKFILL_BATCH`] documents (each
/// its own transaction, so that a table of millions holds no lock for long),
/// and marks it. A server stopped half-way finds it unmarked and fills it again
/// from the start: the backfill derives every value afresh from the grants.
async fn sole_readers(conn: &mut AnyConnection, dialect: SqlDialect) -> anyhow::Result<()> {
    sole_readers_in_batches(conn, dialect, BACKFILL_BATCH).await
}

async fn sole_readers_in_batches(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
    batch: i64,
) -> anyhow::Result<()> {
    let pending: Vec<String> =
        sqlx::query_scalar("SELECT table_name FROM db_collections WHERE readers_ready = 0")
            .fetch_all(&mut *conn)
            .await?;
    for table in pending {
        let has_reader = has_column(conn, dialect, &table, ddl::READER_COLUMN).await?;
        let has_sole = has_column(conn, dialect, &perms_table(&table), "sole").await?;
        let (columns, side) = ddl::add_readers_sql(dialect, &table, has_reader, has_sole)?;
        if !columns.is_empty() || !side.is_empty() {
            tracing::info!(table, "adding the sole-reader columns");
        }
        for statement in &columns {
            // The one statement that can fail on a sound table: a MariaDB row
            // already within the column's 514 bytes of the row limit.
            conn.execute(statement.as_str()).await.with_context(|| {
                format!(
                    "adding the sole-reader column to the collection table {table} failed; \
                     on MariaDB a row at the width limit cannot take it: shorten a string \
                     attribute and start again"
                )
            })?;
        }
        match dialect {
            SqlDialect::Sqlite if !side.is_empty() => {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                for statement in &side {
                    tx.execute(statement.as_str()).await?;
                }
                tx.commit().await?;
            }
            _ => {
                for statement in &side {
                    conn.execute(statement.as_str()).await?;
                }
            }
        }
        let [readers, marks] = ddl::backfill_readers_sql(dialect, &table)?;
        let next = format!(
            "SELECT id FROM {} WHERE id > ? ORDER BY id LIMIT {batch}",
            dialect.quote(&table)
        );
        let mut after = String::new();
        let mut done = 0usize;
        loop {
            let mut tx = match dialect {
                SqlDialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
                SqlDialect::MySql => conn.begin().await?,
            };
            let ids: Vec<String> = sqlx::query_scalar(&next)
                .bind(&after)
                .fetch_all(&mut *tx)
                .await?;
            let Some(last) = ids.last().cloned() else {
                tx.commit().await?;
                break;
            };
            for statement in [&readers, &marks] {
                sqlx::query(statement)
                    .bind(&after)
                    .bind(&last)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            done += ids.len();
            after = last;
            if (ids.len() as i64) < batch {
                break;
            }
        }
        sqlx::query("UPDATE db_collections SET readers_ready = 1 WHERE table_name = ?")
            .bind(&table)
            .execute(&mut *conn)
            .await?;
        tracing::info!(table, documents = done, "sole readers filled in");
    }
    Ok(())
}

/// Brings the twin indexes of every collection not marked `reader_twins` to
/// what its metadata calls for (made before the twins, or marked again after a
/// change of rule): drops the twins it should not have, makes those it lacks,
/// and marks it. One collection at a time: on SQLite in one transaction with
/// its mark; on MariaDB, whose DDL commits by itself, each statement is
/// idempotent and the mark comes last, so a start cut short is completed by the
/// next. Runs after the sole readers are filled in, under the same lock.
async fn reader_twins(conn: &mut AnyConnection, dialect: SqlDialect) -> anyhow::Result<()> {
    for collection in store::collections_awaiting_twins(conn).await? {
        let table = collection.table.as_str();
        let wanted = structure::reader_twins(dialect, &collection)?;
        let present = index_names(conn, dialect, table).await?;
        let mut statements: Vec<String> = present
            .iter()
            .filter(|name| ddl::is_twin_name(dialect, table, name))
            .filter(|name| !wanted.iter().any(|twin| &twin.name == *name))
            .map(|name| ddl::drop_twin_sql(dialect, table, name))
            .collect();
        statements.extend(
            wanted
                .iter()
                .filter(|twin| !present.contains(&twin.name))
                .map(|twin| twin.create.clone()),
        );
        if !statements.is_empty() {
            tracing::info!(
                table,
                statements = statements.len(),
                "making the twin indexes of the sole reader"
            );
        }
        match dialect {
            SqlDialect::Sqlite => {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                for statement in &statements {
                    tx.execute(statement.as_str()).await?;
                }
                store::mark_twins_made(&mut *tx, table).await?;
                tx.commit().await?;
            }
            SqlDialect::MySql => {
                for statement in &statements {
                    conn.execute(statement.as_str()).await?;
                }
                store::mark_twins_made(&mut *conn, table).await?;
            }
        }
    }
    Ok(())
}

/// Gives every MariaDB collection table made before `$sequence` its
/// [`ddl::SEQUENCE_COLUMN`], numbering the documents it holds in the order they
/// were made (creation time, then id), in three steps that a server stopped
/// half-way takes up again at its next start: the column, without a value;
/// the numbers; then `AUTO_INCREMENT` and its key, which give a row that
/// another server inserted meanwhile a number of its own. A table with no room
/// left for the key gives it one of its twins' (they only make lists cheaper,
/// and are made again in the room left, [`reader_twins`]); one with no twin
/// either (as many indexes as MariaDB allowed before) keeps the numbers of the
/// documents it has, and those made later show 0 until the next start numbers
/// them after the others. A table the change fails on
/// (a row already at MariaDB's size limit) is logged and left, and the others
/// go on; every start tries again. SQLite's tables have theirs already: the
/// row id.
async fn sequences(conn: &mut AnyConnection, dialect: SqlDialect) -> anyhow::Result<()> {
    if dialect != SqlDialect::MySql {
        return Ok(());
    }
    // One question to `information_schema` for every table, as above.
    let numbered: HashSet<String> = sqlx::query_scalar(
        "SELECT TABLE_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND COLUMN_NAME = ? AND EXTRA LIKE '%auto_increment%'",
    )
    .bind(ddl::SEQUENCE_COLUMN)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name FROM db_collections")
        .fetch_all(&mut *conn)
        .await?;
    for table in tables.iter().filter(|table| !numbered.contains(*table)) {
        tracing::info!(table, "numbering the documents in the order they were made");
        if let Err(err) = number_documents(conn, table).await {
            tracing::error!(
                table,
                error = format!("{err:#}"),
                "the documents of a collection could not be numbered; its reads fail until they are"
            );
        }
    }
    Ok(())
}

/// [`sequences`] for one MariaDB table.
async fn number_documents(conn: &mut AnyConnection, table: &str) -> anyhow::Result<()> {
    let dialect = SqlDialect::MySql;
    let q = |name: &str| dialect.quote(name);
    let (t, column) = (q(table), q(ddl::SEQUENCE_COLUMN));
    let keys = index_names(conn, dialect, table).await?;
    let mut room = keys.len() < ddl::MAX_TABLE_KEYS;
    if !room
        && let Some(twin) = keys
            .iter()
            .filter(|name| ddl::is_twin_name(dialect, table, name))
            .max()
    {
        conn.execute(ddl::drop_twin_sql(dialect, table, twin).as_str())
            .await?;
        sqlx::query("UPDATE db_collections SET reader_twins = 0 WHERE table_name = ?")
            .bind(table)
            .execute(&mut *conn)
            .await?;
        room = true;
    }
    if !has_column(conn, dialect, table, ddl::SEQUENCE_COLUMN).await? {
        conn.execute(format!("ALTER TABLE {t} ADD COLUMN {column} BIGINT NULL").as_str())
            .await
            .context("adding the sequence column")?;
    }
    // Only the documents without a number, after the largest given: a table
    // with no room for the key is numbered again at each start, and a number
    // once given stays.
    conn.execute(
        format!(
            "UPDATE {t} d JOIN (SELECT s.id, b.base + ROW_NUMBER() OVER \
             (ORDER BY s.created_at, s.id) AS n FROM {t} s, \
             (SELECT COALESCE(MAX({column}), 0) AS base FROM {t}) b WHERE s.{column} IS NULL) o \
             ON o.id = d.id SET d.{column} = o.n"
        )
        .as_str(),
    )
    .await
    .context("numbering the documents")?;
    if !room {
        tracing::warn!(
            table,
            "the table has as many keys as MariaDB allows and none to spare: \
             documents made from now on show the sequence 0"
        );
        return Ok(());
    }
    conn.execute(
        format!(
            "ALTER TABLE {t} MODIFY {}, ADD {}",
            ddl::sequence_column_def(),
            ddl::sequence_key_def()
        )
        .as_str(),
    )
    .await
    .context("making the sequence count on")?;
    Ok(())
}

/// The names of the indexes of `table`.
async fn index_names(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
    table: &str,
) -> Result<HashSet<String>, sqlx::Error> {
    let sql = match dialect {
        SqlDialect::Sqlite => "SELECT name FROM pragma_index_list(?)",
        SqlDialect::MySql => {
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
        }
    };
    Ok(sqlx::query_scalar(sql)
        .bind(table)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect())
}

/// Whether `table` has a column named `column`.
async fn has_column(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
    table: &str,
    column: &str,
) -> Result<bool, sqlx::Error> {
    let sql = match dialect {
        SqlDialect::Sqlite => "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?",
        SqlDialect::MySql => {
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND COLUMN_NAME = ?"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .bind(column)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

/// The collection tables whose side table's role index does not cover
/// `actions` yet: on MariaDB one question to `information_schema`, on SQLite a
/// pragma per table.
async fn uncovered_tables(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
) -> Result<Vec<String>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name FROM db_collections")
        .fetch_all(&mut *conn)
        .await?;
    let mut pending = Vec::new();
    match dialect {
        SqlDialect::MySql => {
            let uncovered: HashSet<String> = sqlx::query_scalar(
                "SELECT TABLE_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME = 's_role' \
                 GROUP BY TABLE_NAME HAVING SUM(COLUMN_NAME = 'actions') = 0",
            )
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
            pending.extend(
                tables
                    .into_iter()
                    .filter(|table| uncovered.contains(&perms_table(table))),
            );
        }
        SqlDialect::Sqlite => {
            for table in tables {
                // The index's columns; none when the table or index is missing.
                let (columns, covered): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), COALESCE(SUM(name = 'actions'), 0) FROM pragma_index_info(?)",
                )
                .bind(format!("s_{table}__perms"))
                .fetch_one(&mut *conn)
                .await?;
                if columns > 0 && covered == 0 {
                    pending.push(table);
                }
            }
        }
    }
    Ok(pending)
}

/// The collection tables whose side table still has the older layout: on
/// MariaDB one question to `information_schema` for all of them (it is slow to
/// ask table by table), on SQLite a pragma per table.
async fn older_layout_tables(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
) -> Result<Vec<String>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name FROM db_collections")
        .fetch_all(&mut *conn)
        .await?;
    if dialect == SqlDialect::MySql {
        let older: HashSet<String> = sqlx::query_scalar(
            "SELECT TABLE_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'action'",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        return Ok(tables
            .into_iter()
            .filter(|table| older.contains(&perms_table(table)))
            .collect());
    }
    let mut pending = Vec::new();
    for table in tables {
        if in_older_layout(conn, dialect, &perms_table(&table)).await? {
            pending.push(table);
        }
    }
    Ok(pending)
}

/// Whether the side table `perms` exists and still has the `action` column.
async fn in_older_layout(
    conn: &mut AnyConnection,
    dialect: SqlDialect,
    perms: &str,
) -> Result<bool, sqlx::Error> {
    let sql = match dialect {
        SqlDialect::Sqlite => "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'action'",
        SqlDialect::MySql => {
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND COLUMN_NAME = 'action'"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(perms)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

/// Drops what a MariaDB conversion cut short left: a half-filled new table, or
/// an older one already swapped out.
async fn drop_leftovers(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(
        format!("DROP TABLE IF EXISTS `{UPGRADE_PERMS_NEW}`, `{UPGRADE_PERMS_OLD}`").as_str(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::super::model::test_support::{self, TestDb};
    use super::*;

    /// The collection table and side table as earlier versions created them.
    fn older_layout(dialect: SqlDialect) -> Vec<&'static str> {
        match dialect {
            SqlDialect::Sqlite => vec![
                "CREATE TABLE db_collections (table_name TEXT NOT NULL)",
                "CREATE TABLE c_1 (id TEXT NOT NULL PRIMARY KEY)",
                "CREATE TABLE c_1_perms (resource_id TEXT NOT NULL REFERENCES c_1 (id) \
                 ON DELETE CASCADE, action TEXT NOT NULL, role TEXT NOT NULL, \
                 PRIMARY KEY (resource_id, action, role))",
                "CREATE INDEX s_c_1__perms ON c_1_perms (action, role, resource_id)",
            ],
            SqlDialect::MySql => vec![
                "CREATE TABLE db_collections (table_name VARCHAR(64) NOT NULL)",
                "CREATE TABLE c_1 (id VARCHAR(36) NOT NULL, PRIMARY KEY (id)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                "CREATE TABLE c_1_perms (resource_id VARCHAR(36) NOT NULL, \
                 action VARCHAR(16) NOT NULL, role VARCHAR(128) NOT NULL, \
                 PRIMARY KEY (resource_id, action, role), KEY s_role (action, role, resource_id), \
                 FOREIGN KEY (resource_id) REFERENCES c_1 (id) ON DELETE CASCADE) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                // What a conversion stopped between its swap and its drop leaves.
                "CREATE TABLE nimbus__perms_old (x INT)",
            ],
        }
    }

    async fn grants(db: &TestDb) -> Vec<(String, String, i64)> {
        sqlx::query("SELECT resource_id, role, actions FROM c_1_perms ORDER BY resource_id, role")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    async fn converts_side_tables_to_one_row_per_role(db: TestDb) {
        for statement in older_layout(db.dialect) {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        for statement in [
            "INSERT INTO db_collections (table_name) VALUES ('c_1')",
            "INSERT INTO c_1 (id) VALUES ('d1'), ('d2'), ('d3')",
            "INSERT INTO c_1_perms (resource_id, action, role) VALUES \
             ('d1', 'read', 'any'), ('d1', 'read', 'user:u1'), ('d1', 'update', 'user:u1'), \
             ('d1', 'delete', 'user:u1'), ('d2', 'read', 'team:t1/owner'), ('d2', 'create', 'team:t1/owner')",
        ] {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        let mut conn = db.pool.acquire().await.unwrap();
        assert!(
            in_older_layout(&mut conn, db.dialect, "c_1_perms")
                .await
                .unwrap()
        );
        convert_all(&mut conn, db.dialect).await.unwrap();
        assert!(
            !in_older_layout(&mut conn, db.dialect, "c_1_perms")
                .await
                .unwrap()
        );
        // A second start finds nothing to do.
        convert_all(&mut conn, db.dialect).await.unwrap();
        drop(conn);
        let expected = |rows: &[(&str, &str, i64)]| -> Vec<(String, String, i64)> {
            rows.iter()
                .map(|(d, r, a)| (d.to_string(), r.to_string(), *a))
                .collect()
        };
        assert_eq!(
            grants(&db).await,
            expected(&[
                ("d1", "any", 1),
                ("d1", "user:u1", 1 | 4 | 8),
                ("d2", "team:t1/owner", 1 | 2)
            ])
        );
        // The converted table keeps its key, its index and its cascade.
        let duplicate =
            "INSERT INTO c_1_perms (resource_id, role, actions) VALUES ('d1', 'any', 4)";
        assert!(sqlx::query(duplicate).execute(&db.pool).await.is_err());
        let orphan = "INSERT INTO c_1_perms (resource_id, role, actions) VALUES ('nope', 'any', 1)";
        assert!(sqlx::query(orphan).execute(&db.pool).await.is_err());
        sqlx::query("DELETE FROM c_1 WHERE id = 'd1'")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            grants(&db).await,
            expected(&[("d2", "team:t1/owner", 1 | 2)])
        );
        let mut conn = db.pool.acquire().await.unwrap();
        // Made in today's layout: the role index leads by the role and its mark.
        assert_eq!(index_columns(&mut conn, db.dialect, "c_1").await, 4);
        drop(conn);
        if db.dialect == SqlDialect::MySql {
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME LIKE 'nimbus\\_\\_perms%'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(left, 0);
        }
        db.close().await;
    }

    /// How many columns the role index of the side table of `table` has.
    async fn index_columns(conn: &mut AnyConnection, dialect: SqlDialect, table: &str) -> i64 {
        let sql = match dialect {
            SqlDialect::Sqlite => {
                format!("SELECT COUNT(*) FROM pragma_index_info('s_{table}__perms')")
            }
            SqlDialect::MySql => format!(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = '{table}_perms' AND INDEX_NAME = 's_role'"
            ),
        };
        sqlx::query_scalar(&sql).fetch_one(conn).await.unwrap()
    }

    /// A side table of one row per role with the index of `(role, resource_id)`
    /// alone, as the versions before the covering index created it.
    fn uncovered_layout(dialect: SqlDialect) -> Vec<&'static str> {
        match dialect {
            SqlDialect::Sqlite => vec![
                "CREATE TABLE db_collections (table_name TEXT NOT NULL)",
                "CREATE TABLE c_2 (id TEXT NOT NULL PRIMARY KEY)",
                "CREATE TABLE c_2_perms (resource_id TEXT NOT NULL REFERENCES c_2 (id) \
                 ON DELETE CASCADE, role TEXT NOT NULL, actions INTEGER NOT NULL, \
                 PRIMARY KEY (resource_id, role)) WITHOUT ROWID",
                "CREATE INDEX s_c_2__perms ON c_2_perms (role, resource_id)",
            ],
            SqlDialect::MySql => vec![
                "CREATE TABLE db_collections (table_name VARCHAR(64) NOT NULL)",
                "CREATE TABLE c_2 (id VARCHAR(36) NOT NULL, PRIMARY KEY (id)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                "CREATE TABLE c_2_perms (resource_id VARCHAR(36) NOT NULL, \
                 role VARCHAR(128) NOT NULL, actions SMALLINT NOT NULL, \
                 PRIMARY KEY (resource_id, role), KEY s_role (role, resource_id), \
                 FOREIGN KEY (resource_id) REFERENCES c_2 (id) ON DELETE CASCADE) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            ],
        }
    }

    async fn covers_actions_in_the_role_index(db: TestDb) {
        for statement in uncovered_layout(db.dialect) {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        for statement in [
            "INSERT INTO db_collections (table_name) VALUES ('c_2')",
            "INSERT INTO c_2 (id) VALUES ('d1'), ('d2')",
            "INSERT INTO c_2_perms (resource_id, role, actions) VALUES \
             ('d1', 'user:u1', 5), ('d2', 'team:t1', 1)",
        ] {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        let mut conn = db.pool.acquire().await.unwrap();
        assert_eq!(index_columns(&mut conn, db.dialect, "c_2").await, 2);
        convert_all(&mut conn, db.dialect).await.unwrap();
        assert_eq!(index_columns(&mut conn, db.dialect, "c_2").await, 3);
        // A second start finds nothing to do; the grants are untouched.
        assert!(
            uncovered_tables(&mut conn, db.dialect)
                .await
                .unwrap()
                .is_empty()
        );
        convert_all(&mut conn, db.dialect).await.unwrap();
        drop(conn);
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT resource_id, role, actions FROM c_2_perms ORDER BY resource_id")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            rows,
            vec![
                ("d1".to_string(), "user:u1".to_string(), 5),
                ("d2".to_string(), "team:t1".to_string(), 1)
            ]
        );
        db.close().await;
    }

    /// A collection as the versions before ADR 0022 made it, with documents
    /// of every kind of reader.
    fn before_sole_readers(dialect: SqlDialect) -> Vec<&'static str> {
        let mut statements = match dialect {
            SqlDialect::Sqlite => vec![
                "CREATE TABLE db_collections (table_name TEXT NOT NULL, \
                 readers_ready INTEGER NOT NULL DEFAULT 1)",
                "CREATE TABLE c_3 (id TEXT NOT NULL PRIMARY KEY)",
                "CREATE TABLE c_3_perms (resource_id TEXT NOT NULL REFERENCES c_3 (id) \
                 ON DELETE CASCADE, role TEXT NOT NULL, actions INTEGER NOT NULL, \
                 PRIMARY KEY (resource_id, role)) WITHOUT ROWID",
                "CREATE INDEX s_c_3__perms ON c_3_perms (role, resource_id, actions)",
            ],
            SqlDialect::MySql => vec![
                "CREATE TABLE db_collections (table_name VARCHAR(64) NOT NULL, \
                 readers_ready SMALLINT NOT NULL DEFAULT 1)",
                "CREATE TABLE c_3 (id VARCHAR(36) NOT NULL, PRIMARY KEY (id)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                "CREATE TABLE c_3_perms (resource_id VARCHAR(36) NOT NULL, \
                 role VARCHAR(128) NOT NULL, actions SMALLINT NOT NULL, \
                 PRIMARY KEY (resource_id, role), KEY s_role (role, resource_id, actions), \
                 FOREIGN KEY (resource_id) REFERENCES c_3 (id) ON DELETE CASCADE) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            ],
        };
        statements.extend([
            "INSERT INTO db_collections (table_name, readers_ready) VALUES ('c_3', 0)",
            "INSERT INTO c_3 (id) VALUES ('d1'), ('d2'), ('d3'), ('d4'), ('d5'), ('d6'), ('d7')",
            // d1 its owner's; d2 two users'; d3 a team's, another team writing;
            // d4 nobody's; d5 everyone's with its owner writing; d6 a label's;
            // d7 written by one user, read by nobody.
            "INSERT INTO c_3_perms (resource_id, role, actions) VALUES \
             ('d1', 'user:u1', 13), ('d2', 'user:u1', 1), ('d2', 'user:u2', 13), \
             ('d3', 'team:t1', 1), ('d3', 'team:t2/owner', 12), ('d5', 'any', 1), \
             ('d5', 'user:u1', 12), ('d6', 'label:vip', 1), ('d7', 'user:u3', 14)",
        ]);
        statements
    }

    async fn readers(conn: &mut AnyConnection) -> Vec<(String, Option<String>)> {
        sqlx::query_as("SELECT id, nimbus_reader FROM c_3 ORDER BY id")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    async fn marks(conn: &mut AnyConnection) -> Vec<(String, String, i64)> {
        sqlx::query_as("SELECT resource_id, role, sole FROM c_3_perms ORDER BY resource_id, role")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    async fn ready(conn: &mut AnyConnection) -> i64 {
        sqlx::query_scalar("SELECT readers_ready FROM db_collections")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    async fn fills_in_sole_readers(db: TestDb) {
        for statement in before_sole_readers(db.dialect) {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
        let expected_readers: Vec<(String, Option<String>)> = [
            ("d1", Some("user:u1")),
            ("d2", None),
            ("d3", Some("team:t1")),
            ("d4", None),
            ("d5", Some("any")),
            ("d6", Some("label:vip")),
            ("d7", None),
        ]
        .into_iter()
        .map(|(id, reader)| (id.to_string(), reader.map(str::to_string)))
        .collect();
        let expected_marks: Vec<(String, String, i64)> = [
            ("d1", "user:u1", 1),
            ("d2", "user:u1", 0),
            ("d2", "user:u2", 0),
            ("d3", "team:t1", 1),
            ("d3", "team:t2/owner", 0),
            ("d5", "any", 1),
            ("d5", "user:u1", 0),
            ("d6", "label:vip", 1),
            ("d7", "user:u3", 0),
        ]
        .into_iter()
        .map(|(id, role, sole)| (id.to_string(), role.to_string(), sole))
        .collect();

        // A first start stopped in the middle: the columns are there, the
        // first batch was filled in (here with a wrong value), the table is
        // not marked.
        let mut conn = db.pool.acquire().await.unwrap();
        let (columns, side) = ddl::add_readers_sql(db.dialect, "c_3", false, false).unwrap();
        for statement in columns.iter().chain(&side) {
            conn.execute(statement.as_str()).await.unwrap();
        }
        conn.execute("UPDATE c_3 SET nimbus_reader = 'user:u9' WHERE id IN ('d1', 'd2')")
            .await
            .unwrap();
        conn.execute("UPDATE c_3_perms SET sole = 1 WHERE resource_id = 'd2'")
            .await
            .unwrap();
        assert_eq!(ready(&mut conn).await, 0);

        // The next start completes it, in batches smaller than the table.
        sole_readers_in_batches(&mut conn, db.dialect, 2)
            .await
            .unwrap();
        assert_eq!(readers(&mut conn).await, expected_readers);
        assert_eq!(marks(&mut conn).await, expected_marks);
        assert_eq!(ready(&mut conn).await, 1);
        assert!(
            has_column(&mut conn, db.dialect, "c_3_perms", "sole")
                .await
                .unwrap()
        );
        // The side table's index leads by the role and its mark.
        let columns: i64 = match db.dialect {
            SqlDialect::Sqlite => {
                sqlx::query_scalar("SELECT COUNT(*) FROM pragma_index_info('s_c_3__perms')")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap()
            }
            SqlDialect::MySql => sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE \
                 TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'c_3_perms' AND INDEX_NAME = 's_role'",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
        };
        assert_eq!(columns, 4);

        // Marked: a later start leaves the table alone.
        conn.execute("UPDATE c_3 SET nimbus_reader = 'user:u9' WHERE id = 'd4'")
            .await
            .unwrap();
        sole_readers(&mut conn, db.dialect).await.unwrap();
        assert_eq!(
            readers(&mut conn).await[3],
            ("d4".to_string(), Some("user:u9".to_string()))
        );
        // From scratch, in one batch larger than the table, the same values.
        conn.execute("UPDATE db_collections SET readers_ready = 0")
            .await
            .unwrap();
        sole_readers(&mut conn, db.dialect).await.unwrap();
        assert_eq!(readers(&mut conn).await, expected_readers);
        assert_eq!(marks(&mut conn).await, expected_marks);
        drop(conn);
        db.close().await;
    }

    /// `db_collections` with the columns the store reads and the marks.
    fn collections_table(dialect: SqlDialect) -> String {
        let (text, json, small, big) = match dialect {
            SqlDialect::Sqlite => ("TEXT", "TEXT", "INTEGER", "INTEGER"),
            SqlDialect::MySql => ("VARCHAR(128)", "MEDIUMTEXT", "SMALLINT", "BIGINT"),
        };
        format!(
            "CREATE TABLE db_collections (project_id {text} NOT NULL, database_id {text} NOT NULL, \
             id {text} NOT NULL, name {text} NOT NULL, type_name {text} NOT NULL, \
             table_name {text} NOT NULL, document_security {small} NOT NULL, \
             enabled {small} NOT NULL, permissions {json} NOT NULL, attributes {json} NOT NULL, \
             indexes {json} NOT NULL, relationships {json} NOT NULL, version {big} NOT NULL, \
             created_at {big} NOT NULL, updated_at {big} NOT NULL, \
             readers_ready {small} NOT NULL DEFAULT 1, reader_twins {small} NOT NULL DEFAULT 1)"
        )
    }

    fn collection_of(name: &str, table: &str, document_security: bool) -> super::super::Collection {
        use super::super::model::AttributeKind;
        use super::super::model::test_support::attribute;
        let indexes = vec![
            ddl::Index {
                key: "by_title".into(),
                kind: ddl::IndexKind::Key,
                attributes: vec!["title".into(), "$createdAt".into()],
                orders: vec![ddl::IndexOrder::Asc, ddl::IndexOrder::Desc],
                lengths: Vec::new(),
            },
            ddl::Index {
                key: "words".into(),
                kind: ddl::IndexKind::Fulltext,
                attributes: vec!["title".into()],
                orders: Vec::new(),
                lengths: Vec::new(),
            },
            ddl::Index {
                key: "by_views".into(),
                kind: ddl::IndexKind::Unique,
                attributes: vec!["views".into()],
                orders: Vec::new(),
                lengths: Vec::new(),
            },
        ];
        super::super::Collection {
            project_id: "p".into(),
            database_id: "d".into(),
            id: name.into(),
            name: name.into(),
            names: super::super::naming::GraphqlNames::derive(name, None).unwrap(),
            table: table.into(),
            document_security,
            enabled: true,
            readers_ready: true,
            permissions: Vec::new(),
            attributes: vec![
                attribute("title", AttributeKind::String { size: 300 }),
                attribute(
                    "views",
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                ),
            ],
            indexes,
            relationships: Vec::new(),
            version: 1,
            created_at: 1,
            updated_at: 1,
        }
    }

    /// The twins of `table`, by name.
    async fn twins(conn: &mut AnyConnection, dialect: SqlDialect, table: &str) -> Vec<String> {
        let mut names: Vec<String> = index_names(conn, dialect, table)
            .await
            .unwrap()
            .into_iter()
            .filter(|name| ddl::is_twin_name(dialect, table, name))
            .collect();
        names.sort();
        names
    }

    async fn twin_marks(conn: &mut AnyConnection) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT table_name, reader_twins FROM db_collections ORDER BY table_name")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    /// Collections made before the twins get theirs at the next start: those
    /// with `documentSecurity` only; a start cut short (one twin made, one of
    /// a former rule left) is completed; a marked collection is left alone
    /// until marked again.
    async fn makes_the_missing_twins(db: TestDb) {
        let dialect = db.dialect;
        let mut conn = db.pool.acquire().await.unwrap();
        conn.execute(collections_table(dialect).as_str())
            .await
            .unwrap();
        let (secured, plain) = (
            collection_of("notes", "c_4", true),
            collection_of("tags", "c_5", false),
        );
        for collection in [&secured, &plain] {
            store::insert_collection(&mut *conn, collection)
                .await
                .unwrap();
            // Made as the versions before the twins made it.
            let mut statements =
                ddl::create_table_sql(dialect, &collection.table, &collection.attributes).unwrap();
            for index in &collection.indexes {
                statements.extend(
                    ddl::create_index_sql(
                        dialect,
                        &collection.table,
                        &collection.attributes,
                        index,
                    )
                    .unwrap(),
                );
            }
            for statement in &statements {
                conn.execute(statement.as_str()).await.unwrap();
            }
        }
        conn.execute("UPDATE db_collections SET reader_twins = 0")
            .await
            .unwrap();
        conn.execute(
            "INSERT INTO c_4 (id, created_at, updated_at, a_title, a_views, nimbus_reader) \
                      VALUES ('d1', 1, 1, 't', 1, 'user:u1'), ('d2', 1, 1, 't', 2, NULL)",
        )
        .await
        .unwrap();
        let wanted = structure::reader_twins(dialect, &secured).unwrap();
        let mut names: Vec<String> = wanted.iter().map(|t| t.name.clone()).collect();
        names.sort();
        assert_eq!(names.len(), 3, "the collection's and two indexes'");
        // A start cut short: one twin made, and one of a former rule left.
        let stale = ddl::twin_name(dialect, "c_4", "gone");
        for statement in [
            wanted[1].create.clone(),
            format!(
                "CREATE INDEX {} ON {} (nimbus_reader)",
                dialect.quote(&stale),
                dialect.quote("c_4")
            ),
        ] {
            conn.execute(statement.as_str()).await.unwrap();
        }

        reader_twins(&mut conn, dialect).await.unwrap();
        assert_eq!(twins(&mut conn, dialect, "c_4").await, names);
        assert!(twins(&mut conn, dialect, "c_5").await.is_empty());
        assert_eq!(
            twin_marks(&mut conn).await,
            [("c_4".to_string(), 1), ("c_5".to_string(), 1)]
        );
        // The user's own indexes are untouched.
        let own = index_names(&mut conn, dialect, "c_4").await.unwrap();
        for index in &secured.indexes {
            if index.kind != ddl::IndexKind::Fulltext || dialect == SqlDialect::MySql {
                assert!(own.contains(&ddl::index_name(dialect, "c_4", &index.key)));
            }
        }

        // Marked: a later start leaves the table alone; marked again, it is
        // brought back to what its metadata calls for.
        conn.execute(wanted[0].drop.as_str()).await.unwrap();
        reader_twins(&mut conn, dialect).await.unwrap();
        assert_eq!(twins(&mut conn, dialect, "c_4").await.len(), 2);
        conn.execute("UPDATE db_collections SET reader_twins = 0")
            .await
            .unwrap();
        reader_twins(&mut conn, dialect).await.unwrap();
        assert_eq!(twins(&mut conn, dialect, "c_4").await, names);
        drop(conn);
        db.close().await;
    }

    /// A table made before `$sequence`, its documents made in another order
    /// than their ids', is numbered in the order they were made; a start cut
    /// short after the column came is taken up again; the next insert counts
    /// on from the last number.
    #[tokio::test]
    async fn mariadb_documents_made_before_sequences_are_numbered_at_start() {
        let Some(db) = test_support::mariadb().await else {
            return;
        };
        let mut conn = db.pool.acquire().await.unwrap();
        for statement in [
            "CREATE TABLE db_collections (table_name VARCHAR(64) NOT NULL)",
            "INSERT INTO db_collections (table_name) VALUES ('c_1'), ('c_2')",
            "CREATE TABLE c_1 (id VARCHAR(36) NOT NULL, created_at BIGINT NOT NULL, \
             PRIMARY KEY (id)) ENGINE=InnoDB",
            "INSERT INTO c_1 (id, created_at) VALUES ('a', 30), ('b', 10), ('c', 20), ('d', 10)",
            // Cut short: the column there, without its numbers.
            "CREATE TABLE c_2 (id VARCHAR(36) NOT NULL, created_at BIGINT NOT NULL, \
             `rowid` BIGINT NULL, PRIMARY KEY (id)) ENGINE=InnoDB",
            "INSERT INTO c_2 (id, created_at) VALUES ('x', 2), ('y', 1)",
        ] {
            conn.execute(statement).await.unwrap();
        }
        sequences(&mut conn, SqlDialect::MySql).await.unwrap();
        async fn numbered(conn: &mut AnyConnection, table: &str) -> Vec<(String, i64)> {
            sqlx::query_as::<_, (String, i64)>(&format!(
                "SELECT id, `rowid` FROM {table} ORDER BY `rowid`"
            ))
            .fetch_all(conn)
            .await
            .unwrap()
        }
        let pairs = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
            list.iter().map(|(id, n)| (id.to_string(), *n)).collect()
        };
        assert_eq!(
            numbered(&mut conn, "c_1").await,
            pairs(&[("b", 1), ("d", 2), ("c", 3), ("a", 4)])
        );
        assert_eq!(
            numbered(&mut conn, "c_2").await,
            pairs(&[("y", 1), ("x", 2)])
        );
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO c_1 (id, created_at) VALUES ('e', 40) RETURNING `rowid`",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(next, 5);
        // Done once: a later start changes nothing.
        sequences(&mut conn, SqlDialect::MySql).await.unwrap();
        assert_eq!(numbered(&mut conn, "c_1").await.len(), 5);

        // A table with as many keys as MariaDB allows and no twin to give up
        // keeps its documents' numbers; one made later reads none.
        let keys: Vec<String> = (0..63).map(|n| format!("KEY k{n} (n{})", n % 8)).collect();
        let columns: Vec<String> = (0..8).map(|n| format!("n{n} INT")).collect();
        for statement in [
            "INSERT INTO db_collections (table_name) VALUES ('c_3')".to_string(),
            format!(
                "CREATE TABLE c_3 (id VARCHAR(36) NOT NULL, created_at BIGINT NOT NULL, {}, \
                 PRIMARY KEY (id), {}) ENGINE=InnoDB",
                columns.join(", "),
                keys.join(", ")
            ),
            "INSERT INTO c_3 (id, created_at) VALUES ('q', 2), ('p', 1)".to_string(),
        ] {
            conn.execute(statement.as_str()).await.unwrap();
        }
        sequences(&mut conn, SqlDialect::MySql).await.unwrap();
        assert_eq!(
            numbered(&mut conn, "c_3").await,
            pairs(&[("p", 1), ("q", 2)])
        );
        let later: Option<i64> = sqlx::query_scalar(
            "INSERT INTO c_3 (id, created_at) VALUES ('r', 3) RETURNING `rowid`",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(later, None);
        // The next start numbers it after the others, and keeps theirs.
        sequences(&mut conn, SqlDialect::MySql).await.unwrap();
        assert_eq!(
            numbered(&mut conn, "c_3").await,
            pairs(&[("p", 1), ("q", 2), ("r", 3)])
        );
        drop(conn);
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_missing_twins_are_made_at_start() {
        makes_the_missing_twins(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_missing_twins_are_made_at_start() {
        if let Some(db) = test_support::mariadb().await {
            makes_the_missing_twins(db).await;
        }
    }

    #[tokio::test]
    async fn sqlite_sole_readers_are_filled_in() {
        fills_in_sole_readers(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_sole_readers_are_filled_in() {
        if let Some(db) = test_support::mariadb().await {
            fills_in_sole_readers(db).await;
        }
    }

    #[tokio::test]
    async fn sqlite_role_indexes_come_to_cover_actions() {
        covers_actions_in_the_role_index(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_role_indexes_come_to_cover_actions() {
        if let Some(db) = test_support::mariadb().await {
            covers_actions_in_the_role_index(db).await;
        }
    }

    #[tokio::test]
    async fn sqlite_side_tables_are_converted() {
        converts_side_tables_to_one_row_per_role(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_side_tables_are_converted() {
        if let Some(db) = test_support::mariadb().await {
            converts_side_tables_to_one_row_per_role(db).await;
        }
    }
}
