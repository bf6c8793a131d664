//! Which operations of `locale` answer every caller alike: those that read at
//! least one of its reference lists and nothing else (but `__typename`s). The
//! lists are compiled in, so such an operation's answer depends on nothing but
//! its text, its variables and the request's language; the GraphQL handler keeps
//! it whole, serialised, and sends it again ([`crate::graphql::alike`]), which
//! spares resolving hundreds of objects field by field and serialising them for
//! every request. An operation that also reads the caller's own place (`ip`,
//! `countryCode`…), or any other service, is answered as usual, and so is one
//! that reads no list at all (`{ __typename }` costs less to execute than to
//! keep: it is the reference the cost of every other request is measured
//! against).

use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};

use super::data::data;
use super::negotiate;
use crate::graphql::alike::SameForAll;
use crate::graphql::limits::MAX_NESTING;

/// The lists of `Locale`, by field name.
const LISTS: &[&str] = &[
    "countries",
    "countriesEU",
    "countriesPhones",
    "continents",
    "currencies",
    "languages",
    "localeCodes",
];

/// Operations reading only `locale`'s lists.
pub struct Lists;

impl SameForAll for Lists {
    fn covers(&self, document: &ExecutableDocument, operation: &OperationDefinition) -> bool {
        let mut walk = Walk {
            document,
            walked: Walked::new(),
            reads_a_list: false,
        };
        walk.only_lists(&operation.selection_set.node, Level::Query, 0) && walk.reads_a_list
    }

    fn variant(&self, languages: &str) -> &'static str {
        negotiate::pick(data(), languages).code()
    }
}

/// Where in the operation a selection set stands.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Level {
    Query,
    Locale,
}

/// What a fragment was found to select, per level: each fragment is walked once
/// per level, so that a document of fragments spreading each other twice (2^30
/// selections in a kilobyte) costs its size, not its expansion. A fragment is
/// marked `false` while it is walked, which also ends a cycle (refused by
/// validation later anyway).
type Walked<'a> = std::collections::HashMap<(&'a str, Level), bool>;

/// A walk through an operation's selections, fragments followed.
struct Walk<'a> {
    document: &'a ExecutableDocument,
    walked: Walked<'a>,
    /// Whether a list of `Locale` was found on the way.
    reads_a_list: bool,
}

impl<'a> Walk<'a> {
    /// Whether `set` selects, at `level`, only `__typename`, `locale` and, within
    /// it, lists (whatever below them: their items hold nothing but data). What is
    /// not valid there at all is refused by validation, and an answer with errors
    /// is not kept.
    fn only_lists(&mut self, set: &'a SelectionSet, level: Level, depth: usize) -> bool {
        if depth > MAX_NESTING {
            return false;
        }
        set.items.iter().all(|item| match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                let name = field.name.node.as_str();
                match level {
                    _ if name == "__typename" => true,
                    Level::Query => {
                        name == "locale"
                            && self.only_lists(&field.selection_set.node, Level::Locale, depth + 1)
                    }
                    Level::Locale => {
                        let list = LISTS.contains(&name);
                        self.reads_a_list |= list;
                        list
                    }
                }
            }
            Selection::InlineFragment(inline) => {
                self.only_lists(&inline.node.selection_set.node, level, depth + 1)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                // A fragment walked before found its lists then.
                if let Some(known) = self.walked.get(&(name, level)) {
                    return *known;
                }
                let Some(fragment) = self.document.fragments.get(&spread.node.fragment_name.node)
                else {
                    return false;
                };
                self.walked.insert((name, level), false);
                let covered = self.only_lists(&fragment.node.selection_set.node, level, depth + 1);
                self.walked.insert((name, level), covered);
                covered
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;
    use async_graphql::parser::types::DocumentOperations;

    fn covered(query: &str) -> bool {
        let document = parse_query(query).unwrap();
        let DocumentOperations::Single(operation) = &document.operations else {
            panic!("one operation");
        };
        Lists.covers(&document, &operation.node)
    }

    #[test]
    fn a_fragment_bomb_is_walked_in_its_size_not_its_expansion() {
        // 40 fragments each spreading the next twice: 2^40 selections if expanded.
        let mut query = String::from("{ locale { ...F0 } }");
        for i in 0..40 {
            query.push_str(&format!(
                " fragment F{i} on Locale {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        query.push_str(" fragment F40 on Locale { countries { code } }");
        let started = std::time::Instant::now();
        assert!(covered(&query));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn covers_lists_typenames_and_fragments_of_them_only() {
        for query in [
            "{ locale { countries { code name } } }",
            "{ __typename a: locale { __typename x: currencies { code } languages { name } } }",
            "{ locale { ...L } } fragment L on Locale { countries { ...C } } fragment C on LocaleCountry { code }",
            "{ ... on Query { locale { ... on Locale { continents { code } } } } }",
        ] {
            assert!(covered(query), "{query}");
        }
        for query in [
            "{ locale { ip countries { code } } }",
            "{ locale { countryCode } }",
            "{ locale { ...L } } fragment L on Locale { country }",
            "{ locale { countries { code } } account { id } }",
            "{ __schema { types { name } } }",
            "{ locale { ...Missing } }",
            // Nothing kept is worth less than the plain executor's answer.
            "{ __typename }",
            "{ locale { __typename } }",
            "{ ...T } fragment T on Query { __typename }",
        ] {
            assert!(!covered(query), "{query}");
        }
    }
}
