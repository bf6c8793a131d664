//! `AppError`, the one error type of Nimbus, and how it reaches a client: every
//! GraphQL error carries a stable `extensions.code`, declared with its HTTP status
//! and meaning in [`codes`]; database and internal failures are logged with their
//! cause and reach the client only as a generic message.

pub mod codes;

use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::ErrorExtensions;

/// Result of anything that can fail with an [`AppError`].
pub type AppResult<T> = Result<T, AppError>;

/// Everything that can go wrong while serving a request.
///
/// It deliberately does not implement `Display`: async-graphql turns any `Display`
/// error into a client message, which would drop the code (and, for a raw cause,
/// leak it). [`AppError::to_graphql`] is the only way out.
#[derive(Debug)]
pub enum AppError {
    /// `UNAUTHENTICATED`: the operation needs an API key or a signed-in user.
    Unauthenticated,
    /// `INVALID_API_KEY`: the key is malformed, unknown, revoked or for another project.
    InvalidApiKey,
    /// `API_KEY_EXPIRED`: the key's `expiresAt` has passed.
    ApiKeyExpired,
    /// `INVALID_CREDENTIALS`: wrong email or password (never says which).
    InvalidCredentials,
    /// `INVALID_SESSION`: the session secret is malformed, unknown, signed out, or for
    /// another project.
    InvalidSession,
    /// `SESSION_EXPIRED`: the session outlived its lifetime; sign in again.
    SessionExpired,
    /// `USER_BLOCKED`: the user was blocked by the project's administrators.
    UserBlocked,
    /// `MFA_REQUIRED`: the session must pass its second factor first.
    MfaRequired,
    /// `INVALID_JWT`: the JWT is malformed, forged, for another project, or its session
    /// was signed out.
    InvalidJwt,
    /// `JWT_EXPIRED`: the JWT outlived its 15 minutes; ask for a new one.
    JwtExpired,
    /// `SCOPE_MISSING`: the API key lacks a scope the operation needs.
    ScopeMissing { scope: String },
    /// `PERMISSION_DENIED`: the caller may not do this.
    PermissionDenied { reason: String },
    /// `PROJECT_NOT_FOUND`: the `X-Nimbus-Project` header names no project.
    ProjectNotFound { id: String },
    /// `<WHAT>_NOT_FOUND`, e.g. `API_KEY_NOT_FOUND` for `what: "API key"`; `what` is
    /// the noun of the message, and [`codes`] declares the code it makes.
    NotFound { what: &'static str, id: String },
    /// `<WHAT>_ALREADY_EXISTS`, e.g. `PROJECT_ALREADY_EXISTS`; declared in [`codes`]
    /// like `NotFound`'s.
    Conflict { what: &'static str, id: String },
    /// The code given, one of [`codes`] (`INVALID_ID`, `INVALID_SCOPE`,
    /// `BAD_USER_INPUT`, ...): an input value is wrong; `field` names it.
    Invalid {
        code: &'static str,
        field: String,
        reason: String,
    },
    /// `AUTH_METHOD_DISABLED`: the project turned this sign-in method off.
    MethodDisabled { method: &'static str },
    /// `AVATARS_NOT_PUBLIC`: the project serves avatars only to signed-in users and
    /// API keys, and the request presents neither.
    AvatarsNotPublic,
    /// `OPERATION_NOT_ALLOWED`: the request is well formed but refused by a rule.
    NotAllowed(String),
    /// `RATE_LIMITED`: too many attempts; retry after the given seconds.
    RateLimited { retry_after: u64 },
    /// `SERVICE_UNAVAILABLE`: a dependency (database, bus) is down.
    Unavailable,
    /// `SERVICE_UNAVAILABLE`: the server has as much of this work running and
    /// queued as it is configured to take; retry after the given seconds.
    Busy { retry_after: u64 },
    /// `TOO_MANY_EXECUTIONS`: every sandbox thread is busy and the queue before them
    /// is full; retry after the given seconds.
    TooManyExecutions { retry_after: u64 },
    /// The code given, one of [`codes`] (`OAUTH2_PROVIDER_FAILED`, ...): a third-party service the
    /// request relies on answered wrongly; its full answer is logged, not sent.
    Upstream { code: &'static str, reason: String },
    /// `STORAGE_FULL`: the file store has no room left; nothing of the write was kept.
    StorageFull,
    /// `FILE_UNREADABLE`: stored bytes do not decode (corrupt, or sealed under another
    /// server secret); the cause is logged.
    FileUnreadable,
    /// `DATABASE_TIMEOUT`: a statement of the request ran past the statement
    /// deadline and the database stopped it (`db::deadline`).
    DatabaseTimeout,
    /// `INTERNAL`: a database failure; its cause is logged, never sent.
    Db(DbError),
    /// `INTERNAL`: anything unexpected; its cause is logged, never sent.
    Internal(anyhow::Error),
}

impl AppError {
    /// A bad value for `field` with the generic `BAD_USER_INPUT` code.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::Invalid {
            code: codes::BAD_USER_INPUT,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The message a client reads.
    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "authentication required".into(),
            AppError::InvalidApiKey => {
                "the API key is invalid, revoked, or not valid for this project".into()
            }
            AppError::ApiKeyExpired => "the API key has expired".into(),
            AppError::InvalidCredentials => "invalid email or password".into(),
            AppError::InvalidSession => {
                "the session is invalid, signed out, or not valid for this project".into()
            }
            AppError::SessionExpired => "the session has expired; sign in again".into(),
            AppError::UserBlocked => "this user is blocked".into(),
            AppError::MfaRequired => {
                "this session must pass the second factor first (updateMfaChallenge)".into()
            }
            AppError::InvalidJwt => "the JWT is invalid".into(),
            AppError::JwtExpired => "the JWT has expired".into(),
            AppError::ScopeMissing { scope } => format!("the API key lacks the `{scope}` scope"),
            AppError::PermissionDenied { reason } => format!("permission denied: {reason}"),
            AppError::ProjectNotFound { id } => format!("project `{id}` does not exist"),
            AppError::NotFound { what, id } => format!("{what} `{id}` does not exist"),
            AppError::Conflict { what, id } => format!("{what} `{id}` already exists"),
            AppError::Invalid { field, reason, .. } => format!("invalid `{field}`: {reason}"),
            AppError::MethodDisabled { method } => {
                format!("the {method} sign-in method is disabled for this project")
            }
            AppError::AvatarsNotPublic => {
                "this project serves avatars only to signed-in users and API keys".into()
            }
            AppError::NotAllowed(reason) => reason.clone(),
            AppError::RateLimited { retry_after } => {
                format!("too many requests; retry after {retry_after} s")
            }
            AppError::Unavailable => "a backing service is unavailable, try again shortly".into(),
            AppError::Busy { retry_after } => {
                format!("the server is busy; retry after {retry_after} s")
            }
            AppError::TooManyExecutions { retry_after } => {
                format!("too many executions are running or waiting; retry after {retry_after} s")
            }
            AppError::Upstream { reason, .. } => reason.clone(),
            AppError::StorageFull => "the file storage is full; nothing of this write was kept".into(),
            AppError::FileUnreadable => {
                "the stored file cannot be read back (corrupt, or stored under another server secret)".into()
            }
            AppError::DatabaseTimeout => "the query ran past the database's time limit and was \
                 stopped; narrow it with an indexed filter, fewer values or a smaller page"
                .into(),
            AppError::Db(_) | AppError::Internal(_) => "internal server error".into(),
        }
    }

    /// For the command line, where the operator may see the whole cause.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            AppError::Internal(cause) => cause,
            AppError::Db(cause) => anyhow::Error::new(cause),
            other => anyhow::anyhow!("{} ({})", other.message(), other.code()),
        }
    }

    /// The stable `extensions.code` of this error.
    pub fn code(&self) -> String {
        match self {
            AppError::NotFound { what, .. } => format!("{}_NOT_FOUND", screaming(what)),
            AppError::Conflict { what, .. } => format!("{}_ALREADY_EXISTS", screaming(what)),
            AppError::Invalid { code, .. } | AppError::Upstream { code, .. } => (*code).into(),
            fixed => fixed.fixed_code().unwrap_or(codes::INTERNAL).into(),
        }
    }

    /// The code of a variant that always has the same one.
    fn fixed_code(&self) -> Option<&'static str> {
        Some(match self {
            AppError::Unauthenticated => codes::UNAUTHENTICATED,
            AppError::InvalidApiKey => codes::INVALID_API_KEY,
            AppError::ApiKeyExpired => codes::API_KEY_EXPIRED,
            AppError::InvalidCredentials => codes::INVALID_CREDENTIALS,
            AppError::InvalidSession => codes::INVALID_SESSION,
            AppError::SessionExpired => codes::SESSION_EXPIRED,
            AppError::UserBlocked => codes::USER_BLOCKED,
            AppError::MfaRequired => codes::MFA_REQUIRED,
            AppError::InvalidJwt => codes::INVALID_JWT,
            AppError::JwtExpired => codes::JWT_EXPIRED,
            AppError::ScopeMissing { .. } => codes::SCOPE_MISSING,
            AppError::PermissionDenied { .. } => codes::PERMISSION_DENIED,
            AppError::ProjectNotFound { .. } => codes::PROJECT_NOT_FOUND,
            AppError::MethodDisabled { .. } => codes::AUTH_METHOD_DISABLED,
            AppError::AvatarsNotPublic => codes::AVATARS_NOT_PUBLIC,
            AppError::NotAllowed(_) => codes::OPERATION_NOT_ALLOWED,
            AppError::RateLimited { .. } => codes::RATE_LIMITED,
            AppError::Unavailable | AppError::Busy { .. } => codes::SERVICE_UNAVAILABLE,
            AppError::TooManyExecutions { .. } => codes::TOO_MANY_EXECUTIONS,
            AppError::StorageFull => codes::STORAGE_FULL,
            AppError::FileUnreadable => codes::FILE_UNREADABLE,
            AppError::DatabaseTimeout => codes::DATABASE_TIMEOUT,
            AppError::Db(_) | AppError::Internal(_) => codes::INTERNAL,
            AppError::NotFound { .. }
            | AppError::Conflict { .. }
            | AppError::Invalid { .. }
            | AppError::Upstream { .. } => return None,
        })
    }

    /// The HTTP status a plain-HTTP endpoint answers this error with: its code's, as
    /// [`codes`] declares it.
    pub fn http_status(&self) -> axum::http::StatusCode {
        codes::http_status(&self.code())
    }

    /// This error as a GraphQL error: message plus `extensions.code` (and details
    /// such as `field` or `retryAfter` where they help a client).
    pub fn to_graphql(&self) -> async_graphql::Error {
        match self {
            AppError::Db(cause) => tracing::error!(error = ?cause, "database error"),
            AppError::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            _ => {}
        }
        let code = self.code();
        let aliases = code_aliases(&code);
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if !aliases.is_empty() {
                ext.set("aliases", aliases);
            }
            match self {
                AppError::Invalid { field, .. } => ext.set("field", field.as_str()),
                AppError::ScopeMissing { scope } => ext.set("scope", scope.as_str()),
                AppError::RateLimited { retry_after }
                | AppError::Busy { retry_after }
                | AppError::TooManyExecutions { retry_after } => {
                    ext.set("retryAfter", *retry_after)
                }
                _ => {}
            }
        })
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.to_graphql()
    }
}

/// A bounded, printable excerpt of client input for an error message: at most 64
/// characters in backticks, anything but printable ASCII escaped (control
/// characters, bidirectional overrides and the like cannot reach a log or a UI raw).
pub fn shown(input: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("`");
    for (i, c) in input.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out.push('`');
    out
}

/// The former names of `code`, which errors carry in `extensions.aliases` so that
/// a client matching either keeps working while it moves: the registry's codes
/// declared as an alias of it.
pub fn code_aliases(code: &str) -> Vec<&'static str> {
    codes::ALL
        .iter()
        .filter(|former| former.alias_of == Some(code))
        .map(|former| former.name)
        .collect()
}

/// `API_KEY` from `"API key"`, `PROJECT` from `"project"`.
fn screaming(what: &str) -> String {
    what.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A database failure, classified so services can react to the cases that matter.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The statement expected a row and found none.
    #[error("row not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("unique constraint violated")]
    UniqueViolation,
    /// The statement ran past its deadline and the database stopped it.
    #[error("statement stopped at its deadline")]
    TimedOut,
    /// The database gave the transaction up for another's sake (a deadlock, a lock
    /// waited for too long, SQLite busy past its wait): nothing of it was kept, and
    /// the same request may succeed when tried again.
    #[error("transaction conflict: {0}")]
    Conflict(sqlx::Error),
    /// The pool could not hand out a connection in time (database down or overloaded).
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Anything else.
    #[error(transparent)]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        note_error(&err);
        match &err {
            sqlx::Error::RowNotFound => DbError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => DbError::UniqueViolation,
            _ if is_statement_timeout(&err) => DbError::TimedOut,
            _ if is_conflict(&err) => DbError::Conflict(err),
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                DbError::Unavailable(err)
            }
            _ => DbError::Other(err),
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                AppError::Unavailable
            }
            DbError::TimedOut => {
                tracing::warn!("a statement ran past the statement deadline and was stopped");
                AppError::DatabaseTimeout
            }
            DbError::Conflict(cause) => {
                tracing::warn!(error = %cause, "a transaction gave way to another; the client may retry");
                AppError::Busy { retry_after: 1 }
            }
            other => AppError::Db(other),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        AppError::Internal(err)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        DbError::from(err).into()
    }
}

/// MariaDB's error number for a statement stopped by `max_statement_time`.
const MARIADB_STATEMENT_TIMEOUT: u16 = 1969;

/// Whether `err` is a statement the database stopped at its deadline
/// (`db::deadline`): MariaDB's `max_statement_time`, or SQLite's interrupt.
pub fn is_statement_timeout(err: &sqlx::Error) -> bool {
    use sqlx::error::DatabaseError as _;
    let Some(db) = err.as_database_error() else {
        return false;
    };
    if let Some(mariadb) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mariadb.number() == MARIADB_STATEMENT_TIMEOUT;
    }
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(|sqlite| sqlite.code())
        .is_some_and(|code| code.parse() == Ok(libsqlite3_sys::SQLITE_INTERRUPT))
}

/// MariaDB's error numbers for a transaction rolled back as a deadlock's victim
/// and for a lock waited on past `innodb_lock_wait_timeout`.
const MARIADB_DEADLOCK: u16 = 1213;
const MARIADB_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// Whether `err` is the database giving a transaction up for another's sake:
/// a deadlock or a lock wait past its limit on MariaDB, `SQLITE_BUSY` or
/// `SQLITE_LOCKED` (any extended code) on SQLite.
pub fn is_conflict(err: &sqlx::Error) -> bool {
    use sqlx::error::DatabaseError as _;
    let Some(db) = err.as_database_error() else {
        return false;
    };
    if let Some(mariadb) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(
            mariadb.number(),
            MARIADB_DEADLOCK | MARIADB_LOCK_WAIT_TIMEOUT
        );
    }
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(|sqlite| sqlite.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| {
            matches!(
                code & 0xff,
                libsqlite3_sys::SQLITE_BUSY | libsqlite3_sys::SQLITE_LOCKED
            )
        })
}

/// Counts errors that may have broken connections; a connection lease (`db::lease`)
/// taken before the latest one is not reused. Kept here because every database
/// error passes through [`DbError::from`].
static BROKEN_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Records `err` if it may mean a broken connection (I/O, protocol, a crashed
/// SQLite worker): the connections in use now are closed when they are returned.
pub fn note_error(err: &sqlx::Error) {
    if matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) {
        BROKEN_EPOCH.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many errors so far may have broken connections.
pub fn broken_epoch() -> u64 {
    BROKEN_EPOCH.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_codes_are_screaming_snake_case() {
        let err = AppError::NotFound {
            what: "API key",
            id: "k1".into(),
        };
        assert_eq!(err.code(), "API_KEY_NOT_FOUND");
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let err = AppError::Internal(anyhow::anyhow!("SELECT secret FROM keys failed"));
        let gql = err.to_graphql();
        assert_eq!(gql.message, "internal server error");
    }

    /// SQLite's busy answer (a writer that waited as long as it may) is a
    /// conflict the client may retry, not an internal fault.
    #[tokio::test]
    async fn a_busy_database_is_a_conflict_to_retry() {
        use sqlx::ConnectOptions as _;
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut waiter = options.connect().await.unwrap();
        let _held = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut waiter)
            .await
            .unwrap_err();
        assert!(is_conflict(&err), "{err}");
        let app: AppError = err.into();
        assert_eq!(app.code(), codes::SERVICE_UNAVAILABLE);
        assert!(!is_conflict(&sqlx::Error::RowNotFound));
    }
}
