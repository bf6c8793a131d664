//! Structure changes in flight on MariaDB, written down before their DDL. DDL
//! commits by itself there, so a replica killed (or a database restarted)
//! between a change's DDL and its metadata would leave a column, index or table
//! the metadata does not name, or the metadata naming one that is gone; the
//! next change of the same key would then fail for ever, and a required column
//! left behind would refuse every new document. Each change records its
//! [`Intent`] under the project's structure lock before its first statement
//! and clears it once done; whoever next holds that lock — the next change of
//! the project, or the sweep every replica runs at start and every half
//! minute — settles what is left: the undo when the metadata did not commit,
//! the drops (and what follows them) when it did.

use std::time::Duration;

use sqlx::Row as _;

use crate::AppState;
use crate::db::columns::text;
use crate::db::{Dialect, now_millis};
use crate::services::projects::service::forget;

use super::store;

/// A MariaDB structure change between its first statement and its end.
pub(super) struct Intent {
    pub project_id: String,
    pub database_id: String,
    pub collection_id: String,
    /// The collection's stored version once the change committed; `None` for
    /// a delete (no row).
    pub version: Option<i64>,
    /// What reverses the statements run before the metadata.
    pub undo: Vec<String>,
    /// What runs once the metadata committed: drops, which cannot be undone,
    /// and the twin indexes made in the room they free.
    pub finish: Vec<String>,
}

impl Intent {
    /// Writes the intent down, committed before any DDL runs.
    pub async fn record(&self, conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        let encode = |statements: &[String]| {
            serde_json::to_string(statements).unwrap_or_else(|_| "[]".into())
        };
        sqlx::query(
            "INSERT INTO structure_intents \
             (project_id, database_id, collection_id, version, undo_statements, finish_statements, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&self.project_id)
        .bind(&self.database_id)
        .bind(&self.collection_id)
        .bind(self.version)
        .bind(encode(&self.undo))
        .bind(encode(&self.finish))
        .bind(now_millis())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Whether the change's metadata committed.
    pub async fn landed(&self, conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
        let stored = store::collection_version(
            conn,
            &self.project_id,
            &self.database_id,
            &self.collection_id,
        )
        .await?;
        Ok(stored == self.version)
    }
}

/// Ends the project's intent: the change is settled.
pub(super) async fn clear(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM structure_intents WHERE project_id = ?")
        .bind(project_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Runs `statements` on `conn`, each past the statement deadline (an index
/// over a large collection may rightly take longer). A statement that finds
/// its work done or nothing to do (a drop of what a change never made, an
/// index made again) fails, which is fine. One that may pass when tried again
/// (a lock wait, a deadlock, a lost connection) stops them and is answered, so
/// that the intent stays for the next holder of the lock; any other failure
/// would fail every time, and is logged rather than left to refuse every
/// later change of the project.
pub(super) async fn run_tolerant(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    statements: &[String],
) -> Result<(), sqlx::Error> {
    let dialect = state.db.dialect();
    for statement in statements {
        match sqlx::query(&dialect.unbounded(statement))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {}
            Err(err) if already_settled(&err) => {
                tracing::debug!(error = %err, "a settling statement found nothing to do");
            }
            Err(err) if err.as_database_error().is_some() && !transient(&err) => {
                tracing::error!(error = %err, statement = %statement,
                    "a statement settling a structure change failed; the table may keep what it names");
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Whether a statement failed for a reason that may pass when it runs again:
/// MariaDB's lock wait timeout and deadlock.
fn transient(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|mariadb| matches!(mariadb.number(), 1205 | 1213))
}

/// Whether a DDL statement failed because what it does is done, or what it
/// undoes was never made: MariaDB's unknown column, key or table, and its
/// duplicate column, key or table.
fn already_settled(err: &sqlx::Error) -> bool {
    const SETTLED: [u16; 8] = [1050, 1051, 1054, 1060, 1061, 1091, 1146, 1176];
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|mariadb| SETTLED.contains(&mariadb.number()))
}

/// Settles the project's intent left by a change that did not end, if any; on
/// `conn`, which holds the project's structure lock. True when there was one.
pub(super) async fn settle(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT database_id, collection_id, version, undo_statements, finish_statements \
         FROM structure_intents WHERE project_id = ?",
    )
    .bind(project_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let decode = |column: &str| -> Result<Vec<String>, sqlx::Error> {
        let text = text(&row, column)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    let intent = Intent {
        project_id: project_id.to_string(),
        database_id: row.try_get("database_id")?,
        collection_id: row.try_get("collection_id")?,
        version: row.try_get("version")?,
        undo: decode("undo_statements")?,
        finish: decode("finish_statements")?,
    };
    let landed = intent.landed(conn).await?;
    tracing::warn!(
        project = %intent.project_id,
        collection = %intent.collection_id,
        landed,
        "settling a structure change that did not end"
    );
    let statements = if landed { &intent.finish } else { &intent.undo };
    run_tolerant(state, conn, statements).await?;
    clear(conn, project_id).await?;
    Ok(true)
}

/// Takes the project's structure lock on `conn` (a session of its own, closed
/// to release it), waiting at most `wait_secs`; false when another holds it
/// that long.
pub(super) async fn lock_structure(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    wait_secs: u32,
) -> Result<bool, sqlx::Error> {
    // Named by the database and the project: lock names are the server's,
    // shared by every database on it.
    let locked: Option<i64> =
        sqlx::query_scalar(&state.db.dialect().unbounded(
            "SELECT GET_LOCK(CONCAT('nimbus_ddl_', MD5(CONCAT(DATABASE(), ':', ?))), ?)",
        ))
        .bind(project_id)
        .bind(i64::from(wait_secs))
        .fetch_one(conn)
        .await?;
    Ok(locked == Some(1))
}

/// How often each replica looks for changes left unsettled.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Settles, from every replica, the intents of changes whose replica died: at
/// start, then every [`SWEEP_EVERY`]. A project whose lock is held is left to
/// the change holding it, which settles first. MariaDB only.
pub async fn settle_forever(state: AppState) {
    if state.db.dialect() != Dialect::MySql {
        return;
    }
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    loop {
        ticks.tick().await;
        if let Err(err) = sweep(&state).await {
            tracing::warn!(error = %err, "could not look for unsettled structure changes");
        }
    }
}

async fn sweep(state: &AppState) -> Result<(), sqlx::Error> {
    let projects: Vec<String> =
        sqlx::query_scalar("SELECT project_id FROM structure_intents LIMIT 100")
            .fetch_all(state.db.pool())
            .await?;
    for project_id in projects {
        let mut conn = state.db.pool().acquire().await?;
        // The lock goes with the session.
        conn.close_on_drop();
        if !lock_structure(state, &mut conn, &project_id, 0).await? {
            continue;
        }
        let settled = settle(state, &mut conn, &project_id).await;
        let _ = conn.close().await;
        if settled? {
            forget(state, &project_id).await;
        }
    }
    Ok(())
}
