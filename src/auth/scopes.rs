//! The scopes an API key can carry, each also a type. Each service checks the scope
//! of the operation with `caller.require::<UsersWrite>()`, which hands back a
//! [`Grant<UsersWrite>`](crate::auth::Grant): functions that need the scope take that
//! grant, so a grant of another scope (`users.read` where `users.write` is needed)
//! does not compile. `admin` holds every scope in every project.

/// A scope as a type: a zero-sized marker naming one entry of [`SCOPES`].
pub trait Scope: Copy + Send + Sync + 'static {
    /// The scope's name, as keys carry it.
    const NAME: &'static str;
}

/// Declares one marker type per scope and [`SCOPES`], the list of all of them.
macro_rules! scopes {
    ($($marker:ident = $name:literal : $about:literal,)*) => {
        $(
            #[doc = concat!("The `", $name, "` scope: ", $about)]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $marker;

            impl Scope for $marker {
                const NAME: &'static str = $name;
            }
        )*

        /// Every scope with what it allows; `nimbus key create --help`, the README
        /// and the `apiKeyScopes` query show this list.
        pub const SCOPES: &[(&str, &str)] = &[$(($name, $about)),*];
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
}

/// The server-wide administrator scope: every scope, in every project.
pub const ADMIN: &str = Admin::NAME;

/// Whether `name` is a known scope.
pub fn is_known(name: &str) -> bool {
    SCOPES.iter().any(|(scope, _)| *scope == name)
}
