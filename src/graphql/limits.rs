//! Guards every GraphQL request before it runs: query size, alias count, depth and
//! complexity limits, each refused with its own `extensions.code`; and the mapping
//! that gives every error async-graphql raises by itself (syntax, validation,
//! unknown operation, bad arguments) a stable code too. A query without variables
//! that passed validation is not validated again against the same schema.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

/// Query parsed but not valid for the schema (unknown field, wrong argument type...).
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// Query text is not GraphQL.
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";

/// The limits one request must stay within.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_query_bytes: usize,
}

/// Most validated queries a schema keeps; past it the record starts over.
const MAX_VALIDATED: usize = 1024;
/// Longer queries are validated every time.
const MAX_VALIDATED_BYTES: usize = 8 * 1024;

/// What validating a query (operation name, text) found, for one schema: the
/// same query, without variables, against the same schema validates the same.
type Validated = std::sync::Mutex<HashMap<(Option<String>, String), ValidationResult>>;

/// The extension of one schema: its limits, and the queries it has validated.
pub struct LimitsFactory {
    limits: QueryLimits,
    validated: Arc<Validated>,
}

impl LimitsFactory {
    pub fn new(limits: QueryLimits) -> Self {
        LimitsFactory {
            limits,
            validated: Arc::default(),
        }
    }
}

impl ExtensionFactory for LimitsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits {
            limits: self.limits,
            validated: self.validated.clone(),
            query: std::sync::Mutex::new(None),
        })
    }
}

/// The extension for one request.
struct Limits {
    limits: QueryLimits,
    validated: Arc<Validated>,
    /// The request's operation name and query, when its validation may be recalled.
    query: std::sync::Mutex<Option<(Option<String>, String)>>,
}

impl Limits {
    fn recalled(&self) -> Option<ValidationResult> {
        let query = self.query.lock().ok()?;
        let key = query.as_ref()?;
        self.validated.lock().ok()?.get(key).copied()
    }

    fn remember(&self, result: ValidationResult) {
        let Some(key) = self.query.lock().ok().and_then(|mut q| q.take()) else {
            return;
        };
        if let Ok(mut validated) = self.validated.lock() {
            if validated.len() >= MAX_VALIDATED {
                validated.clear();
            }
            validated.insert(key, result);
        }
    }
}

#[async_trait::async_trait]
impl Extension for Limits {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        response.errors.iter_mut().for_each(assign_code);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                response.errors.iter_mut().for_each(assign_code);
                response
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if request.query.len() > self.limits.max_query_bytes {
            return Err(coded(
                format!(
                    "the query is {} bytes long; the limit is {}",
                    request.query.len(),
                    self.limits.max_query_bytes
                ),
                "QUERY_TOO_LARGE",
            ));
        }
        // Variables take part in validation (their values are checked against
        // their types): only a request without any can reuse an earlier result.
        if request.variables.is_empty()
            && request.query.len() <= MAX_VALIDATED_BYTES
            && let Ok(mut query) = self.query.lock()
        {
            *query = Some((request.operation_name.clone(), request.query.clone()));
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await.map_err(|err| {
            // The parser's own recursion guard (nesting through selections and
            // fragments) is a depth limit as far as a client is concerned.
            let code = if err.message.contains("recursion depth") {
                "QUERY_TOO_DEEP"
            } else {
                PARSE_FAILED
            };
            with_code(err, code)
        })?;
        // Counted before validation: overlapping-field validation is quadratic in the
        // number of fields, so thousands of aliases must never reach it.
        let aliases = count_aliases(&document);
        if aliases > self.limits.max_aliases {
            return Err(coded(
                format!(
                    "the query uses {aliases} aliases; the limit is {}",
                    self.limits.max_aliases
                ),
                "TOO_MANY_ALIASES",
            ));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        if let Some(result) = self.recalled() {
            return Ok(result);
        }
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        let limits = self.limits;
        if result.depth > limits.max_depth {
            return Err(vec![coded(
                format!(
                    "the query is nested {} levels deep; the limit is {}",
                    result.depth, limits.max_depth
                ),
                "QUERY_TOO_DEEP",
            )]);
        }
        if result.complexity > limits.max_complexity {
            return Err(vec![coded(
                format!(
                    "the query's complexity is {}; the limit is {}",
                    result.complexity, limits.max_complexity
                ),
                "QUERY_TOO_COMPLEX",
            )]);
        }
        self.remember(result);
        Ok(result)
    }
}

fn count_aliases(document: &ExecutableDocument) -> usize {
    fn in_set(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + in_set(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let in_operations: usize = document
        .operations
        .iter()
        .map(|(_, op)| in_set(&op.node.selection_set.node))
        .sum();
    let in_fragments: usize = document
        .fragments
        .values()
        .map(|fragment| in_set(&fragment.node.selection_set.node))
        .sum();
    in_operations + in_fragments
}

/// A new error with `extensions.code`.
pub fn coded(message: impl Into<String>, code: &str) -> ServerError {
    with_code(ServerError::new(message, None), code)
}

/// Sets `extensions.code` unless the error already has one.
fn with_code(mut err: ServerError, code: &str) -> ServerError {
    let extensions = err.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", Value::from(code));
    }
    err
}

/// Gives a code to an error async-graphql raised without one.
fn assign_code(err: &mut ServerError) {
    if err
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some())
    {
        return;
    }
    let code = if err.message.starts_with("Unknown operation named") {
        "OPERATION_NOT_FOUND"
    } else if err.message.starts_with("Operation name required") {
        "OPERATION_NAME_REQUIRED"
    } else if err.path.is_empty() {
        VALIDATION_FAILED
    } else {
        // Resolver errors come from AppError and carry a code; what is left are
        // arguments that failed to convert, i.e. the caller's input.
        "BAD_USER_INPUT"
    };
    *err = with_code(std::mem::replace(err, ServerError::new("", None)), code);
}
