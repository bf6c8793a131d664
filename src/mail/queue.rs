//! Email as durable jobs: a request queues its message and returns; a worker hands
//! it to the relay, retrying with backoff while the relay is down, so mail
//! survives an SMTP outage and a restart.
//!
//! Messages carry sign-in secrets (links, codes), so the queued payload is sealed
//! with the server secret: the jobs table, its backups and the admin job list
//! never show them. The message is checked (recipient, subject) before it is
//! queued, so a bad one fails the request rather than a job.

use crate::AppState;
use crate::auth::sealing::Sealer;
use crate::jobs::{Failure, Handler, Job, NewJob};

use super::{MailError, OutgoingMail};

/// The kind of mail jobs.
pub const KIND: &str = "mail";
/// Keeps sealed mail apart from other sealed values.
const SEALING_PURPOSE: &str = "queued mail";

/// Why an email was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message itself is wrong (recipient or subject).
    #[error(transparent)]
    Refused(MailError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct QueuedMail {
    to: String,
    subject: String,
    text: String,
    html: Option<String>,
}

/// Queues `mail` from `project_id` for delivery through `db`: the transaction that
/// writes what the mail carries (a sign-in token, an invitation's secret), so that
/// neither exists without the other. The job worker finds it once that commits
/// ([`crate::jobs::Jobs::wake`] it then).
pub async fn enqueue<'e>(
    state: &AppState,
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    mail: OutgoingMail,
) -> Result<(), QueueError> {
    state
        .mailer
        .check_message(&mail)
        .map_err(QueueError::Refused)?;
    let queued = QueuedMail {
        to: mail.to,
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
    };
    let plain = serde_json::to_string(&queued)
        .map_err(|err| QueueError::Refused(MailError::Transport(format!("cannot queue: {err}"))))?;
    let sealed = Sealer::new(&state.secret, SEALING_PURPOSE).seal(&plain);
    state
        .jobs
        .enqueue(
            db,
            state.db.dialect(),
            NewJob {
                project_id: project_id.to_string(),
                kind: KIND,
                payload: serde_json::json!({ "sealed": sealed }),
                run_at: None,
                dedupe_key: None,
            },
        )
        .await?;
    Ok(())
}

/// Sends queued mail.
pub struct MailJobs;

#[async_trait::async_trait]
impl Handler for MailJobs {
    async fn run(&self, state: &AppState, job: &Job) -> Result<(), Failure> {
        let sealed = job
            .payload
            .get("sealed")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Failure::Permanent("the queued mail has no message".into()))?;
        let plain = Sealer::new(&state.secret, SEALING_PURPOSE)
            .open(sealed)
            .map_err(|_| {
                Failure::Permanent("the queued mail does not open with this server secret".into())
            })?;
        let queued: QueuedMail = serde_json::from_str(&plain)
            .map_err(|_| Failure::Permanent("the queued mail does not parse".into()))?;
        let mail = OutgoingMail {
            to: queued.to,
            subject: queued.subject,
            text: queued.text,
            html: queued.html,
        };
        match state.mailer.send(mail).await {
            Ok(()) => Ok(()),
            Err(err @ (MailError::InvalidAddress { .. } | MailError::InvalidSubject)) => {
                Err(Failure::Permanent(err.to_string()))
            }
            Err(err) => Err(Failure::Retry(err.to_string())),
        }
    }
}
