//! The registry of every `extensions.code` Nimbus answers with: its name, the HTTP
//! status a plain-HTTP endpoint answers it with (GraphQL itself answers 200 or, for a
//! request refused before execution, 400 or the status named here), and what it
//! means. Code elsewhere names these constants instead of writing codes out; the
//! README's "Error codes" table is printed from here (`nimbus errors print`) and a
//! test keeps the two equal.
//!
//! Naming: `SCREAMING_SNAKE`, the problem last where it is a state
//! (`USER_NOT_FOUND`, `TEAM_ALREADY_EXISTS`, `JWT_EXPIRED`, `FILE_TOO_LARGE`), and
//! `INVALID_<WHAT>` for a value that is wrong (`INVALID_ID`, `INVALID_EMAIL`), the
//! form most codes took. Codes clients already match keep their names even where
//! they read the other way round ([`NOT_CONVENTIONAL`]); a new code follows the rule.
//!
//! This module declares; it decides nothing about when a code is used.

use axum::http::StatusCode;

/// One declared code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The value of `extensions.code`.
    pub name: &'static str,
    /// The status a plain-HTTP endpoint answers this code with.
    pub status: u16,
    /// What the code means, as the README's table says it.
    pub meaning: &'static str,
    /// The code this one stands in for while clients move to it.
    pub alias_of: Option<&'static str>,
}

impl Code {
    /// [`Code::status`] as an HTTP status.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

macro_rules! alias_of {
    () => {
        None
    };
    ($target:ident) => {
        Some($target)
    };
}

/// Declares each code once: a `pub const NAME: &str = "NAME"` for call sites, and
/// its row in [`ALL`].
macro_rules! codes {
    ($($name:ident : $status:literal $(alias $target:ident)? => $meaning:literal;)*) => {
        $(
            #[doc = $meaning]
            pub const $name: &str = stringify!($name);
        )*
        /// Every declared code, in the order of the README's table.
        pub const ALL: &[Code] = &[$(Code {
            name: $name,
            status: $status,
            meaning: $meaning,
            alias_of: alias_of!($($target)?),
        }),*];
    };
}

codes! {
    // The request as a whole (plain HTTP and GraphQL-over-HTTP).
    BAD_REQUEST: 400 => "the body is not JSON, not a GraphQL request, or has no query";
    REQUEST_TOO_LARGE: 413 => "the body is over `NIMBUS_MAX_BODY_BYTES` (or a multipart limit)";
    REQUEST_TIMEOUT: 408 => "the body did not arrive within `NIMBUS_HTTP_BODY_TIMEOUT`; the connection closes";
    TOO_MANY_CONNECTIONS: 503 => "over a connection cap: sent with `Retry-After` without reading the request, then the connection closes";
    TOO_MANY_FILES: 413 => "a multipart request carries more files than `NIMBUS_MAX_UPLOAD_FILES`, or maps one file to more than 8 variable paths";
    CSRF_PREFLIGHT_REQUIRED: 400 => "a multipart or GET request without a header that forces a CORS preflight";
    UNSUPPORTED_MEDIA_TYPE: 415 => "a body that is not JSON, GraphQL or multipart";
    NOT_ACCEPTABLE: 406 => "the `Accept` header allows no media type Nimbus answers with";
    METHOD_NOT_ALLOWED: 405 => "a mutation over GET";
    NOT_FOUND: 404 => "no endpoint at this path";
    UNSUPPORTED_SUBPROTOCOL: 400 => "a WebSocket upgrade without `graphql-transport-ws` or `graphql-ws`";
    ORIGIN_NOT_ALLOWED: 403 => "a WebSocket upgrade from an origin the project does not allow";
    INVALID_MESSAGE: 400 => "a WebSocket message that is not graphql-ws (the socket closes)";
    // The GraphQL document.
    RESPONSE_TOO_LARGE: 400 => "a query's answer grew past `NIMBUS_GRAPHQL_MAX_RESPONSE_BYTES` (it was stopped), or a subscription's answer to one event over 2 MiB: select less";
    QUERY_TOO_LARGE: 400 => "the query text is over `NIMBUS_GRAPHQL_MAX_QUERY_BYTES`";
    GRAPHQL_PARSE_FAILED: 400 => "a syntax error";
    GRAPHQL_VALIDATION_FAILED: 400 => "unknown field, wrong argument or variable type, fragment cycle, …";
    QUERY_TOO_DEEP: 400 => "deeper than `NIMBUS_GRAPHQL_MAX_DEPTH`, counted with fragment spreads expanded";
    QUERY_TOO_COMPLEX: 400 => "over `NIMBUS_GRAPHQL_MAX_COMPLEXITY`, `NIMBUS_GRAPHQL_MAX_NODES` (pages nested in pages) or `NIMBUS_GRAPHQL_MAX_DIRECTIVES` (directives on one selection)";
    TOO_MANY_ALIASES: 400 => "more aliases than `NIMBUS_GRAPHQL_MAX_ALIASES`";
    VARIABLES_TOO_LARGE: 400 => "the variables are over `NIMBUS_GRAPHQL_MAX_VARIABLE_VALUES` or `NIMBUS_GRAPHQL_MAX_VARIABLES_BYTES`, or the operation's uses of them, each a copy, over four times that";
    OPERATION_NOT_FOUND: 400 => "`operationName` names no operation of the document";
    OPERATION_NAME_REQUIRED: 400 => "the document has several operations and no `operationName`";
    BATCH_TOO_LARGE: 400 => "a batch longer than `NIMBUS_GRAPHQL_MAX_BATCH`";
    BATCHING_DISABLED: 400 => "a batch while `NIMBUS_GRAPHQL_MAX_BATCH` is 0";
    SUBSCRIPTION_OVER_HTTP: 400 => "a subscription sent over HTTP; use the WebSocket";
    TOO_MANY_SUBSCRIPTIONS: 400 => "over the subscriptions a socket, client or server may hold, in number, (per socket) in the bytes their queries and variables keep, or (per client) in the text their filters read of each change";
    SUBSCRIBER_TOO_SLOW: 503 => "the socket did not read its events in time and is closed (code 4008)";
    // Who may do what.
    UNAUTHENTICATED: 401 => "the operation needs an API key or a signed-in user";
    INVALID_API_KEY: 401 => "the API key is malformed, unknown, revoked or for another project";
    API_KEY_EXPIRED: 401 => "the API key's `expiresAt` has passed";
    SCOPE_MISSING: 403 => "the API key lacks the scope in `extensions.scope`";
    PERMISSION_DENIED: 403 => "the caller may not do this";
    OPERATION_NOT_ALLOWED: 400 => "well formed but refused by a rule (e.g. deleting the `default` project)";
    RATE_LIMITED: 429 => "too many attempts; retry after `extensions.retryAfter` seconds";
    // Sign-in.
    INVALID_CREDENTIALS: 401 => "wrong email or password (never says which)";
    INVALID_SESSION: 401 => "the session secret is malformed, unknown, signed out, or for another project";
    SESSION_EXPIRED: 401 => "the session outlived its lifetime; sign in again";
    USER_BLOCKED: 401 => "the user was blocked by the project's administrators";
    INVALID_JWT: 401 => "the JWT is malformed, forged, for another project, or its session was signed out";
    JWT_EXPIRED: 401 => "the JWT outlived its 15 minutes; ask for a new one";
    AUTH_METHOD_DISABLED: 403 => "the project turned this sign-in method off";
    SESSION_ALREADY_EXISTS: 409 => "the caller is signed in already; sign out before signing in again";
    EMAIL_ALREADY_VERIFIED: 409 => "the account's email is verified already: no verification is sent";
    MFA_REQUIRED: 401 => "the session must pass its second factor first";
    INVALID_MFA_CODE: 400 => "the TOTP or recovery code is wrong or already used";
    AUTHENTICATOR_ALREADY_EXISTS: 409 => "the account already has a verified authenticator";
    INVALID_TOKEN: 400 => "a mailed secret or invitation secret is wrong, used, or for another user";
    TOKEN_EXPIRED: 400 => "the link or code has expired; ask for a new one";
    INVALID_REDIRECT_URL: 400 => "a redirect URL on no host the project allows";
    // OAuth2 (also as `?error=` on the failure URL once it is known).
    INVALID_OAUTH2_PROVIDER: 400 => "the provider's settings are incomplete or wrong";
    OAUTH2_PROVIDER_NOT_FOUND: 404 => "the project has no provider of that name";
    OAUTH2_STATE_INVALID: 400 => "the `state` of the redirect is unknown, used or expired";
    OAUTH2_NONCE_INVALID: 400 => "the provider's ID token does not carry the sign-in's nonce";
    OAUTH2_DENIED: 400 => "the provider did not authorize the sign-in";
    OAUTH2_PROVIDER_FAILED: 502 => "the provider answered wrongly; its answer is logged, not sent";
    OAUTH2_PROVIDER_PRIVATE: 502 => "a provider endpoint (configured, or named by its discovery document) resolves to a private, loopback or reserved address; not asked (unless `NIMBUS_OAUTH2_ALLOW_PRIVATE`)";
    OAUTH2_EMAIL_IN_USE: 400 => "a user has this email and the provider has not verified it";
    PUBLIC_URL_NOT_CONFIGURED: 400 => "OAuth2 sign-in needs `NIMBUS_PUBLIC_URL`";
    IDENTITY_NOT_FOUND: 404 => "the account (for a server: the project) has no such linked identity";
    IDENTITY_ALREADY_EXISTS: 409 => "this provider account is linked to a user already";
    // Accounts, users and teams.
    INVALID_EMAIL: 400 => "not an email address";
    INVALID_PHONE: 400 => "not an E.164 phone number";
    PASSWORD_TOO_SHORT: 400 => "the password is shorter than the project allows";
    PASSWORD_TOO_LONG: 400 => "the password is longer than 256 bytes";
    PASSWORD_TOO_COMMON: 400 => "the password is in the list of common passwords";
    PASSWORD_PERSONAL_DATA: 400 => "the password contains the user's name, email or phone";
    PASSWORD_RECENTLY_USED: 400 => "the password is one of the user's recent ones";
    PREFS_TOO_LARGE: 400 => "the preferences are over 64 KiB, or nested more than 32 deep";
    INVALID_PASSWORD_HASH: 400 => "an imported password hash that does not parse";
    USER_NOT_FOUND: 404 => "no user has that id (or email)";
    USER_ALREADY_EXISTS: 409 => "a user has that id or email already";
    SESSION_NOT_FOUND: 404 => "no session of the user has that id";
    TEAM_NOT_FOUND: 404 => "no team has that id";
    TEAM_ALREADY_EXISTS: 409 => "a team has that id already";
    MEMBERSHIP_NOT_FOUND: 404 => "no membership has that id";
    MEMBERSHIP_ALREADY_EXISTS: 409 => "the user is a member or invited already";
    TEAM_INVITE_MISMATCH: 403 => "an invitation link used while signed in as someone other than its invitee: sign out to accept it";
    // Projects and API keys.
    PROJECT_NOT_FOUND: 404 => "the `X-Nimbus-Project` header (or id) names no project";
    PROJECT_ALREADY_EXISTS: 409 => "a project has that id already";
    API_KEY_NOT_FOUND: 404 => "no API key has that id";
    INVALID_SCOPE: 400 => "an API key scope that does not exist";
    // Console administrators.
    ADMIN_NOT_FOUND: 404 => "no console administrator has that email";
    ADMIN_ALREADY_EXISTS: 409 => "a console administrator has that email already";
    AUTHENTICATOR_NOT_FOUND: 404 => "the console administrator has no authenticator to remove";
    // Ids, cursors and permissions.
    BAD_USER_INPUT: 400 => "an input value is wrong; `extensions.field` names it";
    INVALID_ID: 400 => "an id that is empty, too long or has characters outside `a-z A-Z 0-9 . - _`";
    INVALID_CURSOR: 400 => "a pagination cursor that is malformed or for another list";
    CURSOR_INVALID: 400 alias INVALID_CURSOR => "alias of `INVALID_CURSOR` while clients move to it";
    INVALID_ROLE: 400 => "a permission role that does not parse";
    INVALID_PERMISSION: 400 => "a permission that does not parse, or too many of them";
    // Realtime.
    INVALID_CHANNEL: 400 => "a channel name that does not parse, or a presence channel that is not one document or file";
    PRESENCE_TOO_LARGE: 400 => "a presence state over `NIMBUS_PRESENCE_MAX_STATE_BYTES`";
    TOO_MANY_PRESENCES: 400 => "over the presences a client, user or channel may hold";
    TOO_MANY_TEAMS: 400 => "the user is a confirmed member of as many teams as `NIMBUS_TEAMS_MAX_PER_USER` allows";
    RESYNC_REQUIRED: 410 => "a realtime cursor from before what the event log still keeps (`NIMBUS_EVENT_RETENTION`): re-query, then subscribe without it";
    // Databases: structure.
    DATABASE_NOT_FOUND: 404 => "no database has that id";
    DATABASE_ALREADY_EXISTS: 409 => "a database has that id already";
    COLLECTION_NOT_FOUND: 404 => "no collection has that id";
    COLLECTION_ALREADY_EXISTS: 409 => "a collection has that id already";
    RELATED_COLLECTION_NOT_FOUND: 404 => "a relationship names no collection of the database";
    COLLECTION_REFERENCED: 400 => "other collections' relationships point to this collection";
    COLLECTION_CHANGED: 409 => "the collection changed while the request ran; retry";
    FUNCTION_CHANGED: 409 => "the function's scopes changed while the request ran; retry";
    ATTRIBUTE_NOT_FOUND: 404 => "the collection has no attribute with that key";
    ATTRIBUTE_INVALID: 400 => "an attribute definition that is wrong (kind, size, default, relation)";
    ATTRIBUTE_ALREADY_EXISTS: 409 => "the collection (or, for a two-way relationship, the related one) has a field with that key already (keys are compared ignoring case)";
    ATTRIBUTE_LIMIT_EXCEEDED: 400 => "the attributes would make a row wider than the database allows, or be more than 1,000";
    INDEX_NOT_FOUND: 404 => "the collection has no index with that key";
    INDEX_INVALID: 400 => "an index definition that is wrong";
    INDEX_ALREADY_EXISTS: 409 => "the collection has an index with that key already (compared ignoring case)";
    TOO_MANY_LINKS: 400 => "a request would set more links than one request may (10,000 in all: many-to-many links, and references set from a relationship's other side)";
    INDEX_LIMIT_EXCEEDED: 400 => "the collection's table holds as many indexes as the database allows";
    INDEX_DUPLICATE_VALUES: 400 => "documents already hold duplicate values for a unique index";
    INVALID_GRAPHQL_NAME: 400 => "a collection or attribute key that is not a usable GraphQL name";
    GRAPHQL_NAME_TAKEN: 400 => "the key's GraphQL name is taken by another type or field";
    // Databases: documents and queries.
    DOCUMENT_NOT_FOUND: 404 => "no document has that id, or the caller may not read it";
    DOCUMENT_ALREADY_EXISTS: 409 => "a document has that id already";
    DOCUMENT_NOT_UNIQUE: 409 => "another document holds the same values for a unique index";
    DOCUMENT_CHANGED: 409 => "the document changed after the `ifUpdatedAt` the request gave";
    DOCUMENT_REFERENCED: 400 => "a restricting relationship still points to this document";
    RELATED_DOCUMENT_NOT_FOUND: 400 => "a relationship value names no document the caller may read";
    TOO_MANY_DOCUMENTS: 400 => "over the documents one request may write, or its deletes may remove or change through their relationships (10,000)";
    VALUE_INVALID: 400 => "a value of the wrong type or format for its attribute";
    VALUE_REQUIRED: 400 => "a required attribute without a value";
    VALUE_OUT_OF_RANGE: 400 => "a value outside its attribute's size, min or max";
    FILTER_INVALID: 400 => "a filter or order that does not apply to its field";
    FILTER_UNKNOWN_FIELD: 400 => "a filter or order on a field the collection does not have";
    FILTER_TOO_COMPLEX: 400 => "a filter deeper or wider than allowed, or a subscription's filter that would read more text of each change than allowed";
    QUERY_INVALID: 400 => "an Appwrite query string that does not parse";
    SEARCH_NEEDS_FULLTEXT_INDEX: 400 => "`search` on an attribute without a fulltext index";
    // Databases: transactions of document writes.
    TRANSACTION_NOT_FOUND: 404 => "no transaction has that id, or it is not the caller's";
    TRANSACTION_NOT_READY: 409 => "the transaction was committed, rolled back or failed already";
    TRANSACTION_EXPIRED: 410 => "the transaction's time to live has passed";
    TRANSACTION_LIMIT_EXCEEDED: 400 => "over a transaction's 100 operations, 20 bulk updates and deletes, 1,000 documents of bulk creates and upserts or 1 MiB, or an owner's 50 pending transactions";
    TRANSACTION_CONFLICT: 409 => "the transaction changed while this request staged, committed or rolled it back";
    // Storage.
    BUCKET_NOT_FOUND: 404 => "no bucket has that id";
    BUCKET_ALREADY_EXISTS: 409 => "a bucket has that id already";
    FILE_NOT_FOUND: 404 => "no file has that id, or the caller may not read it";
    FILE_ALREADY_EXISTS: 409 => "a file has that id already";
    FILE_TOO_LARGE: 413 => "the file is over its bucket's or the server's size limit";
    FILE_EXTENSION_NOT_ALLOWED: 400 => "the bucket does not take files with this extension";
    FILE_INFECTED: 400 => "the virus scanner found something; nothing was kept";
    FILE_UNREADABLE: 500 => "stored bytes do not decode (corrupt, or sealed under another server secret)";
    STORAGE_FULL: 507 => "the file store has no room left; nothing of the write was kept";
    ANTIVIRUS_UNAVAILABLE: 502 => "the virus scanner did not answer; nothing was kept";
    INVALID_FILE_TOKEN: 400 => "a signed file URL that is not genuine, is for another file, or whose maker's session or key no longer holds";
    FILE_TOKEN_EXPIRED: 400 => "a signed file URL that has expired";
    RANGE_NOT_SATISFIABLE: 416 => "a `Range` outside the file, or malformed";
    UPLOAD_NOT_FOUND: 404 => "no pending upload has that id";
    UPLOAD_CHUNK_INVALID: 400 => "a chunk whose `Content-Range` or size does not fit the upload";
    UPLOAD_CHUNK_OUT_OF_ORDER: 409 => "a chunk that does not start where the upload stands";
    UPLOAD_COMPLETE: 409 => "the file is complete; it takes no more chunks";
    UPLOAD_INTERRUPTED: 400 => "the upload broke off before the file was whole";
    TOO_MANY_PENDING_UPLOADS: 400 => "over the unfinished uploads (count or bytes) the server holds";
    INVALID_PREVIEW_PARAMETER: 400 => "a preview parameter out of range or of the wrong form";
    IMAGE_TOO_LARGE: 400 => "an image over `NIMBUS_PREVIEW_MAX_PIXELS`, refused before it is decoded";
    TRANSFORMATIONS_DISABLED: 403 => "a client asked for a preview in a bucket whose `transformations` are off";
    IMAGE_CORRUPT: 400 => "the file does not decode as the image it claims to be";
    PREVIEW_FAILED: 400 => "the preview could not be encoded";
    // Avatars.
    INVALID_AVATAR_URL: 400 => "an image proxy URL that is not absolute http(s), or carries credentials (every redirect is checked too)";
    AVATAR_FETCH_FAILED: 404 => "the remote image was not found: its host does not resolve or is private, loopback or reserved (every redirect is checked too), no answer, an error status, too many redirects, too large, too slow, or not an image";
    INVALID_AVATAR_PARAMETER: 400 => "an avatar parameter (code, text, size, margin, output, ...) unknown, out of range or of the wrong form";
    AVATARS_NOT_PUBLIC: 401 => "the project turned public avatars off (`avatarsPublic`): present a signed-in user's session or an API key";
    // Webhooks and background jobs.
    WEBHOOK_NOT_FOUND: 404 => "no webhook has that id";
    WEBHOOK_ALREADY_EXISTS: 409 => "a webhook has that id already";
    INVALID_WEBHOOK_URL: 400 => "a webhook URL that is not http(s), carries credentials, is over 2048 bytes, or names a private, loopback or reserved address (unless `NIMBUS_WEBHOOKS_ALLOW_PRIVATE`)";
    INVALID_WEBHOOK_EVENTS: 400 => "no event pattern, more than 100, or one that names no Appwrite event";
    JOB_NOT_FOUND: 404 => "no job of the project has that id";
    JOB_NOT_DEAD: 400 => "only a dead job can be retried";
    // Usage.
    USAGE_RANGE_TOO_LARGE: 400 => "a `usage` range with more points than allowed at its interval: ask for a shorter range or a coarser interval";
    // Functions.
    FUNCTION_NOT_FOUND: 404 => "no function of the project has that id";
    FUNCTION_ALREADY_EXISTS: 409 => "a function has that id already";
    FUNCTION_DISABLED: 403 => "the function is disabled: it runs for no one";
    INVALID_FUNCTION_EVENTS: 400 => "more than 100 event patterns, or one that names no Appwrite event";
    INVALID_SCHEDULE: 400 => "a schedule that is not a CRON expression of 5 fields (or 6, seconds first) or a shorthand such as `@daily`";
    VARIABLE_NOT_FOUND: 404 => "the function has no variable with that key";
    VARIABLE_ALREADY_EXISTS: 409 => "the function has a variable with that key already";
    INVALID_VARIABLE: 400 => "a variable key that is not 1-128 of `A-Za-z0-9_`, or a value (or all values together) over the size limit";
    DEPLOYMENT_NOT_FOUND: 404 => "no deployment of the function has that id, or the function has no active deployment";
    DEPLOYMENT_INVALID: 400 => "uploaded code that does not compile (module and line in the message), is not JavaScript, lacks the entrypoint, or breaks the archive's limits";
    EXECUTION_NOT_FOUND: 404 => "no execution of the function has that id, or the caller may not read it";
    TOO_MANY_EXECUTIONS: 429 => "every sandbox thread is busy and the queue is full (`NIMBUS_FUNCTIONS_QUEUE`), the project holds its share of them (`NIMBUS_FUNCTIONS_PER_PROJECT`), or it has `NIMBUS_FUNCTIONS_MAX_WAITING` asynchronous executions waiting (`NIMBUS_FUNCTIONS_MAX_SCHEDULED` scheduled ones, 100 of a user's); retry after `extensions.retryAfter` seconds";
    // How an execution failed: its `failure`, and the plain HTTP route's answer.
    EXECUTION_THREW: 500 => "the function threw, or its promise rejected";
    EXECUTION_CPU_LIMIT: 500 => "the function's code ran longer than its timeout";
    EXECUTION_TIMEOUT: 504 => "the execution, waits included, took longer than its timeout";
    EXECUTION_MEMORY_LIMIT: 500 => "the function used more memory than its limit";
    EXECUTION_STACK_OVERFLOW: 500 => "the function recursed too deep";
    EXECUTION_NEVER_SETTLED: 500 => "the function's promise can never settle";
    EXECUTION_RESPONSE_TOO_LARGE: 502 => "the function's response is over the size limit";
    EXECUTION_INVALID_RESPONSE: 502 => "the function returned something other than a `res.*` result, or could not load";
    EXECUTION_CRASHED: 500 => "the engine itself failed, not the function: the sandbox thread was replaced";
    // The server's side: details only in its log.
    OPERATION_TIMEOUT: 408 => "a query ran past `NIMBUS_GRAPHQL_QUERY_TIMEOUT_MS` and was stopped: ask for less at once";
    DATABASE_TIMEOUT: 408 => "a statement of the request ran past `NIMBUS_DATABASE_STATEMENT_TIMEOUT_MS` and was stopped: narrow the query (an indexed filter, fewer values, a smaller page)";
    SERVICE_UNAVAILABLE: 503 => "a dependency is down, or the server has as much of this work as it takes";
    INTERNAL: 500 => "anything unexpected; the cause is logged, never sent";
}

/// Codes named before the convention settled, kept because clients match them:
/// they put `INVALID` last.
pub const NOT_CONVENTIONAL: &[&str] = &[
    OAUTH2_STATE_INVALID,
    OAUTH2_NONCE_INVALID,
    CURSOR_INVALID,
    ATTRIBUTE_INVALID,
    INDEX_INVALID,
    VALUE_INVALID,
    FILTER_INVALID,
    QUERY_INVALID,
    UPLOAD_CHUNK_INVALID,
    DEPLOYMENT_INVALID,
];

/// The declared code called `name`.
pub fn get(name: &str) -> Option<&'static Code> {
    ALL.iter().find(|code| code.name == name)
}

/// The HTTP status of `name`; an undeclared name is a server fault.
pub fn http_status(name: &str) -> StatusCode {
    get(name).map_or(StatusCode::INTERNAL_SERVER_ERROR, Code::http_status)
}

/// The README's "Error codes" table.
pub fn markdown_table() -> String {
    let mut table = String::from("| code | HTTP | meaning |\n|---|---|---|\n");
    for code in ALL {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.name, code.status, code.meaning
        ));
    }
    table
}

#[cfg(test)]
mod tests;
