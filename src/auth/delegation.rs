//! What a key hands on to what it configures to act after the request — a webhook
//! that receives events, a function that is triggered by them and calls the API:
//! no more than the key could read itself, and no longer than the key works. Kept
//! with the webhook or function (`reach` column, JSON) and replaced by whoever
//! changes it next; `NULL` (an operator's, or from before it was kept) is every
//! event, for ever.

use serde::{Deserialize, Serialize};

use super::caller::ApiKeyGrant;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegation {
    /// The key's scopes; `None`: an `admin` key's, which hold every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<String>>,
    /// When the key stops working (milliseconds since the epoch); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// The key's id, so that revoking it ends what it handed on; for a function's
    /// own access, the key that gave the function its scopes; `None` for the
    /// console's (and for a function an operator configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
}

impl Delegation {
    /// What `key` hands on. A console administrator's session ends when they sign
    /// out, but what they configure is the operator's, and stays.
    pub fn of(key: &ApiKeyGrant) -> Self {
        let console = key.is_console();
        Delegation {
            scopes: (!key.is_admin())
                .then(|| key.scopes.iter().map(|s| s.name().to_string()).collect()),
            expires_at: if console { None } else { key.expires_at },
            // Real key ids hold no `:` (the console's and functions' do). A
            // function hands on what its own key gave it: revoking that key ends
            // both, however many hands it went through.
            key_id: if key.key_id.contains(':') {
                key.handed_on_by.clone()
            } else {
                Some(key.key_id.clone())
            },
        }
    }

    /// What is left of a delegation once its key is revoked: nothing, ended.
    fn revoked(key_id: &str) -> Self {
        Delegation {
            scopes: Some(Vec::new()),
            expires_at: Some(0),
            key_id: Some(key_id.to_string()),
        }
    }

    /// Whether an event that keys holding `key_scope` may read, made at `at`, is
    /// handed on.
    pub fn covers(&self, key_scope: &str, at: i64) -> bool {
        !self.expired_at(at)
            && self
                .scopes
                .as_ref()
                .is_none_or(|scopes| scopes.iter().any(|s| s == key_scope))
    }

    /// Whether the key it came from had stopped working at `at`.
    pub fn expired_at(&self, at: i64) -> bool {
        self.expires_at.is_some_and(|end| end <= at)
    }

    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// The key it came from, if a key's.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// As the column keeps it: `None` for an operator's.
    pub fn to_column(&self) -> Option<String> {
        (*self != Delegation::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// From the column; what does not parse hands on nothing, and has expired.
    pub fn from_column(column: Option<&str>) -> Self {
        match column {
            None => Delegation::default(),
            Some(text) => serde_json::from_str(text).unwrap_or(Delegation {
                scopes: Some(Vec::new()),
                expires_at: Some(0),
                key_id: None,
            }),
        }
    }
}

/// Ends, in `conn`'s transaction, what the key `key_id` handed on to webhooks and
/// functions, in every project (an `admin` key configures any): revoking a key
/// stops its webhooks' deliveries, its functions' triggers and their scopes, as its
/// expiry would.
pub async fn end_for_key(conn: &mut sqlx::AnyConnection, key_id: &str) -> Result<(), sqlx::Error> {
    // Key ids are `[A-Za-z0-9._-]`, kept in the JSON as they are; `_` is a LIKE
    // wildcard, escaped.
    let escaped = key_id
        .replace('!', "!!")
        .replace('_', "!_")
        .replace('%', "!%");
    let pattern = format!("%\"keyId\":\"{escaped}\"%");
    let ended = Delegation::revoked(key_id).to_column();
    for table in ["webhooks", "functions"] {
        sqlx::query(&format!(
            "UPDATE {table} SET reach = ? WHERE reach LIKE ? ESCAPE '!'"
        ))
        .bind(ended.as_deref())
        .bind(&pattern)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::scopes::Scope;

    fn key(scopes: &[Scope], expires_at: Option<i64>) -> ApiKeyGrant {
        ApiKeyGrant {
            key_id: "k1".into(),
            project_id: "p".into(),
            scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
            expires_at,
            handed_on_by: None,
        }
    }

    #[test]
    fn a_key_hands_on_what_it_may_read_until_it_expires() {
        let delegation =
            Delegation::of(&key(&[Scope::from_name("teams.read").unwrap()], Some(100)));
        assert!(delegation.covers("teams.read", 99));
        assert!(!delegation.covers("teams.read", 100));
        assert!(!delegation.covers("documents.read", 0));
        let kept = Delegation::from_column(delegation.to_column().as_deref());
        assert_eq!(kept, delegation);
        assert!(delegation.to_column().unwrap().contains(r#""keyId":"k1""#));
        assert!(!Delegation::revoked("k1").covers("teams.read", 0));
    }

    #[test]
    fn a_function_hands_on_under_the_key_that_gave_it_its_scopes() {
        let mut function = key(&[Scope::from_name("webhooks.write").unwrap()], Some(100));
        function.key_id = "function:f1".into();
        function.handed_on_by = Some("k1".into());
        let delegation = Delegation::of(&function);
        assert_eq!(delegation.key_id(), Some("k1"));
        assert_eq!(delegation.expires_at(), Some(100));
        function.handed_on_by = None;
        assert_eq!(Delegation::of(&function).key_id(), None);
    }

    #[test]
    fn an_operator_hands_on_everything_and_a_bad_column_nothing() {
        let console = ApiKeyGrant::console("p", "a@example.com", Some(5));
        let delegation = Delegation::of(&console);
        assert_eq!(delegation.to_column(), None);
        assert!(delegation.covers("documents.read", i64::MAX));
        let unreadable = Delegation::from_column(Some("not json"));
        assert!(!unreadable.covers("teams.read", 0));
        assert!(unreadable.expired_at(1));
    }
}
