//! Conversions of the per-collection tables that SQL migrations cannot reach
//! (there is one table per collection), run at startup after the migrations:
//! permission side tables from one row per permission to one row per role
//! ([`ddl::upgrade_perms_sql`]), then their index on `(role, resource_id)` to one
//! that also covers `actions` ([`ddl::cover_perms_index_sql`]). Each conversion
//! is done once; a server stopped half-way finishes it at its next start.

use std::collections::HashSet;

use sqlx::{AnyConnection, Connection as _, Executor as _};

use crate::db::Db;

use super::ddl::{self, UPGRADE_PERMS_NEW, UPGRADE_PERMS_OLD, perms_table};
use super::model::SqlDialect;
use super::sql_dialect;

/// Name of the MariaDB lock that keeps replicas starting together from
/// converting the same table at once.
const LOCK: &str = "nimbus_upgrade_perms";

/// Converts every permission side table still in the older layout.
pub async fn permission_tables(db: &Db) -> anyhow::Result<()> {
    let dialect = sql_dialect(db.dialect());
    let mut conn = db.pool().acquire().await?.detach();
    let result = convert_all(&mut conn, dialect).await;
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
        assert_eq!(index_columns(&mut conn, db.dialect, "c_1").await, 3);
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
