//! Resuming a subscription from a cursor: every delivered event carries its place in
//! the event log as an opaque cursor, and a subscription given `after:` first
//! replays from the log what its project logged since, then continues live. The
//! live stream is joined before the log is read, and the relay's delivered mark at
//! that moment is the handover ([`Handover`]): the replay reads the log after the
//! cursor up to that mark, the live stream brings what the relay delivers after it
//! (in the relay's order, so a position that commits late on MariaDB arrives live,
//! in order, rather than in the replay), and nothing falls between or comes twice.
//!
//! A replay reads and decodes [`PAGE`] entries at a time, a few replays at once on a
//! replica, and sends a page's events before reading the next: memory holds a
//! page, and its connection attends to a changed credential, an expiry or the
//! client's messages between steps. One that takes longer than
//! [`REPLAY_DEADLINE`] (a client reading too slowly) ends with
//! `SUBSCRIBER_TOO_SLOW`.
//!
//! A cursor older than what the log keeps ends the subscription with
//! `RESYNC_REQUIRED`, and so does a replay past [`MAX_REPLAY`] entries; a cursor
//! that is malformed, from another project or not made by this server (cursors
//! are sealed: a client resumes only from where it was, and cannot read where that
//! is in the log every project shares), with `INVALID_CURSOR`.
//!
//! Filters and permissions are today's, not the log's: a replayed event goes
//! through the subscription's watch and the caller's current roles, and a
//! document's or file's event also through its collection or bucket as it is now
//! ([`super::ResourceAccess::still_readable`]): one disabled since, a grant removed,
//! document or file security turned off, and its events are no longer replayed to
//! those it no longer lets read.

use std::sync::Arc;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use async_graphql::Value;
use async_graphql::dynamic::{InputValue, ResolverContext, TypeRef};

use crate::AppState;
use crate::auth::Caller;
use crate::auth::permissions::RoleNames;
use crate::bus::{BusMessage, Event, Published, log};
use crate::db::event_log;
use crate::error::{AppError, AppResult, codes};

/// Most events one resumption replays; a client further behind re-queries.
pub const MAX_REPLAY: usize = 100_000;
/// Entries read from the log, and decoded, at a time.
const PAGE: i64 = 256;

/// Makes and reads cursors. A cursor is sealed with keys derived from the server
/// secret: a client resumes only from a place it was given, never from one it made
/// up (`after` the log's first position would replay a day of events), and it
/// cannot read the position either: the log is shared by every project, so
/// positions in the clear would tell a subscriber how much every other project
/// writes. The position is encrypted (AES-256-GCM, the project as associated
/// data) under a nonce derived from the project and the position (HMAC-SHA256):
/// one event has one cursor however often it is rendered, and no two places share
/// a nonce. Cursors of the earlier form (`ev2`, signed, the position readable)
/// are still read.
pub struct Cursors {
    /// Signs `ev2` cursors; derives the nonces of `ev3` ones.
    key: Hmac<Sha256>,
    cipher: Aes256Gcm,
}

impl Cursors {
    pub fn new(server_secret: &str) -> Self {
        let derive = |purpose: &[u8]| {
            let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(server_secret.as_bytes())
                .expect("HMAC takes keys of any length");
            derive.update(purpose);
            derive.finalize().into_bytes()
        };
        Cursors {
            key: <Hmac<Sha256> as Mac>::new_from_slice(&derive(b"nimbus realtime cursor\0"))
                .expect("HMAC takes keys of any length"),
            cipher: Aes256Gcm::new(&derive(b"nimbus realtime cursor sealing\0")),
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
        let derived = self.tag(project_id, position).finalize().into_bytes();
        let nonce = Nonce::from_slice(&derived[..NONCE_BYTES]);
        let sealed = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: &position.to_be_bytes(),
                    aad: project_id.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut bytes = Vec::with_capacity(SEALED_PREFIX.len() + NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(SEALED_PREFIX);
        bytes.extend_from_slice(nonce);
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a cursor of `project_id` names, if this server made it.
    pub fn parse(&self, project_id: &str, cursor: &str) -> AppResult<i64> {
        let invalid = || AppError::Invalid {
            code: codes::INVALID_CURSOR,
            field: "after".into(),
            reason: "not a realtime cursor of this project".into(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| invalid())?;
        let position = match bytes.strip_prefix(SEALED_PREFIX) {
            Some(sealed) => self.open(project_id, sealed),
            None => self.parse_signed(project_id, bytes),
        };
        position.filter(|p| *p >= 0).ok_or_else(invalid)
    }

    fn open(&self, project_id: &str, sealed: &[u8]) -> Option<i64> {
        if sealed.len() <= NONCE_BYTES {
            return None;
        }
        let (nonce, sealed) = sealed.split_at(NONCE_BYTES);
        let opened = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: project_id.as_bytes(),
                },
            )
            .ok()?;
        Some(i64::from_be_bytes(opened.try_into().ok()?))
    }

    /// An `ev2` cursor: `ev2:PROJECT:POSITION:TAG`, signed.
    fn parse_signed(&self, project_id: &str, bytes: Vec<u8>) -> Option<i64> {
        let text = String::from_utf8(bytes).ok()?;
        let rest = text.strip_prefix("ev2:")?;
        let (rest, tag) = rest.rsplit_once(':')?;
        let (project, position) = rest.rsplit_once(':')?;
        if project != project_id {
            return None;
        }
        let position = position.parse::<i64>().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.tag(project_id, position)
            .verify_truncated_left(&tag)
            .ok()?;
        Some(position)
    }

    /// The value of an event's `cursor` field (none before it was logged).
    pub fn value(&self, event: &Event) -> Value {
        match event.position {
            0 => Value::Null,
            position => Value::from(self.cursor(&event.project_id, position)),
        }
    }
}

/// Bytes of the signature an `ev2` cursor carries.
const TAG_BYTES: usize = 16;
/// What a sealed cursor's bytes start with, before its nonce.
const SEALED_PREFIX: &[u8] = b"ev3";
/// Bytes of a sealed cursor's nonce.
const NONCE_BYTES: usize = 12;

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

/// Where a resumed subscription's replay ends and its live stream takes over,
/// taken from this replica's relay once the subscription listens to the bus: the
/// replay reads the log after the cursor up to the relay's delivered mark, leaving
/// out the positions the relay passed and still watches; the live stream brings
/// everything else, in the relay's order. So neither sends a position the other
/// does, and a subscription keeps two numbers (and the rare watched positions)
/// rather than every position it replayed.
#[derive(Debug, Clone)]
pub struct Handover {
    after: i64,
    upto: i64,
    late: Arc<[i64]>,
}

impl Handover {
    /// The handover of a subscription resuming after `after` that already listens
    /// to the bus.
    pub fn join(state: &AppState, after: i64) -> Handover {
        let mark = state.bus.relay_mark();
        Handover {
            after,
            upto: mark.delivered.max(after),
            late: mark.late,
        }
    }

    /// Whether the live stream sends the event at `position` (none at or below the
    /// cursor, nor an event never logged, was the replay's to send).
    pub fn live(&self, position: i64) -> bool {
        position <= self.after || position > self.upto || self.late.binary_search(&position).is_ok()
    }

    /// Whether the live stream, now at `position`, is past every position the
    /// replay sent and can bring none of them again.
    pub fn settled_by(&self, position: i64) -> bool {
        position > self.upto && self.late.is_empty()
    }

    /// Whether the replay sends the event at `position`.
    fn replays(&self, position: i64) -> bool {
        !self.live(position)
    }
}

/// Resumptions reading a page of the log at once on this replica; the others wait
/// their turn. However many subscribers resume at once (a reconnecting crowd, or
/// one client resubscribing in a loop), the log is read and decoded a page at a
/// time for a few of them; a client address holds at most a few replays at once
/// (`http::ws`), so it cannot take every turn.
static REPLAYS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
/// The longest a resumption waits for its turn to read the log.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest one replay may take, read and sent: a subscriber that cannot take
/// its replay in that time (it reads too slowly) is ended with
/// `SUBSCRIBER_TOO_SLOW`, rather than holding its place for as long as it reads.
pub const REPLAY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a replay is in the log: what to read next and how much it read, apart
/// from the reading (so its paging is tested without a database).
#[derive(Debug)]
struct Paging {
    /// The last position read.
    from: i64,
    upto: i64,
    read: usize,
    done: bool,
}

impl Paging {
    /// After which position to read next, and up to which: none once done.
    fn next(&self) -> Option<(i64, i64)> {
        (!self.done && self.from < self.upto).then_some((self.from, self.upto))
    }

    /// Takes the positions of a page read (in order, at most [`PAGE`]).
    fn took(&mut self, positions: &[i64]) -> AppResult<()> {
        if let Some(&last) = positions.last() {
            self.from = last;
        }
        self.read += positions.len();
        if self.read > MAX_REPLAY {
            return Err(resync());
        }
        self.done = (positions.len() as i64) < PAGE;
        Ok(())
    }
}

/// A replay in progress: the events a resumed subscription missed, read from the
/// log a page at a time. Memory holds one page's events at most, and between
/// pages its connection attends to everything else (a changed credential, an
/// expiry, the client's messages).
pub struct Replay {
    project_id: String,
    handover: Handover,
    paging: Paging,
    /// Whether the log still held the cursor's successor when first read.
    checked: bool,
    deadline: tokio::time::Instant,
}

impl Replay {
    /// The replay of what `project_id` logged after the handover's cursor.
    pub fn new(project_id: &str, handover: Handover) -> Replay {
        Replay {
            project_id: project_id.to_string(),
            paging: Paging {
                from: handover.after,
                upto: handover.upto,
                read: 0,
                done: false,
            },
            handover,
            checked: false,
            deadline: tokio::time::Instant::now() + REPLAY_DEADLINE,
        }
    }

    /// Whether the replay has run out of time.
    pub fn overdue(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// The error that ends a replay out of time.
    pub fn overdue_error() -> async_graphql::ServerError {
        crate::graphql::limits::coded(
            format!(
                "the replay after the cursor was not taken within {}s; re-query, then subscribe without the cursor",
                REPLAY_DEADLINE.as_secs()
            ),
            codes::SUBSCRIBER_TOO_SLOW,
        )
    }

    /// The next page's events that `wanted` (the subscription's watch) selects and
    /// `reader` may still read (`access`: as their collection or bucket is now), in
    /// position order; possibly none. `None` once the replay is over.
    pub async fn next_page(
        &mut self,
        state: &AppState,
        reader: &Caller,
        roles: &RoleNames,
        access: &dyn super::ResourceAccess,
        wanted: impl Fn(&Event) -> bool,
    ) -> AppResult<Option<Vec<Arc<Published>>>> {
        let Some((from, upto)) = self.paging.next() else {
            return Ok(None);
        };
        let page = {
            // A bounded wait: past it the subscriber is told to come back (busy,
            // with a `retryAfter`) rather than held.
            let _turn = match tokio::time::timeout(REPLAY_WAIT, REPLAYS.acquire()).await {
                Ok(Ok(turn)) => turn,
                Ok(Err(_)) | Err(_) => return Err(AppError::Busy { retry_after: 1 }),
            };
            let pool = state.db.pool();
            if !self.checked {
                // Pruned past the cursor: what came between cannot be told.
                match event_log::oldest(pool).await? {
                    Some(oldest) if oldest <= from + 1 => {}
                    _ if from == 0 => {}
                    _ => return Err(resync()),
                }
                self.checked = true;
            }
            event_log::project_between(pool, &self.project_id, from, upto, PAGE).await?
        };
        let positions: Vec<i64> = page.iter().map(|logged| logged.position).collect();
        self.paging.took(&positions)?;
        let mut kept = Vec::new();
        for logged in page {
            if !self.handover.replays(logged.position) {
                continue;
            }
            if let Some(BusMessage::Event(event)) = log::decode_at(&logged)
                && event.project_id == reader.project.id
                && wanted(&event)
                && reader.may_receive(&event, roles)
            {
                kept.push(event);
            }
        }
        let kept = access.still_readable(state, reader, roles, kept).await?;
        Ok(Some(
            kept.into_iter()
                .map(|event| Published::new(BusMessage::Event(event)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(from: i64, upto: i64) -> Paging {
        Paging {
            from,
            upto,
            read: 0,
            done: false,
        }
    }

    /// Reads a log holding every position after 0 with `paging`, as the replay
    /// does; the pages read.
    fn read_all(paging: &mut Paging) -> AppResult<Vec<Vec<i64>>> {
        let mut pages = Vec::new();
        while let Some((from, upto)) = paging.next() {
            let page: Vec<i64> = ((from + 1)..=upto).take(PAGE as usize).collect();
            paging.took(&page)?;
            pages.push(page);
        }
        Ok(pages)
    }

    #[test]
    fn a_replay_reads_the_log_a_page_at_a_time_up_to_its_handover() {
        let upto = 10 + 2 * PAGE + 5;
        let mut replay = paging(10, upto);
        let pages = read_all(&mut replay).unwrap();
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [PAGE as usize, PAGE as usize, 5]);
        assert_eq!(pages.concat(), (11..=upto).collect::<Vec<_>>());
        // Nothing after the handover: that is the live stream's.
        assert_eq!(replay.next(), None);
        assert_eq!(read_all(&mut paging(7, 7)).unwrap(), Vec::<Vec<i64>>::new());
    }

    #[test]
    fn a_replay_longer_than_the_most_it_may_read_needs_a_resync() {
        let mut replay = paging(0, MAX_REPLAY as i64 + 1);
        let err = read_all(&mut replay).expect_err("too long");
        assert_eq!(err.code(), codes::RESYNC_REQUIRED);
        let mut replay = paging(0, MAX_REPLAY as i64);
        assert!(read_all(&mut replay).is_ok());
    }

    #[test]
    fn the_live_stream_sends_what_the_replay_does_not() {
        let handover = Handover {
            after: 10,
            upto: 20,
            late: Arc::from([15]),
        };
        let live: Vec<i64> = (0..=25).filter(|p| handover.live(*p)).collect();
        assert_eq!(
            live,
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 21, 22, 23, 24, 25]
        );
        assert!((11..=20).all(|p| handover.replays(p) != (p == 15)));
        // Past the handover, only a late position could still come twice.
        assert!(!handover.settled_by(21));
        let settled = Handover {
            late: Arc::from([]),
            ..handover
        };
        assert!(!settled.settled_by(20));
        assert!(settled.settled_by(21));
    }

    #[test]
    fn a_cursor_names_its_project_and_position_and_only_its_maker_reads_it() {
        let cursors = Cursors::new("a server secret of thirty-two bytes");
        let c = cursors.cursor("default", 42);
        assert_eq!(cursors.parse("default", &c).unwrap(), 42);
        // One event, one cursor.
        assert_eq!(cursors.cursor("default", 42), c);
        assert!(cursors.parse("other", &c).is_err());
        assert!(cursors.parse("default", "not a cursor").is_err());
        assert!(cursors.parse("default", "").is_err());
        // Made up, or made by another server: refused.
        let unsigned = URL_SAFE_NO_PAD.encode("ev1:default:0");
        assert!(cursors.parse("default", &unsigned).is_err());
        let elsewhere = Cursors::new("another server secret, also long enough");
        assert!(
            cursors
                .parse("default", &elsewhere.cursor("default", 42))
                .is_err()
        );
        // Any byte changed: refused.
        let bytes = URL_SAFE_NO_PAD.decode(&c).unwrap();
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(
                cursors
                    .parse("default", &URL_SAFE_NO_PAD.encode(changed))
                    .is_err()
            );
        }
        assert!(
            cursors
                .parse(
                    "default",
                    &URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
                )
                .is_err()
        );
        let negative = cursors.cursor("default", -3);
        assert!(cursors.parse("default", &negative).is_err());
    }

    #[test]
    fn a_cursor_does_not_tell_its_position() {
        let cursors = Cursors::new("a server secret of thirty-two bytes");
        for position in [1_i64, 42, 1 << 40] {
            let bytes = URL_SAFE_NO_PAD
                .decode(cursors.cursor("default", position))
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&position.to_string()), "{text}");
            assert!(
                !bytes.windows(8).any(|w| w == position.to_be_bytes()),
                "the position is in the clear"
            );
        }
        // Neighbouring positions share nothing but the prefix.
        let a = URL_SAFE_NO_PAD
            .decode(cursors.cursor("default", 1000))
            .unwrap();
        let b = URL_SAFE_NO_PAD
            .decode(cursors.cursor("default", 1001))
            .unwrap();
        let same = a
            .iter()
            .zip(&b)
            .skip(SEALED_PREFIX.len())
            .filter(|(x, y)| x == y)
            .count();
        assert!(same < 8, "{same} bytes alike");
    }

    #[test]
    fn a_signed_cursor_of_the_earlier_form_is_still_read() {
        let cursors = Cursors::new("a server secret of thirty-two bytes");
        let tag = cursors.tag("default", 42).finalize().into_bytes();
        let tag = URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]);
        let earlier = URL_SAFE_NO_PAD.encode(format!("ev2:default:42:{tag}"));
        assert_eq!(cursors.parse("default", &earlier).unwrap(), 42);
        assert!(cursors.parse("other", &earlier).is_err());
        // Another position under the same signature.
        let moved = URL_SAFE_NO_PAD.encode(format!("ev2:default:0:{tag}"));
        assert!(cursors.parse("default", &moved).is_err());
    }
}
