//! SQL of webhooks and their delivery log.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Executor, FromRow, Row as _};

use crate::db::Page;
use crate::db::columns::{optional_text, text};

use super::{Delivery, Webhook};

const COLUMNS: &str = "project_id, id, name, url, events, enabled, tls_verify, secret, failures, reach, created_at, updated_at, http_user, http_pass";

/// A webhook as stored; `secret` is sealed.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub url: String,
    /// JSON array of patterns.
    pub events: String,
    pub enabled: i16,
    pub tls_verify: i16,
    pub secret: String,
    pub failures: i64,
    /// A [`crate::auth::Delegation`] as JSON; none for an operator's.
    pub reach: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub http_user: Option<String>,
    /// Sealed, as `secret` is.
    pub http_pass: Option<String>,
}

impl FromRow<'_, AnyRow> for WebhookRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(WebhookRow {
            project_id: row.try_get("project_id")?,
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            events: text(row, "events")?,
            enabled: row.try_get("enabled")?,
            tls_verify: row.try_get("tls_verify")?,
            secret: row.try_get("secret")?,
            failures: row.try_get("failures")?,
            reach: optional_text(row, "reach")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            http_user: optional_text(row, "http_user")?,
            http_pass: optional_text(row, "http_pass")?,
        })
    }
}

impl WebhookRow {
    pub fn to_webhook(&self) -> Webhook {
        Webhook {
            id: self.id.clone(),
            project_id: self.project_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            // Written by this module only, from checked patterns.
            events: serde_json::from_str(&self.events).unwrap_or_default(),
            enabled: self.enabled != 0,
            tls_verify: self.tls_verify != 0,
            http_user: self.http_user.clone(),
            failures: self.failures,
            reach: crate::auth::Delegation::from_column(self.reach.as_deref()),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn events_json(events: &[String]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    webhook: &Webhook,
    sealed_secret: &str,
    sealed_http_pass: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO webhooks ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&webhook.project_id)
    .bind(&webhook.id)
    .bind(&webhook.name)
    .bind(&webhook.url)
    .bind(events_json(&webhook.events))
    .bind(i16::from(webhook.enabled))
    .bind(i16::from(webhook.tls_verify))
    .bind(sealed_secret)
    .bind(webhook.failures)
    .bind(webhook.reach.to_column())
    .bind(webhook.created_at)
    .bind(webhook.updated_at)
    .bind(webhook.http_user.as_deref())
    .bind(sealed_http_pass)
    .execute(db)
    .await
    .map(|_| ())
}

/// Writes the fields `change` names, and who configured it, to the stored webhook,
/// leaving the rest as they are now (a delivery may be counting a failure): enabling
/// it starts its count of failures afresh. False when it is gone.
pub async fn update<'e>(
    db: impl Executor<'e, Database = Any>,
    webhook: &Webhook,
    change: &super::service::WebhookChange,
    sealed_http_pass: Option<Option<&str>>,
) -> Result<bool, sqlx::Error> {
    let mut query = sqlx::QueryBuilder::<Any>::new("UPDATE webhooks SET reach = ");
    query.push_bind(webhook.reach.to_column());
    query.push(", updated_at = ").push_bind(webhook.updated_at);
    if change.name.is_some() {
        query.push(", name = ").push_bind(&webhook.name);
    }
    if change.url.is_some() {
        query.push(", url = ").push_bind(&webhook.url);
    }
    if change.events.is_some() {
        query
            .push(", events = ")
            .push_bind(events_json(&webhook.events));
    }
    if change.tls_verify.is_some() {
        query
            .push(", tls_verify = ")
            .push_bind(i16::from(webhook.tls_verify));
    }
    if change.http_user.is_some() {
        query
            .push(", http_user = ")
            .push_bind(webhook.http_user.as_deref());
    }
    if let Some(sealed) = sealed_http_pass {
        query.push(", http_pass = ").push_bind(sealed);
    }
    if let Some(enabled) = change.enabled {
        query.push(", enabled = ").push_bind(i16::from(enabled));
        if enabled {
            query.push(", failures = 0");
        }
    }
    query
        .push(" WHERE project_id = ")
        .push_bind(&webhook.project_id);
    query.push(" AND id = ").push_bind(&webhook.id);
    query
        .build()
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

pub async fn set_secret(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    sealed_secret: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE webhooks SET secret = ?, updated_at = ? WHERE project_id = ? AND id = ?")
        .bind(sealed_secret)
        .bind(now)
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

pub async fn find(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list(
    pool: &AnyPool,
    project_id: &str,
    page: &Page,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE project_id = ?{keyset}");
    binds
        .iter()
        .fold(sqlx::query_as(&sql).bind(project_id), |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

pub async fn count(pool: &AnyPool, project_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE project_id = ?")
        .bind(project_id)
        .fetch_one(pool)
        .await
}

/// The project's enabled webhooks: id, patterns (JSON) and reach (JSON).
pub async fn enabled<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
) -> Result<Vec<(String, String, Option<String>)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, events, reach FROM webhooks WHERE project_id = ? AND enabled = 1")
            .bind(project_id)
            .fetch_all(db)
            .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                text(row, "events")?,
                optional_text(row, "reach")?,
            ))
        })
        .collect()
}

/// Those of `projects` that have an enabled webhook.
pub async fn with_enabled<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    projects: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if projects.is_empty() {
        return Ok(Default::default());
    }
    let mut query = sqlx::QueryBuilder::<Any>::new(
        "SELECT DISTINCT project_id FROM webhooks WHERE enabled = 1 AND project_id IN (",
    );
    let mut list = query.separated(", ");
    for project in projects {
        list.push_bind(*project);
    }
    query.push(")");
    query
        .build_query_scalar::<String>()
        .fetch_all(db)
        .await
        .map(|found| found.into_iter().collect())
}

pub async fn delete<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM webhooks WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// A delivery succeeded: the count of consecutive failures starts again.
pub async fn reset_failures(pool: &AnyPool, project_id: &str, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET failures = 0 WHERE project_id = ? AND id = ? AND failures <> 0",
    )
    .bind(project_id)
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// A delivery failed: counts it, and disables the webhook when the count reaches
/// `threshold`. Answers whether the webhook is now disabled.
pub async fn count_failure(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    threshold: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        // MariaDB assigns left to right, each expression seeing the columns set
        // before it (SQLite: the old row): so the columns read come last.
        "UPDATE webhooks SET \
         updated_at = CASE WHEN failures + 1 >= ? AND enabled = 1 THEN ? ELSE updated_at END, \
         enabled = CASE WHEN failures + 1 >= ? THEN 0 ELSE enabled END, \
         failures = failures + 1 \
         WHERE project_id = ? AND id = ?",
    )
    .bind(threshold)
    .bind(now)
    .bind(threshold)
    .bind(project_id)
    .bind(id)
    .execute(pool)
    .await?;
    let enabled: Option<i16> =
        sqlx::query_scalar("SELECT enabled FROM webhooks WHERE project_id = ? AND id = ?")
            .bind(project_id)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(enabled != Some(1))
}

const DELIVERY_COLUMNS: &str = "id, project_id, webhook_id, event_id, job_id, attempt, status_code, \
     duration_ms, success, error, response_excerpt, created_at";

#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub project_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub job_id: String,
    pub attempt: i64,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub success: i16,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub created_at: i64,
}

impl DeliveryRow {
    pub fn to_delivery(&self) -> Delivery {
        Delivery {
            id: self.id.clone(),
            webhook_id: self.webhook_id.clone(),
            event_id: self.event_id.clone(),
            job_id: self.job_id.clone(),
            attempt: self.attempt,
            status_code: self.status_code,
            duration_ms: self.duration_ms,
            success: self.success != 0,
            error: self.error.clone(),
            response_excerpt: self.response_excerpt.clone(),
            created_at: self.created_at,
        }
    }
}

pub async fn insert_delivery<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    delivery: &Delivery,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&delivery.id)
    .bind(project_id)
    .bind(&delivery.webhook_id)
    .bind(&delivery.event_id)
    .bind(&delivery.job_id)
    .bind(delivery.attempt)
    .bind(delivery.status_code)
    .bind(delivery.duration_ms)
    .bind(i16::from(delivery.success))
    .bind(&delivery.error)
    .bind(&delivery.response_excerpt)
    .bind(delivery.created_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn list_deliveries(
    pool: &AnyPool,
    project_id: &str,
    webhook_id: &str,
    page: &Page,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE project_id = ? AND webhook_id = ?{keyset}"
    );
    binds
        .iter()
        .fold(
            sqlx::query_as(&sql).bind(project_id).bind(webhook_id),
            |q, b| q.bind(b),
        )
        .fetch_all(pool)
        .await
}

pub async fn count_deliveries(
    pool: &AnyPool,
    project_id: &str,
    webhook_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE project_id = ? AND webhook_id = ?",
    )
    .bind(project_id)
    .bind(webhook_id)
    .fetch_one(pool)
    .await
}

pub async fn delete_deliveries_of<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    webhook_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhook_deliveries WHERE project_id = ? AND webhook_id = ?")
        .bind(project_id)
        .bind(webhook_id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Deletes the delivery log of a deleted project (its webhooks cascade).
pub async fn delete_project_deliveries<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhook_deliveries WHERE project_id = ?")
        .bind(project_id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn prune_deliveries(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM webhook_deliveries WHERE created_at < ?")
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}
