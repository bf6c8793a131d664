//! Guards every GraphQL request before it runs: query size, alias count, depth and
//! complexity limits, each refused with its own `extensions.code`; and the mapping
//! that gives every error async-graphql raises by itself (syntax, validation,
//! unknown operation, bad arguments) a stable code too, and every field's error its
//! `path` (async-graphql's dynamic schema leaves it out). A query that passed
//! validation is not validated again against the same schema: a later request of
//! it has only its variables' values checked ([`VariableArguments`]).
//!
//! The limits are counted on the document as it would run, fragment spreads
//! expanded, in one pass that costs each fragment once however often it is
//! spread ([`measure`]), and before anything of async-graphql walks the document:
//! its parse-time checks and its depth and complexity visitors expand every spread
//! again, so a 1 KB document of fragments that each spread the next twice would
//! keep them busy for hours.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextRequest, NextResolve, NextSubscribe, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::registry::Registry;
use async_graphql::{Name, PathSegment, Positioned, QueryPathNode, QueryPathSegment};
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::variables::VariableArguments;
use crate::error::codes;

/// Query parsed but not valid for the schema (unknown field, wrong argument type...).
pub const VALIDATION_FAILED: &str = codes::GRAPHQL_VALIDATION_FAILED;
/// Query text is not GraphQL.
pub const PARSE_FAILED: &str = codes::GRAPHQL_PARSE_FAILED;

/// The limits one request must stay within.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_query_bytes: usize,
    /// Most directives on one field, fragment spread, inline fragment or definition.
    pub max_directives: usize,
    /// Most nodes an operation's paged lists may return, pages nested in pages
    /// multiplied ([`super::nodes`]).
    pub max_nodes: u64,
    /// Most values the variables of a request may hold ([`super::budget`]).
    pub max_variable_values: u64,
    /// Most bytes of text the variables of a request may hold.
    pub max_variables_bytes: u64,
    /// Longest a query operation may run (mutations and subscriptions excepted).
    pub query_timeout: Option<std::time::Duration>,
    /// Most bytes of values a query operation's answer may hold; 0: no limit.
    pub max_response_bytes: u64,
}

impl QueryLimits {
    /// The limits the server is configured with.
    pub fn of(config: &crate::config::Config) -> Self {
        QueryLimits {
            max_depth: config.graphql_max_depth,
            max_complexity: config.graphql_max_complexity,
            max_aliases: config.graphql_max_aliases,
            max_query_bytes: config.graphql_max_query_bytes,
            max_directives: config.graphql_max_directives,
            max_nodes: config.graphql_max_nodes,
            max_variable_values: config.graphql_max_variable_values,
            max_variables_bytes: config.graphql_max_variables_bytes,
            query_timeout: (config.graphql_query_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(config.graphql_query_timeout_ms)),
            max_response_bytes: config.graphql_max_response_bytes,
        }
    }
}

/// The type of the operation `operation_name` picks (the only one when unnamed),
/// if the document has it.
fn operation_type(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| operation.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Deepest nesting of selection sets, fragment spreads and inline fragments, as
/// async-graphql's own recursion guard counts it (`limit_recursive_depth`); also
/// what keeps [`measure`]'s recursion shallow.
pub const MAX_NESTING: usize = 64;

/// Most introspection root fields (`__schema`, `__type`) one document runs,
/// fragments expanded. Their answers grow with the project's schema, not with
/// the query: `__schema` of a project with a hundred collections is megabytes, so
/// a hundred aliases of it (within the alias and complexity limits) would build
/// an answer of hundreds. Two lets a client read the schema and a type at once.
pub const MAX_INTROSPECTION: usize = 2;

/// Most validation errors one answer lists, then one saying how many more there
/// were. Validation makes an error per offending node, and the text scan before
/// parsing counts selections and aliases but not arguments or variable
/// definitions: a document at the size limit repeating one argument 20,000
/// times would otherwise be answered with 20,000 errors, some 17 times its size.
pub const MAX_VALIDATION_ERRORS: usize = 100;

/// Most validated queries a schema keeps; past it the record starts over.
const MAX_VALIDATED: usize = 1024;
/// Most bytes of query text and kept arguments a schema's record holds; past it
/// the record starts over.
const MAX_VALIDATED_TOTAL: usize = 4 * 1024 * 1024;
/// Longer queries are validated every time.
const MAX_VALIDATED_BYTES: usize = 8 * 1024;
/// Most operation names remembered for one query text: a document has a few
/// operations, and a request naming one it lacks still passes validation (the
/// executor refuses it), so names beyond these are validated every time rather
/// than make each lookup of the text longer.
const MAX_OPERATIONS_PER_QUERY: usize = 16;

/// What validating a query found, for one schema and one operation name: the
/// result, the same for any request of that query whose variables suit its
/// arguments, and the arguments to check each request's variables against.
struct Remembered {
    operation_name: Option<String>,
    result: ValidationResult,
    arguments: Arc<VariableArguments>,
}

/// The queries one schema has validated, by their text.
#[derive(Default)]
struct Record {
    queries: HashMap<String, Vec<Remembered>>,
    entries: usize,
    bytes: usize,
}

impl Record {
    fn recall(&self, query: &str, operation_name: Option<&str>) -> Option<&Remembered> {
        self.queries
            .get(query)?
            .iter()
            .find(|known| known.operation_name.as_deref() == operation_name)
    }

    fn remember(&mut self, query: String, remembered: Remembered) {
        let bytes = query.len()
            + remembered.operation_name.as_ref().map_or(0, String::len)
            + remembered.arguments.bytes();
        if self.entries >= MAX_VALIDATED || self.bytes + bytes > MAX_VALIDATED_TOTAL {
            *self = Record::default();
        }
        if self
            .recall(&query, remembered.operation_name.as_deref())
            .is_some()
        {
            return;
        }
        let operations = self.queries.entry(query).or_default();
        if operations.len() >= MAX_OPERATIONS_PER_QUERY {
            return;
        }
        operations.push(remembered);
        self.entries += 1;
        self.bytes += bytes;
    }
}

type Validated = std::sync::Mutex<Record>;

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

#[cfg(test)]
impl LimitsFactory {
    /// Whether this schema has remembered the validation of `query`.
    pub(crate) fn remembers(&self, query: &str, operation_name: Option<&str>) -> bool {
        self.validated
            .lock()
            .unwrap()
            .recall(query, operation_name)
            .is_some()
    }
}

/// The same schema's extension, sharing what it remembers (for tests that look
/// at it).
#[cfg(test)]
impl Clone for LimitsFactory {
    fn clone(&self) -> Self {
        LimitsFactory {
            limits: self.limits,
            validated: self.validated.clone(),
        }
    }
}

impl ExtensionFactory for LimitsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits {
            limits: self.limits,
            validated: self.validated.clone(),
            validation: std::sync::Mutex::new(Validation::Afresh),
            is_query: std::sync::atomic::AtomicBool::new(false),
            answered: std::sync::atomic::AtomicU64::new(0),
            too_large: tokio::sync::Notify::new(),
        })
    }
}

/// How the request's validation goes, as `prepare_request` found it.
enum Validation {
    /// Validated afresh, and not remembered (a long query, one that does not parse).
    Afresh,
    /// Validated afresh, and remembered under its text and operation name with its
    /// arguments that name variables.
    Remember {
        query: String,
        operation_name: Option<String>,
        arguments: VariableArguments,
    },
    /// Known already: the remembered result, or the errors its variables' values
    /// make.
    Known(Result<ValidationResult, Vec<ServerError>>),
}

/// The deadline a client gives its query operations (`X-Nimbus-Timeout`), put
/// in a request's data: the shorter of it and the server's applies.
#[derive(Debug, Clone, Copy)]
pub struct ClientDeadline(pub std::time::Duration);

/// The extension for one request.
struct Limits {
    limits: QueryLimits,
    validated: Arc<Validated>,
    validation: std::sync::Mutex<Validation>,
    /// Whether the operation to run is a query, as `prepare_request` found it.
    is_query: std::sync::atomic::AtomicBool,
    /// Bytes of the values a query's fields produced so far ([`answer_bytes`]).
    answered: std::sync::atomic::AtomicU64,
    /// Told once a query's answer passed `max_response_bytes`: the operation stops.
    too_large: tokio::sync::Notify,
}

/// About how many bytes `value`, a field's value, adds to an answer: its text and
/// numbers. The fields of an object count themselves as they are resolved, so an
/// object is counted only when it is a `JSON` scalar's value (`whole`).
fn answer_bytes(value: &Value, whole: bool) -> u64 {
    match value {
        Value::String(text) => text.len() as u64,
        Value::Enum(name) => name.len() as u64,
        Value::Binary(bytes) => bytes.len() as u64,
        Value::Null | Value::Number(_) | Value::Boolean(_) => 8,
        Value::List(items) => items
            .iter()
            .map(|item| answer_bytes(item, whole))
            .fold(0, u64::saturating_add),
        Value::Object(entries) if whole => entries
            .iter()
            .map(|(key, item)| (key.len() as u64).saturating_add(answer_bytes(item, true)))
            .fold(0, u64::saturating_add),
        Value::Object(_) => 0,
    }
}

impl Limits {
    /// Finds how `request` is to be validated: recalled, its variables' values
    /// checked, or afresh and then remembered.
    fn plan(&self, registry: &Registry, request: &mut Request) {
        if request.query.len() > MAX_VALIDATED_BYTES {
            return;
        }
        // The document borrows the request whole: its text, operation name and
        // variables are taken out meanwhile.
        let query = std::mem::take(&mut request.query);
        let operation_name = request.operation_name.take();
        let variables = std::mem::take(&mut request.variables);
        let plan = match request.parsed_query() {
            Ok(document) => {
                let recalled = self.validated.lock().ok().and_then(|record| {
                    let known = record.recall(&query, operation_name.as_deref())?;
                    Some((known.result, known.arguments.clone()))
                });
                match recalled {
                    Some((result, arguments)) => match arguments.check(registry, &variables) {
                        Some(errors) if errors.is_empty() => Some(Validation::Known(Ok(result))),
                        Some(errors) => Some(Validation::Known(Err(errors))),
                        // Cannot tell: validated afresh, as if never seen.
                        None => None,
                    },
                    None => Some(Validation::Remember {
                        query: query.clone(),
                        operation_name: operation_name.clone(),
                        arguments: VariableArguments::of(
                            registry,
                            document,
                            operation_name.as_deref(),
                        ),
                    }),
                }
            }
            Err(_) => None,
        };
        request.query = query;
        request.operation_name = operation_name;
        request.variables = variables;
        if let Some(plan) = plan
            && let Ok(mut validation) = self.validation.lock()
        {
            *validation = plan;
        }
    }

    fn planned(&self) -> Validation {
        self.validation
            .lock()
            .map(|mut validation| std::mem::replace(&mut *validation, Validation::Afresh))
            .unwrap_or(Validation::Afresh)
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
            return Err(too_large(request.query.len(), &self.limits));
        }
        // Counted before anything reads them, on every transport: the HTTP and
        // WebSocket handlers check them already (`ParsedQueries::prepare`), this
        // holds for whatever else executes a request.
        super::budget::check_size(&request.variables, &self.limits)?;
        let mut request = request;
        // A query that does not parse is left for `parse_query` to report.
        let operation_name = request.operation_name.take();
        let mut variables = std::mem::take(&mut request.variables);
        if let Ok(document) = request.parsed_query() {
            measure(document, &self.limits)?;
            super::budget::check_references(
                document,
                operation_name.as_deref(),
                &variables,
                &self.limits,
            )?;
            super::budget::keep_declared(document, operation_name.as_deref(), &mut variables);
            let is_query =
                operation_type(document, operation_name.as_deref()) == Some(OperationType::Query);
            self.is_query
                .store(is_query, std::sync::atomic::Ordering::Relaxed);
            let registry = &ctx.schema_env.registry;
            let nodes =
                super::nodes::count(registry, document, operation_name.as_deref(), &variables);
            if nodes > self.limits.max_nodes {
                return Err(coded(
                    format!(
                        "the query's lists may return {nodes} nodes, pages nested in pages \
                         multiplied; the limit is {}: ask for smaller pages (`first`)",
                        self.limits.max_nodes
                    ),
                    codes::QUERY_TOO_COMPLEX,
                ));
            }
        }
        request.operation_name = operation_name;
        request.variables = variables;
        self.plan(&ctx.schema_env.registry, &mut request);
        next.run(ctx, request).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if !self.is_query.load(std::sync::atomic::Ordering::Relaxed) {
            return next.run(ctx, operation_name).await;
        }
        // A client may ask for less time than the server gives, never more.
        let asked = ctx.data_opt::<ClientDeadline>().map(|asked| asked.0);
        let deadline = match (self.limits.query_timeout, asked) {
            (Some(server), Some(asked)) => Some(server.min(asked)),
            (server, asked) => server.or(asked),
        };
        if deadline.is_none() && self.limits.max_response_bytes == 0 {
            return next.run(ctx, operation_name).await;
        }
        // Dropping the operation drops its statements' futures (and the answer
        // built so far); what the database is still running stops at the
        // statement deadline (`db::deadline`).
        let run = async {
            match deadline {
                Some(deadline) => tokio::time::timeout(deadline, next.run(ctx, operation_name))
                    .await
                    .ok(),
                None => Some(next.run(ctx, operation_name).await),
            }
        };
        let stopped = tokio::select! {
            biased;
            () = self.too_large.notified() => None,
            finished = run => Some(finished),
        };
        // It may have grown too large in the very step that finished it.
        let max = self.limits.max_response_bytes;
        let stopped = stopped.filter(|_| {
            max == 0 || self.answered.load(std::sync::atomic::Ordering::Relaxed) <= max
        });
        let Some(finished) = stopped else {
            tracing::warn!(
                operation = operation_name.unwrap_or_default(),
                max,
                "a query's answer grew past the largest allowed and was stopped"
            );
            return Response::from_errors(vec![coded(
                format!(
                    "the answer grew past {max} bytes and was stopped; ask for less at once \
                     (fewer fields or aliases, smaller pages)"
                ),
                codes::RESPONSE_TOO_LARGE,
            )]);
        };
        match finished {
            Some(response) => response,
            None => {
                let deadline = deadline.unwrap_or_default();
                tracing::warn!(
                    operation = operation_name.unwrap_or_default(),
                    "a query ran past the query deadline and was stopped"
                );
                Response::from_errors(vec![coded(
                    format!(
                        "the query ran past {} ms and was stopped; ask for less at once \
                         (fewer fields or aliases, smaller pages, narrower filters)",
                        deadline.as_millis()
                    ),
                    codes::OPERATION_TIMEOUT,
                )])
            }
        }
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let at = info.path_node;
        let max = self.limits.max_response_bytes;
        let counted = max > 0 && self.is_query.load(std::sync::atomic::Ordering::Relaxed);
        let whole = counted && info.return_type.trim_matches(['[', ']', '!']) == super::types::JSON;
        let value = next.run(ctx, info).await;
        if counted && let Ok(Some(value)) = &value {
            let bytes = answer_bytes(value, whole);
            let before = self
                .answered
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            if before <= max && before.saturating_add(bytes) > max {
                self.too_large.notify_one();
            }
        }
        value.map_err(|mut err| {
            // The innermost field sets it; a parent an error reaches through a
            // non-null field keeps the child's.
            if err.path.is_empty() {
                err.path = path_of(at);
            }
            err
        })
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
                codes::QUERY_TOO_DEEP
            } else {
                PARSE_FAILED
            };
            with_code(err, code)
        })?;
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let planned = self.planned();
        let remember = match planned {
            // A remembered result passed the limits below when it was found.
            Validation::Known(outcome) => return outcome.map_err(validation_errors),
            Validation::Remember {
                query,
                operation_name,
                arguments,
            } => Some((query, operation_name, arguments)),
            Validation::Afresh => None,
        };
        let result = next.run(ctx).await.map_err(validation_errors)?;
        let limits = self.limits;
        if result.depth > limits.max_depth {
            return Err(vec![coded(
                format!(
                    "the query is nested {} levels deep; the limit is {}",
                    result.depth, limits.max_depth
                ),
                codes::QUERY_TOO_DEEP,
            )]);
        }
        if result.complexity > limits.max_complexity {
            return Err(vec![coded(
                format!(
                    "the query's complexity is {}; the limit is {}",
                    result.complexity, limits.max_complexity
                ),
                codes::QUERY_TOO_COMPLEX,
            )]);
        }
        // Valid with its variables, so valid without them (they only add checks),
        // with the same depth and complexity, which the values do not change.
        if let Some((query, operation_name, arguments)) = remember
            && let Ok(mut record) = self.validated.lock()
        {
            record.remember(
                query,
                Remembered {
                    operation_name,
                    result,
                    arguments: Arc::new(arguments),
                },
            );
        }
        Ok(result)
    }
}

/// The response path of a field, from the root.
fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut path: Vec<PathSegment> = std::iter::once(node)
        .chain(node.parents())
        .map(|node| match node.segment {
            QueryPathSegment::Name(name) => PathSegment::Field(name.to_string()),
            QueryPathSegment::Index(index) => PathSegment::Index(index),
        })
        .collect();
    path.reverse();
    path
}

/// Validation's errors with their code, at most [`MAX_VALIDATION_ERRORS`] of them
/// and one saying how many more there were.
fn validation_errors(errors: Vec<ServerError>) -> Vec<ServerError> {
    let left_out = errors.len().saturating_sub(MAX_VALIDATION_ERRORS);
    let mut kept: Vec<ServerError> = errors
        .into_iter()
        .take(MAX_VALIDATION_ERRORS)
        .map(|e| with_code(e, VALIDATION_FAILED))
        .collect();
    if left_out > 0 {
        kept.push(coded(
            format!("{left_out} more validation errors were left out"),
            VALIDATION_FAILED,
        ));
    }
    kept
}

/// Deepest nesting of brackets (`{`, `[`, `(`) a query text may have. Parsing,
/// validating and converting a value recurse once per level: a few thousand
/// levels of `[[[…]]]` in an argument overflow a worker's stack and abort the
/// process. Selections nest at most [`MAX_NESTING`] deep, values far less in
/// any real query.
pub const MAX_TEXT_NESTING: usize = 128;

/// What the token before the current one was, in a selection set: it tells a
/// field's name from an alias's field, a directive's name, a spread fragment's
/// name and a type condition.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Before {
    #[default]
    Other,
    Colon,
    At,
    Dots,
    DotsOn,
}

/// Refuses a query text, before it is parsed, that is sure to be refused once
/// parsed, in one pass over its bytes (skipping strings, block strings and
/// comments): longer than `max_query_bytes` (`QUERY_TOO_LARGE`); brackets nested
/// deeper than [`MAX_TEXT_NESTING`] (`QUERY_TOO_DEEP`); more aliases
/// (`TOO_MANY_ALIASES`) or more fields, spreads, inline fragments and directives
/// in selection sets (`QUERY_TOO_COMPLEX`) than the limits, as written.
///
/// Parsing allocates a node per selection, tens of thousands for a 200 KB
/// document of copies of one field, all of it spent on a refusal; this scan
/// allocates nothing and stops at the first count over its limit. Its counts
/// never exceed [`measure`]'s, which expands every fragment at least once (a
/// fragment never spread is refused), so it refuses nothing that [`measure`]
/// would let through.
pub fn check_text(query: &str, limits: &QueryLimits) -> ServerResult<()> {
    if query.len() > limits.max_query_bytes {
        return Err(too_large(query.len(), limits));
    }
    let bytes = query.as_bytes();
    let mut scan = TextScan::default();
    let mut i = 0;
    while i < bytes.len() {
        i = scan.token(bytes, i)?;
        scan.check_counts(limits)?;
        i += 1;
    }
    Ok(())
}

/// Where [`check_text`] stands in the query text, and what it has counted so far.
#[derive(Default)]
struct TextScan {
    depth: usize,
    /// Brackets open around a value (arguments, variable definitions, lists and
    /// objects in them): a `{` there is an object, not a selection set.
    in_value: usize,
    in_selection: usize,
    before: Before,
    selections: usize,
    aliases: usize,
}

impl TextScan {
    /// Reads the token that starts at `i` and returns the index of its last byte.
    fn token(&mut self, bytes: &[u8], mut i: usize) -> ServerResult<usize> {
        let selecting = self.in_value == 0 && self.in_selection > 0;
        match bytes[i] {
            b'#' => i = comment_end(bytes, i),
            b'"' if bytes[i..].starts_with(b"\"\"\"") => i = block_string_end(bytes, i),
            b'"' => i = string_end(bytes, i),
            open @ (b'{' | b'[' | b'(') => self.open(open)?,
            b'}' | b']' | b')' => self.close(),
            b'.' if selecting && bytes[i..].starts_with(b"...") => {
                self.selections += 1;
                self.before = Before::Dots;
                i += 2;
            }
            b':' if selecting => {
                self.aliases += 1;
                self.before = Before::Colon;
            }
            b'@' if selecting => {
                self.selections += 1;
                self.before = Before::At;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                i = name_end(bytes, i);
                if selecting {
                    self.name(&bytes[start..=i]);
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {}
            _ => self.before = Before::Other,
        }
        Ok(i)
    }

    /// An opening bracket: one level deeper, in a selection set or in a value.
    fn open(&mut self, open: u8) -> ServerResult<()> {
        self.depth += 1;
        if self.depth > MAX_TEXT_NESTING {
            return Err(coded(
                format!("the query nests brackets more than {MAX_TEXT_NESTING} levels deep"),
                codes::QUERY_TOO_DEEP,
            ));
        }
        if open == b'{' && self.in_value == 0 {
            self.in_selection += 1;
        } else {
            self.in_value += 1;
        }
        self.before = Before::Other;
        Ok(())
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if self.in_value > 0 {
            self.in_value -= 1;
        } else {
            self.in_selection = self.in_selection.saturating_sub(1);
        }
        self.before = Before::Other;
    }

    /// A name in a selection set: a field, unless it follows an alias's colon, a
    /// directive's `@` or a spread's `...` (where `on` starts a type condition).
    fn name(&mut self, name: &[u8]) {
        self.before = match self.before {
            Before::Dots if name == b"on" => Before::DotsOn,
            Before::Other => {
                self.selections += 1;
                Before::Other
            }
            _ => Before::Other,
        };
    }

    /// Refuses the query once a count is over its limit.
    fn check_counts(&self, limits: &QueryLimits) -> ServerResult<()> {
        if self.aliases > limits.max_aliases {
            return Err(coded(
                format!("the query uses more than {} aliases", limits.max_aliases),
                codes::TOO_MANY_ALIASES,
            ));
        }
        if self.selections > limits.max_complexity {
            return Err(coded(
                format!(
                    "the query's complexity is over its limit of {} before its fragments \
                     are expanded",
                    limits.max_complexity
                ),
                codes::QUERY_TOO_COMPLEX,
            ));
        }
        Ok(())
    }
}

/// The index of the line break that ends the comment starting at `i` (or the
/// text's length).
fn comment_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
        i += 1;
    }
    i
}

/// The index of the last byte of the block string starting at `i`.
fn block_string_end(bytes: &[u8], mut i: usize) -> usize {
    i += 3;
    while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
        // `\"""` is an escaped delimiter inside a block string.
        i += if bytes[i..].starts_with(b"\\\"\"\"") {
            4
        } else {
            1
        };
    }
    i + 2
}

/// The index of the closing quote of the string starting at `i`.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < bytes.len() && bytes[i] != b'"' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    i
}

/// The index of the last byte of the name starting at `i`.
fn name_end(bytes: &[u8], mut i: usize) -> usize {
    while i + 1 < bytes.len()
        && matches!(bytes[i + 1], b'_' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
    {
        i += 1;
    }
    i
}

fn too_large(bytes: usize, limits: &QueryLimits) -> ServerError {
    coded(
        format!(
            "the query is {bytes} bytes long; the limit is {}",
            limits.max_query_bytes
        ),
        codes::QUERY_TOO_LARGE,
    )
}

/// What running a selection set takes, its fragment spreads expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cost {
    /// Fields, fragment spreads, inline fragments and directives executed: the
    /// query's complexity.
    selections: usize,
    /// Aliased fields among them.
    aliases: usize,
    /// Introspection root fields (`__schema`, `__type`) among them.
    introspection: usize,
    /// Deepest field nesting (a field of the root is at depth 1).
    depth: usize,
    /// Deepest nesting of selection sets, spreads and inline fragments.
    nesting: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.selections = self.selections.saturating_add(other.selections);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.introspection = self.introspection.saturating_add(other.introspection);
    }
}

/// A fragment's cost, once counted; `None` while it is being counted (so a
/// spread of it from within itself is a cycle).
type Fragments<'d> = HashMap<&'d str, Option<Cost>>;

/// Refuses `document` when, fragments expanded, it exceeds `limits`: more
/// selections than the complexity limit (`QUERY_TOO_COMPLEX`), more aliases
/// (`TOO_MANY_ALIASES`), deeper fields or nesting (`QUERY_TOO_DEEP`), or more
/// directives on one selection (`QUERY_TOO_COMPLEX`). Fragment cycles and unused
/// fragments, which async-graphql's validation would refuse after walking them,
/// are refused here (`GRAPHQL_VALIDATION_FAILED`). Linear in the document: each
/// fragment is counted once, however often it is spread; a document without
/// fragments allocates nothing.
pub fn measure(document: &ExecutableDocument, limits: &QueryLimits) -> ServerResult<()> {
    let mut fragments = Fragments::new();
    let mut total = Cost::default();
    for (_, operation) in document.operations.iter() {
        let operation = &operation.node;
        let directives = operation.directives.len()
            + operation
                .variable_definitions
                .iter()
                .map(|v| directives_allowed(v.node.directives.len(), "a variable", limits))
                .sum::<ServerResult<usize>>()?;
        directives_allowed(operation.directives.len(), "an operation", limits)?;
        let cost = selection_set(
            document,
            &operation.selection_set.node,
            0,
            limits,
            &mut fragments,
        )?;
        total.add(cost);
        total.selections = total.selections.saturating_add(directives);
        total.depth = total.depth.max(cost.depth);
        total.nesting = total.nesting.max(cost.nesting);
    }
    if let Some(unused) = document
        .fragments
        .keys()
        .find(|name| !fragments.contains_key(name.as_str()))
    {
        return Err(coded(
            format!("fragment \"{unused}\" is never used"),
            VALIDATION_FAILED,
        ));
    }
    if total.aliases > limits.max_aliases {
        return Err(coded(
            format!(
                "the query uses {} aliases, fragments expanded; the limit is {}",
                total.aliases, limits.max_aliases
            ),
            codes::TOO_MANY_ALIASES,
        ));
    }
    if total.introspection > MAX_INTROSPECTION {
        return Err(coded(
            format!(
                "the query runs {} introspection fields (`__schema`, `__type`), fragments \
                 expanded; the limit is {MAX_INTROSPECTION}",
                total.introspection
            ),
            codes::QUERY_TOO_COMPLEX,
        ));
    }
    if total.selections > limits.max_complexity {
        return Err(coded(
            format!(
                "the query's complexity is {}, fragments expanded; the limit is {}",
                total.selections, limits.max_complexity
            ),
            codes::QUERY_TOO_COMPLEX,
        ));
    }
    if total.nesting > MAX_NESTING {
        // A fragment counted where it was first spread may be spread again deeper.
        return Err(too_nested());
    }
    if total.depth > limits.max_depth {
        return Err(coded(
            format!(
                "the query is nested {} levels deep; the limit is {}",
                total.depth, limits.max_depth
            ),
            codes::QUERY_TOO_DEEP,
        ));
    }
    Ok(())
}

fn too_nested() -> ServerError {
    coded(
        format!("the query nests selections and fragments more than {MAX_NESTING} levels deep"),
        codes::QUERY_TOO_DEEP,
    )
}

fn directives_allowed(count: usize, on: &str, limits: &QueryLimits) -> ServerResult<usize> {
    if count > limits.max_directives {
        return Err(coded(
            format!(
                "{on} carries {count} directives; the limit is {}",
                limits.max_directives
            ),
            codes::QUERY_TOO_COMPLEX,
        ));
    }
    Ok(count)
}

/// The cost of `set`, found `nesting` levels below its operation's root.
fn selection_set<'d>(
    document: &'d ExecutableDocument,
    set: &'d SelectionSet,
    nesting: usize,
    limits: &QueryLimits,
    fragments: &mut Fragments<'d>,
) -> ServerResult<Cost> {
    if nesting > MAX_NESTING {
        return Err(too_nested());
    }
    let mut cost = Cost::default();
    for item in &set.items {
        let (directives, inner) = match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                let inner = if field.selection_set.node.items.is_empty() {
                    Cost::default()
                } else {
                    let inner = selection_set(
                        document,
                        &field.selection_set.node,
                        nesting + 1,
                        limits,
                        fragments,
                    )?;
                    Cost {
                        nesting: inner.nesting + 1,
                        ..inner
                    }
                };
                cost.aliases = cost
                    .aliases
                    .saturating_add(usize::from(field.alias.is_some()));
                cost.introspection = cost.introspection.saturating_add(usize::from(matches!(
                    field.name.node.as_str(),
                    "__schema" | "__type"
                )));
                cost.depth = cost.depth.max(inner.depth + 1);
                (field.directives.len(), inner)
            }
            Selection::InlineFragment(fragment) => {
                let fragment = &fragment.node;
                let inner = selection_set(
                    document,
                    &fragment.selection_set.node,
                    nesting + 1,
                    limits,
                    fragments,
                )?;
                cost.depth = cost.depth.max(inner.depth);
                (
                    fragment.directives.len(),
                    Cost {
                        nesting: inner.nesting + 1,
                        ..inner
                    },
                )
            }
            Selection::FragmentSpread(spread) => {
                let spread = &spread.node;
                let inner = match document.fragments.get(&spread.fragment_name.node) {
                    Some(definition) => {
                        let inner = fragment(
                            document,
                            &spread.fragment_name.node,
                            definition,
                            nesting,
                            limits,
                            fragments,
                        )?;
                        Cost {
                            nesting: inner.nesting + 1,
                            ..inner
                        }
                    }
                    // Unknown fragments are validation's to report.
                    None => Cost::default(),
                };
                cost.depth = cost.depth.max(inner.depth);
                (spread.directives.len(), inner)
            }
        };
        let directives = directives_allowed(directives, "a selection", limits)?;
        cost.add(inner);
        cost.selections = cost.selections.saturating_add(1 + directives);
        cost.nesting = cost.nesting.max(inner.nesting);
    }
    Ok(cost)
}

/// The cost of the fragment `name`, counted on its first spread and remembered.
fn fragment<'d>(
    document: &'d ExecutableDocument,
    name: &'d Name,
    definition: &'d Positioned<FragmentDefinition>,
    nesting: usize,
    limits: &QueryLimits,
    fragments: &mut Fragments<'d>,
) -> ServerResult<Cost> {
    match fragments.get(name.as_str()) {
        Some(Some(cost)) => return Ok(*cost),
        Some(None) => {
            return Err(coded(
                format!("fragment \"{name}\" spreads itself, directly or through other fragments"),
                VALIDATION_FAILED,
            ));
        }
        None => {}
    }
    fragments.insert(name.as_str(), None);
    let definition = &definition.node;
    let directives = directives_allowed(definition.directives.len(), "a fragment", limits)?;
    let mut cost = selection_set(
        document,
        &definition.selection_set.node,
        nesting + 1,
        limits,
        fragments,
    )?;
    cost.selections = cost.selections.saturating_add(directives);
    fragments.insert(name.as_str(), Some(cost));
    Ok(cost)
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
        codes::OPERATION_NOT_FOUND
    } else if err.message.starts_with("Operation name required") {
        codes::OPERATION_NAME_REQUIRED
    } else if err.path.is_empty() {
        VALIDATION_FAILED
    } else {
        // Resolver errors come from AppError and carry a code; what is left are
        // arguments that failed to convert, i.e. the caller's input.
        codes::BAD_USER_INPUT
    };
    *err = with_code(std::mem::replace(err, ServerError::new("", None)), code);
}

/// Limits for unit tests: the server's defaults.
#[cfg(test)]
pub(crate) const TEST_LIMITS: QueryLimits = QueryLimits {
    max_depth: 15,
    max_complexity: 5000,
    max_aliases: 100,
    max_query_bytes: 256 * 1024,
    max_directives: 16,
    max_nodes: 100_000,
    max_variable_values: 100_000,
    max_variables_bytes: 4 * 1024 * 1024,
    query_timeout: None,
    max_response_bytes: 0,
};

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueryLimits = TEST_LIMITS;

    fn code(query: &str) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).unwrap();
        measure(&document, &LIMITS).err().map(|err| {
            err.extensions
                .and_then(|ext| ext.get("code").cloned())
                .map(|code| code.to_string())
                .unwrap_or_default()
        })
    }

    #[test]
    fn the_record_of_validations_stays_within_its_bounds() {
        let mut record = Record::default();
        let result = ValidationResult {
            cache_control: Default::default(),
            complexity: 1,
            depth: 1,
        };
        let padding = " ".repeat(MAX_VALIDATED_BYTES - 16);
        for i in 0..3 * MAX_VALIDATED {
            // Long queries, and many operation names for one.
            let (query, operation_name) = if i % 2 == 0 {
                (format!("{{ a{i} }}{padding}"), None)
            } else {
                ("{ a }".to_owned(), Some(format!("O{i}")))
            };
            let remembered = Remembered {
                operation_name,
                result,
                arguments: Arc::default(),
            };
            record.remember(query, remembered);
            assert!(record.entries <= MAX_VALIDATED);
            assert!(record.bytes <= MAX_VALIDATED_TOTAL);
            assert_eq!(
                record.queries.values().map(Vec::len).sum::<usize>(),
                record.entries
            );
            assert!(
                record
                    .queries
                    .values()
                    .all(|operations| operations.len() <= MAX_OPERATIONS_PER_QUERY)
            );
        }
    }

    #[test]
    fn each_fragment_is_counted_once_however_often_it_is_spread() {
        // 2^60 selections, counted in 60 steps.
        let mut query = String::from("{ ...F0 }");
        for i in 0..60 {
            query.push_str(&format!(
                " fragment F{i} on Q {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        query.push_str(" fragment F60 on Q { a }");
        assert_eq!(code(&query).as_deref(), Some("\"QUERY_TOO_COMPLEX\""));
    }

    #[test]
    fn depth_and_aliases_count_through_fragments() {
        let cost = |query: &str| {
            let document = async_graphql::parser::parse_query(query).unwrap();
            let mut fragments = Fragments::new();
            let (_, operation) = document.operations.iter().next().unwrap();
            selection_set(
                &document,
                &operation.node.selection_set.node,
                0,
                &LIMITS,
                &mut fragments,
            )
            .unwrap()
        };
        let spread = cost("{ a { ...F ...F } } fragment F on T { x: b { c } ... on T { d } }");
        assert_eq!(spread.depth, 3);
        assert_eq!(spread.aliases, 2);
        // a, 2 × (spread, b, c, inline fragment, d)
        assert_eq!(spread.selections, 11);
        assert_eq!(spread.nesting, 3);
        assert_eq!(code("{ a { ...F } } fragment F on T { b }"), None);
    }

    #[test]
    fn cycles_and_unused_fragments_are_refused() {
        let validation = Some(format!("\"{VALIDATION_FAILED}\""));
        assert_eq!(
            code("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A ...A }"),
            validation
        );
        assert_eq!(code("{ a } fragment U on Q { a }"), validation);
    }

    #[test]
    fn bracket_nesting_is_counted_outside_strings_and_comments() {
        let deep = |n: usize| format!("{{ a(x: {}1{}) }}", "[".repeat(n), "]".repeat(n));
        assert!(check_text(&deep(MAX_TEXT_NESTING - 3), &LIMITS).is_ok());
        let refused = check_text(&deep(MAX_TEXT_NESTING), &LIMITS).unwrap_err();
        assert_eq!(
            refused.extensions.unwrap().get("code").unwrap().to_string(),
            "\"QUERY_TOO_DEEP\""
        );
        let brackets = "[".repeat(1000);
        for quoted in [
            format!("{{ a(x: \"{brackets}\\\"{brackets}\") }}"),
            format!("{{ a(x: \"\"\"{brackets}\\\"\"\"{brackets}\"\"\") }}"),
            format!("{{ a # {brackets}\n b }}"),
        ] {
            assert!(check_text(&quoted, &LIMITS).is_ok(), "{quoted}");
        }
    }

    #[test]
    fn the_text_scan_counts_selections_and_aliases_as_written() {
        let query = "query Q($v: In = {a: 1}) @d { a b: c(x: {y: {z: [1]}}, w: \"{ s t }\") \
                     d @x(if: $v) ...F ... on T { e } } fragment F on T { f } # g h";
        let with = |max_complexity, max_aliases| {
            check_text(
                query,
                &QueryLimits {
                    max_complexity,
                    max_aliases,
                    ..LIMITS
                },
            )
            .err()
            .and_then(|err| err.extensions?.get("code").map(|code| code.to_string()))
        };
        // a, b, d, @x, ...F, ... on T, e, f
        assert_eq!(with(8, 1), None);
        assert_eq!(with(7, 1).as_deref(), Some("\"QUERY_TOO_COMPLEX\""));
        assert_eq!(with(8, 0).as_deref(), Some("\"TOO_MANY_ALIASES\""));
        // What the scan counts, `measure` counts at least as often.
        let document = async_graphql::parser::parse_query(query).unwrap();
        let limits = QueryLimits {
            max_complexity: 7,
            ..LIMITS
        };
        assert!(measure(&document, &limits).is_err());
        let limits = QueryLimits {
            max_aliases: 0,
            ..LIMITS
        };
        assert!(measure(&document, &limits).is_err());
    }

    #[test]
    fn the_text_scan_refuses_what_is_too_large_before_counting() {
        let huge = format!("{{ {} }}", "a ".repeat(LIMITS.max_query_bytes));
        let refused = check_text(&huge, &LIMITS).unwrap_err();
        assert_eq!(
            refused.extensions.unwrap().get("code").unwrap().to_string(),
            "\"QUERY_TOO_LARGE\""
        );
    }

    #[test]
    fn directives_are_capped_wherever_they_stand() {
        let many = "@d ".repeat(17);
        for query in [
            format!("{{ a {many} }}"),
            format!("{{ ...F {many} }} fragment F on Q {{ a }}"),
            format!("{{ ... {many} {{ a }} }}"),
            format!("query Q {many} {{ a }}"),
            format!("query Q($v: Int {many}) {{ a }}"),
            format!("{{ ...F }} fragment F on Q {many} {{ a }}"),
        ] {
            assert_eq!(
                code(&query).as_deref(),
                Some("\"QUERY_TOO_COMPLEX\""),
                "{query}"
            );
        }
        assert_eq!(code(&format!("{{ a {} }}", "@d ".repeat(16))), None);
    }
}
