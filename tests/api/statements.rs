//! Counts the SQL statements an operation runs: sqlx logs each statement (target
//! `sqlx::query`), and the server runs each operation within a `graphql` span
//! naming it. Tests give their operation a unique name and read its count.
//! A connection the pool opens while an operation waits for it runs its set-up in
//! the operation's span; those statements (SQLite's `PRAGMA`s and deadline calls,
//! MariaDB's session `SET`s) are the pool's, not the operation's, and are not counted.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

fn counts() -> &'static Mutex<HashMap<String, usize>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    COUNTS.get_or_init(Mutex::default)
}

/// The statements counted so far for operations named `operation`.
pub fn statements_of(operation: &str) -> usize {
    counts()
        .lock()
        .unwrap()
        .get(operation)
        .copied()
        .unwrap_or(0)
}

/// The operation name a `graphql` span carries.
struct Operation(String);

/// The value of one field of a span or an event, as text.
struct FieldVisitor {
    name: &'static str,
    value: Option<String>,
}

impl FieldVisitor {
    fn new(name: &'static str) -> Self {
        FieldVisitor { name, value: None }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.name {
            self.value = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.name {
            self.value = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

pub struct StatementCounter;

/// Whether a statement sets up the connection rather than doing the operation's
/// work: what a new connection runs before its first use, and on SQLite the call
/// that arms a connection's statement deadline when it changes (ADR 45), which
/// depends on which connection the pool hands out, not on the operation.
fn is_connection_set_up(statement: &str) -> bool {
    let statement = statement.trim_start();
    statement.starts_with("PRAGMA ")
        || statement.starts_with("SELECT nimbus_statement_limit(")
        || (statement.starts_with("SET ") && !statement.starts_with("SET STATEMENT "))
}

impl<S> Layer<S> for StatementCounter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "graphql" {
            return;
        }
        let mut operation = FieldVisitor::new("operation");
        attrs.record(&mut operation);
        if let (Some(name), Some(span)) = (operation.value, ctx.span(id)) {
            span.extensions_mut().insert(Operation(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        // The start of the statement (sqlx's `summary` of it).
        let mut statement = FieldVisitor::new("summary");
        event.record(&mut statement);
        if statement.value.as_deref().is_some_and(is_connection_set_up) {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(Operation(name)) = span.extensions().get::<Operation>() {
                *counts().lock().unwrap().entry(name.clone()).or_default() += 1;
                return;
            }
        }
    }
}
