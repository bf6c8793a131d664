//! Resuming a subscription from a cursor: every delivered event carries its place in
//! the event log as an opaque cursor, and a subscription given `after:` first
//! replays from the log what its project logged since, then continues live,
//! skipping what it replayed (the live stream is joined before the log is read, so
//! nothing falls between the two). A cursor older than what the log keeps ends the
//! subscription with `RESYNC_REQUIRED`; one that is malformed, from another
//! project or not signed by this server (cursors are signed: a client resumes only
//! from where it was), with `INVALID_CURSOR`. Filters and permissions are the live ones: a
//! replayed event goes through the same watch and the same read check.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use async_graphql::Value;
use async_graphql::dynamic::{InputValue, ResolverContext, TypeRef};

use crate::AppState;
use crate::bus::{BusMessage, Event, Published, log};
use crate::db::event_log;
use crate::error::{AppError, AppResult, codes};

/// Most events one resumption replays; a client further behind re-queries.
pub const MAX_REPLAY: usize = 100_000;
/// Entries read from the log at a time.
const PAGE: i64 = 1000;

/// Makes and reads cursors. A cursor is signed with a key derived from the server
/// secret: a client resumes only from a place it was given, never from one it made
/// up (`after` the log's first position would replay a day of events).
pub struct Cursors {
    key: Hmac<Sha256>,
}

impl Cursors {
    pub fn new(server_secret: &str) -> Self {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(server_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        derive.update(b"nimbus realtime cursor\0");
        let key = derive.finalize().into_bytes();
        Cursors {
            key: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .expect("HMAC takes keys of any length"),
        }
    }

    fn tag(&self, project_id: &str, position: i64) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(project_id.as_bytes());
        mac.update(b"\0");
        mac.update(&position.to_be_bytes());
        mac
    }

    /// The cursor of the event at `position` in `project_id`.
    pub fn cursor(&self, project_id: &str, position: i64) -> String {
        let tag = self.tag(project_id, position).finalize().into_bytes();
        let tag = URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(format!("ev2:{project_id}:{position}:{tag}"))
    }

    /// The position a cursor of `project_id` names, if this server signed it.
    pub fn parse(&self, project_id: &str, cursor: &str) -> AppResult<i64> {
        let invalid = || AppError::Invalid {
            code: codes::INVALID_CURSOR,
            field: "after".into(),
            reason: "not a realtime cursor of this project".into(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let rest = text.strip_prefix("ev2:").ok_or_else(invalid)?;
        let (rest, tag) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let (project, position) = rest.rsplit_once(':').ok_or_else(invalid)?;
        if project != project_id {
            return Err(invalid());
        }
        let position = position
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if tag.len() != TAG_BYTES {
            return Err(invalid());
        }
        self.tag(project_id, position)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        Ok(position)
    }

    /// The value of an event's `cursor` field (none before it was logged).
    pub fn value(&self, event: &Event) -> Value {
        match event.position {
            0 => Value::Null,
            position => Value::from(self.cursor(&event.project_id, position)),
        }
    }
}

/// Bytes of the signature a cursor carries.
const TAG_BYTES: usize = 16;

/// What the `cursor` field of every event type says.
pub const CURSOR_DESCRIPTION: &str = "The event's place in the project's event log: subscribe again with `after:` set to the last one received to miss nothing in between.";

/// The `after:` argument, alike on every subscription that resumes.
pub fn after_input() -> InputValue {
    InputValue::new("after", TypeRef::named(TypeRef::STRING)).description(
        "The `cursor` of the last event received: first replays what happened since (ending with `RESYNC_REQUIRED` when that is no longer kept), then continues live.",
    )
}

/// The position of a subscription field's `after:` argument, if given.
pub fn after_argument(
    ctx: &ResolverContext<'_>,
    project_id: &str,
) -> async_graphql::Result<Option<i64>> {
    match ctx.args.get("after") {
        Some(after) if !after.is_null() => {
            let cursors = &crate::graphql::types::app(ctx)?.cursors;
            Ok(Some(cursors.parse(project_id, after.string()?)?))
        }
        _ => Ok(None),
    }
}

fn resync() -> AppError {
    AppError::Invalid {
        code: codes::RESYNC_REQUIRED,
        field: "after".into(),
        reason: "the event log no longer holds every event after this cursor; re-query, then subscribe without it".into(),
    }
}

/// What a resumption replays: the events it keeps, in position order, and the
/// position of every event it read (kept or not), for the live stream to skip.
pub struct Replayed {
    pub events: Vec<Arc<Published>>,
    pub positions: HashSet<i64>,
}

/// Resumptions reading the log at once on this replica; the others wait their turn.
/// Each reads up to [`MAX_REPLAY`] entries: however many subscribers resume at once
/// (a reconnecting crowd, or one client resubscribing in a loop), the log is read
/// and decoded for a few at a time.
static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
/// The longest a resumption waits for its turn to read the log.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The events `project_id` logged after `after` that `keep` wants (the
/// subscription's watch and read check), in position order; the rest are read and
/// let go page by page, so memory holds only what the subscriber will be sent.
pub async fn replay(
    state: &AppState,
    project_id: &str,
    after: i64,
    keep: impl Fn(&Event) -> bool,
) -> AppResult<Replayed> {
    // A bounded wait: past it the subscriber is told to come back (busy, with a
    // `retryAfter`) rather than held, its socket's other subscriptions with it.
    let _turn = match tokio::time::timeout(REPLAY_WAIT, REPLAYS.acquire()).await {
        Ok(Ok(turn)) => turn,
        Ok(Err(_)) | Err(_) => return Err(AppError::Busy { retry_after: 1 }),
    };
    let pool = state.db.pool();
    // Pruned past the cursor: what came between cannot be told.
    match event_log::oldest(pool).await? {
        Some(oldest) if oldest <= after + 1 => {}
        _ if after == 0 => {}
        _ => return Err(resync()),
    }
    let mut replayed = Replayed {
        events: Vec::new(),
        positions: HashSet::new(),
    };
    let mut from = after;
    loop {
        let page = event_log::project_after(pool, project_id, from, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for logged in page {
            from = logged.position;
            if let Some(message @ BusMessage::Event(_)) = log::decode_at(&logged) {
                replayed.positions.insert(logged.position);
                if matches!(&message, BusMessage::Event(event) if keep(event)) {
                    replayed.events.push(Published::new(message));
                }
            }
        }
        if replayed.positions.len() > MAX_REPLAY {
            return Err(resync());
        }
        if !full {
            return Ok(replayed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_its_project_and_position_and_only_its_signer_reads_it() {
        let cursors = Cursors::new("a server secret of thirty-two bytes");
        let c = cursors.cursor("default", 42);
        assert_eq!(cursors.parse("default", &c).unwrap(), 42);
        assert!(cursors.parse("other", &c).is_err());
        assert!(cursors.parse("default", "not a cursor").is_err());
        // Made up, or signed by another server: refused.
        let unsigned = URL_SAFE_NO_PAD.encode("ev1:default:0");
        assert!(cursors.parse("default", &unsigned).is_err());
        let elsewhere = Cursors::new("another server secret, also long enough");
        assert!(
            cursors
                .parse("default", &elsewhere.cursor("default", 42))
                .is_err()
        );
        // Another position under the same signature.
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(&c).unwrap()).unwrap();
        let moved = URL_SAFE_NO_PAD.encode(text.replace(":42:", ":0:"));
        assert!(cursors.parse("default", &moved).is_err());
        let negative = cursors.cursor("default", -3);
        assert!(cursors.parse("default", &negative).is_err());
    }
}
