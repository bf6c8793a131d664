//! Appwrite's query language, in the JSON form its SDKs send since 1.5:
//! `{"method":"equal","attribute":"title","values":["a","b"]}`, each query a
//! JSON object or a JSON string holding one, with `and`/`or` nesting queries in
//! their `values`. [`parse_queries`] turns a list of them into a [`Filter`],
//! the selected attributes, the orders, a cursor and a limit or offset.
//!
//! Only the shape is checked here (methods, value counts and JSON types);
//! whether an attribute exists and a value fits its type is `filter`'s job, and
//! `$id`, `$createdAt`, `$updatedAt` become the system fields. Errors are all
//! `QUERY_INVALID` and say which query (by position, `#2` or nested `#2.0`)
//! and which method is wrong.

use std::borrow::Cow;
use std::io;

use serde_json::{Map, Value};

use super::filter::{CmpOp, Field, Filter, MAX_CONDITIONS, MAX_DEPTH, OrderBy};
use super::model::shown;
use super::spatial::Relation;

use crate::error::codes;

/// Most queries in one request, nested ones included.
pub const MAX_QUERIES: usize = 100;

/// Longest query, as a JSON string or once serialized.
pub const MAX_QUERY_LEN: usize = 4096;

/// Most values in one query, as in Appwrite.
pub const MAX_VALUES: usize = 500;

/// Largest `limit`: a list's largest page. A larger one is refused rather than cut
/// short, so that paging by `offset` never skips documents.
pub const MAX_LIMIT: u32 = super::documents::MAX_PAGE as u32;

/// Deepest nesting of `and`/`or` inside a top-level query, so that the filter
/// built stays within `filter::MAX_DEPTH` (the whole list is one `And`, and a
/// `contains` with several values one more `Or`, and a negated one a `Not` around
/// it).
pub const MAX_NESTING: usize = MAX_DEPTH - 4;

/// What a list of queries asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedQueries {
    /// All the filter queries, and-ed (an empty `And` matches everything).
    pub filter: Filter,
    /// The attributes of `select` queries, in order; `None` without any.
    pub select: Option<Vec<String>>,
    /// `orderAsc`/`orderDesc`, in order.
    pub orders: Vec<OrderBy>,
    /// The document id of `cursorAfter`.
    pub cursor_after: Option<String>,
    /// The document id of `cursorBefore`.
    pub cursor_before: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl ParsedQueries {
    /// Whether the queries only filter: no selection, order, cursor, limit or
    /// offset (what a bulk write or a subscription takes).
    pub fn only_filter(&self) -> bool {
        self.select.is_none()
            && self.orders.is_empty()
            && self.cursor_after.is_none()
            && self.cursor_before.is_none()
            && self.limit.is_none()
            && self.offset.is_none()
    }
}

/// Why a list of queries was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// One query is malformed.
    #[error("invalid query {position}: {reason}")]
    Invalid { position: String, reason: String },
    /// More than [`MAX_QUERIES`] queries.
    #[error("too many queries: at most {max} are allowed, nested ones included")]
    TooMany { max: usize },
}

impl QueryError {
    /// The stable `extensions.code` this error reaches a client with.
    pub fn code(&self) -> &'static str {
        codes::QUERY_INVALID
    }
}

/// Parses a list of queries, each a JSON object or a JSON string of one.
pub fn parse_queries(queries: &[Value]) -> Result<ParsedQueries, QueryError> {
    if queries.len() > MAX_QUERIES {
        return Err(QueryError::TooMany { max: MAX_QUERIES });
    }
    let mut parser = Parser::default();
    let mut filters = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        let position = format!("#{i}");
        if let Some(filter) = parser.query(query, &position, 0)? {
            filters.push(filter);
        }
    }
    parser.parsed.filter = Filter::And(filters);
    Ok(parser.parsed)
}

/// Parses queries given as JSON strings (as Appwrite's `queries[]` parameter).
pub fn parse_query_strings<S: AsRef<str>>(queries: &[S]) -> Result<ParsedQueries, QueryError> {
    if queries.len() > MAX_QUERIES {
        return Err(QueryError::TooMany { max: MAX_QUERIES });
    }
    let values: Vec<Value> = queries
        .iter()
        .map(|q| Value::String(q.as_ref().to_string()))
        .collect();
    parse_queries(&values)
}

/// A writer that only counts, and fails past [`MAX_QUERY_LEN`], so that
/// measuring a huge query stops early.
struct LengthLimit(usize);

impl io::Write for LengthLimit {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        if self.0 > MAX_QUERY_LEN {
            return Err(io::Error::other("too long"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Parser {
    parsed: ParsedQueries,
    /// Queries seen, nested ones included.
    count: usize,
    /// Filter conditions produced.
    conditions: usize,
}

/// One query being parsed, for its messages.
struct At<'a> {
    position: &'a str,
    method: &'a str,
}

impl At<'_> {
    fn err(&self, reason: impl Into<String>) -> QueryError {
        QueryError::Invalid {
            position: format!("{} ({})", self.position, shown(self.method)),
            reason: reason.into(),
        }
    }
}

fn invalid(position: &str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        position: position.to_string(),
        reason: reason.into(),
    }
}

impl Parser {
    /// Parses one query; `Some` filter for a filter method, `None` for the
    /// others (recorded in `parsed`). `depth` is the `and`/`or` nesting.
    fn query(
        &mut self,
        query: &Value,
        position: &str,
        depth: usize,
    ) -> Result<Option<Filter>, QueryError> {
        self.count += 1;
        if self.count > MAX_QUERIES {
            return Err(QueryError::TooMany { max: MAX_QUERIES });
        }
        let object = query_object(query, position)?;
        let Some(method) = object.get("method").and_then(Value::as_str) else {
            return Err(invalid(position, "the query has no `method`"));
        };
        let at = At { position, method };
        let (attribute, values) = arguments(&at, &object)?;
        // Conditions this query adds to the filter; nested queries count their own.
        let (filter, leaves) = match method {
            "and" | "or" => (self.nested(&at, values, depth)?, 0),
            "select" | "orderAsc" | "orderDesc" | "cursorAfter" | "cursorBefore" | "limit"
            | "offset" => {
                if depth > 0 {
                    return Err(at.err("only filter queries may be nested in and/or"));
                }
                self.option(&at, attribute, values)?;
                return Ok(None);
            }
            _ => condition(&at, attribute, values)?,
        };
        self.conditions += leaves;
        if self.conditions > MAX_CONDITIONS {
            return Err(at.err(format!(
                "the queries hold more than {MAX_CONDITIONS} conditions in all"
            )));
        }
        Ok(Some(filter))
    }

    /// `and`/`or`: the filter queries in `values`, each parsed one level deeper.
    fn nested(
        &mut self,
        at: &At<'_>,
        values: &[Value],
        depth: usize,
    ) -> Result<Filter, QueryError> {
        if depth >= MAX_NESTING {
            return Err(at.err(format!("and/or nest at most {MAX_NESTING} levels deep")));
        }
        if values.is_empty() {
            return Err(at.err("takes at least one query in `values`"));
        }
        let mut filters = Vec::with_capacity(values.len());
        for (i, nested) in values.iter().enumerate() {
            let position = format!("{}.{i}", at.position);
            match self.query(nested, &position, depth + 1)? {
                Some(filter) => filters.push(filter),
                None => {
                    return Err(invalid(
                        &position,
                        "only filter queries may be nested in and/or",
                    ));
                }
            }
        }
        Ok(if at.method == "and" {
            Filter::And(filters)
        } else {
            Filter::Or(filters)
        })
    }

    /// The methods that are not filters.
    fn option(
        &mut self,
        at: &At<'_>,
        attribute: Option<&str>,
        values: &[Value],
    ) -> Result<(), QueryError> {
        let parsed = &mut self.parsed;
        match at.method {
            "select" => {
                if values.is_empty() {
                    return Err(at.err("select takes at least one attribute"));
                }
                let selected = parsed.select.get_or_insert_with(Vec::new);
                for value in values {
                    match value.as_str() {
                        Some(name) if !name.is_empty() => selected.push(name.to_string()),
                        _ => return Err(at.err("select takes attribute names")),
                    }
                }
            }
            "orderAsc" | "orderDesc" => {
                if !values.is_empty() {
                    return Err(at.err("takes no values"));
                }
                let field = field(at, attribute)?;
                parsed.orders.push(OrderBy {
                    field,
                    desc: at.method == "orderDesc",
                });
            }
            "cursorAfter" | "cursorBefore" => {
                if parsed.cursor_after.is_some() || parsed.cursor_before.is_some() {
                    return Err(at.err("only one cursorAfter or cursorBefore is allowed"));
                }
                let id = one_string(at, values)?;
                if id.is_empty() {
                    return Err(at.err("takes a document id"));
                }
                if at.method == "cursorAfter" {
                    parsed.cursor_after = Some(id);
                } else {
                    parsed.cursor_before = Some(id);
                }
            }
            "limit" => {
                if parsed.limit.is_some() {
                    return Err(at.err("only one limit is allowed"));
                }
                let n = one_integer(at, values)?;
                match u32::try_from(n) {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => parsed.limit = Some(n),
                    _ => return Err(at.err(format!("the limit is from 1 to {MAX_LIMIT}"))),
                }
            }
            _ => {
                if parsed.offset.is_some() {
                    return Err(at.err("only one offset is allowed"));
                }
                let n = one_integer(at, values)?;
                match u32::try_from(n) {
                    Ok(n) => parsed.offset = Some(n),
                    Err(_) => {
                        return Err(at.err(format!("the offset is from 0 to {}", u32::MAX)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A query as the messages show one.
const EXAMPLE: &str = r#"{"method":"equal","attribute":"title","values":["a"]}"#;

/// A query as a JSON object: given as one, or as a JSON string holding one,
/// at most [`MAX_QUERY_LEN`] characters either way.
fn query_object<'a>(
    query: &'a Value,
    position: &str,
) -> Result<Cow<'a, Map<String, Value>>, QueryError> {
    let too_long = || {
        invalid(
            position,
            format!("a query has at most {MAX_QUERY_LEN} characters"),
        )
    };
    match query {
        Value::Object(map) => {
            if serde_json::to_writer(LengthLimit(0), query).is_err() {
                return Err(too_long());
            }
            Ok(Cow::Borrowed(map))
        }
        Value::String(text) => {
            if text.len() > MAX_QUERY_LEN {
                return Err(too_long());
            }
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(Cow::Owned(map)),
                _ => Err(invalid(
                    position,
                    format!("expected a JSON object such as {EXAMPLE}"),
                )),
            }
        }
        _ => Err(invalid(
            position,
            "a query is a JSON object or a JSON string holding one",
        )),
    }
}

/// A query's `attribute` (none when absent, null or empty) and `values` (at
/// most [`MAX_VALUES`]).
fn arguments<'a>(
    at: &At<'_>,
    object: &'a Map<String, Value>,
) -> Result<(Option<&'a str>, &'a [Value]), QueryError> {
    let attribute = match object.get("attribute") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(at.err("`attribute` must be a string")),
    };
    let values: &[Value] = match object.get("values") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(values)) => values,
        Some(_) => return Err(at.err("`values` must be an array")),
    };
    if values.len() > MAX_VALUES {
        return Err(at.err(format!("a query has at most {MAX_VALUES} values")));
    }
    Ok((attribute, values))
}

/// A filter method other than `and`/`or`, and the number of conditions it
/// adds (a `contains` with several values is one per value).
fn condition(
    at: &At<'_>,
    attribute: Option<&str>,
    values: &[Value],
) -> Result<(Filter, usize), QueryError> {
    condition_as(at, at.method, attribute, values)
}

/// The method a negated one negates: `notContains` → `contains`.
fn positive_of(negated: &str) -> &'static str {
    match negated {
        "notContains" => "contains",
        "notSearch" => "search",
        "notBetween" => "between",
        "notStartsWith" => "startsWith",
        _ => "endsWith",
    }
}

/// The condition of `method` (the query's own, or the one a negated method
/// negates), its errors named after the query's method as written.
fn condition_as(
    at: &At<'_>,
    method: &str,
    attribute: Option<&str>,
    values: &[Value],
) -> Result<(Filter, usize), QueryError> {
    let filter = match method {
        // A point, line or polygon compared with shapes (Appwrite's spatial
        // `equal`, `contains` and their negations).
        "equal" | "notEqual" | "contains" | "containsAny"
            if values.first().is_some_and(Value::is_array) =>
        {
            let relation = if method.starts_with("contains") {
                Relation::Contains
            } else {
                Relation::Equals
            };
            let (filter, leaves) = shapes(at, attribute, values, relation)?;
            return Ok(if method == "notEqual" {
                (Filter::Not(Box::new(filter)), leaves)
            } else {
                (filter, leaves)
            });
        }
        _ if Relation::of_method(method).is_some() => {
            let (relation, negated) =
                Relation::of_method(method).unwrap_or((Relation::Equals, false));
            let field = field(at, attribute)?;
            let filter = if relation.is_distance() {
                let (shape, distance, meters) = distance_of(at, values)?;
                Filter::Spatial {
                    field,
                    relation,
                    shape,
                    distance,
                    meters,
                }
            } else {
                let [shape] = values else {
                    return Err(at.err(format!("takes one shape, got {} values", values.len())));
                };
                Filter::Spatial {
                    field,
                    relation,
                    shape: shape.clone(),
                    distance: 0.0,
                    meters: false,
                }
            };
            if negated {
                Filter::Not(Box::new(filter))
            } else {
                filter
            }
        }
        "equal" | "notEqual" => {
            let field = field(at, attribute)?;
            let values = scalars(at, values, 1..=MAX_VALUES)?;
            let negate = method == "notEqual";
            match values.as_slice() {
                [one] => Filter::Cmp {
                    field,
                    op: if negate { CmpOp::Ne } else { CmpOp::Eq },
                    value: one.clone(),
                },
                _ => Filter::In {
                    field,
                    values,
                    negate,
                },
            }
        }
        "lessThan" | "lessThanEqual" | "greaterThan" | "greaterThanEqual" => {
            let op = match method {
                "lessThan" => CmpOp::Lt,
                "lessThanEqual" => CmpOp::Le,
                "greaterThan" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            let field = field(at, attribute)?;
            let mut values = scalars(at, values, 1..=1)?;
            Filter::Cmp {
                field,
                op,
                value: values.pop().unwrap_or(Value::Null),
            }
        }
        "between" => {
            let field = field(at, attribute)?;
            let mut values = scalars(at, values, 2..=2)?.into_iter();
            let (Some(low), Some(high)) = (values.next(), values.next()) else {
                return Err(at.err("between takes two values"));
            };
            Filter::Between { field, low, high }
        }
        "isNull" | "isNotNull" => {
            let field = field(at, attribute)?;
            if !values.is_empty() {
                return Err(at.err("takes no values"));
            }
            Filter::IsNull {
                field,
                is_null: method == "isNull",
            }
        }
        "startsWith" | "endsWith" | "search" => {
            let field = field(at, attribute)?;
            let value = one_string(at, values)?;
            match method {
                "startsWith" => Filter::StartsWith { field, value },
                "endsWith" => Filter::EndsWith { field, value },
                _ => Filter::Search {
                    field,
                    query: value,
                },
            }
        }
        "contains" | "containsAny" => return contains(at, attribute, values),
        "containsAll" => {
            let field = field(at, attribute)?;
            let values = scalars(at, values, 1..=MAX_VALUES)?;
            let leaves = values.len();
            let all = values
                .into_iter()
                .map(|value| Filter::Contains {
                    field: field.clone(),
                    value,
                })
                .collect();
            return Ok((Filter::And(all), leaves));
        }
        // Appwrite's shorthands (its SDKs since 1.8) for the system dates.
        "createdBefore" | "createdAfter" | "updatedBefore" | "updatedAfter" => {
            let field = system_date(at, attribute)?;
            let mut values = scalars(at, values, 1..=1)?;
            Filter::Cmp {
                field,
                op: if method.ends_with("Before") {
                    CmpOp::Lt
                } else {
                    CmpOp::Gt
                },
                value: values.pop().unwrap_or(Value::Null),
            }
        }
        "createdBetween" | "updatedBetween" => {
            let field = system_date(at, attribute)?;
            let mut values = scalars(at, values, 2..=2)?.into_iter();
            let (Some(low), Some(high)) = (values.next(), values.next()) else {
                return Err(at.err("takes two values"));
            };
            Filter::Between { field, low, high }
        }
        // Appwrite's negated methods: documents the method would not match, those
        // whose value is null included, as with `notEqual`.
        "notContains" | "notSearch" | "notBetween" | "notStartsWith" | "notEndsWith" => {
            let (filter, leaves) = condition_as(at, positive_of(method), attribute, values)?;
            return Ok((Filter::Not(Box::new(filter)), leaves));
        }
        _ => return Err(at.err(format!("unknown method {}", shown(method)))),
    };
    Ok((filter, 1))
}

/// The system date a `created…`/`updated…` shorthand compares: it names no
/// attribute (or the one it stands for).
fn system_date(at: &At<'_>, attribute: Option<&str>) -> Result<Field, QueryError> {
    let (field, name) = if at.method.starts_with("created") {
        (Field::CreatedAt, "$createdAt")
    } else {
        (Field::UpdatedAt, "$updatedAt")
    };
    match attribute {
        None => Ok(field),
        Some(given) if given == name => Ok(field),
        Some(_) => Err(at.err(format!("compares {name} and takes no `attribute`"))),
    }
}

/// A spatial `equal` or `contains` with one shape, or with several: any of them.
fn shapes(
    at: &At<'_>,
    attribute: Option<&str>,
    values: &[Value],
    relation: Relation,
) -> Result<(Filter, usize), QueryError> {
    let field = field(at, attribute)?;
    if let Some(i) = values.iter().position(|v| !v.is_array()) {
        return Err(at.err(format!(
            "value #{i} must be a shape like the others: [x, y], [[x, y], …] or [[[x, y], …], …]"
        )));
    }
    let mut any: Vec<Filter> = values
        .iter()
        .map(|shape| Filter::Spatial {
            field: field.clone(),
            relation,
            shape: shape.clone(),
            distance: 0.0,
            meters: false,
        })
        .collect();
    let leaves = any.len();
    Ok(match any.len() {
        1 => (any.pop().unwrap_or_default(), 1),
        _ => (Filter::Or(any), leaves),
    })
}

/// A distance query's one value: `[shape, distance]` or `[shape, distance,
/// meters]`.
fn distance_of(at: &At<'_>, values: &[Value]) -> Result<(Value, f64, bool), QueryError> {
    let usage = || at.err("takes one value: [shape, distance] or [shape, distance, meters]");
    let [Value::Array(parts)] = values else {
        return Err(usage());
    };
    match parts.as_slice() {
        [shape @ Value::Array(_), Value::Number(distance)] => {
            Ok((shape.clone(), distance.as_f64().unwrap_or(f64::NAN), false))
        }
        [shape, Value::Number(distance), Value::Bool(meters)] => Ok((
            shape.clone(),
            distance.as_f64().unwrap_or(f64::NAN),
            *meters,
        )),
        _ => Err(usage()),
    }
}

/// `contains` (or `containsAny`) with one value, or with several: any of them.
fn contains(
    at: &At<'_>,
    attribute: Option<&str>,
    values: &[Value],
) -> Result<(Filter, usize), QueryError> {
    let field = field(at, attribute)?;
    let mut values = scalars(at, values, 1..=MAX_VALUES)?;
    if values.len() == 1 {
        let value = values.pop().unwrap_or(Value::Null);
        return Ok((Filter::Contains { field, value }, 1));
    }
    let leaves = values.len();
    let any = values
        .into_iter()
        .map(|value| Filter::Contains {
            field: field.clone(),
            value,
        })
        .collect();
    Ok((Filter::Or(any), leaves))
}

/// The field a query names: `$id`, `$sequence`, `$createdAt`, `$updatedAt`, or
/// an attribute.
fn field(at: &At<'_>, attribute: Option<&str>) -> Result<Field, QueryError> {
    match attribute {
        None => Err(at.err("the query needs an `attribute`")),
        Some(name @ ("$id" | "$sequence" | "$createdAt" | "$updatedAt")) => Ok(named_field(name)),
        Some(name) if name.starts_with('$') => Err(at.err(format!(
            "{} cannot be queried; the system attributes are $id, $sequence, $createdAt and \
             $updatedAt",
            shown(name)
        ))),
        Some(name) => Ok(Field::Attribute(name.to_string())),
    }
}

/// The field `name` stands for: a system attribute (`$id`, `$sequence`,
/// `$createdAt`, `$updatedAt`) or an attribute (whose name, if unknown or a system one not
/// queried, is refused when the filter is resolved against its collection).
pub fn named_field(name: &str) -> Field {
    match name {
        "$id" => Field::Id,
        "$sequence" => Field::Sequence,
        "$createdAt" => Field::CreatedAt,
        "$updatedAt" => Field::UpdatedAt,
        name => Field::Attribute(name.to_string()),
    }
}

/// Values that are strings, numbers or booleans, as many as `count` allows.
fn scalars(
    at: &At<'_>,
    values: &[Value],
    count: std::ops::RangeInclusive<usize>,
) -> Result<Vec<Value>, QueryError> {
    if !count.contains(&values.len()) {
        let (min, max) = (*count.start(), *count.end());
        return Err(at.err(match (min, max) {
            (1, 1) => format!("takes one value, got {}", values.len()),
            (min, max) if min == max => format!("takes {min} values, got {}", values.len()),
            (min, _) => format!("takes at least {min} value, got {}", values.len()),
        }));
    }
    if let Some(i) = values
        .iter()
        .position(|v| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        return Err(at.err(format!(
            "value #{i} must be a string, a number or a boolean"
        )));
    }
    Ok(values.to_vec())
}

fn one_string(at: &At<'_>, values: &[Value]) -> Result<String, QueryError> {
    match values {
        [Value::String(s)] => Ok(s.clone()),
        _ => Err(at.err("takes one string value")),
    }
}

fn one_integer(at: &At<'_>, values: &[Value]) -> Result<i64, QueryError> {
    match values {
        [Value::Number(n)] => n.as_i64().ok_or_else(|| at.err("takes one integer value")),
        _ => Err(at.err("takes one integer value")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ddl::create_table_sql;
    use super::super::filter::{Target, Use, push_filter, push_order_and_offset};
    use super::super::model::test_support::{self, TestDb};
    use super::super::model::{Attribute, AttributeKind};
    use super::*;
    use serde_json::json;
    use sqlx::{Any, QueryBuilder};

    fn parse(queries: Value) -> Result<ParsedQueries, QueryError> {
        parse_queries(queries.as_array().unwrap())
    }

    fn filters(queries: Value) -> Vec<Filter> {
        match parse(queries).unwrap().filter {
            Filter::And(filters) => filters,
            other => panic!("{other:?}"),
        }
    }

    fn attr(key: &str) -> Field {
        Field::attribute(key)
    }

    #[test]
    fn appwrites_shorthands_parse_as_what_they_stand_for() {
        let got = filters(json!([
            {"method": "createdBefore", "values": ["2024-01-01T00:00:00.000+00:00"]},
            {"method": "createdAfter", "attribute": "$createdAt", "values": ["2024-01-01"]},
            {"method": "updatedBetween", "values": ["2024-01-01", "2024-02-01"]},
            {"method": "containsAny", "attribute": "tags", "values": ["x", "y"]},
            {"method": "containsAll", "attribute": "tags", "values": ["x", "y"]},
        ]));
        let contains = |value: &str| Filter::Contains {
            field: attr("tags"),
            value: json!(value),
        };
        assert_eq!(
            got,
            vec![
                Filter::Cmp {
                    field: Field::CreatedAt,
                    op: CmpOp::Lt,
                    value: json!("2024-01-01T00:00:00.000+00:00"),
                },
                Filter::Cmp {
                    field: Field::CreatedAt,
                    op: CmpOp::Gt,
                    value: json!("2024-01-01"),
                },
                Filter::Between {
                    field: Field::UpdatedAt,
                    low: json!("2024-01-01"),
                    high: json!("2024-02-01"),
                },
                Filter::Or(vec![contains("x"), contains("y")]),
                Filter::And(vec![contains("x"), contains("y")]),
            ]
        );
        for refused in [
            json!({"method": "createdBefore", "attribute": "title", "values": ["2024-01-01"]}),
            json!({"method": "updatedAfter", "attribute": "$createdAt", "values": ["2024-01-01"]}),
            json!({"method": "createdBetween", "values": ["2024-01-01"]}),
            json!({"method": "createdAfter", "values": []}),
            json!({"method": "containsAll", "attribute": "tags", "values": []}),
        ] {
            assert!(parse(json!([refused])).is_err(), "{refused}");
        }
    }

    #[test]
    fn every_filter_method_parses() {
        let got = filters(json!([
            {"method": "equal", "attribute": "title", "values": ["a"]},
            {"method": "equal", "attribute": "title", "values": ["a", "b"]},
            {"method": "notEqual", "attribute": "n", "values": [1]},
            {"method": "notEqual", "attribute": "n", "values": [1, 2]},
            {"method": "lessThan", "attribute": "n", "values": [1]},
            {"method": "lessThanEqual", "attribute": "n", "values": [1.5]},
            {"method": "greaterThan", "attribute": "$createdAt", "values": ["2024-01-01T00:00:00Z"]},
            {"method": "greaterThanEqual", "attribute": "$updatedAt", "values": ["2024-01-01T00:00:00Z"]},
            {"method": "between", "attribute": "n", "values": [1, 5]},
            {"method": "isNull", "attribute": "n"},
            {"method": "isNotNull", "attribute": "n", "values": []},
            {"method": "startsWith", "attribute": "$id", "values": ["ab"]},
            {"method": "endsWith", "attribute": "title", "values": ["z"]},
            {"method": "contains", "attribute": "tags", "values": ["x"]},
            {"method": "contains", "attribute": "tags", "values": ["x", "y"]},
            {"method": "search", "attribute": "body", "values": ["big cat"]},
            {"method": "equal", "attribute": "done", "values": [true]},
        ]));
        let expected = vec![
            Filter::Cmp {
                field: attr("title"),
                op: CmpOp::Eq,
                value: json!("a"),
            },
            Filter::In {
                field: attr("title"),
                values: vec![json!("a"), json!("b")],
                negate: false,
            },
            Filter::Cmp {
                field: attr("n"),
                op: CmpOp::Ne,
                value: json!(1),
            },
            Filter::In {
                field: attr("n"),
                values: vec![json!(1), json!(2)],
                negate: true,
            },
            Filter::Cmp {
                field: attr("n"),
                op: CmpOp::Lt,
                value: json!(1),
            },
            Filter::Cmp {
                field: attr("n"),
                op: CmpOp::Le,
                value: json!(1.5),
            },
            Filter::Cmp {
                field: Field::CreatedAt,
                op: CmpOp::Gt,
                value: json!("2024-01-01T00:00:00Z"),
            },
            Filter::Cmp {
                field: Field::UpdatedAt,
                op: CmpOp::Ge,
                value: json!("2024-01-01T00:00:00Z"),
            },
            Filter::Between {
                field: attr("n"),
                low: json!(1),
                high: json!(5),
            },
            Filter::IsNull {
                field: attr("n"),
                is_null: true,
            },
            Filter::IsNull {
                field: attr("n"),
                is_null: false,
            },
            Filter::StartsWith {
                field: Field::Id,
                value: "ab".into(),
            },
            Filter::EndsWith {
                field: attr("title"),
                value: "z".into(),
            },
            Filter::Contains {
                field: attr("tags"),
                value: json!("x"),
            },
            Filter::Or(vec![
                Filter::Contains {
                    field: attr("tags"),
                    value: json!("x"),
                },
                Filter::Contains {
                    field: attr("tags"),
                    value: json!("y"),
                },
            ]),
            Filter::Search {
                field: attr("body"),
                query: "big cat".into(),
            },
            Filter::Cmp {
                field: attr("done"),
                op: CmpOp::Eq,
                value: json!(true),
            },
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn options_and_nesting_parse_from_objects_and_strings() {
        let nested = json!({"method": "or", "values": [
            {"method": "equal", "attribute": "a", "values": [1]},
            "{\"method\":\"and\",\"values\":[{\"method\":\"isNull\",\"attribute\":\"b\"},{\"method\":\"greaterThan\",\"attribute\":\"c\",\"values\":[2]}]}"
        ]});
        let parsed = parse_queries(&[
            Value::String(nested.to_string()),
            json!({"method": "select", "values": ["title", "$id"]}),
            json!("{\"method\":\"select\",\"values\":[\"body\"]}"),
            json!({"method": "orderDesc", "attribute": "$createdAt"}),
            json!({"method": "orderAsc", "attribute": "title", "values": []}),
            json!({"method": "cursorAfter", "values": ["doc1"]}),
            json!({"method": "limit", "values": [25]}),
            json!({"method": "offset", "values": [0]}),
        ])
        .unwrap();
        assert_eq!(
            parsed,
            ParsedQueries {
                filter: Filter::And(vec![Filter::Or(vec![
                    Filter::Cmp {
                        field: attr("a"),
                        op: CmpOp::Eq,
                        value: json!(1)
                    },
                    Filter::And(vec![
                        Filter::IsNull {
                            field: attr("b"),
                            is_null: true
                        },
                        Filter::Cmp {
                            field: attr("c"),
                            op: CmpOp::Gt,
                            value: json!(2)
                        },
                    ]),
                ])]),
                select: Some(vec!["title".into(), "$id".into(), "body".into()]),
                orders: vec![OrderBy::desc(Field::CreatedAt), OrderBy::asc(attr("title"))],
                cursor_after: Some("doc1".into()),
                cursor_before: None,
                limit: Some(25),
                offset: Some(0),
            }
        );
        let before =
            parse_query_strings(&[r#"{"method":"cursorBefore","values":["d9"]}"#]).unwrap();
        assert_eq!(before.cursor_before.as_deref(), Some("d9"));
        assert_eq!(before.filter, Filter::And(vec![]));
        assert_eq!(parse_queries(&[]).unwrap(), ParsedQueries::default());
        assert_eq!(
            parse(json!([{"method": "limit", "values": [1000]}]))
                .unwrap()
                .limit,
            Some(1000)
        );
    }

    fn refused(query: Value) -> String {
        let err = parse_queries(&[json!({"method": "limit", "values": [1]}), query.clone()])
            .expect_err(&query.to_string());
        assert_eq!(err.code(), "QUERY_INVALID");
        err.to_string()
    }

    #[test]
    fn malformed_queries_are_refused_with_their_position_and_method() {
        let cases = [
            (
                json!({"method": "fuzzy", "attribute": "a", "values": [1]}),
                "unknown method `fuzzy`",
            ),
            (json!({"attribute": "a", "values": [1]}), "no `method`"),
            (json!({"method": 5}), "no `method`"),
            (json!(5), "JSON object"),
            (json!([]), "JSON object"),
            (json!("equal(\"a\", [1])"), "JSON object"),
            (json!("[1]"), "JSON object"),
            (
                json!({"method": "equal", "values": [1]}),
                "needs an `attribute`",
            ),
            (
                json!({"method": "equal", "attribute": "", "values": [1]}),
                "needs an `attribute`",
            ),
            (
                json!({"method": "equal", "attribute": 5, "values": [1]}),
                "must be a string",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": 1}),
                "must be an array",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": []}),
                "at least 1",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": [null]}),
                "value #0",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": [1, [2]]}),
                "value #1",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": [{"x": 1}]}),
                "value #0",
            ),
            (
                json!({"method": "equal", "attribute": "$permissions", "values": ["x"]}),
                "cannot be queried",
            ),
            (
                json!({"method": "lessThan", "attribute": "a", "values": [1, 2]}),
                "takes one value, got 2",
            ),
            (
                json!({"method": "between", "attribute": "a", "values": [1]}),
                "takes 2 values",
            ),
            (
                json!({"method": "isNull", "attribute": "a", "values": [1]}),
                "takes no values",
            ),
            (
                json!({"method": "startsWith", "attribute": "a", "values": [1]}),
                "one string",
            ),
            (
                json!({"method": "search", "attribute": "a", "values": ["a", "b"]}),
                "one string",
            ),
            (
                json!({"method": "contains", "attribute": "a"}),
                "at least 1",
            ),
            (
                json!({"method": "select", "values": []}),
                "at least one attribute",
            ),
            (
                json!({"method": "select", "values": [1]}),
                "attribute names",
            ),
            (json!({"method": "orderAsc"}), "needs an `attribute`"),
            (
                json!({"method": "orderDesc", "attribute": "a", "values": [1]}),
                "takes no values",
            ),
            (json!({"method": "cursorAfter", "values": []}), "one string"),
            (
                json!({"method": "cursorAfter", "values": [""]}),
                "document id",
            ),
            (json!({"method": "limit", "values": [2]}), "only one limit"),
            (
                json!({"method": "offset", "values": [-1]}),
                "offset is from 0",
            ),
            (json!({"method": "offset", "values": [1.5]}), "one integer"),
            (json!({"method": "offset", "values": ["1"]}), "one integer"),
            (json!({"method": "and", "values": []}), "at least one query"),
            (
                json!({"method": "or", "values": [{"method": "limit", "values": [1]}]}),
                "#1.0",
            ),
            (
                json!({"method": "or", "values": [{"method": "bogus"}]}),
                "#1.0 (`bogus`)",
            ),
            (
                json!({"method": "equal", "attribute": "a", "values": vec![1; 501]}),
                "at most 500 values",
            ),
            (Value::String("x".repeat(4097)), "at most 4096"),
            (
                json!({"method": "equal", "attribute": "a", "values": ["x".repeat(4096)]}),
                "at most 4096",
            ),
        ];
        for (query, expected) in cases {
            let message = refused(query.clone());
            assert!(message.contains(expected), "{query}: {message}");
            assert!(message.contains("#1"), "{query}: {message}");
        }
        for (limit, ok) in [
            (0, false),
            (1, true),
            (1000, true),
            (1001, false),
            (5000, false),
        ] {
            let result = parse(json!([{"method": "limit", "values": [limit]}]));
            assert_eq!(result.is_ok(), ok, "{limit}");
        }
        let cursors = parse(json!([
            {"method": "cursorAfter", "values": ["a"]},
            {"method": "cursorBefore", "values": ["b"]},
        ]));
        assert!(cursors.unwrap_err().to_string().contains("only one cursor"));
        let offsets = parse(
            json!([{"method": "offset", "values": [1]}, {"method": "offset", "values": [2]}]),
        );
        assert!(offsets.is_err());
    }

    #[test]
    fn sizes_and_nesting_are_bounded() {
        let one = json!({"method": "equal", "attribute": "a", "values": [1]});
        assert!(parse_queries(&vec![one.clone(); 100]).is_ok());
        assert_eq!(
            parse_queries(&vec![one.clone(); 101]).unwrap_err(),
            QueryError::TooMany { max: MAX_QUERIES }
        );
        // 1 + 100 nested queries (short ones, to stay under 4 KiB).
        let short = json!({"method": "isNull", "attribute": "a"});
        let wide = json!([{"method": "and", "values": vec![short.clone(); 99]}]);
        assert!(parse(wide).is_ok());
        let wide = json!([{"method": "and", "values": vec![short; 100]}]);
        assert!(matches!(
            parse(wide).unwrap_err(),
            QueryError::TooMany { .. }
        ));
        // Conditions count the values of a contains, which becomes an Or.
        let contains = json!({"method": "contains", "attribute": "t", "values": vec![1; 60]});
        let err = parse(json!([contains.clone(), contains])).unwrap_err();
        assert!(err.to_string().contains("conditions"), "{err}");

        let nest = |levels: usize| {
            let mut query = one.clone();
            for _ in 0..levels {
                query = json!({"method": "and", "values": [query]});
            }
            json!([query])
        };
        assert!(parse(nest(MAX_NESTING)).is_ok());
        let err = parse(nest(MAX_NESTING + 1)).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");
        // A query string exactly at the limit is fine.
        let padded = format!(
            r#"{{"method":"equal","attribute":"a","values":["{}"]}}"#,
            "x".repeat(4096 - 48)
        );
        assert_eq!(padded.len(), 4096);
        assert!(parse_query_strings(&[padded]).is_ok());
    }

    /// Queries as an SDK sends them, parsed and run.
    /// Four documents of `title` and `n`: alpha 1, beta 2, gamma null, alps 4.
    async fn seeded(db: &TestDb) -> Vec<Attribute> {
        let attrs = vec![
            Attribute {
                key: "title".into(),
                kind: AttributeKind::String { size: 20 },
                required: false,
                array: false,
                default: None,
            },
            Attribute {
                key: "n".into(),
                kind: AttributeKind::Integer {
                    min: None,
                    max: None,
                },
                required: false,
                array: false,
                default: None,
            },
        ];
        let pool = db.pool.clone();
        for statement in create_table_sql(db.dialect, "c_q", &attrs).unwrap() {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        for (i, (title, n)) in [
            ("alpha", Some(1)),
            ("beta", Some(2)),
            ("gamma", None),
            ("alps", Some(4)),
        ]
        .into_iter()
        .enumerate()
        {
            sqlx::query(
                "INSERT INTO c_q (id, created_at, updated_at, a_title, a_n) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(format!("d{i}"))
            .bind(i as i64)
            .bind(i as i64)
            .bind(title)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
        attrs
    }

    /// The ids of the seeded documents `queries` select, in their order.
    async fn matching(db: &TestDb, attrs: &[Attribute], queries: &[&str]) -> Vec<String> {
        let queries: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
        let parsed = parse_query_strings(&queries).unwrap();
        let mut builder = QueryBuilder::<Any>::new("SELECT d.id FROM c_q d WHERE ");
        let target = Target {
            table: "c_q".into(),
            attrs: attrs.to_vec(),
            searchable: Vec::new(),
            spatial: Vec::new(),
        };
        let filter = parsed.filter.resolve(&target, Use::Query).unwrap();
        push_filter(&mut builder, db.dialect, "d", &filter).unwrap();
        push_order_and_offset(
            &mut builder,
            db.dialect,
            "d",
            attrs,
            &parsed.orders,
            parsed.limit.unwrap_or(25) as usize,
            parsed.offset.unwrap_or(0) as usize,
        )
        .unwrap();
        builder
            .build_query_scalar()
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    async fn parsed_queries_run(db: TestDb) {
        let attrs = seeded(&db).await;
        let ids = matching(
            &db,
            &attrs,
            &[
                r#"{"method":"or","values":[{"method":"startsWith","attribute":"title","values":["al"]},{"method":"isNull","attribute":"n"}]}"#,
                r#"{"method":"notEqual","attribute":"n","values":[4]}"#,
                r#"{"method":"orderDesc","attribute":"title"}"#,
                r#"{"method":"limit","values":[10]}"#,
            ],
        )
        .await;
        assert_eq!(ids, ["d2", "d0"]);
        let by_id = r#"{"method":"orderAsc","attribute":"$id"}"#;
        for (negated, expected) in [
            (
                r#"{"method":"notStartsWith","attribute":"title","values":["al"]}"#,
                &["d1", "d2"][..],
            ),
            (
                r#"{"method":"notEndsWith","attribute":"title","values":["a"]}"#,
                &["d3"],
            ),
            (
                r#"{"method":"notContains","attribute":"title","values":["ph","ta"]}"#,
                &["d2", "d3"],
            ),
            // A null value is not between: the document is listed, as with notEqual.
            (
                r#"{"method":"notBetween","attribute":"n","values":[1,2]}"#,
                &["d2", "d3"],
            ),
        ] {
            assert_eq!(
                matching(&db, &attrs, &[negated, by_id]).await,
                expected,
                "{negated}"
            );
        }
        db.close().await;
    }

    #[tokio::test]
    async fn parsed_queries_run_on_sqlite() {
        parsed_queries_run(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn parsed_queries_run_on_mariadb() {
        if let Some(db) = test_support::mariadb().await {
            parsed_queries_run(db).await;
        }
    }
}
