//! Responses to bus events for the watches of WebSocket connections, rendered once
//! per event, operation and outcome and shared by every subscriber that asked
//! alike. A render runs the subscriber's operation through async-graphql with the
//! watch's value prepared, so each response is exactly what executing the
//! subscription would give. When a resolver of the selection looks at the caller
//! (a relationship read with their permissions), that render is the caller's own
//! and each subscriber renders for itself.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use async_graphql::dynamic::Schema;
use async_graphql::{Request, Response, Variables};
use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::AppState;
use crate::auth::Caller;
use crate::auth::access::may_see_previous;
use crate::bus::{Event, Published};
use crate::graphql::types::RenderTaint;
use crate::services::LoadedProject;
use crate::services::databases::tx::{Mode, RequestTx};
use crate::services::realtime::watch::{Outcome, Prepared, Watch};
use crate::services::users::service::ClientInfo;

/// A subscription operation as asked for: subscribers with equal shapes get
/// equal responses to an event (the caller aside, see [`RenderTaint`]).
pub struct Shape {
    /// The loaded project (its schema) the subscription runs on, by address.
    project: usize,
    query: String,
    operation_name: Option<String>,
    variables: Variables,
    variables_json: String,
    hash: u64,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Shape) -> bool {
        self.hash == other.hash
            && self.project == other.project
            && self.query == other.query
            && self.operation_name == other.operation_name
            && self.variables_json == other.variables_json
    }
}

impl Shape {
    pub fn new(
        loaded: &Arc<LoadedProject>,
        query: String,
        operation_name: Option<String>,
        variables: Variables,
    ) -> Shape {
        let project = Arc::as_ptr(loaded) as usize;
        let variables_json = serde_json::to_string(&variables).unwrap_or_default();
        let mut hasher = std::hash::DefaultHasher::new();
        (project, &query, &operation_name, &variables_json).hash(&mut hasher);
        Shape {
            project,
            query,
            operation_name,
            variables,
            variables_json,
            hash: hasher.finish(),
        }
    }

    /// The key of this shape's render of an event seen as `outcome`, with or
    /// without the version before the change. Worked out for every delivery, so
    /// a cheap mix of the shape's hash rather than a second SipHash: a render
    /// found under it is used only when its shape, outcome and visibility are
    /// the subscriber's (see [`Rendered::Shared`]), so a collision costs a render,
    /// never a wrong response.
    fn key(&self, outcome: Outcome, previous_shown: bool) -> u64 {
        // FNV-1a over the outcome's few bytes.
        let mut mixed: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in outcome.bytes() {
            mixed = (mixed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.hash ^ mixed.rotate_left(1) ^ u64::from(previous_shown)
    }
}

/// The shapes subscribers hold, one `Arc` for each distinct shape, so that telling
/// whether a shared render fits a subscriber is a pointer comparison. A live shape
/// keeps its connection's project loaded, so its project address cannot be reused
/// while it is here.
#[derive(Default)]
pub struct Shapes(Mutex<Interned>);

#[derive(Default)]
struct Interned {
    by_hash: HashMap<u64, Vec<Weak<Shape>>>,
    /// Entries at which the next sweep of shapes no longer held runs.
    sweep_at: usize,
}

impl Shapes {
    /// The held shape equal to `shape`, or `shape` itself, now held.
    pub fn intern(&self, shape: Shape) -> Arc<Shape> {
        let mut interned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Interned { by_hash, sweep_at } = &mut *interned;
        if by_hash.len() >= *sweep_at {
            by_hash.retain(|_, held| {
                held.retain(|weak| weak.strong_count() > 0);
                !held.is_empty()
            });
            *sweep_at = (by_hash.len() * 2).max(1024);
        }
        let held = by_hash.entry(shape.hash).or_default();
        if let Some(same) = held.iter().filter_map(Weak::upgrade).find(|s| **s == shape) {
            return same;
        }
        held.retain(|weak| weak.strong_count() > 0);
        let shape = Arc::new(shape);
        held.push(Arc::downgrade(&shape));
        shape
    }
}

/// The render of one event for one shape and outcome, kept with the event.
#[derive(Default)]
struct SharedRender(tokio::sync::OnceCell<Rendered>);

enum Rendered {
    Shared {
        shape: Arc<Shape>,
        outcome: Outcome,
        previous_shown: bool,
        payload: Arc<str>,
        /// The whole message for the first subscriber's frame prefix, which
        /// subscribers with the same operation id share without a copy.
        frame: OnceLock<(Box<str>, Utf8Bytes)>,
    },
    /// The selection depends on the caller: each subscriber renders its own.
    CallersOwn,
}

/// Deliveries that reused a shared render. A handle taken once: looking the
/// counter up in the registry would cost every delivery of a fan-out. The server
/// installs the recorder before it serves any connection.
static SHARED_RENDERS: LazyLock<metrics::Counter> =
    LazyLock::new(|| metrics::counter!("nimbus_realtime_shared_renders_total"));

/// `prefix`, `payload` and the closing brace: a whole `next` message.
fn framed(prefix: &str, payload: &str) -> Utf8Bytes {
    let mut frame = String::with_capacity(prefix.len() + payload.len() + 1);
    frame.push_str(prefix);
    frame.push_str(payload);
    frame.push('}');
    frame.into()
}

/// The largest answer a subscription gets for one event: one selecting the
/// payload under a hundred aliases would otherwise be a hundred times the
/// document, for every subscriber of that shape.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The answer sent instead of one over [`MAX_ANSWER_BYTES`].
fn too_large_answer() -> Arc<str> {
    serde_json::json!({"errors": [{
        "message": format!(
            "the answer to this event is over {MAX_ANSWER_BYTES} bytes; select less"
        ),
        "extensions": {"code": crate::error::codes::RESPONSE_TOO_LARGE},
    }]})
    .to_string()
    .into()
}

/// What a connection renders with.
pub struct Renderer<'a> {
    pub state: &'a AppState,
    pub schema: &'a Schema,
    /// The connection's caller and client, put in the request data of a render.
    pub caller: &'a Caller,
    pub client: &'a ClientInfo,
}

impl Renderer<'_> {
    /// The message with the response for `event` seen as `outcome` by a
    /// subscriber of `shape` whose messages start with `prefix` (see
    /// `frame_prefix`). The version before the change goes only to a subscriber
    /// who could read it: others get the event without it.
    pub async fn frame(
        &self,
        published: &Published,
        event: &Event,
        watch: &dyn Watch,
        shape: &Arc<Shape>,
        outcome: Outcome,
        prefix: &str,
    ) -> Utf8Bytes {
        let previous_shown = may_see_previous(self.caller, event);
        let cell = published.shared::<SharedRender>(shape.key(outcome, previous_shown));
        let mut own = None;
        let rendered = cell
            .0
            .get_or_init(|| async {
                let (payload, callers_own) = self
                    .render(event, watch, shape, outcome, previous_shown)
                    .await;
                // Kept twice (the answer and its first frame) while the message
                // is among the newest: within the message's budget, else the
                // subscribers of this shape render for themselves.
                if callers_own || !published.keep_bytes(payload.len() * 2) {
                    own = Some(payload);
                    Rendered::CallersOwn
                } else {
                    Rendered::Shared {
                        shape: shape.clone(),
                        outcome,
                        previous_shown,
                        payload,
                        frame: OnceLock::new(),
                    }
                }
            })
            .await;
        if let Some(payload) = own {
            return framed(prefix, &payload);
        }
        match rendered {
            Rendered::Shared {
                shape: rendered_for,
                outcome: rendered_outcome,
                previous_shown: rendered_previous,
                payload,
                frame,
            } if Arc::ptr_eq(rendered_for, shape)
                && *rendered_outcome == outcome
                && *rendered_previous == previous_shown =>
            {
                SHARED_RENDERS.increment(1);
                let (first_prefix, shared) =
                    frame.get_or_init(|| (prefix.into(), framed(prefix, payload)));
                if **first_prefix == *prefix {
                    shared.clone()
                } else {
                    framed(prefix, payload)
                }
            }
            _ => {
                let (payload, _) = self
                    .render(event, watch, shape, outcome, previous_shown)
                    .await;
                framed(prefix, &payload)
            }
        }
    }

    /// Runs the operation with the watch's value prepared (from `event` without
    /// its previous version unless `previous_shown`): the payload, and whether it
    /// is the caller's own.
    async fn render(
        &self,
        event: &Event,
        watch: &dyn Watch,
        shape: &Shape,
        outcome: Outcome,
        previous_shown: bool,
    ) -> (Arc<str>, bool) {
        metrics::counter!("nimbus_realtime_renders_total").increment(1);
        let without;
        let event = if previous_shown || event.previous.is_none() {
            event
        } else {
            without = Event {
                previous: None,
                ..event.clone()
            };
            &without
        };
        let taint = RenderTaint::default();
        let tx = RequestTx::new(self.state, Mode::Exclusive);
        let mut request = Request::new(shape.query.clone())
            .variables(shape.variables.clone())
            .data(Prepared(watch.value(event, outcome)))
            .data(taint.clone())
            .data(tx.clone());
        if let Some(name) = &shape.operation_name {
            request = request.operation_name(name.clone());
        }
        // The query was accepted when subscribed to: it passes again.
        let _ = self.state.parsed_queries.prepare(&mut request);
        let response = self
            .schema
            .execute_stream_with_session_data(
                request,
                Arc::new(super::caller_data(self.caller, self.client)),
            )
            .next()
            .await
            .unwrap_or_else(|| Response::new(async_graphql::Value::Null));
        if tx.has_writes() {
            // A subscription's selection cannot write; end the transaction anyway.
            let _ = tx.finish(false).await;
        }
        let payload = serde_json::to_string(&response).unwrap_or_else(|_| "null".into());
        if payload.len() > MAX_ANSWER_BYTES {
            metrics::counter!("nimbus_realtime_answers_too_large_total").increment(1);
            return (too_large_answer(), false);
        }
        (payload.into(), taint.is_marked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(project: usize, query: &str) -> Shape {
        let mut hasher = std::hash::DefaultHasher::new();
        (project, query).hash(&mut hasher);
        Shape {
            project,
            query: query.into(),
            operation_name: None,
            variables: Variables::default(),
            variables_json: "{}".into(),
            hash: hasher.finish(),
        }
    }

    #[test]
    fn render_keys_tell_outcomes_and_the_previous_version_apart() {
        let shape = shape(1, "subscription { a }");
        let outcomes = ["CREATE", "UPDATE", "DELETE", "LEAVE", "ENTER"];
        let keys: std::collections::HashSet<u64> = outcomes
            .iter()
            .flat_map(|outcome| [shape.key(outcome, false), shape.key(outcome, true)])
            .collect();
        assert_eq!(keys.len(), outcomes.len() * 2);
    }

    #[test]
    fn equal_shapes_are_one_and_unheld_ones_are_swept() {
        let shapes = Shapes::default();
        let first = shapes.intern(shape(1, "subscription { a }"));
        let again = shapes.intern(shape(1, "subscription { a }"));
        assert!(Arc::ptr_eq(&first, &again));
        let other_project = shapes.intern(shape(2, "subscription { a }"));
        assert!(!Arc::ptr_eq(&first, &other_project));

        drop((first, again, other_project));
        for n in 0..3000 {
            drop(shapes.intern(shape(n, "subscription { b }")));
        }
        let held = shapes.0.lock().unwrap().by_hash.len();
        assert!(
            held <= 1024,
            "{held} entries kept for shapes no longer held"
        );
    }
}
