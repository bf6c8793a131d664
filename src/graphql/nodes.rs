//! The most nodes an operation's paged lists can return, with the request's
//! variables: each list field (one taking `first`) returns up to its page size for
//! every node of the lists around it, so pages nested in pages multiply. Counted
//! before anything runs, so that a short query cannot build millions of nodes
//! (`author { posts(first: 1000) { nodes { author { posts(first: 1000) … } } } }`).

use async_graphql::parser::types::{
    ExecutableDocument, Selection, SelectionSet, VariableDefinition,
};
use async_graphql::registry::{MetaField, MetaType, Registry};
use async_graphql::{Name, Positioned, Value as ConstValue, Variables};
use async_graphql_value::Value;

/// The page a list field returns when asked without `first` or `last`, the same
/// for every list of the schema.
const DEFAULT_PAGE: u64 = super::types::DEFAULT_PAGE_SIZE as u64;
/// The largest page any list returns (each list's bound is checked against it
/// where it is defined). A list asked for more refuses the request with its own
/// error (`BAD_USER_INPUT`), which says more than a count could.
pub const LARGEST_PAGE: u64 = 1000;

/// The most nodes the lists of the operation `operation_name` names (or the
/// document's only one) return, fragments expanded. A document that names a type,
/// field or fragment the schema lacks counts what it can: validation refuses it.
pub fn count(
    registry: &Registry,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> u64 {
    // Introspection (`__typename`, `__schema`, `__type`) returns no list of ours
    // (`MAX_INTROSPECTION` bounds it): an operation of it alone, the commonest
    // trivial request, is not walked.
    let ours = |set: &SelectionSet| set.items.iter().any(|item| !is_introspection(&item.node));
    if !document
        .operations
        .iter()
        .any(|(_, operation)| ours(&operation.node.selection_set.node))
    {
        return 0;
    }
    let mut total = 0u64;
    for (operation, root) in super::variables::operations_run(registry, document, operation_name) {
        let walk = Walk {
            registry,
            document,
            variables,
            definitions: &operation.variable_definitions,
        };
        let nodes = walk.selection_set(Some(root), &operation.selection_set.node, 1, 0);
        total = total.saturating_add(nodes);
    }
    total
}

struct Walk<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    definitions: &'a [Positioned<VariableDefinition>],
}

/// Deeper than any document the depth and nesting limits let through: a walk that
/// got here is in a fragment cycle, which validation refuses.
const MAX_WALK: usize = 256;

impl<'a> Walk<'a> {
    /// The nodes `set` returns, selected from `ty` once for each of `pages` nodes.
    fn selection_set(
        &self,
        ty: Option<&MetaType>,
        set: &SelectionSet,
        pages: u64,
        nesting: usize,
    ) -> u64 {
        if nesting > MAX_WALK {
            return 0;
        }
        let mut total = 0u64;
        for item in &set.items {
            let nodes = match &item.node {
                selection if is_introspection(selection) => 0,
                Selection::Field(field) => {
                    let field = &field.node;
                    let declared = ty.and_then(|ty| ty.field_by_name(&field.name.node));
                    let size = declared.and_then(|declared| self.list_size(declared, field));
                    let pages = pages.saturating_mul(size.unwrap_or(1));
                    let inner = declared
                        .and_then(|declared| self.registry.concrete_type_by_name(&declared.ty));
                    let listed = if size.is_some() { pages } else { 0 };
                    listed.saturating_add(self.selection_set(
                        inner,
                        &field.selection_set.node,
                        pages,
                        nesting + 1,
                    ))
                }
                Selection::FragmentSpread(spread) => {
                    let Some(fragment) =
                        self.document.fragments.get(&spread.node.fragment_name.node)
                    else {
                        continue;
                    };
                    let fragment = &fragment.node;
                    let on = self
                        .registry
                        .types
                        .get(fragment.type_condition.node.on.node.as_str());
                    self.selection_set(on, &fragment.selection_set.node, pages, nesting + 1)
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = match &fragment.type_condition {
                        Some(condition) => self.registry.types.get(condition.node.on.node.as_str()),
                        None => ty,
                    };
                    self.selection_set(on, &fragment.selection_set.node, pages, nesting + 1)
                }
            };
            total = total.saturating_add(nodes);
        }
        total
    }

    /// How many objects `field` returns for each of its parents, when it is a list
    /// whose length the request sets: a page (a field taking `first`), or as many as
    /// an argument's list gives (`createPosts(input: [...])`, `updatePosts`, up to
    /// their batch limit). Other lists (a collection's attributes, a user's
    /// sessions) hold what the data holds, bounded where it is written.
    fn list_size(
        &self,
        declared: &MetaField,
        field: &async_graphql::parser::types::Field,
    ) -> Option<u64> {
        if is_list(declared) {
            return Some(self.page_size(declared, &field.arguments));
        }
        if declared.args.contains_key("queries") {
            return Some(self.queries_limit(&field.arguments));
        }
        if !returns_list(&declared.ty) {
            return None;
        }
        let listed = field
            .arguments
            .iter()
            .filter_map(|(_, value)| self.list_length(&value.node))
            .max();
        if listed.is_some() {
            return listed;
        }
        // A bulk write whose argument is one input object: the longest list in
        // it (`documents`), or, for one that finds its documents by `queries`
        // (its input type has them, given or not), the most it writes.
        field
            .arguments
            .iter()
            .filter_map(|(name, value)| {
                let declared_input = declared.args.get(name.node.as_str())?;
                if let Some(MetaType::InputObject { input_fields, .. }) =
                    self.registry.concrete_type_by_name(&declared_input.ty)
                    && input_fields.contains_key("queries")
                {
                    return Some(LARGEST_PAGE);
                }
                self.longest_list_in(&value.node)
            })
            .max()
    }

    /// The longest list among an input object's fields.
    fn longest_list_in(&self, value: &Value) -> Option<u64> {
        match value {
            Value::Object(fields) => fields
                .values()
                .filter_map(|field| self.list_length(field))
                .max(),
            Value::Variable(name) => match self.variable(name)? {
                ConstValue::Object(fields) => fields
                    .values()
                    .filter_map(|field| match field {
                        ConstValue::List(items) => Some(items.len() as u64),
                        _ => None,
                    })
                    .max(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The length of an argument's list, from the query text or the variables
    /// (or the variable's default).
    fn list_length(&self, value: &Value) -> Option<u64> {
        match value {
            Value::List(items) => Some(items.len() as u64),
            Value::Variable(name) => match self.variable(name)? {
                ConstValue::List(items) => Some(items.len() as u64),
                _ => None,
            },
            _ => None,
        }
    }

    /// A variable's value as sent, or its default. Borrowed: a variable may be
    /// named thousands of times, and counting must not copy it each time.
    fn variable(&self, name: &Name) -> Option<&'a ConstValue> {
        self.variables.get(name).or_else(|| {
            self.definitions
                .iter()
                .find(|definition| definition.node.name.node == *name)
                .and_then(|definition| definition.node.default_value())
        })
    }

    /// The page a list field is asked for: `last` or `first` (the larger when
    /// both are given, which the field refuses anyway), else the default its
    /// `first` declares, else the schema's.
    fn page_size(
        &self,
        declared: &MetaField,
        arguments: &[(Positioned<Name>, Positioned<Value>)],
    ) -> u64 {
        arguments
            .iter()
            .filter(|(name, _)| matches!(name.node.as_str(), "first" | "last"))
            .filter_map(|(_, value)| self.number(&value.node))
            .max()
            .or_else(|| {
                let first = declared.args.get("first")?;
                first.default_value.as_deref()?.parse().ok()
            })
            .unwrap_or(DEFAULT_PAGE)
            .min(LARGEST_PAGE)
    }

    /// The page of a list asked for with Appwrite's queries (`documents(queries:
    /// [...])`): its `limit` query, else Appwrite's default of 25. A query that does
    /// not parse is refused by the list itself.
    fn queries_limit(&self, arguments: &[(Positioned<Name>, Positioned<Value>)]) -> u64 {
        let Some((_, value)) = arguments.iter().find(|(name, _)| name.node == "queries") else {
            return APPWRITE_DEFAULT_LIMIT;
        };
        // Each query text is read where it stands, in the document or in the
        // variables; none is copied.
        let texts: Box<dyn Iterator<Item = &str> + '_> = match &value.node {
            Value::List(items) => Box::new(items.iter().filter_map(|item| match item {
                Value::String(text) => Some(text.as_str()),
                Value::Variable(name) => match self.variable(name)? {
                    ConstValue::String(text) => Some(text.as_str()),
                    _ => None,
                },
                _ => None,
            })),
            Value::Variable(name) => match self.variable(name) {
                Some(ConstValue::List(items)) => {
                    Box::new(items.iter().filter_map(|item| match item {
                        ConstValue::String(text) => Some(text.as_str()),
                        _ => None,
                    }))
                }
                _ => Box::new(std::iter::empty()),
            },
            _ => Box::new(std::iter::empty()),
        };
        texts
            .filter_map(limit_of)
            .max()
            .unwrap_or(APPWRITE_DEFAULT_LIMIT)
            .min(APPWRITE_LARGEST_LIMIT)
    }

    /// An argument's value as a count, from the query text or the variables (or
    /// the variable's default); `None` when it is null or not a count.
    fn number(&self, value: &Value) -> Option<u64> {
        match value {
            Value::Number(number) => number.as_u64(),
            Value::Variable(name) => match self.variable(name)? {
                ConstValue::Number(number) => number.as_u64(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The page of a list asked for with Appwrite's queries and no `limit`.
const APPWRITE_DEFAULT_LIMIT: u64 = 25;
/// The largest `limit` Appwrite's queries take.
const APPWRITE_LARGEST_LIMIT: u64 = 5000;

/// The `N` of a `{"method":"limit","values":[N]}` query.
fn limit_of(query: &str) -> Option<u64> {
    let query: serde_json::Value = serde_json::from_str(query).ok()?;
    if query.get("method")?.as_str()? != "limit" {
        return None;
    }
    query.get("values")?.get(0)?.as_u64()
}

/// A paged list field: every paged list of the schema takes `first`.
fn is_list(field: &MetaField) -> bool {
    field.args.contains_key("first")
}

/// An introspection field (`__typename`, `__schema`, `__type`).
fn is_introspection(selection: &Selection) -> bool {
    matches!(selection, Selection::Field(field) if field.node.name.node.starts_with("__"))
}

/// Whether a field's type (`[Post!]!`, `[Post]`) is a list.
fn returns_list(ty: &str) -> bool {
    ty.trim_end_matches('!').starts_with('[')
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::dynamic::{Field, FieldFuture, InputValue, Object, Schema, TypeRef};

    /// A schema of posts and their authors, each with a paged list of the other.
    fn schema() -> Schema {
        let list = |name: &str, ty: &str| {
            Field::new(name, TypeRef::named_nn_list_nn(ty), |_| {
                FieldFuture::new(async { Ok(None::<async_graphql::Value>) })
            })
            .argument(InputValue::new("first", TypeRef::named(TypeRef::INT)))
            .argument(InputValue::new("last", TypeRef::named(TypeRef::INT)))
        };
        let one = |name: &str, ty: &str| {
            Field::new(name, TypeRef::named_nn(ty), |_| {
                FieldFuture::new(async { Ok(None::<async_graphql::Value>) })
            })
        };
        Schema::build("Query", None, None)
            .register(
                Object::new("Query")
                    .field(list("posts", "Post"))
                    .field(
                        Field::new("members", TypeRef::named_nn_list_nn("Post"), |_| {
                            FieldFuture::new(async { Ok(None::<async_graphql::Value>) })
                        })
                        .argument(
                            InputValue::new("first", TypeRef::named(TypeRef::INT))
                                .default_value(100),
                        ),
                    )
                    .field(one("post", "Post"))
                    .field(
                        Field::new("byIds", TypeRef::named_nn_list_nn("Post"), |_| {
                            FieldFuture::new(async { Ok(None::<async_graphql::Value>) })
                        })
                        .argument(InputValue::new(
                            "ids",
                            TypeRef::named_nn_list_nn(TypeRef::ID),
                        )),
                    )
                    .field(one("found", "Found").argument(InputValue::new(
                        "queries",
                        TypeRef::named_nn_list(TypeRef::STRING),
                    ))),
            )
            .register(
                Object::new("Found")
                    .field(one("total", TypeRef::INT))
                    .field(Field::new(
                        "documents",
                        TypeRef::named_nn_list_nn("Post"),
                        |_| FieldFuture::new(async { Ok(None::<async_graphql::Value>) }),
                    )),
            )
            .register(
                Object::new("Post")
                    .field(one("id", TypeRef::ID))
                    .field(one("author", "Author")),
            )
            .register(
                Object::new("Author")
                    .field(one("id", TypeRef::ID))
                    .field(list("posts", "Post")),
            )
            .finish()
            .expect("the test schema builds")
    }

    fn nodes(query: &str, variables: serde_json::Value) -> u64 {
        let document = async_graphql::parser::parse_query(query).expect("the query parses");
        let variables = Variables::from_json(variables);
        count(schema().registry(), &document, None, &variables)
    }

    #[test]
    fn nested_pages_multiply_and_other_fields_count_nothing() {
        assert_eq!(
            nodes(
                "{ __typename post { id author { id } } }",
                serde_json::json!({})
            ),
            0
        );
        assert_eq!(
            nodes("{ posts { id } }", serde_json::json!({})),
            DEFAULT_PAGE
        );
        assert_eq!(
            nodes("{ posts(first: 1000) { id } }", serde_json::json!({})),
            1000
        );
        assert_eq!(
            nodes(
                "{ posts(first: 1000) { author { posts(first: 1000) { id } } } }",
                serde_json::json!({})
            ),
            1000 + 1000 * 1000
        );
        assert_eq!(
            nodes(
                "{ a: posts(last: 10) { id } b: posts(first: 5) { author { posts { id } } } }",
                serde_json::json!({})
            ),
            10 + 5 + 5 * DEFAULT_PAGE
        );
    }

    #[test]
    fn a_list_without_first_returns_the_page_its_first_declares() {
        assert_eq!(nodes("{ members { id } }", serde_json::json!({})), 100);
        assert_eq!(
            nodes("{ members(first: 3) { id } }", serde_json::json!({})),
            3
        );
    }

    #[test]
    fn variables_defaults_and_fragments_are_counted_as_they_run() {
        let query = "query($n: Int, $m: Int = 7) {
            posts(first: $n) { ...More }
        }
        fragment More on Post { author { posts(first: $m) { id } ... on Author { posts(last: $n) { id } } } }";
        assert_eq!(nodes(query, serde_json::json!({"n": 3})), 3 + 3 * 7 + 3 * 3);
        assert_eq!(
            nodes(query, serde_json::json!({"n": null, "m": 2})),
            DEFAULT_PAGE + DEFAULT_PAGE * 2 + DEFAULT_PAGE * DEFAULT_PAGE
        );
        // A page past any list's largest counts as the largest: the list refuses it.
        assert_eq!(
            nodes("{ posts(first: 4294967295) { id } }", serde_json::json!({})),
            LARGEST_PAGE
        );
        let deep = "{ posts(first: 4294967295) { author { posts(first: 4294967295) { author {
            posts(first: 4294967295) { id } } } } } }";
        assert_eq!(
            nodes(deep, serde_json::json!({})),
            1000 + 1000 * 1000 + 1000 * 1000 * 1000
        );
    }

    #[test]
    fn a_list_as_long_as_an_argument_counts_that_many() {
        let query =
            "query($ids: [ID!]!) { byIds(ids: $ids) { author { posts(first: 10) { id } } } }";
        assert_eq!(
            nodes(query, serde_json::json!({"ids": ["a", "b", "c", "d", "e"]})),
            5 + 5 * 10
        );
        let literal = r#"{ byIds(ids: ["a", "b", "c"]) { id } }"#;
        assert_eq!(nodes(literal, serde_json::json!({})), 3);
    }

    #[test]
    fn a_list_asked_with_appwrite_queries_counts_its_limit() {
        let query = "query($q: [String!]) { found(queries: $q) { total documents { author {
            posts(first: 10) { id } } } } }";
        assert_eq!(nodes(query, serde_json::json!({})), 25 + 25 * 10);
        let limited = serde_json::json!({"q": [
            r#"{"method":"equal","attribute":"a","values":[1]}"#,
            r#"{"method":"limit","values":[1000]}"#
        ]});
        assert_eq!(nodes(query, limited), 1000 + 1000 * 10);
        let past = r#"{ found(queries: ["{\"method\":\"limit\",\"values\":[99999]}"]) { total } }"#;
        assert_eq!(nodes(past, serde_json::json!({})), 5000);
    }

    #[test]
    fn a_fragment_cycle_ends() {
        let query = "{ posts { ...A } } fragment A on Post { author { posts { ...A } } }";
        assert_eq!(nodes(query, serde_json::json!({})), u64::MAX);
    }
}
