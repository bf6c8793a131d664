//! The scopes an API key can carry. Each service checks the scope of the operation;
//! `admin` holds every scope in every project.

/// The server-wide administrator scope: every scope, in every project.
pub const ADMIN: &str = "admin";

/// Every scope with what it allows; `nimbus key create --help`, the README and the
/// `apiKeyScopes` query show this list.
pub const SCOPES: &[(&str, &str)] = &[
    (
        ADMIN,
        "Everything in every project, including creating, changing and deleting projects.",
    ),
    ("project.read", "Read the project's own settings."),
    (
        "keys.read",
        "List the project's API keys (never their secrets) and receive their realtime events.",
    ),
    (
        "keys.write",
        "Create and delete the project's API keys that hold at most the scopes of the calling key.",
    ),
    ("users.read", "Read the project's users."),
    (
        "users.write",
        "Create, change and delete the project's users.",
    ),
    ("teams.read", "Read the project's teams and memberships."),
    (
        "teams.write",
        "Create, change and delete teams and memberships.",
    ),
    (
        "databases.read",
        "Read databases, collections, attributes and indexes.",
    ),
    (
        "databases.write",
        "Create, change and delete databases, collections, attributes and indexes.",
    ),
    (
        "documents.read",
        "Read every document, whatever its permissions.",
    ),
    (
        "documents.write",
        "Create, change and delete every document, whatever its permissions.",
    ),
    ("buckets.read", "Read storage buckets."),
    (
        "buckets.write",
        "Create, change and delete storage buckets.",
    ),
    ("files.read", "Read every file, whatever its permissions."),
    (
        "files.write",
        "Upload, change and delete every file, whatever its permissions.",
    ),
    ("functions.read", "Read functions and deployments."),
    (
        "functions.write",
        "Create, change, deploy and delete functions.",
    ),
    ("executions.read", "Read function executions."),
    ("executions.write", "Run functions."),
];

/// Whether `name` is a known scope.
pub fn is_known(name: &str) -> bool {
    SCOPES.iter().any(|(scope, _)| *scope == name)
}
