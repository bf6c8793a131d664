//! The scopes an API key can carry: the [`Scope`] enum, which keys hold and events
//! name, and beside it one marker type per scope. Each resolver checks the scope of
//! the operation with `caller.require::<UsersWrite>()`, which hands back a
//! [`Grant<UsersWrite>`](crate::auth::Grant) naming the scope and the project it was
//! checked in: service functions that need the scope take that grant, so a grant of
//! another scope (`users.read` where `users.write` is needed) does not compile.
//! `admin` holds every scope in every project. Scope names are written here only.

use std::fmt;

/// A scope as a type: a zero-sized marker standing for one [`Scope`].
pub trait ScopeMarker: Copy + Send + Sync + 'static {
    /// The scope the marker stands for.
    const SCOPE: Scope;
    /// The scope's name, as keys carry it.
    const NAME: &'static str = Self::SCOPE.name();
}

/// Declares [`Scope`] with its names and descriptions, and one marker type per scope.
macro_rules! scopes {
    ($($marker:ident = $name:literal : $about:literal,)*) => {
        /// A scope an API key can hold.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Scope {
            $(
                #[doc = concat!("`", $name, "`: ", $about)]
                $marker,
            )*
        }

        impl Scope {
            /// Every scope; `nimbus key create --help`, the README and the
            /// `apiKeyScopes` query show this list.
            pub const ALL: &[Scope] = &[$(Scope::$marker),*];

            /// The scope's name, as keys carry it (`users.read`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Scope::$marker => $name,)*
                }
            }

            /// What the scope allows.
            pub const fn about(self) -> &'static str {
                match self {
                    $(Scope::$marker => $about,)*
                }
            }
        }

        $(
            #[doc = concat!("The `", $name, "` scope as a type: ", $about)]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $marker;

            impl ScopeMarker for $marker {
                const SCOPE: Scope = Scope::$marker;
            }
        )*
    };
}

scopes! {
    Admin = "admin": "Everything in every project, including creating, changing and deleting projects.",
    ProjectRead = "project.read": "Read the project's own settings.",
    KeysRead = "keys.read": "List the project's API keys (never their secrets) and receive their realtime events.",
    KeysWrite = "keys.write": "Create and delete the project's API keys that hold at most the scopes of the calling key.",
    UsersRead = "users.read": "Read the project's users.",
    UsersWrite = "users.write": "Create, change and delete the project's users.",
    TeamsRead = "teams.read": "Read the project's teams and memberships.",
    TeamsWrite = "teams.write": "Create, change and delete teams and memberships.",
    DatabasesRead = "databases.read": "Read databases, collections, attributes and indexes.",
    DatabasesWrite = "databases.write": "Create, change and delete databases, collections, attributes and indexes.",
    DocumentsRead = "documents.read": "Read every document, whatever its permissions.",
    DocumentsWrite = "documents.write": "Create, change and delete every document, whatever its permissions.",
    BucketsRead = "buckets.read": "Read storage buckets.",
    BucketsWrite = "buckets.write": "Create, change and delete storage buckets.",
    FilesRead = "files.read": "Read every file, whatever its permissions.",
    FilesWrite = "files.write": "Upload, change and delete every file, whatever its permissions.",
    FunctionsRead = "functions.read": "Read functions and deployments.",
    FunctionsWrite = "functions.write": "Create, change, deploy and delete functions.",
    ExecutionsRead = "executions.read": "Read function executions.",
    ExecutionsWrite = "executions.write": "Run functions.",
    WebhooksRead = "webhooks.read": "Read the project's webhooks (never their secrets) and their delivery logs.",
    WebhooksWrite = "webhooks.write": "Create, change, rotate the secret of and delete the project's webhooks.",
    JobsRead = "jobs.read": "Read the project's background jobs (emails, webhook deliveries).",
    JobsWrite = "jobs.write": "Retry dead background jobs and delete jobs.",
    UsageRead = "usage.read": "Read the project's usage: requests by operation, errors, bandwidth, realtime connections, and counts of documents, files, storage, users, sessions and executions.",
}

impl Scope {
    /// The scope named `name`; none for a name no scope has.
    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL
            .iter()
            .copied()
            .find(|scope| scope.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_is_found_by_its_own_name_only() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.name()), Some(*scope));
        }
        assert_eq!(Scope::from_name("users"), None);
        assert_eq!(Scope::from_name("USERS.READ"), None);
        assert_eq!(Scope::from_name(""), None);
    }

    #[test]
    fn markers_stand_for_their_scope() {
        assert_eq!(UsersWrite::SCOPE, Scope::UsersWrite);
        assert_eq!(UsersWrite::NAME, "users.write");
        assert_eq!(Admin::NAME, "admin");
    }
}
