//! Usage of each project, kept in Nimbus's own database in hourly and daily
//! buckets: requests by the root fields they selected, errors by code, bandwidth,
//! realtime connections, and documents, files, users, sessions and function
//! executions created and deleted (all counted in memory on each replica,
//! [`counters`], the last ones as the replica that wrote them commits their events,
//! and added to the buckets by every replica's flush), and how many documents,
//! files, bytes, users and sessions exist (snapshots). Read through `usage(…)`.
//!
//! This service only counts and reads counts: it never changes another service's
//! data, and the request path never waits for the database because of it.

pub mod counters;
pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

use crate::bus::Event;

/// How the values of a metric in one bucket combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Added up: every replica's flush adds to the bucket.
    Counter,
    /// The highest value one replica saw in the bucket, summed over replicas.
    Peak,
    /// How much exists: the latest snapshot taken in the bucket.
    Gauge,
}

/// Declares [`Metric`] with its stored names, GraphQL names, kinds and meanings.
macro_rules! metrics {
    ($($variant:ident = $stored:literal, $graphql:literal, $kind:ident: $about:literal;)*) => {
        /// What is counted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(#[doc = $about] $variant,)*
        }

        impl Metric {
            pub const ALL: &[Metric] = &[$(Metric::$variant),*];

            /// The name the database keeps.
            pub const fn stored(self) -> &'static str {
                match self { $(Metric::$variant => $stored,)* }
            }

            /// The name of the GraphQL enum value.
            pub const fn graphql(self) -> &'static str {
                match self { $(Metric::$variant => $graphql,)* }
            }

            pub const fn kind(self) -> Kind {
                match self { $(Metric::$variant => Kind::$kind,)* }
            }

            pub const fn about(self) -> &'static str {
                match self { $(Metric::$variant => $about,)* }
            }
        }
    };
}

metrics! {
    Requests = "requests", "REQUESTS", Counter: "GraphQL operations answered, over HTTP and WebSocket (those refused before the project was known are not counted).";
    Operations = "operations", "OPERATIONS", Counter: "Operations by root field selected, keyed `query.users`, `mutation.createDocument`, … (an operation selecting three root fields counts once under each); keys past `NIMBUS_USAGE_MAX_KEYS` per flush count under `other`.";
    Errors = "errors", "ERRORS", Counter: "Errors answered, keyed by `extensions.code`.";
    BandwidthIn = "bandwidth_in", "BANDWIDTH_IN", Counter: "Bytes received: HTTP request bodies (key `http`) and WebSocket messages (key `ws`).";
    BandwidthOut = "bandwidth_out", "BANDWIDTH_OUT", Counter: "Bytes sent: HTTP response bodies (key `http`) and WebSocket messages (key `ws`).";
    RealtimeConnections = "realtime_connections", "REALTIME_CONNECTIONS", Peak: "The most WebSocket connections open at once in the bucket: each replica's highest, added up over replicas.";
    Documents = "documents", "DOCUMENTS", Gauge: "Documents in all collections, at the latest snapshot.";
    DocumentsCreated = "documents_created", "DOCUMENTS_CREATED", Counter: "Documents created.";
    DocumentsDeleted = "documents_deleted", "DOCUMENTS_DELETED", Counter: "Documents deleted one by one (not those gone with their collection).";
    Files = "files", "FILES", Gauge: "Files in all buckets, at the latest snapshot.";
    FilesCreated = "files_created", "FILES_CREATED", Counter: "Files uploaded.";
    FilesDeleted = "files_deleted", "FILES_DELETED", Counter: "Files deleted one by one (not those gone with their bucket).";
    StorageBytes = "storage_bytes", "STORAGE_BYTES", Gauge: "Bytes of all files (as uploaded), at the latest snapshot.";
    Users = "users", "USERS", Gauge: "Users, at the latest snapshot.";
    UsersCreated = "users_created", "USERS_CREATED", Counter: "Users created.";
    UsersDeleted = "users_deleted", "USERS_DELETED", Counter: "Users deleted.";
    Sessions = "sessions", "SESSIONS", Gauge: "Sessions, at the latest snapshot.";
    SessionsCreated = "sessions_created", "SESSIONS_CREATED", Counter: "Sessions created (sign-ins).";
    SessionsDeleted = "sessions_deleted", "SESSIONS_DELETED", Counter: "Sessions deleted (sign-outs, revocations).";
    Executions = "executions", "EXECUTIONS", Counter: "Function executions started.";
}

impl Metric {
    pub fn from_stored(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.stored() == name)
    }

    pub fn from_graphql(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.graphql() == name)
    }

    /// Whether the metric has keys (`dimension`), each its own series.
    pub fn keyed(self) -> bool {
        matches!(
            self,
            Metric::Operations | Metric::Errors | Metric::BandwidthIn | Metric::BandwidthOut
        )
    }

    /// The metric a logged event adds one to, from its broadest name (the last:
    /// the resource's pattern with its action, `users.*.create`).
    pub fn of_event(event: &Event) -> Option<Metric> {
        let name = event.events.last()?;
        Some(match name.as_str() {
            "databases.*.collections.*.documents.*.create" => Metric::DocumentsCreated,
            "databases.*.collections.*.documents.*.delete" => Metric::DocumentsDeleted,
            "buckets.*.files.*.create" => Metric::FilesCreated,
            "buckets.*.files.*.delete" => Metric::FilesDeleted,
            "users.*.create" => Metric::UsersCreated,
            "users.*.delete" => Metric::UsersDeleted,
            "users.*.sessions.*.create" => Metric::SessionsCreated,
            "users.*.sessions.*.delete" => Metric::SessionsDeleted,
            "functions.*.executions.*.create" => Metric::Executions,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_graphql_names_are_unique_and_fit_their_columns() {
        let mut stored: Vec<_> = Metric::ALL.iter().map(|m| m.stored()).collect();
        stored.sort();
        stored.dedup();
        assert_eq!(stored.len(), Metric::ALL.len());
        for metric in Metric::ALL {
            assert!(metric.stored().len() <= 32);
            assert_eq!(Metric::from_stored(metric.stored()), Some(*metric));
            assert_eq!(Metric::from_graphql(metric.graphql()), Some(*metric));
        }
    }

    #[test]
    fn events_count_by_their_broadest_name() {
        let event = crate::bus::Event::change(
            "p",
            "users.u1.sessions.s1",
            "users.*.sessions.*",
            "create",
            serde_json::Value::Null,
        );
        assert_eq!(Metric::of_event(&event), Some(Metric::SessionsCreated));
        let detailed = crate::bus::Event::change(
            "p",
            "users.u1",
            "users.*",
            "update",
            serde_json::Value::Null,
        )
        .detailed("email");
        assert_eq!(Metric::of_event(&detailed), None);
    }
}
