//! Usage on the request path: the root fields an operation selects, the codes of
//! its errors, and bandwidth. Streamed bodies (files) pass a layer that counts
//! their bytes when the handler named the project it served ([`tag`]); GraphQL
//! answers and function calls, whose bodies are read whole and answered from
//! memory, count their known lengths ([`count_answered`], [`count_lengths`]). Handlers name
//! a project only once it is resolved, so a client cannot make the counters grow
//! by naming projects that do not exist. The layer is installed only while usage
//! is on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::AppState;
use crate::services::usage::counters::ProjectCounters;

/// The project a response served, for the layer to count its bytes under.
#[derive(Clone)]
struct Served(Arc<ProjectCounters>);

/// Marks `response` as served for `project_id` (one that exists).
pub fn tag(state: &AppState, project_id: &str, response: &mut Response) {
    if let Some(counters) = state.usage.project(project_id) {
        tag_with(response, counters);
    }
}

/// Marks `response` as served for the project of `counters`.
fn tag_with(response: &mut Response, counters: Arc<ProjectCounters>) {
    response.extensions_mut().insert(Served(counters));
}

/// Counts the bytes of a GraphQL exchange, whose lengths are known without
/// wrapping either body: a POST's `Content-Length` (the handler read all of it,
/// and the server holds a body to its declared length, or it refused it), and the
/// whole answer it built. A GET's body is never read: a length it declares is
/// not counted, or any client could make a project's usage whatever it liked.
pub fn count_answered(
    counters: &ProjectCounters,
    headers: &HeaderMap,
    body_read: bool,
    response: &Response,
) {
    let received = if body_read {
        headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let hint = response.body().size_hint();
    counters.http(received, hint.exact().unwrap_or(hint.lower()));
}

/// Counts an exchange whose request body was read whole (`received` bytes) and
/// whose answer is in memory, for the project of `counters`.
pub fn count_lengths(counters: &ProjectCounters, received: usize, response: &Response) {
    let hint = response.body().size_hint();
    counters.http(received as u64, hint.exact().unwrap_or(hint.lower()));
}

/// Most distinct root fields counted of one operation.
const MAX_ROOTS: usize = 64;
/// How deep fragments are followed at the root.
const MAX_FRAGMENT_DEPTH: usize = 4;

/// The root fields the operation of `request` selects, as `query.users`, each
/// once, fragments at the root followed: usage counts operations by what they ask
/// for in the schema, not by the names clients give them. Read from the parsed
/// document before validation: keep only those the schema has ([`known_roots`]).
pub fn roots_of(request: &mut async_graphql::Request) -> Vec<String> {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return Vec::new();
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => &op.node,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name.as_str()) {
            Some(op) => &op.node,
            None => return Vec::new(),
        },
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => &op.node,
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let prefix = match operation.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let mut roots = Vec::new();
    collect_roots(
        document,
        &operation.selection_set.node,
        prefix,
        &mut roots,
        0,
    );
    roots
}

fn collect_roots(
    document: &async_graphql::parser::types::ExecutableDocument,
    set: &async_graphql::parser::types::SelectionSet,
    prefix: &str,
    roots: &mut Vec<String>,
    depth: usize,
) {
    use async_graphql::parser::types::Selection;
    for item in &set.items {
        if roots.len() >= MAX_ROOTS {
            return;
        }
        match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                let seen = roots
                    .iter()
                    .any(|r| r.len() == prefix.len() + 1 + name.len() && r.ends_with(name));
                if !seen {
                    // Not `format!`: its machinery costs more than the copy, on
                    // every request.
                    let mut root = String::with_capacity(prefix.len() + 1 + name.len());
                    root.push_str(prefix);
                    root.push('.');
                    root.push_str(name);
                    roots.push(root);
                }
            }
            Selection::FragmentSpread(spread) if depth < MAX_FRAGMENT_DEPTH => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    let set = &fragment.node.selection_set.node;
                    collect_roots(document, set, prefix, roots, depth + 1);
                }
            }
            Selection::InlineFragment(inline) if depth < MAX_FRAGMENT_DEPTH => {
                let set = &inline.node.selection_set.node;
                collect_roots(document, set, prefix, roots, depth + 1);
            }
            _ => {}
        }
    }
}

/// The roots of `roots` (from [`roots_of`]) that the schema has: names a client
/// made up (a field that does not exist) are not counted, so they cannot grow the
/// counters, whether or not the operation then passes validation.
pub fn known_roots(schema: &async_graphql::dynamic::Schema, roots: Vec<String>) -> Vec<String> {
    use async_graphql::registry::MetaType;
    let registry = schema.registry();
    roots
        .into_iter()
        .filter(|root| {
            let Some((kind, field)) = root.split_once('.') else {
                return false;
            };
            let ty = match kind {
                "query" => Some(&registry.query_type),
                "mutation" => registry.mutation_type.as_ref(),
                _ => registry.subscription_type.as_ref(),
            };
            field == "__typename"
                || ty
                    .and_then(|ty| registry.types.get(ty))
                    .is_some_and(|ty| match ty {
                        MetaType::Object { fields, .. } => fields.contains_key(field),
                        _ => false,
                    })
        })
        .collect()
}

/// The `extensions.code` of each error of `response`.
pub fn error_codes(response: &async_graphql::Response) -> impl Iterator<Item = &str> {
    response.errors.iter().map(|error| {
        match error.extensions.as_ref().and_then(|e| e.get("code")) {
            Some(async_graphql::Value::String(code)) => code.as_str(),
            _ => crate::error::codes::INTERNAL,
        }
    })
}

/// Reports the bytes of one exchange when the response body is done (or dropped).
struct Exchange {
    counters: Arc<ProjectCounters>,
    received: Arc<AtomicU64>,
    sent: u64,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.counters
            .http(self.received.load(Ordering::Relaxed), self.sent);
    }
}

/// A body that counts the bytes of its data frames as they pass, and keeps the
/// size hint of the body it wraps (so a response of known length still gets a
/// `Content-Length`, not chunked encoding).
struct Counted<C: Count> {
    inner: Body,
    count: C,
}

trait Count: Send + Unpin + 'static {
    fn add(&mut self, bytes: usize);
}

impl Count for Arc<AtomicU64> {
    fn add(&mut self, bytes: usize) {
        self.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Count for Exchange {
    fn add(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }
}

impl<C: Count> HttpBody for Counted<C> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.count.add(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The layer: counts what the handler reads of the request body, and what the
/// client is sent of the response body, for a tagged response.
pub async fn count(request: Request, next: Next) -> Response {
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let request = request.map(|inner| Body::new(Counted { inner, count }));
    let mut response = next.run(request).await;
    let Some(Served(counters)) = response.extensions_mut().remove::<Served>() else {
        return response;
    };
    let count = Exchange {
        counters,
        received,
        sent: 0,
    };
    response.map(|inner| Body::new(Counted { inner, count }))
}
