//! The part of validating a GraphQL request that depends on its variables' values,
//! done apart from the rest so that the rest can be done once per query text.
//!
//! Of async-graphql's validation rules only one reads the request's variables:
//! the check that each argument's value suits the argument's type resolves the
//! variables an argument names, and checks the argument whole when every one of
//! them was sent (an argument naming a variable the request left out, or one in an
//! operation other than the request's, is not checked). Without variables it
//! checks only the arguments that name none. Depth, complexity (no field of a
//! dynamic schema computes its own) and cache control are counted on the document
//! alone. So a request that passes validation without its variables is valid with
//! them exactly when the arguments that name variables hold values of their
//! types: [`VariableArguments`] keeps those arguments of a query, found once, and
//! [`VariableArguments::check`] checks a request's values there with the same
//! walk over the schema's types, the same messages and the same locations as
//! async-graphql's rule.
//!
//! It must not decide anything async-graphql's rule would decide otherwise: where
//! it cannot tell (a type missing from the schema), it says so and the request is
//! validated afresh.

use std::collections::HashSet;

use async_graphql::parser::types::{
    Directive, ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{Name, Pos, Positioned, QueryPathNode, QueryPathSegment, ServerError};
use async_graphql::{Value as ConstValue, Variables};
use async_graphql_value::Value;

/// An argument whose value names a variable, as the document writes it.
struct VariableArgument {
    name: Name,
    /// The argument's type, as the schema declares it (`[Int!]!`).
    ty: String,
    value: Value,
    /// Where the argument's name stands: validation reports it there.
    pos: Pos,
}

/// The arguments of one query (for one operation name) whose values name
/// variables, in the order validation visits them.
#[derive(Default)]
pub struct VariableArguments {
    arguments: Vec<VariableArgument>,
    /// About how much memory they hold, for the cache that keeps them.
    bytes: usize,
}

impl VariableArguments {
    /// Finds them in `document`, for a request naming `operation_name`: the
    /// fragments first, then the operations, as validation walks the document.
    pub fn of(
        registry: &Registry,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
    ) -> Self {
        let mut found = Finder {
            registry,
            found: VariableArguments::default(),
        };
        for fragment in document.fragments.values() {
            let fragment = &fragment.node;
            let on = registry
                .types
                .get(fragment.type_condition.node.on.node.as_str());
            found.directives(&fragment.directives);
            found.selection_set(on, &fragment.selection_set.node);
        }
        // Validation resolves no variable of an operation the request does not run;
        // what it checks there does not depend on the values.
        for (operation, root) in operations_run(registry, document, operation_name) {
            found.directives(&operation.directives);
            found.selection_set(Some(root), &operation.selection_set.node);
        }
        found.found
    }

    /// About how much memory they hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The errors validation would report for `variables` here (none when the
    /// values suit their arguments); `None` when this cannot tell.
    pub fn check(&self, registry: &Registry, variables: &Variables) -> Option<Vec<ServerError>> {
        let mut errors = Vec::new();
        for argument in &self.arguments {
            // Not checked unless every variable it names was sent.
            let Ok(value) = argument
                .value
                .clone()
                .into_const_with(|name| variables.get(&name).cloned().ok_or(()))
            else {
                continue;
            };
            let path = QueryPathNode {
                parent: None,
                segment: QueryPathSegment::Name(&argument.name),
            };
            if let Some(reason) = invalid_value(registry, &argument.ty, &value, path).ok()? {
                errors.push(ServerError::new(
                    format!("Invalid value for argument {reason}"),
                    Some(argument.pos),
                ));
            }
        }
        Some(errors)
    }
}

/// The operations a request naming `operation_name` runs: that one, or all.
pub fn selected_operations<'d>(
    document: &'d ExecutableDocument,
    operation_name: Option<&'d str>,
) -> impl Iterator<Item = &'d OperationDefinition> {
    document
        .operations
        .iter()
        .filter(move |(name, _)| {
            operation_name
                .zip(*name)
                .is_none_or(|(selected, name)| selected == name.as_str())
        })
        .map(|(_, operation)| &operation.node)
}

/// The operations of `document` a request naming `operation_name` runs (all of
/// them when it names none), each with the root type it selects from. One whose
/// root the schema lacks is left out: validation refuses it anyway.
pub fn operations_run<'d>(
    registry: &'d Registry,
    document: &'d ExecutableDocument,
    operation_name: Option<&'d str>,
) -> impl Iterator<Item = (&'d OperationDefinition, &'d MetaType)> {
    selected_operations(document, operation_name).filter_map(|operation| {
        let root = match operation.ty {
            OperationType::Query => Some(registry.query_type.as_str()),
            OperationType::Mutation => registry.mutation_type.as_deref(),
            OperationType::Subscription => registry.subscription_type.as_deref(),
        }?;
        Some((operation, registry.types.get(root)?))
    })
}

/// The walk over a document that finds its arguments naming variables, keeping
/// track of the type each selection set selects from as validation does.
struct Finder<'r> {
    registry: &'r Registry,
    found: VariableArguments,
}

impl<'r> Finder<'r> {
    fn selection_set(&mut self, ty: Option<&'r MetaType>, set: &SelectionSet) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    // Validation does not look into `__typename`, its directives
                    // included.
                    if field.name.node == "__typename" {
                        continue;
                    }
                    let declared = ty.and_then(|ty| ty.field_by_name(&field.name.node));
                    for (name, value) in &field.arguments {
                        if let Some(argument) =
                            declared.and_then(|declared| declared.args.get(name.node.as_str()))
                        {
                            self.argument(name, &argument.ty, value);
                        }
                    }
                    self.directives(&field.directives);
                    let inner = declared
                        .and_then(|declared| self.registry.concrete_type_by_name(&declared.ty));
                    self.selection_set(inner, &field.selection_set.node);
                }
                Selection::FragmentSpread(spread) => self.directives(&spread.node.directives),
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let ty = match &fragment.type_condition {
                        Some(condition) => self.registry.types.get(condition.node.on.node.as_str()),
                        None => ty,
                    };
                    self.directives(&fragment.directives);
                    self.selection_set(ty, &fragment.selection_set.node);
                }
            }
        }
    }

    fn directives(&mut self, directives: &[Positioned<Directive>]) {
        for directive in directives {
            let directive = &directive.node;
            let Some(declared) = self.registry.directives.get(directive.name.node.as_str()) else {
                continue;
            };
            for (name, value) in &directive.arguments {
                if let Some(argument) = declared.args.get(name.node.as_str()) {
                    self.argument(name, &argument.ty, value);
                }
            }
        }
    }

    /// Keeps an argument that names a variable; one that names none was checked
    /// when the query was validated without variables.
    fn argument(&mut self, name: &Positioned<Name>, ty: &str, value: &Positioned<Value>) {
        if !names_variable(&value.node) {
            return;
        }
        self.found.bytes += std::mem::size_of::<VariableArgument>()
            + name.node.len()
            + ty.len()
            + value_bytes(&value.node);
        self.found.arguments.push(VariableArgument {
            name: name.node.clone(),
            ty: ty.to_owned(),
            value: value.node.clone(),
            pos: name.pos,
        });
    }
}

fn names_variable(value: &Value) -> bool {
    match value {
        Value::Variable(_) => true,
        Value::List(items) => items.iter().any(names_variable),
        Value::Object(fields) => fields.values().any(names_variable),
        _ => false,
    }
}

/// About how much memory a copy of `value` holds.
fn value_bytes(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::Variable(name) | Value::Enum(name) => name.len(),
            Value::String(text) => text.len(),
            Value::Binary(bytes) => bytes.len(),
            Value::List(items) => items.iter().map(value_bytes).sum(),
            Value::Object(fields) => fields
                .iter()
                .map(|(name, value)| name.len() + std::mem::size_of::<Name>() + value_bytes(value))
                .sum(),
            Value::Null | Value::Number(_) | Value::Boolean(_) => 0,
        }
}

/// Why `value` does not suit the type `ty` (`None` when it does), in the words of
/// async-graphql's validation; `Err(())` for a type the schema lacks.
fn invalid_value(
    registry: &Registry,
    ty: &str,
    value: &ConstValue,
    path: QueryPathNode,
) -> Result<Option<String>, ()> {
    let reason = |message: String| Ok(Some(format!("\"{path}\", {message}")));
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(ty) => match value {
            ConstValue::Null => reason(format!("expected type \"{ty}\"")),
            _ => invalid_value(registry, ty, value, path),
        },
        MetaTypeName::List(ty) => match value {
            ConstValue::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    let path = QueryPathNode {
                        parent: Some(&path),
                        segment: QueryPathSegment::Index(index),
                    };
                    if let Some(reason) = invalid_value(registry, ty, item, path)? {
                        return Ok(Some(reason));
                    }
                }
                Ok(None)
            }
            ConstValue::Null => Ok(None),
            // A single value stands for a list of one.
            _ => invalid_value(registry, ty, value, path),
        },
        MetaTypeName::Named(ty) => {
            if let ConstValue::Null = value {
                return Ok(None);
            }
            match registry.types.get(ty).ok_or(())? {
                MetaType::Scalar {
                    is_valid: Some(is_valid),
                    ..
                } => {
                    if is_valid(value) {
                        Ok(None)
                    } else {
                        reason(format!("expected type \"{ty}\""))
                    }
                }
                MetaType::Enum {
                    enum_values, name, ..
                } => match value {
                    ConstValue::Enum(value) if !enum_values.contains_key(value.as_str()) => {
                        reason(format!(
                            "enumeration type \"{name}\" does not contain the value \"{value}\""
                        ))
                    }
                    ConstValue::String(value) if !enum_values.contains_key(value.as_str()) => {
                        reason(format!(
                            "enumeration type \"{name}\" does not contain the value \"{value}\""
                        ))
                    }
                    ConstValue::Enum(_) | ConstValue::String(_) => Ok(None),
                    _ => reason(format!("expected type \"{ty}\"")),
                },
                MetaType::InputObject {
                    input_fields,
                    name,
                    oneof,
                    ..
                } => {
                    let ConstValue::Object(values) = value else {
                        // Left to the resolver's conversion, as validation leaves it.
                        return Ok(None);
                    };
                    if *oneof {
                        if values.len() != 1 {
                            return reason(
                                "Oneof input objects requires have exactly one field".into(),
                            );
                        }
                        if let ConstValue::Null = values[0] {
                            return reason(
                                "Oneof Input Objects require that exactly one field must be \
                                 supplied and that field must not be null"
                                    .into(),
                            );
                        }
                    }
                    let mut unknown: HashSet<&str> = values.keys().map(Name::as_str).collect();
                    for field in input_fields.values() {
                        unknown.remove(field.name.as_str());
                        if let Some(value) = values.get(field.name.as_str()) {
                            let path = QueryPathNode {
                                parent: Some(&path),
                                segment: QueryPathSegment::Name(&field.name),
                            };
                            if let Some(reason) = invalid_value(registry, &field.ty, value, path)? {
                                return Ok(Some(reason));
                            }
                        } else if MetaTypeName::create(&field.ty).is_non_null()
                            && field.default_value.is_none()
                        {
                            return reason(format!(
                                "field \"{}\" of type \"{}\" is required but not provided",
                                field.name, field.ty
                            ));
                        }
                    }
                    match unknown.iter().next() {
                        Some(field) => {
                            reason(format!("unknown field \"{field}\" of type \"{name}\""))
                        }
                        None => Ok(None),
                    }
                }
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::dynamic::{
        Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, Schema, TypeRef,
    };
    use async_graphql::{Request, Variables};
    use serde_json::{Value as Json, json};

    use crate::graphql::limits::{LimitsFactory, MAX_NESTING, TEST_LIMITS};
    use crate::graphql::types;

    fn ok(_: async_graphql::dynamic::ResolverContext<'_>) -> FieldFuture<'_> {
        FieldFuture::new(async { Ok(Some(FieldValue::value("ok"))) })
    }

    /// The argument `n` back, read as the resolvers of the services read theirs.
    fn count(ctx: async_graphql::dynamic::ResolverContext<'_>) -> FieldFuture<'_> {
        FieldFuture::new(async move {
            let n = ctx.args.try_get("n")?.i64()?;
            Ok(Some(FieldValue::value(n)))
        })
    }

    /// A schema with an argument of each kind a variable may fill: scalars (the
    /// shared `DateTime` among them), an enum, lists, nested lists, input objects
    /// (nested, with defaults), a one-of input object; the extension that keeps
    /// validations, and a handle on what it keeps.
    fn schema() -> (Schema, LimitsFactory) {
        let factory = LimitsFactory::new(TEST_LIMITS);
        let point = InputObject::new("Point")
            .field(InputValue::new("x", TypeRef::named_nn(TypeRef::INT)))
            .field(InputValue::new("y", TypeRef::named_nn(TypeRef::INT)).default_value(0))
            .field(InputValue::new(
                "tags",
                TypeRef::named_nn_list(TypeRef::STRING),
            ))
            .field(InputValue::new("at", TypeRef::named(types::DATETIME)))
            .field(InputValue::new("inner", TypeRef::named("Point")));
        let pick = InputObject::new("Pick")
            .oneof()
            .field(InputValue::new("id", TypeRef::named(TypeRef::ID)))
            .field(InputValue::new("name", TypeRef::named(TypeRef::STRING)));
        let nested = TypeRef::NonNull(Box::new(TypeRef::List(Box::new(TypeRef::named_nn_list(
            TypeRef::STRING,
        )))));
        let echo = Field::new("echo", TypeRef::named(TypeRef::STRING), ok)
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
            .argument(InputValue::new("n", TypeRef::named(TypeRef::INT)))
            .argument(InputValue::new(
                "list",
                TypeRef::named_nn_list(TypeRef::INT),
            ))
            .argument(InputValue::new("nested", nested).default_value(Vec::<String>::new()))
            .argument(InputValue::new("when", TypeRef::named(types::DATETIME)))
            .argument(InputValue::new("point", TypeRef::named("Point")))
            .argument(InputValue::new("color", TypeRef::named("Color")).default_value("RED"))
            .argument(InputValue::new("pick", TypeRef::named("Pick")));
        let count = || {
            Field::new("count", TypeRef::named(TypeRef::INT), count)
                .argument(InputValue::new("n", TypeRef::named_nn(TypeRef::INT)))
        };
        let child = Object::new("Child").field(count());
        let query = Object::new("Query")
            .field(echo)
            .field(count())
            .field(Field::new("child", TypeRef::named("Child"), |_| {
                FieldFuture::new(async { Ok(Some(FieldValue::value("child"))) })
            }));
        let mutation = Object::new("Mutation").field(
            Field::new("set", TypeRef::named(TypeRef::STRING), ok)
                .argument(InputValue::new("point", TypeRef::named_nn("Point"))),
        );
        let mut builder = Schema::build("Query", Some("Mutation"), None)
            .register(query)
            .register(mutation)
            .register(child)
            .register(point)
            .register(pick)
            .register(Enum::new("Color").item("RED").item("GREEN"))
            .limit_recursive_depth(MAX_NESTING)
            .limit_directives(TEST_LIMITS.max_directives)
            .extension(factory.clone());
        for ty in types::scalars() {
            builder = builder.register(ty);
        }
        (builder.finish().unwrap(), factory)
    }

    fn request(query: &str, operation: Option<&str>, variables: Json) -> Request {
        let mut request = Request::new(query).variables(Variables::from_json(variables));
        if let Some(operation) = operation {
            request = request.operation_name(operation);
        }
        request
    }

    async fn answer(schema: &Schema, request: Request) -> Json {
        serde_json::to_value(schema.execute(request).await).unwrap()
    }

    const ECHO: &str = "query Echo($id: ID!, $n: Int, $list: [Int!], $nested: [[String!]]!, \
        $when: DateTime, $point: Point, $color: Color, $pick: Pick) { echo(id: $id, n: $n, \
        list: $list, nested: $nested, when: $when, point: $point, color: $color, pick: $pick) }";
    const MIXED: &str = "query($s: String, $x: Int) { echo(id: \"a\", nested: [[$s]], \
        point: {x: $x, y: \"bad\"}) }";
    const SKIP: &str = "query($skip: Boolean!, $id: ID!) { echo(id: $id) @skip(if: $skip) \
        a: echo(id: \"1\") @include(if: $skip) __typename @skip(if: $skip) }";
    const TWO: &str = "query A($n: Int!) { count(n: $n) } query B($m: Int!) { count(n: $m) }";
    const FRAGMENTS: &str = "query($n: Int!, $m: Int!) { ...F child { ... on Child { count(n: $m) } } } \
        fragment F on Query { count(n: $n) }";
    const DEFAULTS: &str = "query($n: Int = 3) { count(n: $n) }";
    const MUTATION: &str = "mutation($p: Point!) { set(point: $p) }";
    const UNKNOWN: &str = "query($n: Int!) { nope(n: $n) }";

    /// (query, operation name, variables): each valid and invalid in every way a
    /// variable's value can be.
    fn cases() -> Vec<(&'static str, Option<&'static str>, Json)> {
        let echo = |variables: Json| {
            let mut all = json!({"id": "a", "nested": [["x"]]});
            all.as_object_mut()
                .unwrap()
                .extend(variables.as_object().unwrap().clone());
            (ECHO, None, all)
        };
        vec![
            echo(json!({})),
            echo(json!({"id": 5})),
            echo(json!({"id": true})),
            echo(json!({"id": null})),
            (ECHO, None, json!({"nested": [["x"]]})),
            echo(json!({"n": "x"})),
            echo(json!({"n": 1.5})),
            echo(json!({"n": 99999999999i64})),
            echo(json!({"list": [1, null]})),
            echo(json!({"list": [1, "2"]})),
            echo(json!({"list": 3})),
            echo(json!({"list": null})),
            echo(json!({"nested": [["a"], null]})),
            echo(json!({"nested": [["a", null]]})),
            echo(json!({"nested": [[1]]})),
            echo(json!({"nested": "a"})),
            echo(json!({"nested": null})),
            echo(json!({"when": "not a date"})),
            echo(json!({"when": "2026-01-31T12:00:00.000Z"})),
            echo(json!({"when": 12})),
            echo(json!({"point": {"y": 1}})),
            echo(json!({"point": {"x": 1, "z": 2}})),
            echo(json!({"point": {"x": 1, "y": null}})),
            echo(json!({"point": {"x": 1, "inner": {"x": "a"}}})),
            echo(json!({"point": {"x": 1, "inner": {"inner": {}}}})),
            echo(json!({"point": {"x": 1, "tags": ["a", null]}})),
            echo(json!({"point": {"x": 1, "at": "yesterday"}})),
            echo(json!({"point": {"x": 1, "tags": "a", "at": "2026-01-31T12:00:00Z"}})),
            echo(json!({"point": "text"})),
            echo(json!({"point": [{"x": 1}]})),
            echo(json!({"color": "BLUE"})),
            echo(json!({"color": "GREEN"})),
            echo(json!({"color": 1})),
            echo(json!({"pick": {"id": "a", "name": "b"}})),
            echo(json!({"pick": {"id": null}})),
            echo(json!({"pick": {}})),
            echo(json!({"pick": {"name": "b"}})),
            echo(json!({"n": "x", "list": ["y"], "color": "BLUE"})),
            (MIXED, None, json!({"s": "a", "x": 1})),
            (MIXED, None, json!({"s": "a"})),
            (MIXED, None, json!({"s": 1, "x": 1})),
            (MIXED, None, json!({})),
            (SKIP, None, json!({"skip": true, "id": "a"})),
            (SKIP, None, json!({"skip": false, "id": "a"})),
            (SKIP, None, json!({"skip": "yes", "id": "a"})),
            (SKIP, None, json!({"skip": null, "id": "a"})),
            (SKIP, None, json!({"id": "a"})),
            (TWO, Some("A"), json!({"n": 1, "m": "x"})),
            (TWO, Some("A"), json!({"n": "x", "m": 1})),
            (TWO, Some("B"), json!({"n": "x", "m": 1})),
            (TWO, Some("B"), json!({"n": 1, "m": "x"})),
            (TWO, None, json!({"n": 1, "m": "x"})),
            (TWO, Some("C"), json!({"n": "x"})),
            (FRAGMENTS, None, json!({"n": 1, "m": 2})),
            (FRAGMENTS, None, json!({"n": "x", "m": 2})),
            (FRAGMENTS, None, json!({"n": 1, "m": null})),
            (DEFAULTS, None, json!({})),
            (DEFAULTS, None, json!({"n": null})),
            (DEFAULTS, None, json!({"n": "x"})),
            (MUTATION, None, json!({"p": {"x": 1}})),
            (MUTATION, None, json!({"p": {"x": "1"}})),
            (MUTATION, None, json!({"p": null})),
            (UNKNOWN, None, json!({"n": 1})),
            (UNKNOWN, None, json!({"n": "x"})),
        ]
    }

    #[tokio::test]
    async fn a_remembered_query_answers_as_one_validated_afresh() {
        let (remembering, factory) = schema();
        for (query, operation, variables) in cases() {
            // A schema that has seen nothing validates the request with its
            // variables: async-graphql's own verdict.
            let (fresh, _) = schema();
            let expected = answer(&fresh, request(query, operation, variables.clone())).await;
            // The other has seen the query without variables first, as a
            // statically valid query is then remembered.
            answer(&remembering, request(query, operation, json!({}))).await;
            let valid = query != UNKNOWN;
            assert_eq!(factory.remembers(query, operation), valid, "{query}");
            let got = answer(&remembering, request(query, operation, variables.clone())).await;
            assert_eq!(got, expected, "{query} {operation:?} {variables}");
        }
    }

    #[tokio::test]
    async fn a_query_first_seen_with_variables_is_remembered_only_when_they_suit() {
        let (schema, factory) = schema();
        let bad = request(ECHO, None, json!({"id": true, "nested": []}));
        let refused = answer(&schema, bad).await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"],
            json!("GRAPHQL_VALIDATION_FAILED")
        );
        assert!(!factory.remembers(ECHO, None));
        let good = request(ECHO, None, json!({"id": "a", "nested": []}));
        assert_eq!(answer(&schema, good).await["data"]["echo"], json!("ok"));
        assert!(factory.remembers(ECHO, None));
        // Remembered, and still refused with the same words.
        let bad = request(ECHO, None, json!({"id": true, "nested": []}));
        assert_eq!(answer(&schema, bad).await, refused);
    }

    #[tokio::test]
    async fn limits_hold_for_a_query_with_variables_each_time() {
        let (schema, factory) = schema();
        let deep = format!(
            "query($n: Int!) {{ {} count(n: $n) {} }}",
            "child {".repeat(TEST_LIMITS.max_depth),
            "}".repeat(TEST_LIMITS.max_depth)
        );
        for _ in 0..2 {
            let refused = answer(&schema, request(&deep, None, json!({"n": 1}))).await;
            assert_eq!(
                refused["errors"][0]["extensions"]["code"],
                json!("QUERY_TOO_DEEP"),
                "{refused}"
            );
        }
        assert!(!factory.remembers(&deep, None));
    }
}
