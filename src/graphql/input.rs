//! Input types declared once. [`graphql_input!`](crate::graphql_input) makes, from
//! one declaration with its descriptions, both the Rust struct a resolver reads
//! (through serde, unknown fields refused) and the GraphQL input object the schema
//! shows, so the two cannot drift apart. A field's GraphQL type follows its Rust
//! type ([`InputType`]): `String` is `String!`, `Option<T>` drops the `!`, `Vec<T>`
//! is a list; `as "ID"` names another GraphQL type of the same shape (an id, an
//! enum that arrives as text).

use async_graphql::dynamic::{InputObject, TypeRef};

use crate::graphql::types::JSON;

/// A Rust value that can be read from a GraphQL input field: its GraphQL type
/// when the field is required (`Option<T>` makes it optional).
pub trait InputType {
    fn type_ref() -> TypeRef;
}

macro_rules! named_input_types {
    ($($rust:ty => $graphql:expr,)*) => {
        $(impl InputType for $rust {
            fn type_ref() -> TypeRef {
                TypeRef::named_nn($graphql)
            }
        })*
    };
}

named_input_types! {
    String => TypeRef::STRING,
    bool => TypeRef::BOOLEAN,
    i64 => TypeRef::INT,
    i32 => TypeRef::INT,
    u32 => TypeRef::INT,
    u64 => TypeRef::INT,
    f64 => TypeRef::FLOAT,
    serde_json::Value => JSON,
    serde_json::Map<String, serde_json::Value> => JSON,
}

impl<T: InputType> InputType for Option<T> {
    fn type_ref() -> TypeRef {
        match T::type_ref() {
            TypeRef::NonNull(inner) => *inner,
            nullable => nullable,
        }
    }
}

impl<T: InputType> InputType for Vec<T> {
    fn type_ref() -> TypeRef {
        TypeRef::NonNull(Box::new(TypeRef::List(Box::new(T::type_ref()))))
    }
}

/// An input object declared with [`graphql_input!`](crate::graphql_input).
pub trait GraphQLInput {
    /// The type's name in the schema.
    const NAME: &'static str;
    /// The GraphQL declaration of the type, with its descriptions.
    fn input_object() -> InputObject;
    /// Each field's GraphQL name, type and description, in declaration order (for
    /// an output type that mirrors the input).
    fn fields() -> Vec<(String, TypeRef, &'static str)>;
}

/// `shape` with its innermost named type replaced by `name`: `[String!]` as
/// `"ID"` is `[ID!]`.
pub fn renamed(shape: TypeRef, name: &'static str) -> TypeRef {
    match shape {
        TypeRef::Named(_) => TypeRef::named(name),
        TypeRef::NonNull(inner) => TypeRef::NonNull(Box::new(renamed(*inner, name))),
        TypeRef::List(inner) => TypeRef::List(Box::new(renamed(*inner, name))),
    }
}

/// The name serde's `rename_all = "camelCase"` gives a Rust field: `team_id` is
/// `teamId`, `r#type` is `type`.
pub fn camel_case(field: &str) -> String {
    let field = field.strip_prefix("r#").unwrap_or(field);
    let mut name = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.extend(c.to_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

/// Declares a GraphQL input type and the struct its values are read into, once:
///
/// ```
/// nimbus::graphql_input! {
///     "A new team."
///     pub struct CreateTeamInput {
///         "Id to give the team; omitted or `unique()` generates one."
///         pub id: Option<String> as "ID",
///         "Display name, 1-128 characters."
///         pub name: String,
///     }
/// }
///
/// use nimbus::graphql::input::GraphQLInput;
/// assert_eq!(CreateTeamInput::NAME, "CreateTeamInput");
/// let _declaration = CreateTeamInput::input_object();
/// let team: CreateTeamInput = serde_json::from_str(r#"{"name": "Core"}"#).unwrap();
/// assert_eq!(team.name, "Core");
/// assert!(serde_json::from_str::<CreateTeamInput>(r#"{"name": "x", "extra": 1}"#).is_err());
/// ```
///
/// `struct Rust as "GraphQLName"` gives the schema type another name than the
/// struct's; `#[…]` attributes before a field's description (e.g.
/// `#[serde(default)]`) go to the struct's field.
#[macro_export]
macro_rules! graphql_input {
    (
        $description:literal
        $(#[$meta:meta])*
        $vis:vis struct $name:ident $(as $graphql_name:literal)? {
            $(
                $(#[$field_meta:meta])*
                $field_description:literal
                $field_vis:vis $field:ident : $ty:ty $(as $graphql_type:literal)?
            ),* $(,)?
        }
    ) => {
        #[doc = $description]
        $(#[$meta])*
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        $vis struct $name {
            $(
                #[doc = $field_description]
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl $name {
            /// The `input` argument of a field that takes this type.
            #[allow(dead_code)]
            fn argument() -> async_graphql::dynamic::InputValue {
                async_graphql::dynamic::InputValue::new(
                    "input",
                    async_graphql::dynamic::TypeRef::named_nn(
                        <Self as $crate::graphql::input::GraphQLInput>::NAME,
                    ),
                )
            }
        }

        impl $crate::graphql::input::InputType for $name {
            fn type_ref() -> async_graphql::dynamic::TypeRef {
                async_graphql::dynamic::TypeRef::named_nn(
                    <Self as $crate::graphql::input::GraphQLInput>::NAME,
                )
            }
        }

        impl $crate::graphql::input::GraphQLInput for $name {
            const NAME: &'static str = $crate::graphql_input!(@name $name $($graphql_name)?);

            fn input_object() -> async_graphql::dynamic::InputObject {
                async_graphql::dynamic::InputObject::new(Self::NAME)
                    .description($description)
                    $(.field(
                        async_graphql::dynamic::InputValue::new(
                            $crate::graphql::input::camel_case(stringify!($field)),
                            $crate::graphql_input!(@type $ty $(, $graphql_type)?),
                        )
                        .description($field_description),
                    ))*
            }

            fn fields() -> Vec<(String, async_graphql::dynamic::TypeRef, &'static str)> {
                vec![$((
                    $crate::graphql::input::camel_case(stringify!($field)),
                    $crate::graphql_input!(@type $ty $(, $graphql_type)?),
                    $field_description,
                )),*]
            }
        }
    };
    (@name $name:ident) => { stringify!($name) };
    (@name $name:ident $graphql_name:literal) => { $graphql_name };
    (@type $ty:ty) => { <$ty as $crate::graphql::input::InputType>::type_ref() };
    (@type $ty:ty, $graphql_type:literal) => {
        $crate::graphql::input::renamed(
            <$ty as $crate::graphql::input::InputType>::type_ref(),
            $graphql_type,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::graphql_input! {
        "Every shape a field can take."
        struct Shapes as "ShapesInput" {
            "Required text."
            text: String,
            "Optional id."
            id: Option<String> as "ID",
            "A required list of ids."
            team_ids: Vec<String> as "ID",
            "An optional list."
            labels: Option<Vec<String>>,
            "JSON."
            prefs: Option<serde_json::Value>,
            "A keyword as a field."
            r#type: Option<i64>,
        }
    }

    fn field_types() -> Vec<(String, String)> {
        let schema = async_graphql::dynamic::Schema::build("Query", None, None)
            .register(Shapes::input_object())
            .register(async_graphql::dynamic::Scalar::new(JSON))
            .register(
                async_graphql::dynamic::Object::new("Query").field(
                    async_graphql::dynamic::Field::new(
                        "shapes",
                        TypeRef::named(TypeRef::INT),
                        |_| {
                            async_graphql::dynamic::FieldFuture::new(async {
                                Ok(None::<async_graphql::Value>)
                            })
                        },
                    )
                    .argument(async_graphql::dynamic::InputValue::new(
                        "input",
                        TypeRef::named("ShapesInput"),
                    )),
                ),
            )
            .finish()
            .unwrap();
        let sdl = schema.sdl();
        let start = sdl.find("input ShapesInput").expect("declared");
        let body = &sdl[start..sdl[start..].find('}').unwrap() + start];
        body.lines()
            .filter_map(|line| line.trim().split_once(": "))
            .map(|(name, ty)| (name.to_owned(), ty.to_owned()))
            .collect()
    }

    #[test]
    fn rust_types_become_their_graphql_types() {
        let expected = [
            ("text", "String!"),
            ("id", "ID"),
            ("teamIds", "[ID!]!"),
            ("labels", "[String!]"),
            ("prefs", "JSON"),
            ("type", "Int"),
        ];
        let found = field_types();
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn values_are_read_by_their_graphql_names_and_unknown_fields_refused() {
        let shapes: Shapes = serde_json::from_value(serde_json::json!({
            "text": "a", "teamIds": ["t1"], "type": 3
        }))
        .unwrap();
        assert_eq!(shapes.team_ids, ["t1"]);
        assert_eq!(shapes.r#type, Some(3));
        assert_eq!(
            (shapes.id, shapes.labels, shapes.prefs, shapes.text.as_str()),
            (None, None, None, "a")
        );
        let unknown = serde_json::from_value::<Shapes>(serde_json::json!({
            "text": "a", "teamIds": [], "team_ids": []
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn camel_case_matches_serde() {
        assert_eq!(camel_case("salt_separator"), "saltSeparator");
        assert_eq!(camel_case("r#type"), "type");
        assert_eq!(camel_case("id"), "id");
    }
}
