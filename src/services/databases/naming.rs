//! The GraphQL names of a collection: `Blog posts` becomes the type `BlogPost`,
//! the fields `blogPost` and `blogPosts`, and every type and root field derived
//! from them (`BlogPostFilter`, `createBlogPost`, …). Names are checked against
//! the core schema and the project's other collections when a collection is
//! created, so a clash is refused then, never found while building a schema.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};

/// The names of one collection's GraphQL surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphqlNames {
    /// The object type, e.g. `Post`.
    pub type_name: String,
    /// The by-id query, e.g. `post`.
    pub single: String,
    /// The list query, e.g. `posts`.
    pub plural: String,
}

fn invalid(reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: "INVALID_GRAPHQL_NAME",
        field: "graphqlName".into(),
        reason: reason.into(),
    }
}

/// The words of a name: runs of ASCII letters and digits, split at other
/// characters and at lower-to-upper case changes (`blogPosts` → blog, Posts).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

/// English singular of a plural word, for the common cases (`posts`, `categories`,
/// `boxes`); a word that does not look plural stays as it is.
fn singular(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix("ies").filter(|s| s.len() >= 2) {
        return format!("{}y", &word[..stem.len()]);
    }
    for suffix in ["sses", "xes", "ches", "shes", "zzes"] {
        if lower.ends_with(suffix) {
            return word[..word.len() - 2].to_string();
        }
    }
    if lower.ends_with('s') && !lower.ends_with("ss") && !lower.ends_with("us") && word.len() > 1 {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

/// English plural of a singular word, for the common cases.
fn plural(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let ends_consonant_y = lower.ends_with('y')
        && lower.len() >= 2
        && !"aeiou".contains(lower.as_bytes()[lower.len() - 2] as char);
    if ends_consonant_y {
        format!("{}ies", &word[..word.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

impl GraphqlNames {
    /// The names for a collection called `name`, or for the type name the user
    /// chose (`graphqlName`, e.g. `Post`).
    pub fn derive(name: &str, chosen: Option<&str>) -> AppResult<GraphqlNames> {
        let base = chosen.unwrap_or(name);
        let mut parts = words(base);
        if chosen.is_none()
            && let Some(last) = parts.last_mut()
        {
            *last = singular(last);
        }
        let type_name: String = parts.iter().map(|w| capitalized(w)).collect();
        if type_name.is_empty() || type_name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid(format!(
                "no GraphQL type name can be made from `{}`; give `graphqlName` (e.g. `Post`)",
                base.chars().take(64).collect::<String>()
            )));
        }
        if type_name.len() > 48 {
            return Err(invalid(
                "the GraphQL type name would be longer than 48 characters; give a shorter `graphqlName`",
            ));
        }
        let single = lower_first(&type_name);
        let mut plural_name = lower_first(&{
            let mut parts = parts.clone();
            if let Some(last) = parts.last_mut() {
                *last = plural(last);
            }
            parts.iter().map(|w| capitalized(w)).collect::<String>()
        });
        if plural_name == single {
            plural_name = format!("{single}List");
        }
        Ok(GraphqlNames {
            type_name,
            single,
            plural: plural_name,
        })
    }

    /// Every type name the collection adds to the schema.
    pub fn type_names(&self) -> Vec<String> {
        let t = &self.type_name;
        [
            t.clone(),
            format!("{t}Connection"),
            format!("{t}Edge"),
            format!("{t}Filter"),
            format!("{t}OrderBy"),
            format!("Create{t}Input"),
            format!("Update{t}Input"),
            format!("Upsert{t}Input"),
            format!("Increment{t}Input"),
            format!("Decrement{t}Input"),
            format!("{t}NumericField"),
            format!("Delete{t}Input"),
            format!("Delete{t}Payload"),
            format!("Delete{}Input", capitalized_first(&self.plural)),
            format!("Delete{}Payload", capitalized_first(&self.plural)),
            format!("{t}Event"),
            format!("{t}Field"),
        ]
        .into()
    }

    /// Every root field the collection adds to the schema.
    pub fn root_fields(&self) -> Vec<String> {
        let t = &self.type_name;
        let p = capitalized_first(&self.plural);
        [
            self.single.clone(),
            self.plural.clone(),
            format!("create{t}"),
            format!("create{p}"),
            format!("update{t}"),
            format!("upsert{t}"),
            format!("increment{t}"),
            format!("decrement{t}"),
            format!("update{p}"),
            format!("delete{t}"),
            format!("delete{p}"),
            format!("{}Changed", self.single),
        ]
        .into()
    }

    /// Refuses names that the core schema or another collection (`others`) uses.
    pub fn check_free<'a>(
        &self,
        others: impl IntoIterator<Item = &'a GraphqlNames>,
    ) -> AppResult<()> {
        let core = core_names();
        let mine_types = self.type_names();
        let mine_fields = self.root_fields();
        let clash = |name: &str| {
            Err(AppError::Invalid {
                code: "GRAPHQL_NAME_TAKEN",
                field: "graphqlName".into(),
                reason: format!(
                    "the collection's GraphQL names would clash with `{name}`; choose another `graphqlName`"
                ),
            })
        };
        for name in mine_types.iter().chain(&mine_fields) {
            if core.contains(name.as_str()) || name.starts_with("__") {
                return clash(name);
            }
        }
        for other in others {
            let theirs: HashSet<String> = other
                .type_names()
                .into_iter()
                .chain(other.root_fields())
                .collect();
            if let Some(name) = mine_types
                .iter()
                .chain(&mine_fields)
                .find(|n| theirs.contains(*n))
            {
                return clash(name);
            }
        }
        Ok(())
    }
}

fn capitalized_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The type names and root field names of a project with no collections, read
/// once from the core schema.
fn core_names() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let config = crate::config::Config::with_data_dir(std::env::temp_dir());
        let sdl = crate::graphql::core_sdl(&config).unwrap_or_default();
        let mut names: HashSet<String> = [
            "Query",
            "Mutation",
            "Subscription",
            "String",
            "Int",
            "Float",
            "Boolean",
            "ID",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(document) = async_graphql::parser::parse_schema(&sdl) {
            use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
            for definition in document.definitions {
                if let TypeSystemDefinition::Type(ty) = definition {
                    let ty = ty.node;
                    let name = ty.name.node.to_string();
                    if let TypeKind::Object(object) = &ty.kind
                        && matches!(name.as_str(), "Query" | "Mutation" | "Subscription")
                    {
                        names.extend(object.fields.iter().map(|f| f.node.name.node.to_string()));
                    }
                    names.insert(name);
                }
            }
        }
        names
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(name: &str, chosen: Option<&str>) -> (String, String, String) {
        let n = GraphqlNames::derive(name, chosen).unwrap();
        (n.type_name, n.single, n.plural)
    }

    #[test]
    fn names_come_from_the_collection_name() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(names("posts", None), s("Post", "post", "posts"));
        assert_eq!(
            names("Blog posts", None),
            s("BlogPost", "blogPost", "blogPosts")
        );
        assert_eq!(
            names("categories", None),
            s("Category", "category", "categories")
        );
        assert_eq!(names("boxes", None), s("Box", "box", "boxes"));
        assert_eq!(names("status", None), s("Status", "status", "statuses"));
        assert_eq!(
            names("user_profiles", None),
            s("UserProfile", "userProfile", "userProfiles")
        );
        assert_eq!(names("person", None), s("Person", "person", "persons"));
        assert_eq!(
            names("whatever", Some("Article")),
            s("Article", "article", "articles")
        );
    }

    #[test]
    fn unusable_names_ask_for_a_graphql_name() {
        for bad in ["", "  ", "123", "日本語"] {
            let err = GraphqlNames::derive(bad, None).unwrap_err();
            assert_eq!(err.code(), "INVALID_GRAPHQL_NAME", "{bad}");
        }
    }

    #[test]
    fn names_of_the_core_schema_and_of_other_collections_are_taken() {
        let users = GraphqlNames::derive("users", None).unwrap();
        assert_eq!(
            users.check_free([]).unwrap_err().code(),
            "GRAPHQL_NAME_TAKEN"
        );
        let posts = GraphqlNames::derive("posts", None).unwrap();
        posts.check_free([]).unwrap();
        let again = GraphqlNames::derive("Post", Some("Post")).unwrap();
        assert_eq!(
            again.check_free([&posts]).unwrap_err().code(),
            "GRAPHQL_NAME_TAKEN"
        );
    }
}
