//! The SQL of event log consumers: one row per consumer, holding the position up to
//! which it handled the log and the lease of the replica that works on it. Every
//! write after the lease is taken names the owner, so a replica whose lease lapsed
//! and was taken over cannot move the position of the new holder.

use sqlx::{Any, AnyPool, Executor, Row as _};

use super::Dialect;

/// Adds the consumer `name`, starting from the log's current head, unless it
/// exists. A consumer added later does not act on what was logged before it.
pub async fn ensure(
    pool: &AnyPool,
    dialect: Dialect,
    name: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "{} INTO log_consumers (name, position, lease_owner, lease_until, updated_at) \
         SELECT ?, COALESCE(MAX(position), 0), NULL, 0, ? FROM event_log",
        dialect.insert_ignore()
    );
    sqlx::query(&sql).bind(name).bind(now).execute(pool).await?;
    Ok(())
}

/// Takes or renews the lease of `name` for `owner` until `until`, unless another
/// owner holds one that has not lapsed at `now`. Answers the stored position when
/// `owner` holds it.
pub async fn take_lease(
    pool: &AnyPool,
    name: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE log_consumers SET lease_owner = ?, lease_until = ?, updated_at = ? \
         WHERE name = ? AND (lease_owner = ? OR lease_owner IS NULL OR lease_until <= ?)",
    )
    .bind(owner)
    .bind(until)
    .bind(now)
    .bind(name)
    .bind(owner)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    if taken == 0 {
        return Ok(None);
    }
    sqlx::query("SELECT position FROM log_consumers WHERE name = ? AND lease_owner = ?")
        .bind(name)
        .bind(owner)
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get::<i64, _>("position"))
        .transpose()
}

/// Moves the position of `name` and renews its lease, in the caller's transaction
/// (the one holding what the consumer did). False when `owner` no longer holds it:
/// the caller then rolls back.
pub async fn advance<'e>(
    db: impl Executor<'e, Database = Any>,
    name: &str,
    owner: &str,
    position: i64,
    now: i64,
    until: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE log_consumers SET position = ?, lease_until = ?, updated_at = ? \
         WHERE name = ? AND lease_owner = ?",
    )
    .bind(position)
    .bind(until)
    .bind(now)
    .bind(name)
    .bind(owner)
    .execute(db)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Gives up the lease of `name` if `owner` holds it, for another replica to take
/// at once (a clean shutdown).
pub async fn release(pool: &AnyPool, name: &str, owner: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE log_consumers SET lease_owner = NULL, lease_until = 0 \
         WHERE name = ? AND lease_owner = ?",
    )
    .bind(name)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// The lowest position of any consumer: the log after it is still to be handled.
pub async fn floor<'e>(db: impl Executor<'e, Database = Any>) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(position) FROM log_consumers")
        .fetch_one(db)
        .await
}
