//! Webhooks: per project, a URL that receives the project's events matching its
//! patterns (Appwrite's event names, `*` wildcards), signed with a secret the server
//! generates and shows once. Each delivery is a durable job ([`deliver`]):
//! Standard Webhooks headers plus Appwrite's `X-Appwrite-Webhook-*`, a timeout, a
//! capped response, retries with backoff, a delivery log, and the webhook disabled
//! after too many consecutive failures. Receivers on loopback, private or
//! link-local addresses are refused unless the operator allows them
//! (`NIMBUS_WEBHOOKS_ALLOW_PRIVATE`), with the checks of [`crate::outbound`].
//!
//! Events become deliveries in one place, [`service::queue_deliveries`], called by
//! the event log consumer [`Deliveries`] for every logged event, whichever replica
//! logged it, in the transaction that stores the consumer's position; a delivery
//! is keyed by webhook and event id, so handling an event twice (a new consumer
//! holder, a late position) cannot deliver it twice.

pub mod deliver;
pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// A webhook, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub url: String,
    /// Event patterns, checked.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Whether the receiver's TLS certificate is checked (Appwrite's `security`).
    pub tls_verify: bool,
    /// The user of the HTTP Basic credentials its deliveries carry (Appwrite's
    /// `httpUser`); its password is kept sealed and never shown.
    pub http_user: Option<String>,
    /// Consecutive failed deliveries.
    pub failures: i64,
    /// What the key that last configured it may read, and until when: the events
    /// it delivers.
    pub reach: crate::auth::Delegation,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One delivery attempt, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub job_id: String,
    pub attempt: i64,
    /// The receiver's HTTP status; none when it did not answer.
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub success: bool,
    pub error: Option<String>,
    /// The start of the receiver's answer.
    pub response_excerpt: Option<String>,
    pub created_at: i64,
}

/// The event log consumer that turns events into delivery jobs: on one replica at a
/// time, in the transaction that stores how far it got ([`crate::bus::consumer`]).
pub struct Deliveries;

#[async_trait::async_trait]
impl crate::bus::consumer::Consumer for Deliveries {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn wanted(
        &self,
        state: &crate::AppState,
        projects: &[&str],
    ) -> crate::error::AppResult<std::collections::HashSet<String>> {
        service::projects_to_deliver(state, projects).await
    }

    async fn handle(
        &self,
        state: &crate::AppState,
        conn: &mut sqlx::AnyConnection,
        batch: &[(i64, crate::bus::Event)],
    ) -> crate::error::AppResult<()> {
        let mut hooks = service::Hooks::default();
        for (_, event) in batch {
            service::queue_deliveries(state, &mut *conn, &mut hooks, event).await?;
        }
        Ok(())
    }

    fn committed(&self, state: &crate::AppState) {
        state.jobs.wake();
    }
}
