//! Filters, ordering and pagination over a collection's table.
//!
//! A filter arrives as a [`Filter`] (from the typed `PostFilter` input or from
//! Appwrite's JSON queries, `appwrite_query`) and is checked and converted once,
//! by [`Filter::resolve`], into a [`ResolvedFilter`]: every field found in its
//! collection, every operator checked against the field's type, every value in
//! its attribute's stored form (`model`: a datetime as milliseconds, a boolean as
//! 0/1), every relationship pointing at its related table. A bad filter fails
//! there, with its code, before anything runs. The SQL of [`push_filter`] and the
//! in-memory matcher of typed subscriptions (`matcher`) consume only the resolved
//! form, so neither checks nor converts again, and they cannot disagree about
//! what a value means.
//!
//! Orders come with keyset pagination ([`push_order_and_cursor`], with
//! [`Cursor`], whose one string form [`Cursor::encode`] serves every list) or
//! with an offset ([`push_order_and_offset`]). Every keyset condition is a range
//! of an index on the first order column: a page that may cross that column's
//! NULLs is read in two statements, one per side ([`keyset_parts`]), and a page
//! may be bounded first by where it ends ([`push_lead_probe`]).
//!
//! Values are bound, never spliced. Identifiers are the caller's table alias
//! (checked) and columns derived from validated keys, quoted per dialect.
//!
//! The two dialects are made to agree:
//! - Strings compare case-sensitively on both (MariaDB tables are binary
//!   collations). SQLite's `LIKE` ignores ASCII case and its switch,
//!   `PRAGMA case_sensitive_like`, is per connection, so on SQLite
//!   `startsWith` is `col >= ? AND substr(col, 1, length(?)) = ?` (the range
//!   half can use an index), `endsWith` is `substr(col, -length(?)) = ?` and
//!   `contains` is `instr(col, ?) > 0`; on MariaDB they are `LIKE` patterns,
//!   which its indexes serve for prefixes.
//! - `LIKE` patterns escape `%`, `_` and the escape character `!`, with an
//!   explicit `ESCAPE '!'`. Not `\`: `'\'` is a whole literal in SQLite but an
//!   unterminated one in MariaDB, whose `'\\'` in turn depends on `sql_mode`.
//! - `search` needs every whitespace-separated word, as a word prefix, ignoring
//!   case, through the attribute's full-text index (resolving a filter for a
//!   query checks that it exists): SQLite's FTS5 table (see
//!   `ddl::create_index_sql`), MariaDB's `MATCH (s_col) AGAINST ('+word* …' IN
//!   BOOLEAN MODE)` on the case-insensitive copy of the column, which also skips
//!   words shorter than InnoDB's minimum token size and stopwords. The two agree
//!   on plain words, not on every input.
//! - NULLs sort first in ascending order and last in descending order, which
//!   is what both do natively; the keyset condition follows the same rule.
//! - `ne`, `notIn` and `Not` match rows where the column is NULL (Appwrite's
//!   `notEqual` does): a condition that is not true counts as not matching.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, QueryBuilder, Row as _, ValueRef as _};

use crate::error::{AppError, codes};

use super::Collection;
use super::model::{
    Attribute, SqlDialect, SqlValue, document_datetime_to_millis, read_float, read_int, read_text,
    shown,
};
use super::spatial::{self, Checked, Relation, Shape};

/// Deepest nesting of `And`/`Or`/`Not` (a bare condition is depth 1).
pub const MAX_DEPTH: usize = 10;

/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 100;

/// Most values in one `In` (Appwrite's 500 values of a query).
pub const MAX_IN_VALUES: usize = 500;

/// Values of an `In` that count as one condition towards [`MAX_CONDITIONS`], so
/// that a filter binds at most 10,000 values however its lists are cut.
pub const IN_VALUES_PER_CONDITION: usize = 100;

/// Most words in one `search`: each is a term of its own for the full-text
/// index (a prefix match), so a search costs about its words times the index's
/// matches. Every word also counts as a condition towards [`MAX_CONDITIONS`].
pub const MAX_SEARCH_WORDS: usize = 32;

/// Most orders in one list (each adds a term to the keyset condition).
pub const MAX_ORDERS: usize = 8;

/// Longest cursor string accepted: room for eight orders on the longest
/// `VARCHAR` strings, even escaped.
pub const MAX_CURSOR_LEN: usize = 1024 * 1024;

/// The code of a cursor this server did not make for the list it is given to.
/// It replaced `CURSOR_INVALID`, which errors still name in
/// `extensions.aliases` (see `error.rs`).
pub const INVALID_CURSOR: &str = codes::INVALID_CURSOR;

/// Alias of `json_each` in the array `contains` subquery; the caller's alias
/// may not be it.
const JSON_EACH_ALIAS: &str = "nimbus_je";

/// The `LIKE` escape character (see the module doc for why not `\`).
const LIKE_ESCAPE: char = '!';

/// What a filter or an order names: a user attribute, or a system field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `$id`, column `id`.
    Id,
    /// `$createdAt`, column `created_at` (milliseconds).
    CreatedAt,
    /// `$updatedAt`, column `updated_at` (milliseconds).
    UpdatedAt,
    /// `$sequence`, column `rowid` (`ddl::SEQUENCE_COLUMN`).
    Sequence,
    /// A user attribute by key, column `a_<key>`.
    Attribute(String),
}

impl Field {
    pub fn attribute(key: impl Into<String>) -> Self {
        Field::Attribute(key.into())
    }

    /// The field as messages name it.
    pub fn shown(&self) -> String {
        match self {
            Field::Id => "`$id`".into(),
            Field::CreatedAt => "`$createdAt`".into(),
            Field::UpdatedAt => "`$updatedAt`".into(),
            Field::Sequence => "`$sequence`".into(),
            Field::Attribute(key) => shown(key),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A filter over a collection's documents, as a client wrote it: fields by
/// name, values as JSON. [`Filter::resolve`] checks it.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All of them; empty is true.
    And(Vec<Filter>),
    /// Any of them; empty is false.
    Or(Vec<Filter>),
    /// Documents the inner filter does not match (including those for which it
    /// is unknown because of a NULL).
    Not(Box<Filter>),
    /// `field op value`; `Ne` also matches NULL. Not for arrays.
    Cmp {
        field: Field,
        op: CmpOp,
        value: Value,
    },
    /// `field` is one of `values` (or, with `negate`, none of them or NULL).
    In {
        field: Field,
        values: Vec<Value>,
        negate: bool,
    },
    IsNull {
        field: Field,
        is_null: bool,
    },
    /// `low <= field <= high`.
    Between {
        field: Field,
        low: Value,
        high: Value,
    },
    /// Case-sensitive prefix of a string field.
    StartsWith {
        field: Field,
        value: String,
    },
    /// Case-sensitive suffix of a string field.
    EndsWith {
        field: Field,
        value: String,
    },
    /// A string field contains `value` (case-sensitive substring), or an array
    /// field has `value` as an element.
    Contains {
        field: Field,
        value: Value,
    },
    /// Every word of `query` occurs in a string field (see the module doc).
    Search {
        field: Field,
        query: String,
    },
    /// A point, line or polygon field relates to `shape` as `relation` says;
    /// a distance relation compares with `distance` (in meters on the sphere
    /// when `meters`, between points). Never true of a document with no shape.
    Spatial {
        field: Field,
        relation: Relation,
        shape: Value,
        distance: f64,
        meters: bool,
    },
    /// The reference in `field` points at a document of `target` that matches
    /// `filter`: `field IN (SELECT id FROM table …)`.
    Related {
        field: Field,
        target: Target,
        filter: Box<Filter>,
    },
    /// Documents linked through `link` to at least one document of `target`
    /// that matches `filter`.
    RelatedThrough {
        link: Link,
        target: Target,
        filter: Box<Filter>,
    },
    /// Documents linked through `link` to the document `id`.
    LinkedTo {
        link: Link,
        id: String,
    },
}

impl Filter {
    /// The field a single condition compares; `None` for a combination or a
    /// condition across a relationship.
    pub fn field(&self) -> Option<&Field> {
        match self {
            Filter::Cmp { field, .. }
            | Filter::In { field, .. }
            | Filter::IsNull { field, .. }
            | Filter::Between { field, .. }
            | Filter::StartsWith { field, .. }
            | Filter::EndsWith { field, .. }
            | Filter::Contains { field, .. }
            | Filter::Search { field, .. }
            | Filter::Spatial { field, .. } => Some(field),
            Filter::And(_)
            | Filter::Or(_)
            | Filter::Not(_)
            | Filter::Related { .. }
            | Filter::RelatedThrough { .. }
            | Filter::LinkedTo { .. } => None,
        }
    }

    /// [`Filter::field`], to change it.
    pub fn field_mut(&mut self) -> Option<&mut Field> {
        match self {
            Filter::Cmp { field, .. }
            | Filter::In { field, .. }
            | Filter::IsNull { field, .. }
            | Filter::Between { field, .. }
            | Filter::StartsWith { field, .. }
            | Filter::EndsWith { field, .. }
            | Filter::Contains { field, .. }
            | Filter::Search { field, .. }
            | Filter::Spatial { field, .. } => Some(field),
            Filter::And(_)
            | Filter::Or(_)
            | Filter::Not(_)
            | Filter::Related { .. }
            | Filter::RelatedThrough { .. }
            | Filter::LinkedTo { .. } => None,
        }
    }
}

/// A junction table seen from one side: the column holding this side's ids
/// (`near`) and the one holding the other side's (`far`). Names are the
/// server's own, never client input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub junction: String,
    pub near: &'static str,
    pub far: &'static str,
}

impl Default for Filter {
    /// The filter that matches everything.
    fn default() -> Self {
        Filter::And(Vec::new())
    }
}

/// A collection's table as a filter sees it: its name (a collection table the
/// server named), its stored columns, the attributes a full-text index covers,
/// which `search` needs, and those a spatial index covers, which spatial
/// conditions narrow by.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub table: String,
    pub attrs: Vec<Attribute>,
    pub searchable: Vec<String>,
    pub spatial: Vec<String>,
}

impl Target {
    pub fn of(collection: &Collection) -> Self {
        let attrs = collection.columns();
        let searchable = attrs
            .iter()
            .filter(|a| super::ddl::fulltext_index_covers(&collection.indexes, &a.key))
            .map(|a| a.key.clone())
            .collect();
        let spatial = collection
            .indexes
            .iter()
            .filter(|i| i.kind == super::ddl::IndexKind::Spatial)
            .filter_map(|i| i.attributes.first().cloned())
            .collect();
        Target {
            table: collection.table.clone(),
            attrs,
            searchable,
            spatial,
        }
    }
}

/// What a filter is resolved for, which decides what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A query: `search` needs a full-text index on its attribute, on both
    /// backends, so that what works on SQLite works on MariaDB too.
    Query,
    /// Matching one document in memory (typed subscriptions): no condition may
    /// reach across a relationship, which would need the database.
    Match,
}

/// Why a filter, an order or a cursor was refused. Messages name the field and
/// never contain SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `FILTER_UNKNOWN_FIELD`: no such attribute.
    #[error("unknown field {field}")]
    UnknownField { field: String },
    /// `FILTER_INVALID`: the operator does not apply to the field, or the value
    /// has the wrong type.
    #[error("invalid filter on {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// `FILTER_INVALID`: a condition across a relationship where a document is
    /// matched in memory.
    #[error("a subscription's filter cannot reach across relationships")]
    NotEvaluable,
    /// `FILTER_TOO_COMPLEX`: too deep, too many conditions, values or orders.
    #[error("the filter is too complex: {reason}")]
    TooComplex { reason: String },
    /// `VALUE_INVALID`: a value no stored one can be compared with, such as a
    /// search term holding control characters.
    #[error("invalid value for {field}: {reason}")]
    ValueInvalid { field: String, reason: String },
    /// `SEARCH_NEEDS_FULLTEXT_INDEX`: `search` on an attribute no full-text
    /// index covers.
    #[error("search on `{key}` needs a FULLTEXT index on it (createIndex type FULLTEXT)")]
    SearchNeedsIndex { key: String },
    /// `INVALID_CURSOR`: a cursor that this server did not make for this list.
    #[error("invalid cursor: {reason}")]
    InvalidCursor { reason: String },
    /// `INTERNAL`: the caller's table alias is not a plain identifier, a table
    /// or link is not the server's, or a row lacks a column the cursor needs;
    /// a bug, never client input.
    #[error("internal error in the filter builder: {reason}")]
    Internal { reason: String },
}

impl FilterError {
    /// The stable `extensions.code` this error reaches a client with.
    pub fn code(&self) -> &'static str {
        match self {
            FilterError::UnknownField { .. } => codes::FILTER_UNKNOWN_FIELD,
            FilterError::Invalid { .. } | FilterError::NotEvaluable => codes::FILTER_INVALID,
            FilterError::TooComplex { .. } => codes::FILTER_TOO_COMPLEX,
            FilterError::ValueInvalid { .. } => codes::VALUE_INVALID,
            FilterError::SearchNeedsIndex { .. } => codes::SEARCH_NEEDS_FULLTEXT_INDEX,
            FilterError::InvalidCursor { .. } => INVALID_CURSOR,
            FilterError::Internal { .. } => codes::INTERNAL,
        }
    }

    /// The error a client gets: the input it names is the `filter` argument,
    /// or the attribute a `search` lacks an index on.
    pub fn into_app_error(self) -> AppError {
        match self {
            FilterError::Internal { .. } => AppError::Internal(anyhow::anyhow!("{self}")),
            FilterError::NotEvaluable => AppError::Invalid {
                code: self.code(),
                field: "filter".into(),
                reason: self.to_string(),
            },
            FilterError::SearchNeedsIndex { ref key } => AppError::Invalid {
                code: self.code(),
                field: key.clone(),
                reason: self.to_string(),
            },
            other => AppError::Invalid {
                code: other.code(),
                field: "filter".into(),
                reason: other.to_string(),
            },
        }
    }
}

fn invalid_cursor(reason: impl Into<String>) -> FilterError {
    FilterError::InvalidCursor {
        reason: reason.into(),
    }
}

/// The error of a cursor argument (`after`, `before`, Appwrite's `queries`)
/// that does not name a position in the list it is given to.
pub fn cursor_error(field: &str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: INVALID_CURSOR,
        field: field.into(),
        reason: reason.into(),
    }
}

fn internal(reason: impl ToString) -> FilterError {
    FilterError::Internal {
        reason: reason.to_string(),
    }
}

/// Where a column's values come from, which decides how they convert.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Id,
    Timestamp,
    Sequence,
    Attr(Attribute),
}

/// The stored type of a column, as a cursor carries it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    Int,
    Float,
    Text,
}

/// A field found in its collection: the column a resolved condition or an
/// order reads, and how its values are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    field: Field,
    source: Source,
}

impl Column {
    /// `field` among the system fields and `attrs`.
    fn find(attrs: &[Attribute], field: &Field) -> Result<Column, FilterError> {
        let source =
            match field {
                Field::Id => Source::Id,
                Field::CreatedAt | Field::UpdatedAt => Source::Timestamp,
                Field::Sequence => Source::Sequence,
                Field::Attribute(key) => {
                    Source::Attr(attrs.iter().find(|a| &a.key == key).cloned().ok_or_else(
                        || FilterError::UnknownField {
                            field: field.shown(),
                        },
                    )?)
                }
            };
        Ok(Column {
            field: field.clone(),
            source,
        })
    }

    pub fn field(&self) -> &Field {
        &self.field
    }

    /// The attribute behind the column, none for a system field.
    pub fn attribute(&self) -> Option<&Attribute> {
        match &self.source {
            Source::Attr(attr) => Some(attr),
            _ => None,
        }
    }

    /// The column name, as a row returns it.
    fn name(&self) -> String {
        match (&self.field, &self.source) {
            (_, Source::Attr(attr)) => attr.column(),
            (Field::CreatedAt, _) => "created_at".into(),
            (Field::UpdatedAt, _) => "updated_at".into(),
            (Field::Sequence, _) => super::ddl::SEQUENCE_COLUMN.into(),
            _ => "id".into(),
        }
    }

    fn shown(&self) -> String {
        self.field.shown()
    }

    fn invalid(&self, reason: impl Into<String>) -> FilterError {
        FilterError::Invalid {
            field: self.shown(),
            reason: reason.into(),
        }
    }

    fn nullable(&self) -> bool {
        // The sequence too: a MariaDB table that had no room for its key has
        // no number for documents made since (`upgrade::sequences`).
        matches!(self.source, Source::Attr(_) | Source::Sequence)
    }

    pub fn is_array(&self) -> bool {
        matches!(&self.source, Source::Attr(a) if a.array)
    }

    fn stored(&self) -> Stored {
        match &self.source {
            Source::Id => Stored::Text,
            Source::Timestamp | Source::Sequence => Stored::Int,
            Source::Attr(a) if a.kind.is_stored_as_integer() => Stored::Int,
            Source::Attr(a) if a.kind.is_textual() || a.kind.shape().is_some() => Stored::Text,
            Source::Attr(_) => Stored::Float,
        }
    }

    /// Refuses arrays for operators that compare the whole value.
    fn scalar(&self, what: &str) -> Result<(), FilterError> {
        if self.is_array() {
            return Err(self.invalid(format!(
                "{what} does not apply to an array; use contains, isNull or isNotNull"
            )));
        }
        if let Some(shape) = self.attribute().and_then(|a| a.kind.shape()) {
            return Err(self.invalid(format!(
                "{what} does not apply to a {}: compare it with a shape (equal, contains, \
                 intersects, crosses, overlaps, touches, distance…)",
                shape.name()
            )));
        }
        Ok(())
    }

    /// Refuses all but string fields, for the substring operators.
    fn textual(&self, what: &str) -> Result<(), FilterError> {
        self.scalar(what)?;
        match &self.source {
            Source::Id => Ok(()),
            Source::Attr(a) if a.kind.is_textual() => Ok(()),
            Source::Attr(a) => Err(self.invalid(format!(
                "{what} applies to string attributes, and this one is {}",
                a.kind.name()
            ))),
            Source::Timestamp | Source::Sequence => {
                Err(self.invalid(format!("{what} applies to strings")))
            }
        }
    }

    /// A value (or an array element) in stored form. The one conversion of
    /// filter operands, and of a document's values when it is matched in
    /// memory.
    pub fn value(&self, json: &Value) -> Result<SqlValue, FilterError> {
        match &self.source {
            Source::Attr(attr) => attr
                .filter_value(json)
                .map_err(|err| self.invalid(err.reason())),
            Source::Id => match json {
                Value::String(s) => Ok(SqlValue::Text(s.clone())),
                _ => Err(self.invalid("expected a string id")),
            },
            // A decimal string, as documents show it, or a number.
            Source::Sequence => match json {
                Value::String(s) => s.parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .filter(|n| *n >= 0)
            .map(SqlValue::Int)
            .ok_or_else(|| self.invalid("expected a sequence number such as \"12\"")),
            Source::Timestamp => json
                .as_str()
                .and_then(document_datetime_to_millis)
                .map(SqlValue::Int)
                .ok_or_else(|| {
                    self.invalid("expected an RFC 3339 date-time such as 2024-05-01T12:00:00.000Z")
                }),
        }
    }
}

/// A filter checked against its collection, with every value in stored form:
/// what SQL compilation ([`push_filter`]) and the matcher (`matcher`) consume.
/// Only [`Filter::resolve`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedFilter {
    /// All of them; empty is true.
    And(Vec<ResolvedFilter>),
    /// Any of them; empty is false.
    Or(Vec<ResolvedFilter>),
    /// Not true (false, or unknown because of a NULL).
    Not(Box<ResolvedFilter>),
    /// `column op value`; `Ne` also matches NULL.
    Cmp {
        column: Column,
        op: CmpOp,
        value: SqlValue,
    },
    /// `column` is one of `values` (or, with `negate`, none of them or NULL).
    In {
        column: Column,
        values: Vec<SqlValue>,
        negate: bool,
    },
    IsNull {
        column: Column,
        is_null: bool,
    },
    /// `low <= column <= high`.
    Between {
        column: Column,
        low: SqlValue,
        high: SqlValue,
    },
    /// Case-sensitive prefix of a string column.
    StartsWith {
        column: Column,
        value: String,
    },
    /// Case-sensitive suffix of a string column.
    EndsWith {
        column: Column,
        value: String,
    },
    /// Case-sensitive substring of a string column.
    Contains {
        column: Column,
        value: String,
    },
    /// An array column has `value` as an element.
    HasElement {
        column: Column,
        value: SqlValue,
    },
    /// Every word of `query` in a string attribute of `table`, through its
    /// full-text index.
    Search {
        column: Column,
        table: String,
        query: String,
    },
    /// A shape column relates to a shape (see [`Filter::Spatial`]).
    Spatial(SpatialCondition),
    /// The reference in `column` points at a document of `table` matching
    /// `filter`.
    Related {
        column: Column,
        table: String,
        filter: Box<ResolvedFilter>,
    },
    /// Linked through `link` to a document of `table` matching `filter`.
    RelatedThrough {
        link: Link,
        table: String,
        filter: Box<ResolvedFilter>,
    },
    /// Linked through `link` to the document `id`.
    LinkedTo {
        link: Link,
        id: String,
    },
}

/// A spatial condition checked against its collection.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialCondition {
    pub column: Column,
    pub relation: Relation,
    pub shape: Checked,
    pub distance: f64,
    pub meters: bool,
    /// The table whose spatial index covers the column, when one does.
    pub index: Option<String>,
}

impl Default for ResolvedFilter {
    /// The filter that matches everything.
    fn default() -> Self {
        ResolvedFilter::And(Vec::new())
    }
}

impl Filter {
    /// Checks this filter against the collection `target` for `usage` and
    /// converts every value to its stored form: the one place a filter is
    /// refused (unknown field, operator that does not apply, value of the wrong
    /// type, too complex, `search` without its index).
    pub fn resolve(&self, target: &Target, usage: Use) -> Result<ResolvedFilter, FilterError> {
        check_complexity(self, 1, &mut 0)?;
        check_table(&target.table)?;
        resolve_in(self, target, usage)
    }
}

fn check_table(table: &str) -> Result<(), FilterError> {
    super::ddl::check_table_name(table).map_err(internal)
}

/// A link's junction table and columns are the server's own.
fn check_link(link: &Link) -> Result<(), FilterError> {
    check_table(&link.junction)?;
    let columns_ok = [link.near, link.far]
        .iter()
        .all(|c| matches!(*c, "a_id" | "b_id"));
    if !columns_ok || link.near == link.far {
        return Err(internal(
            "a link names the junction's columns a_id and b_id",
        ));
    }
    Ok(())
}

fn resolve_all(
    items: &[Filter],
    target: &Target,
    usage: Use,
) -> Result<Vec<ResolvedFilter>, FilterError> {
    items
        .iter()
        .map(|item| resolve_in(item, target, usage))
        .collect()
}

fn resolve_in(filter: &Filter, target: &Target, usage: Use) -> Result<ResolvedFilter, FilterError> {
    let column = |field: &Field| Column::find(&target.attrs, field);
    Ok(match filter {
        Filter::And(items) => ResolvedFilter::And(resolve_all(items, target, usage)?),
        Filter::Or(items) => ResolvedFilter::Or(resolve_all(items, target, usage)?),
        Filter::Not(inner) => ResolvedFilter::Not(Box::new(resolve_in(inner, target, usage)?)),
        Filter::Cmp { field, op, value } => {
            let column = column(field)?;
            column.scalar("a comparison")?;
            let value = column.value(value)?;
            ResolvedFilter::Cmp {
                column,
                op: *op,
                value,
            }
        }
        Filter::In {
            field,
            values,
            negate,
        } => resolve_in_list(column(field)?, values, *negate)?,
        Filter::IsNull { field, is_null } => ResolvedFilter::IsNull {
            column: column(field)?,
            is_null: *is_null,
        },
        Filter::Between { field, low, high } => {
            let column = column(field)?;
            column.scalar("between")?;
            let (low, high) = (column.value(low)?, column.value(high)?);
            ResolvedFilter::Between { column, low, high }
        }
        Filter::StartsWith { field, value } => {
            let column = column(field)?;
            column.textual("startsWith")?;
            ResolvedFilter::StartsWith {
                column,
                value: value.clone(),
            }
        }
        Filter::EndsWith { field, value } => {
            let column = column(field)?;
            column.textual("endsWith")?;
            ResolvedFilter::EndsWith {
                column,
                value: value.clone(),
            }
        }
        Filter::Contains { field, value } => resolve_contains(column(field)?, value)?,
        Filter::Search { field, query } => resolve_search(column(field)?, target, query, usage)?,
        Filter::Spatial {
            field,
            relation,
            shape,
            distance,
            meters,
        } => {
            let resolved = resolve_spatial(column(field)?, *relation, shape, *distance, *meters)?;
            with_spatial_index(resolved, target)
        }
        Filter::Related { .. } | Filter::RelatedThrough { .. } | Filter::LinkedTo { .. } => {
            resolve_relationship(filter, target, usage)?
        }
    })
}

fn resolve_in_list(
    column: Column,
    values: &[Value],
    negate: bool,
) -> Result<ResolvedFilter, FilterError> {
    column.scalar("in")?;
    if values.len() > MAX_IN_VALUES {
        return Err(FilterError::TooComplex {
            reason: format!(
                "{} lists {} values, at most {MAX_IN_VALUES} are allowed",
                column.shown(),
                values.len()
            ),
        });
    }
    let values = values
        .iter()
        .map(|v| column.value(v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ResolvedFilter::In {
        column,
        values,
        negate,
    })
}

/// `contains`: an element of an array, or a substring of a string.
fn resolve_contains(column: Column, value: &Value) -> Result<ResolvedFilter, FilterError> {
    if column.is_array() {
        let value = column.value(value)?;
        return Ok(ResolvedFilter::HasElement { column, value });
    }
    column.textual("contains")?;
    let Value::String(needle) = value else {
        return Err(column.invalid("contains on a string takes a string"));
    };
    Ok(ResolvedFilter::Contains {
        column,
        value: needle.clone(),
    })
}

fn resolve_spatial(
    column: Column,
    relation: Relation,
    shape: &Value,
    distance: f64,
    meters: bool,
) -> Result<ResolvedFilter, FilterError> {
    let what = relation.name();
    let Some(own) = column.attribute().and_then(|a| a.kind.shape()) else {
        return Err(column.invalid(format!(
            "{what} applies to point, line and polygon attributes"
        )));
    };
    // A ring given alone is a polygon where a polygon is compared for equality.
    let ring_alone = relation == Relation::Equals && own == Shape::Polygon;
    let shape =
        spatial::check_any(shape, ring_alone).map_err(|reason| FilterError::ValueInvalid {
            field: column.shown(),
            reason,
        })?;
    if relation.is_distance() {
        if !distance.is_finite() || distance < 0.0 {
            return Err(column.invalid(format!(
                "{what} takes a distance that is a number of at least 0"
            )));
        }
        if meters && (own != Shape::Point || shape.shape != Shape::Point) {
            return Err(column.invalid(format!(
                "a distance in meters is measured between points, not between a {} and a {}",
                own.name(),
                shape.shape.name()
            )));
        }
    }
    Ok(ResolvedFilter::Spatial(SpatialCondition {
        column,
        relation,
        shape,
        distance,
        meters,
        index: None,
    }))
}

/// A resolved spatial condition with the table of `target` when a spatial
/// index covers its column.
fn with_spatial_index(mut resolved: ResolvedFilter, target: &Target) -> ResolvedFilter {
    if let ResolvedFilter::Spatial(condition) = &mut resolved
        && let Field::Attribute(key) = condition.column.field()
        && target.spatial.contains(key)
    {
        condition.index = Some(target.table.clone());
    }
    resolved
}

fn resolve_search(
    column: Column,
    target: &Target,
    query: &str,
    usage: Use,
) -> Result<ResolvedFilter, FilterError> {
    if let (Use::Query, Field::Attribute(key)) = (usage, &column.field)
        && !target.searchable.contains(key)
    {
        return Err(FilterError::SearchNeedsIndex { key: key.clone() });
    }
    // Full-text parsers stop at NUL or fail on control characters; whitespace
    // only separates words.
    if query.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(FilterError::ValueInvalid {
            field: column.shown(),
            reason: "a search term may not hold control characters".into(),
        });
    }
    if !column
        .attribute()
        .is_some_and(|a| a.kind.is_textual() && !a.array)
    {
        return Err(column.invalid("search applies to string attributes"));
    }
    Ok(ResolvedFilter::Search {
        column,
        table: target.table.clone(),
        query: query.to_string(),
    })
}

/// The conditions across a relationship, resolved against the related
/// collection's own table.
fn resolve_relationship(
    filter: &Filter,
    target: &Target,
    usage: Use,
) -> Result<ResolvedFilter, FilterError> {
    if usage == Use::Match {
        return Err(FilterError::NotEvaluable);
    }
    Ok(match filter {
        Filter::Related {
            field,
            target: related,
            filter,
        } => {
            let column = Column::find(&target.attrs, field)?;
            column.scalar("a related filter")?;
            check_table(&related.table)?;
            ResolvedFilter::Related {
                column,
                table: related.table.clone(),
                filter: Box::new(resolve_in(filter, related, usage)?),
            }
        }
        Filter::RelatedThrough {
            link,
            target: related,
            filter,
        } => {
            check_link(link)?;
            check_table(&related.table)?;
            ResolvedFilter::RelatedThrough {
                link: link.clone(),
                table: related.table.clone(),
                filter: Box::new(resolve_in(filter, related, usage)?),
            }
        }
        Filter::LinkedTo { link, id } => {
            check_link(link)?;
            ResolvedFilter::LinkedTo {
                link: link.clone(),
                id: id.clone(),
            }
        }
        _ => return Err(internal("not a condition across a relationship")),
    })
}

/// Refuses filters nested deeper than [`MAX_DEPTH`] or with more than
/// [`MAX_CONDITIONS`] conditions. Stops as soon as a limit is passed, so the
/// check itself is bounded.
fn check_complexity(filter: &Filter, depth: usize, count: &mut usize) -> Result<(), FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooComplex {
            reason: format!("filters nest at most {MAX_DEPTH} levels deep"),
        });
    }
    match filter {
        Filter::And(items) | Filter::Or(items) => {
            for item in items {
                check_complexity(item, depth + 1, count)?;
            }
        }
        Filter::Not(inner) => check_complexity(inner, depth + 1, count)?,
        Filter::Related { filter, .. } | Filter::RelatedThrough { filter, .. } => {
            check_complexity(filter, depth + 1, count)?
        }
        Filter::Search { query, .. } => {
            // Counted only as far as the limit, so the check stays bounded.
            let words = query.split_whitespace().take(MAX_SEARCH_WORDS + 1).count();
            if words > MAX_SEARCH_WORDS {
                return Err(FilterError::TooComplex {
                    reason: format!("a search has at most {MAX_SEARCH_WORDS} words"),
                });
            }
            *count += words.max(1);
            if *count > MAX_CONDITIONS {
                return Err(FilterError::TooComplex {
                    reason: format!(
                        "a filter has at most {MAX_CONDITIONS} conditions, counting each word searched for"
                    ),
                });
            }
        }
        Filter::In { values, .. } => {
            *count += values.len().div_ceil(IN_VALUES_PER_CONDITION).max(1);
            if *count > MAX_CONDITIONS {
                return Err(FilterError::TooComplex {
                    reason: format!(
                        "a filter has at most {MAX_CONDITIONS} conditions, counting each \
                         {IN_VALUES_PER_CONDITION} values of a list as one"
                    ),
                });
            }
        }
        _ => {
            *count += 1;
            if *count > MAX_CONDITIONS {
                return Err(FilterError::TooComplex {
                    reason: format!("a filter has at most {MAX_CONDITIONS} conditions"),
                });
            }
        }
    }
    Ok(())
}

/// SQL built aside, appended to the builder only once it is complete.
#[derive(Default)]
struct Fragment {
    parts: Vec<Part>,
}

enum Part {
    Sql(String),
    Bind(SqlValue),
}

impl Fragment {
    fn sql(&mut self, sql: impl Into<String>) -> &mut Self {
        self.parts.push(Part::Sql(sql.into()));
        self
    }

    fn bind(&mut self, value: SqlValue) -> &mut Self {
        self.parts.push(Part::Bind(value));
        self
    }

    fn append(&mut self, other: Fragment) {
        self.parts.extend(other.parts);
    }

    fn emit(self, builder: &mut QueryBuilder<'_, Any>) {
        for part in self.parts {
            match part {
                Part::Sql(sql) => {
                    builder.push(sql);
                }
                Part::Bind(value) => value.push_bind(builder),
            }
        }
    }
}

/// The table being read: dialect and alias.
struct Table<'a> {
    dialect: SqlDialect,
    alias: &'a str,
}

impl<'a> Table<'a> {
    fn new(dialect: SqlDialect, alias: &'a str) -> Result<Self, FilterError> {
        let mut bytes = alias.bytes();
        let plain = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && alias.len() <= 64;
        if !plain || alias.eq_ignore_ascii_case(JSON_EACH_ALIAS) {
            return Err(internal(format!(
                "the table alias {} is not a plain identifier",
                shown(alias)
            )));
        }
        Ok(Table { dialect, alias })
    }

    fn q(&self, name: &str) -> String {
        self.dialect.quote(name)
    }

    /// `"alias"."column"`.
    fn expr(&self, column: &Column) -> String {
        format!("{}.{}", self.q(self.alias), self.q(&column.name()))
    }

    /// `"alias"."id"`.
    fn id(&self) -> String {
        format!("{}.{}", self.q(self.alias), self.q("id"))
    }

    fn like(&self, expr: &str, pattern: String, out: &mut Fragment) {
        out.sql(format!("{expr} LIKE "))
            .bind(SqlValue::Text(pattern))
            .sql(format!(" ESCAPE '{LIKE_ESCAPE}'"));
    }

    fn compile(&self, filter: &ResolvedFilter, out: &mut Fragment) {
        match filter {
            ResolvedFilter::And(items) => self.group(items, " AND ", "1=1", out),
            ResolvedFilter::Or(items) => self.group(items, " OR ", "1=0", out),
            ResolvedFilter::Not(inner) => {
                out.sql("((");
                self.compile(inner, out);
                out.sql(") IS NOT TRUE)");
            }
            ResolvedFilter::Cmp { column, op, value } => {
                let e = self.expr(column);
                if *op == CmpOp::Ne && column.nullable() {
                    out.sql(format!("({e} <> "))
                        .bind(value.clone())
                        .sql(format!(" OR {e} IS NULL)"));
                } else {
                    out.sql(format!("{e} {} ", op.sql())).bind(value.clone());
                }
            }
            ResolvedFilter::In {
                column,
                values,
                negate,
            } => self.compile_in(column, values, *negate, out),
            ResolvedFilter::IsNull { column, is_null } => {
                let not = if *is_null { "" } else { "NOT " };
                out.sql(format!("{} IS {not}NULL", self.expr(column)));
            }
            ResolvedFilter::Between { column, low, high } => {
                out.sql(format!("{} BETWEEN ", self.expr(column)))
                    .bind(low.clone())
                    .sql(" AND ")
                    .bind(high.clone());
            }
            ResolvedFilter::StartsWith { .. }
            | ResolvedFilter::EndsWith { .. }
            | ResolvedFilter::Contains { .. } => self.compile_text(filter, out),
            ResolvedFilter::HasElement { column, value } => {
                self.compile_element(column, value, out)
            }
            ResolvedFilter::Search {
                column,
                table,
                query,
            } => self.compile_search(column, table, query, out),
            ResolvedFilter::Spatial(condition) => match self.narrow_spatial(condition) {
                Some(narrowed) => {
                    out.sql("(").append(narrowed);
                    out.sql(" AND ");
                    self.compile_spatial(condition, out);
                    out.sql(")");
                }
                None => self.compile_spatial(condition, out),
            },
            ResolvedFilter::Related { .. }
            | ResolvedFilter::RelatedThrough { .. }
            | ResolvedFilter::LinkedTo { .. } => self.compile_relationship(filter, out),
        }
    }

    fn group(&self, items: &[ResolvedFilter], joiner: &str, empty: &str, out: &mut Fragment) {
        if items.is_empty() {
            out.sql(empty);
            return;
        }
        out.sql("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.sql(joiner);
            }
            self.compile(item, out);
        }
        out.sql(")");
    }

    fn compile_in(&self, column: &Column, values: &[SqlValue], negate: bool, out: &mut Fragment) {
        let e = self.expr(column);
        if values.is_empty() {
            out.sql(if negate { "1=1" } else { "1=0" });
            return;
        }
        let nullable = negate && column.nullable();
        out.sql(match (negate, nullable) {
            (false, _) => format!("{e} IN ("),
            (true, false) => format!("{e} NOT IN ("),
            (true, true) => format!("({e} NOT IN ("),
        });
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.sql(", ");
            }
            out.bind(value.clone());
        }
        out.sql(if nullable {
            format!(") OR {e} IS NULL)")
        } else {
            ")".into()
        });
    }

    /// `startsWith`, `endsWith` and `contains` on a string: an empty operand
    /// matches every non-null value.
    fn compile_text(&self, filter: &ResolvedFilter, out: &mut Fragment) {
        let (column, value) = match filter {
            ResolvedFilter::StartsWith { column, value }
            | ResolvedFilter::EndsWith { column, value }
            | ResolvedFilter::Contains { column, value } => (column, value),
            _ => return,
        };
        let e = self.expr(column);
        if value.is_empty() {
            out.sql(format!("{e} IS NOT NULL"));
            return;
        }
        let v = || SqlValue::Text(value.clone());
        let escaped = like_escape(value);
        match (filter, self.dialect) {
            (ResolvedFilter::StartsWith { .. }, SqlDialect::Sqlite) => {
                out.sql(format!("({e} >= "))
                    .bind(v())
                    .sql(format!(" AND substr({e}, 1, length("))
                    .bind(v())
                    .sql(")) = ")
                    .bind(v())
                    .sql(")");
            }
            (ResolvedFilter::StartsWith { .. }, SqlDialect::MySql) => {
                self.like(&e, format!("{escaped}%"), out)
            }
            (ResolvedFilter::EndsWith { .. }, SqlDialect::Sqlite) => {
                out.sql(format!("substr({e}, -length("))
                    .bind(v())
                    .sql(")) = ")
                    .bind(v());
            }
            (ResolvedFilter::EndsWith { .. }, SqlDialect::MySql) => {
                self.like(&e, format!("%{escaped}"), out)
            }
            (_, SqlDialect::Sqlite) => {
                out.sql(format!("instr({e}, ")).bind(v()).sql(") > 0");
            }
            (_, SqlDialect::MySql) => self.like(&e, format!("%{escaped}%"), out),
        }
    }

    fn compile_element(&self, column: &Column, element: &SqlValue, out: &mut Fragment) {
        let e = self.expr(column);
        match self.dialect {
            SqlDialect::Sqlite => {
                out.sql(format!(
                    "EXISTS (SELECT 1 FROM json_each({e}) AS {JSON_EACH_ALIAS} \
                     WHERE {JSON_EACH_ALIAS}.value = "
                ))
                .bind(element.clone())
                .sql(")");
            }
            SqlDialect::MySql => {
                let json = element.to_json_element().to_string();
                out.sql(format!("JSON_CONTAINS({e}, "))
                    .bind(SqlValue::Text(json))
                    .sql(")");
            }
        }
    }

    /// Through the spatial index on the condition's column, if any: the
    /// documents whose bounding box meets the box the condition can hold
    /// within, what the index finds without reading shapes. `None` without an
    /// index, and for the conditions no box bounds (a distance greater than, or
    /// other than, one).
    fn narrow_spatial(&self, condition: &SpatialCondition) -> Option<Fragment> {
        let (column, distance) = (&condition.column, condition.distance);
        let table = condition.index.as_deref()?;
        let [mut min_x, mut max_x, mut min_y, mut max_y] = condition.shape.bounding_box();
        match condition.relation {
            Relation::DistanceGreaterThan | Relation::DistanceNotEqual => return None,
            Relation::DistanceLessThan | Relation::DistanceEqual if condition.meters => {
                [min_x, max_x, min_y, max_y] = spatial::sphere_box(min_x, min_y, distance);
            }
            Relation::DistanceLessThan | Relation::DistanceEqual => {
                (min_x, max_x) = (min_x - distance, max_x + distance);
                (min_y, max_y) = (min_y - distance, max_y + distance);
            }
            _ => {}
        }
        let key = match column.field() {
            Field::Attribute(key) => key.as_str(),
            _ => return None,
        };
        let mut out = Fragment::default();
        match self.dialect {
            SqlDialect::Sqlite => {
                let rtree = self.q(&super::ddl::rtree_table(table, key));
                out.sql(format!(
                    "{} IN (SELECT id FROM {} WHERE rowid IN (SELECT id FROM {rtree} \
                     WHERE max_x >= ",
                    self.id(),
                    self.q(table)
                ))
                .bind(SqlValue::Float(min_x))
                .sql(" AND min_x <= ")
                .bind(SqlValue::Float(max_x))
                .sql(" AND max_y >= ")
                .bind(SqlValue::Float(min_y))
                .sql(" AND min_y <= ")
                .bind(SqlValue::Float(max_y))
                .sql("))");
            }
            SqlDialect::MySql => {
                let g = format!(
                    "{}.{}",
                    self.q(self.alias),
                    self.q(&super::ddl::shape_column(key))
                );
                out.sql(format!("MBRIntersects({g}, ST_GeomFromText("))
                    .bind(SqlValue::Text(format!(
                        "MULTIPOINT({min_x} {min_y},{max_x} {max_y})"
                    )))
                    .sql("))");
            }
        }
        Some(out)
    }

    /// SQLite asks [`spatial::SQLITE_FUNCTION`]; MariaDB reads the stored
    /// coordinates as GeoJSON (or, under a spatial index, its geometry column)
    /// and asks its own `ST_` functions.
    fn compile_spatial(&self, condition: &SpatialCondition, out: &mut Fragment) {
        let (column, relation, shape) = (&condition.column, condition.relation, &condition.shape);
        let (distance, meters) = (condition.distance, condition.meters);
        let indexed = condition.index.is_some();
        let e = self.expr(column);
        match self.dialect {
            SqlDialect::Sqlite => {
                out.sql(format!(
                    "{}({}, {e}, ",
                    spatial::SQLITE_FUNCTION,
                    relation.code()
                ))
                .bind(SqlValue::Text(shape.text()))
                .sql(", ")
                .bind(SqlValue::Float(distance))
                .sql(format!(", {}) = 1", i64::from(meters)));
            }
            SqlDialect::MySql => {
                let own = column
                    .attribute()
                    .and_then(|a| a.kind.shape())
                    .unwrap_or(Shape::Point);
                let stored = match column.field() {
                    Field::Attribute(key) if indexed => format!(
                        "{}.{}",
                        self.q(self.alias),
                        self.q(&super::ddl::shape_column(key))
                    ),
                    _ => spatial::mysql_geometry(own, &e),
                };
                if relation.is_distance() {
                    let measure = if meters {
                        format!("ST_Distance_Sphere({stored}, ST_GeomFromGeoJSON(")
                    } else {
                        format!("ST_Distance({stored}, ST_GeomFromGeoJSON(")
                    };
                    out.sql(measure).bind(SqlValue::Text(shape.geojson()));
                    if meters {
                        out.sql(format!("), {}", spatial::EARTH_RADIUS_METERS));
                    } else {
                        out.sql(")");
                    }
                    out.sql(format!(") {} ", relation.distance_operator()))
                        .bind(SqlValue::Float(distance));
                } else {
                    out.sql(format!(
                        "{}({stored}, ST_GeomFromGeoJSON(",
                        relation.mysql_function()
                    ))
                    .bind(SqlValue::Text(shape.geojson()))
                    .sql(")) = 1");
                }
            }
        }
    }

    fn compile_search(&self, column: &Column, table: &str, query: &str, out: &mut Fragment) {
        let key = match column.field() {
            Field::Attribute(key) => key.as_str(),
            _ => "",
        };
        match self.dialect {
            SqlDialect::Sqlite => {
                let Some(terms) = fts5_terms(query) else {
                    out.sql("1=0");
                    return;
                };
                let (fts, map) = (
                    self.q(&super::ddl::fts_table(table, key)),
                    self.q(&super::ddl::fts_map_table(table, key)),
                );
                out.sql(format!(
                    "{} IN (SELECT doc_id FROM {map} WHERE fts_rowid IN \
                     (SELECT rowid FROM {fts} WHERE {fts} MATCH ",
                    self.id()
                ))
                .bind(SqlValue::Text(terms))
                .sql("))");
            }
            SqlDialect::MySql => {
                let Some(terms) = fulltext_terms(query) else {
                    out.sql("1=0");
                    return;
                };
                // The full-text index covers the attribute's case-insensitive
                // copy (see `ddl::create_index_sql`).
                let copy = format!(
                    "{}.{}",
                    self.q(self.alias),
                    self.q(&super::ddl::search_column(key))
                );
                out.sql(format!("MATCH ({copy}) AGAINST ("))
                    .bind(SqlValue::Text(terms))
                    .sql(" IN BOOLEAN MODE)");
            }
        }
    }

    fn compile_relationship(&self, filter: &ResolvedFilter, out: &mut Fragment) {
        // Nested subqueries get longer aliases, so each level has its own.
        let alias = format!("{}_r", self.alias);
        let inner = Table {
            dialect: self.dialect,
            alias: &alias,
        };
        match filter {
            ResolvedFilter::Related {
                column,
                table,
                filter,
            } => {
                // MariaDB: ids use the table's `utf8mb4_bin`, string columns
                // `utf8mb4_nopad_bin`; comparing the two needs one collation.
                let collate = match self.dialect {
                    SqlDialect::MySql => " COLLATE utf8mb4_nopad_bin",
                    SqlDialect::Sqlite => "",
                };
                out.sql(format!(
                    "{} IN (SELECT {}{collate} FROM {} {} WHERE ",
                    self.expr(column),
                    inner.id(),
                    self.q(table),
                    self.q(&alias)
                ));
                inner.compile(filter, out);
                out.sql(")");
            }
            ResolvedFilter::RelatedThrough {
                link,
                table,
                filter,
            } => {
                out.sql(format!(
                    "{} IN (SELECT {} FROM {} WHERE {} IN (SELECT {} FROM {} {} WHERE ",
                    self.id(),
                    self.q(link.near),
                    self.q(&link.junction),
                    self.q(link.far),
                    inner.id(),
                    self.q(table),
                    self.q(&alias),
                ));
                inner.compile(filter, out);
                out.sql("))");
            }
            ResolvedFilter::LinkedTo { link, id } => {
                out.sql(format!(
                    "{} IN (SELECT {} FROM {} WHERE {} = ",
                    self.id(),
                    self.q(link.near),
                    self.q(&link.junction),
                    self.q(link.far),
                ))
                .bind(SqlValue::Text(id.clone()))
                .sql(")");
            }
            _ => {}
        }
    }
}

/// `value` with the `LIKE` wildcards and the escape character escaped.
fn like_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '%' | '_') || c == LIKE_ESCAPE {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out
}

/// An FTS5 query: every word as a quoted prefix (`"rust"* "sql"*`), so no
/// character of the input is FTS5 syntax.
fn fts5_terms(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split_whitespace()
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// The boolean-mode query for MariaDB: every word required, as a prefix. The
/// boolean-mode operators are removed from the input first, so that a client's
/// text is only ever words.
fn fulltext_terms(query: &str) -> Option<String> {
    let cleaned: String = query
        .chars()
        .map(|c| {
            if matches!(
                c,
                '+' | '-' | '<' | '>' | '(' | ')' | '~' | '*' | '"' | '@' | '\''
            ) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let terms: Vec<String> = cleaned
        .split_whitespace()
        .map(|word| format!("+{word}*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Appends the SQL condition of `filter` over the table aliased `table_alias`
/// (a plain identifier). Values are bound. The filter was checked when it was
/// resolved; only a bad alias, a bug, is refused here, and then nothing is
/// appended.
pub fn push_filter(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    table_alias: &str,
    filter: &ResolvedFilter,
) -> Result<(), FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let mut out = Fragment::default();
    table.compile(filter, &mut out);
    out.emit(builder);
    Ok(())
}

/// How many values [`push_filter`] binds for `filter`: what a statement
/// repeating the filter (once per branch of a union) multiplies.
pub fn bound_values(
    dialect: SqlDialect,
    table_alias: &str,
    filter: &ResolvedFilter,
) -> Result<usize, FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let mut out = Fragment::default();
    table.compile(filter, &mut out);
    Ok(out
        .parts
        .iter()
        .filter(|part| matches!(part, Part::Bind(_)))
        .count())
}

/// One order: a field, ascending unless `desc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: Field,
    pub desc: bool,
}

impl OrderBy {
    pub fn asc(field: Field) -> Self {
        OrderBy { field, desc: false }
    }

    pub fn desc(field: Field) -> Self {
        OrderBy { field, desc: true }
    }
}

/// A position in an ordered list: the stored values of the order's fields in
/// one row, and that row's id. Its string form ([`Cursor::encode`]) is opaque
/// to clients; a changed one can only point elsewhere in the same list, since
/// every value in it is bound. Appwrite's `cursorAfter` names a document
/// instead, whose row gives the same position ([`cursor_for_row`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    pub values: Vec<SqlValue>,
    pub id: String,
}

/// What a cursor carries beside the position: the list it belongs to (the
/// collection's table and the order), so that a cursor of another collection or
/// order is refused instead of misread.
pub fn list_signature(table: &str, orders: &[OrderBy]) -> String {
    let mut signature = table.to_string();
    for order in orders {
        signature.push(':');
        signature.push_str(&order.field.shown());
        signature.push_str(if order.desc { "-" } else { "+" });
    }
    signature
}

impl Cursor {
    /// The cursor's one string form: URL-safe base64 (no padding) of a JSON
    /// array holding the list's signature ([`list_signature`]), the values,
    /// then the id. Floats travel as their IEEE bits (`{"f":"<16 hex>"}`), so
    /// that the comparison uses exactly the stored number.
    pub fn encode(&self, list: &str) -> String {
        let mut items = Vec::with_capacity(self.values.len() + 2);
        items.push(Value::String(list.to_string()));
        items.extend(self.values.iter().map(|value| match value {
            SqlValue::Null => Value::Null,
            SqlValue::Int(i) => Value::from(*i),
            SqlValue::Bool(b) => Value::from(i64::from(*b)),
            SqlValue::Float(f) => serde_json::json!({ "f": format!("{:016x}", f.to_bits()) }),
            SqlValue::Text(s) => Value::String(s.clone()),
        }));
        items.push(Value::String(self.id.clone()));
        URL_SAFE_NO_PAD.encode(Value::Array(items).to_string())
    }

    /// Reads a cursor string made for the list `list`; anything else is
    /// `INVALID_CURSOR`. Whether its values fit the order's types is checked
    /// where it is used.
    pub fn decode(input: &str, list: &str) -> Result<Cursor, FilterError> {
        if input.is_empty() || input.len() > MAX_CURSOR_LEN {
            return Err(invalid_cursor("the cursor is empty or too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(input)
            .map_err(|_| invalid_cursor("not a cursor returned by this list"))?;
        let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(invalid_cursor("not a cursor returned by this list"));
        };
        let mut items = items.into_iter();
        match items.next() {
            Some(Value::String(signature)) if signature == list => {}
            Some(Value::String(_)) => {
                return Err(invalid_cursor(
                    "the cursor belongs to another collection or another order",
                ));
            }
            _ => return Err(invalid_cursor("not a cursor returned by this list")),
        }
        let mut items: Vec<Value> = items.collect();
        let Some(Value::String(id)) = items.pop() else {
            return Err(invalid_cursor("the cursor has no id"));
        };
        if id.is_empty() || id.len() > 255 {
            return Err(invalid_cursor("the cursor's id is not an id"));
        }
        let values = items
            .into_iter()
            .map(cursor_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cursor { values, id })
    }
}

/// One value of a cursor's string form, as [`Cursor::encode`] writes it.
fn cursor_value(item: Value) -> Result<SqlValue, FilterError> {
    match item {
        Value::Null => Ok(SqlValue::Null),
        Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Int)
            .ok_or_else(|| invalid_cursor("a number in the cursor is not an integer")),
        Value::String(s) => Ok(SqlValue::Text(s)),
        Value::Object(map) => map
            .get("f")
            .and_then(Value::as_str)
            .filter(|hex| hex.len() == 16 && map.len() == 1)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(f64::from_bits)
            .filter(|f| f.is_finite())
            .map(SqlValue::Float)
            .ok_or_else(|| invalid_cursor("a float in the cursor is malformed")),
        _ => Err(invalid_cursor("the cursor holds a value of no stored type")),
    }
}

/// The cursor of a row for `orders`: the stored values of the order's columns
/// and the id, read from the row's own column names (`a_<key>`, `id`,
/// `created_at`, `updated_at`), so the row must come from a `SELECT` that
/// includes them unaliased.
pub fn cursor_for_row(
    row: &AnyRow,
    attrs: &[Attribute],
    orders: &[OrderBy],
) -> Result<Cursor, FilterError> {
    CursorColumns::new(attrs, orders)?.read(row)
}

/// The columns a cursor is read from, resolved once for the rows of a page.
pub struct CursorColumns {
    columns: Vec<(String, Stored)>,
}

impl CursorColumns {
    pub fn new(attrs: &[Attribute], orders: &[OrderBy]) -> Result<Self, FilterError> {
        let columns = orders
            .iter()
            .map(|order| {
                let column = Column::find(attrs, &order.field)?;
                Ok((column.name(), column.stored()))
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(CursorColumns { columns })
    }

    /// The cursor of `row` (see [`cursor_for_row`]).
    pub fn read(&self, row: &AnyRow) -> Result<Cursor, FilterError> {
        let unreadable = |column: &str, reason: String| {
            internal(format!(
                "the row's column {} cannot be read: {reason}",
                shown(column)
            ))
        };
        let mut values = Vec::with_capacity(self.columns.len());
        for (name, stored) in &self.columns {
            let raw = row
                .try_get_raw(name.as_str())
                .map_err(|e| unreadable(name, e.to_string()))?;
            if raw.is_null() {
                values.push(SqlValue::Null);
                continue;
            }
            let value = match stored {
                Stored::Int => read_int(row, name.as_str()).map(SqlValue::Int),
                Stored::Float => read_float(row, name.as_str()).map(SqlValue::Float),
                Stored::Text => read_text(row, name.as_str()).map(SqlValue::Text),
            };
            values.push(value.map_err(|e| unreadable(name, e))?);
        }
        let id = read_text(row, "id").map_err(|e| unreadable("id", e))?;
        Ok(Cursor { values, id })
    }
}

/// The resolved columns of an order list, refused when a field cannot be
/// ordered by: arrays, and strings stored as `LONGTEXT` (MariaDB sorts those by
/// their first `max_sort_length` bytes only, which would break keyset paging).
fn order_columns(
    attrs: &[Attribute],
    orders: &[OrderBy],
) -> Result<Vec<(Column, bool)>, FilterError> {
    if orders.len() > MAX_ORDERS {
        return Err(FilterError::TooComplex {
            reason: format!("at most {MAX_ORDERS} orders are allowed"),
        });
    }
    orders
        .iter()
        .map(|order| {
            let column = Column::find(attrs, &order.field)?;
            if let Some(attr) = column.attribute() {
                if attr.array {
                    return Err(column.invalid("an array cannot be ordered by"));
                }
                if let Some(shape) = attr.kind.shape() {
                    return Err(column.invalid(format!("a {} cannot be ordered by", shape.name())));
                }
                if attr.kind.is_textual() && attr.kind.max_chars().is_none() {
                    return Err(
                        column.invalid("strings longer than 16383 characters cannot be ordered by")
                    );
                }
            }
            Ok((column, order.desc))
        })
        .collect()
}

fn push_order_by(table: &Table<'_>, columns: &[(Column, bool)], id_desc: bool, out: &mut Fragment) {
    let direction = |desc: bool| if desc { "DESC" } else { "ASC" };
    out.sql(" ORDER BY ");
    for (column, desc) in columns {
        out.sql(format!("{} {}, ", table.expr(column), direction(*desc)));
    }
    out.sql(format!("{} {}", table.id(), direction(id_desc)));
}

/// ` ORDER BY …, id` in the order `orders` (the same rules as
/// [`push_order_and_cursor`]), as text: for a window's `OVER (PARTITION BY …
/// ORDER BY …)`. It holds no values, only quoted identifiers.
pub fn order_by_sql(
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
) -> Result<String, FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let columns = order_columns(attrs, orders)?;
    let mut out = Fragment::default();
    push_order_by(&table, &columns, false, &mut out);
    let mut sql = String::new();
    for part in out.parts {
        match part {
            Part::Sql(text) => sql.push_str(&text),
            Part::Bind(_) => return Err(internal("an order holds no values")),
        }
    }
    Ok(sql)
}

/// Appends the keyset condition (with a cursor), `ORDER BY` and `LIMIT` of a
/// page of at most `rows` rows in the order `orders`, then `id` ascending, which
/// makes the order total. Call it right after the `WHERE` conditions: it
/// appends ` AND (…)` when there is a cursor.
///
/// Forwards (`from_end` false) the page holds the rows after `cursor` (from the
/// start without one). Backwards it holds the rows before `cursor` (the end
/// without one), read in reverse order: the caller reverses them. A caller that
/// wants to know whether more exist asks for one row beyond its page.
///
/// NULLs come first in ascending order and last in descending order; the
/// keyset condition is an OR-chain (`a > ? OR (a = ? AND b > ?) OR …`) with the
/// NULL cases spelled out, which both dialects run. A page that may cross the
/// NULLs of its first order column is read in two statements, one per side
/// ([`keyset_parts`]); `part` says which this one is. On an error nothing is
/// appended.
#[allow(clippy::too_many_arguments)]
pub fn push_order_and_cursor(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
    cursor: Option<&Cursor>,
    from_end: bool,
    part: KeysetPart,
    rows: usize,
) -> Result<(), FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let columns = reading_columns(attrs, orders, from_end)?;
    let id_desc = from_end;
    let mut out = Fragment::default();
    match (part, cursor) {
        (KeysetPart::Near, Some(cursor)) => {
            out.sql(" AND ");
            out.append(keyset(&table, &columns, id_desc, cursor)?);
        }
        (KeysetPart::Near, None) => {}
        (KeysetPart::Across, cursor) => {
            out.sql(" AND ");
            match (
                columns.first(),
                cursor.filter(|c| crosses_nulls(&columns, c)),
            ) {
                (Some((column, desc)), Some(cursor)) => {
                    check_cursor_fits(&columns, cursor)?;
                    let not = if *desc { "" } else { "NOT " };
                    out.sql(format!("{} IS {not}NULL", table.expr(column)));
                }
                // Nothing lies across: the near part was the whole page.
                _ => {
                    out.sql("1 = 0");
                }
            }
        }
    }
    push_order_by(&table, &columns, id_desc, &mut out);
    out.sql(format!(" LIMIT {rows}"));
    out.emit(builder);
    Ok(())
}

/// The part of a keyset page one statement reads ([`keyset_parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysetPart {
    /// The rows after the cursor on its own side of the first order column's
    /// NULLs: the whole page when the page cannot cross them.
    Near,
    /// The rows on the other side, all of which follow the cursor: the NULLs
    /// after a value in descending order, the values after a NULL in
    /// ascending order.
    Across,
}

/// The statements a keyset page after `cursor` (before it, `from_end`) is read
/// in, in order: the near part, then, when the first order column may be NULL
/// and the cursor is on the side the NULLs follow or precede, the rows across.
/// One condition for both sides (`a <= ? OR a IS NULL`) is a range of an
/// index on `a` for neither SQLite nor MariaDB: they read every row after the
/// cursor and sort them (67 ms against 0.1 ms for a page of 100,000 rows). Apart,
/// each side is one range, and the second is read only when the first does not
/// fill the page.
pub fn keyset_parts(
    attrs: &[Attribute],
    orders: &[OrderBy],
    cursor: Option<&Cursor>,
    from_end: bool,
) -> Result<&'static [KeysetPart], FilterError> {
    let columns = reading_columns(attrs, orders, from_end)?;
    Ok(match cursor {
        Some(cursor) if crosses_nulls(&columns, cursor) => &[KeysetPart::Near, KeysetPart::Across],
        _ => &[KeysetPart::Near],
    })
}

/// The order's columns in the direction a page reads them: reversed from the end.
fn reading_columns(
    attrs: &[Attribute],
    orders: &[OrderBy],
    from_end: bool,
) -> Result<Vec<(Column, bool)>, FilterError> {
    Ok(order_columns(attrs, orders)?
        .into_iter()
        .map(|(column, desc)| (column, desc != from_end))
        .collect())
}

/// Whether rows on the other side of the first column's NULLs follow
/// `cursor`: NULLs sort first, so after a value in descending order, and after
/// a NULL in ascending order.
fn crosses_nulls(columns: &[(Column, bool)], cursor: &Cursor) -> bool {
    match (columns.first(), cursor.values.first()) {
        (Some((column, desc)), Some(value)) => {
            column.nullable() && *desc != matches!(value, SqlValue::Null)
        }
        _ => false,
    }
}

/// The first order column of `orders` (none for no order or one by id alone),
/// quoted, to select with a row's id for [`push_lead_probe`].
pub fn lead_column_sql(
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
) -> Result<Option<String>, FilterError> {
    let table = Table::new(dialect, table_alias)?;
    Ok(order_columns(attrs, orders)?
        .first()
        .filter(|(column, _)| column.field() != &Field::Id)
        .map(|(column, _)| table.expr(column)))
}

/// Appends what finds the row at which a keyset page of `rows` rows (its near
/// part) ends, ordered by the first order column alone: the keyset condition,
/// ` ORDER BY <first column> LIMIT 1 OFFSET rows - 1`. An index on that column
/// answers it by a walk of `rows` entries in either direction, where the
/// page's own order (`a DESC, id ASC`) is one MariaDB can only sort, reading
/// every row after the cursor; the value found then bounds the page
/// ([`push_lead_bound`]) to about its own rows.
#[allow(clippy::too_many_arguments)]
pub fn push_lead_probe(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
    cursor: Option<&Cursor>,
    from_end: bool,
    rows: usize,
) -> Result<(), FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let columns = reading_columns(attrs, orders, from_end)?;
    let Some((lead, desc)) = columns.first() else {
        return Err(internal("a probe needs an order"));
    };
    let mut out = Fragment::default();
    if let Some(cursor) = cursor {
        out.sql(" AND ");
        out.append(keyset(&table, &columns, from_end, cursor)?);
    }
    let direction = if *desc { "DESC" } else { "ASC" };
    out.sql(format!(
        " ORDER BY {} {direction} LIMIT 1 OFFSET {}",
        table.expr(lead),
        rows.saturating_sub(1)
    ));
    out.emit(builder);
    Ok(())
}

/// Appends ` AND <first order column> >= ?` (`<=` when read ascending, NULLs
/// included there since they come first): the rows of a keyset page whose
/// last row has `value` there ([`push_lead_probe`]). A NULL bounds nothing.
pub fn push_lead_bound(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
    from_end: bool,
    value: &SqlValue,
) -> Result<(), FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let columns = reading_columns(attrs, orders, from_end)?;
    let (Some((lead, desc)), false) = (columns.first(), matches!(value, SqlValue::Null)) else {
        return Ok(());
    };
    check_cursor_fits(
        &columns[..1],
        &Cursor {
            values: vec![value.clone()],
            id: String::new(),
        },
    )?;
    let e = table.expr(lead);
    let mut out = Fragment::default();
    match (desc, lead.nullable()) {
        (true, _) => out.sql(format!(" AND {e} >= ")).bind(value.clone()),
        (false, false) => out.sql(format!(" AND {e} <= ")).bind(value.clone()),
        (false, true) => out
            .sql(format!(" AND ({e} <= "))
            .bind(value.clone())
            .sql(format!(" OR {e} IS NULL)")),
    };
    out.emit(builder);
    Ok(())
}

/// `ORDER BY …, id LIMIT ? OFFSET ?` for offset pagination (Appwrite's `limit`
/// and `offset`), with the same order rules as [`push_order_and_cursor`].
pub fn push_order_and_offset(
    builder: &mut QueryBuilder<'_, Any>,
    dialect: SqlDialect,
    table_alias: &str,
    attrs: &[Attribute],
    orders: &[OrderBy],
    limit: usize,
    offset: usize,
) -> Result<(), FilterError> {
    let table = Table::new(dialect, table_alias)?;
    let columns = order_columns(attrs, orders)?;
    let mut out = Fragment::default();
    push_order_by(&table, &columns, false, &mut out);
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    out.sql(" LIMIT ")
        .bind(SqlValue::Int(as_i64(limit)))
        .sql(" OFFSET ")
        .bind(SqlValue::Int(as_i64(offset)));
    out.emit(builder);
    Ok(())
}

/// Refuses a cursor whose values do not fit the order's columns.
fn check_cursor_fits(columns: &[(Column, bool)], cursor: &Cursor) -> Result<(), FilterError> {
    if cursor.values.len() != columns.len() {
        return Err(invalid_cursor("the cursor was made for another order"));
    }
    for ((column, _), value) in columns.iter().zip(&cursor.values) {
        let fits = match (value, column.stored()) {
            (SqlValue::Null, _) => column.nullable(),
            (SqlValue::Int(_), Stored::Int)
            | (SqlValue::Float(_), Stored::Float)
            | (SqlValue::Text(_), Stored::Text) => true,
            _ => false,
        };
        if !fits {
            return Err(invalid_cursor(format!(
                "the cursor's value for {} does not fit its type",
                column.shown()
            )));
        }
    }
    Ok(())
}

/// The rows strictly after `cursor` in the order `columns` (directions already
/// flipped for reading backwards), then id, on the cursor's side of the first
/// column's NULLs (the other side is [`KeysetPart::Across`]).
fn keyset(
    table: &Table<'_>,
    columns: &[(Column, bool)],
    id_desc: bool,
    cursor: &Cursor,
) -> Result<Fragment, FilterError> {
    check_cursor_fits(columns, cursor)?;
    let mut out = Fragment::default();
    out.sql("(");
    // The OR-chain alone is not a range either database seeks an index by: an
    // index on the first order column would be read from its start. The bound
    // below is implied by the chain (every term is equal or after on that
    // column), and turns a deep page into a seek.
    if let (Some((column, desc)), Some(value)) = (columns.first(), cursor.values.first()) {
        let e = table.expr(column);
        match (desc, value) {
            // On the cursor's side of a NULL, only NULLs.
            (_, SqlValue::Null) => {
                out.sql(format!("{e} IS NULL AND "));
            }
            (false, value) => {
                out.sql(format!("{e} >= ")).bind(value.clone()).sql(" AND ");
            }
            (true, value) => {
                out.sql(format!("{e} <= ")).bind(value.clone()).sql(" AND ");
            }
        }
    }
    out.sql("(");
    let mut first = true;
    for i in 0..=columns.len() {
        // The term for "equal on the first i columns, after on column i".
        let mut term = Fragment::default();
        for ((column, _), value) in columns.iter().zip(&cursor.values).take(i) {
            let e = table.expr(column);
            match value {
                SqlValue::Null => term.sql(format!("{e} IS NULL AND ")),
                value => term.sql(format!("{e} = ")).bind(value.clone()).sql(" AND "),
            };
        }
        match (columns.get(i), cursor.values.get(i)) {
            (Some((column, desc)), Some(value)) => {
                let e = table.expr(column);
                match (desc, value) {
                    // On the first column, the values after a NULL are across.
                    (false, SqlValue::Null) if i == 0 => continue,
                    (false, SqlValue::Null) => {
                        term.sql(format!("{e} IS NOT NULL"));
                    }
                    // Nothing follows NULL in descending order, where NULLs are last.
                    (true, SqlValue::Null) => continue,
                    (false, value) => {
                        term.sql(format!("{e} > ")).bind(value.clone());
                    }
                    (true, value) if column.nullable() && i > 0 => {
                        term.sql(format!("({e} < "))
                            .bind(value.clone())
                            .sql(format!(" OR {e} IS NULL)"));
                    }
                    (true, value) => {
                        term.sql(format!("{e} < ")).bind(value.clone());
                    }
                }
            }
            _ => {
                let op = if id_desc { "<" } else { ">" };
                term.sql(format!("{} {op} ", table.id()))
                    .bind(SqlValue::Text(cursor.id.clone()));
            }
        }
        if !first {
            out.sql(" OR ");
        }
        first = false;
        out.sql("(");
        out.append(term);
        out.sql(")");
    }
    out.sql("))");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::ddl::{Index, IndexKind, IndexOrder, create_index_sql, create_table_sql};
    use super::super::model::AttributeKind;
    use super::super::model::test_support::attribute as attr;
    use super::super::model::test_support::{self, TestDb};
    use super::*;
    use serde_json::json;
    use std::cmp::Ordering;

    fn attrs() -> Vec<Attribute> {
        vec![
            attr("title", AttributeKind::String { size: 50 }),
            attr(
                "n",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            ),
            attr(
                "price",
                AttributeKind::Float {
                    min: None,
                    max: None,
                },
            ),
            attr("done", AttributeKind::Boolean),
            attr("due", AttributeKind::Datetime),
            attr("body", AttributeKind::String { size: 100_000 }),
            attr("ip", AttributeKind::Ip),
            Attribute {
                array: true,
                ..attr("tags", AttributeKind::String { size: 20 })
            },
            Attribute {
                array: true,
                ..attr(
                    "nums",
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                array: true,
                ..attr("flags", AttributeKind::Boolean)
            },
            Attribute {
                array: true,
                ..attr("days", AttributeKind::Datetime)
            },
        ]
    }

    fn f(key: &str) -> Field {
        Field::attribute(key)
    }

    fn cmp(key: &str, op: CmpOp, value: Value) -> Filter {
        Filter::Cmp {
            field: f(key),
            op,
            value,
        }
    }

    /// The collection table `c_t`, with a full-text index on `body`.
    fn target() -> Target {
        Target {
            table: "c_t".into(),
            attrs: attrs(),
            searchable: vec!["body".into()],
            spatial: Vec::new(),
        }
    }

    fn resolved(filter: &Filter) -> Result<ResolvedFilter, FilterError> {
        filter.resolve(&target(), Use::Query)
    }

    fn sql_of(dialect: SqlDialect, filter: &Filter) -> Result<String, FilterError> {
        let mut builder = QueryBuilder::<Any>::new("");
        push_filter(&mut builder, dialect, "d", &resolved(filter)?)?;
        Ok(builder.sql().to_string())
    }

    #[test]
    fn mysql_sql_text() {
        let my = SqlDialect::MySql;
        let filter = Filter::And(vec![
            cmp("title", CmpOp::Eq, json!("a")),
            cmp("n", CmpOp::Ne, json!(3)),
            Filter::In {
                field: f("n"),
                values: vec![json!(1), json!(2)],
                negate: true,
            },
            Filter::Or(vec![
                Filter::IsNull {
                    field: f("due"),
                    is_null: true,
                },
                Filter::Between {
                    field: Field::CreatedAt,
                    low: json!("2024-01-01T00:00:00Z"),
                    high: json!("2025-01-01T00:00:00Z"),
                },
            ]),
            Filter::Not(Box::new(cmp("done", CmpOp::Eq, json!(true)))),
        ]);
        assert_eq!(
            sql_of(my, &filter).unwrap(),
            "(`d`.`a_title` = ? AND (`d`.`a_n` <> ? OR `d`.`a_n` IS NULL) AND \
             (`d`.`a_n` NOT IN (?, ?) OR `d`.`a_n` IS NULL) AND \
             (`d`.`a_due` IS NULL OR `d`.`created_at` BETWEEN ? AND ?) AND \
             ((`d`.`a_done` = ?) IS NOT TRUE))"
        );
        let text = [
            (
                Filter::StartsWith {
                    field: f("title"),
                    value: "a%".into(),
                },
                "`d`.`a_title` LIKE ? ESCAPE '!'",
            ),
            (
                Filter::EndsWith {
                    field: f("title"),
                    value: "a".into(),
                },
                "`d`.`a_title` LIKE ? ESCAPE '!'",
            ),
            (
                Filter::Contains {
                    field: f("title"),
                    value: json!("a"),
                },
                "`d`.`a_title` LIKE ? ESCAPE '!'",
            ),
            (
                Filter::Contains {
                    field: f("tags"),
                    value: json!("a"),
                },
                "JSON_CONTAINS(`d`.`a_tags`, ?)",
            ),
            (
                Filter::Search {
                    field: f("body"),
                    query: "big cat".into(),
                },
                "MATCH (`d`.`s_body`) AGAINST (? IN BOOLEAN MODE)",
            ),
            (
                Filter::Search {
                    field: f("body"),
                    query: " +-* ".into(),
                },
                "1=0",
            ),
            (
                Filter::StartsWith {
                    field: Field::Id,
                    value: "".into(),
                },
                "`d`.`id` IS NOT NULL",
            ),
            (Filter::And(vec![]), "1=1"),
            (Filter::Or(vec![]), "1=0"),
            (cmp("n", CmpOp::Ge, json!(1)), "`d`.`a_n` >= ?"),
            (
                Filter::Cmp {
                    field: Field::Id,
                    op: CmpOp::Ne,
                    value: json!("x"),
                },
                "`d`.`id` <> ?",
            ),
        ];
        for (filter, expected) in text {
            assert_eq!(sql_of(my, &filter).unwrap(), expected, "{filter:?}");
        }
        assert_eq!(
            fulltext_terms("big  \"cat\" -dog* (x)").unwrap(),
            "+big* +cat* +dog* +x*"
        );
        assert_eq!(like_escape("50%_off!\\"), "50!%!_off!!\\");
        assert_eq!(
            sql_of(
                SqlDialect::Sqlite,
                &Filter::StartsWith {
                    field: f("title"),
                    value: "a".into()
                }
            )
            .unwrap(),
            "(\"d\".\"a_title\" >= ? AND substr(\"d\".\"a_title\", 1, length(?)) = ?)"
        );
    }

    #[test]
    fn bad_filters_are_refused_when_resolved_and_name_the_field() {
        let cases = [
            (
                cmp("nope", CmpOp::Eq, json!(1)),
                "FILTER_UNKNOWN_FIELD",
                "`nope`",
            ),
            (cmp("n", CmpOp::Eq, json!("1")), "FILTER_INVALID", "`n`"),
            (cmp("n", CmpOp::Eq, json!(1.5)), "FILTER_INVALID", "`n`"),
            (cmp("n", CmpOp::Eq, json!(null)), "FILTER_INVALID", "`n`"),
            (
                cmp("due", CmpOp::Lt, json!("yesterday")),
                "FILTER_INVALID",
                "`due`",
            ),
            (cmp("done", CmpOp::Eq, json!(1)), "FILTER_INVALID", "`done`"),
            (
                cmp("tags", CmpOp::Eq, json!("a")),
                "FILTER_INVALID",
                "`tags`",
            ),
            (
                Filter::Cmp {
                    field: Field::CreatedAt,
                    op: CmpOp::Gt,
                    value: json!(5),
                },
                "FILTER_INVALID",
                "`$createdAt`",
            ),
            (
                Filter::Cmp {
                    field: Field::Id,
                    op: CmpOp::Eq,
                    value: json!(5),
                },
                "FILTER_INVALID",
                "`$id`",
            ),
            (
                Filter::StartsWith {
                    field: f("n"),
                    value: "1".into(),
                },
                "FILTER_INVALID",
                "`n`",
            ),
            (
                Filter::StartsWith {
                    field: f("tags"),
                    value: "1".into(),
                },
                "FILTER_INVALID",
                "`tags`",
            ),
            (
                Filter::Contains {
                    field: f("title"),
                    value: json!(1),
                },
                "FILTER_INVALID",
                "`title`",
            ),
            (
                Filter::Contains {
                    field: f("nums"),
                    value: json!("x"),
                },
                "FILTER_INVALID",
                "`nums`",
            ),
            (
                Filter::Contains {
                    field: f("n"),
                    value: json!(1),
                },
                "FILTER_INVALID",
                "`n`",
            ),
            (
                Filter::Search {
                    field: Field::Id,
                    query: "x".into(),
                },
                "FILTER_INVALID",
                "`$id`",
            ),
            (
                Filter::Search {
                    field: f("tags"),
                    query: "x".into(),
                },
                "SEARCH_NEEDS_FULLTEXT_INDEX",
                "`tags`",
            ),
            (
                Filter::Search {
                    field: f("body"),
                    query: "a\u{0}b".into(),
                },
                "VALUE_INVALID",
                "`body`",
            ),
            (
                Filter::Contains {
                    field: f("nums"),
                    value: json!(1.5),
                },
                "FILTER_INVALID",
                "`nums`",
            ),
            (
                Filter::In {
                    field: Field::UpdatedAt,
                    values: vec![json!("2024-01-01T00:00:00Z"), json!("soon")],
                    negate: true,
                },
                "FILTER_INVALID",
                "`$updatedAt`",
            ),
            (
                Filter::In {
                    field: f("n"),
                    values: vec![json!(1); 501],
                    negate: false,
                },
                "FILTER_TOO_COMPLEX",
                "`n`",
            ),
            (
                Filter::And(vec![
                    Filter::In {
                        field: f("n"),
                        values: vec![json!(1); 500],
                        negate: false,
                    };
                    21
                ]),
                "FILTER_TOO_COMPLEX",
                "each 100 values",
            ),
            (
                Filter::And(vec![cmp("n", CmpOp::Eq, json!(1)); 101]),
                "FILTER_TOO_COMPLEX",
                "100",
            ),
            (
                Filter::And(vec![
                    cmp("n", CmpOp::Eq, json!(1)),
                    cmp("x\u{1}y", CmpOp::Eq, json!(1)),
                ]),
                "FILTER_UNKNOWN_FIELD",
                "`x\\u{1}y`",
            ),
        ];
        for (filter, code, named) in cases {
            // Refused when resolved, for a query and for matching alike: no SQL
            // is built, and the matcher never sees it.
            for usage in [Use::Query, Use::Match] {
                // Matching needs no index: the attribute's type is what is wrong.
                let code = match (usage, code) {
                    (Use::Match, "SEARCH_NEEDS_FULLTEXT_INDEX") => "FILTER_INVALID",
                    _ => code,
                };
                let err = filter.resolve(&target(), usage).unwrap_err();
                assert_eq!(err.code(), code, "{filter:?}");
                assert!(err.to_string().contains(named), "{err}");
                assert!(!err.to_string().contains('?'), "{err}");
            }
        }
        let mut deep = cmp("n", CmpOp::Eq, json!(1));
        for _ in 0..9 {
            deep = Filter::Not(Box::new(deep));
        }
        assert!(sql_of(SqlDialect::Sqlite, &deep).is_ok());
        let too_deep = Filter::And(vec![deep]);
        assert_eq!(
            sql_of(SqlDialect::Sqlite, &too_deep).unwrap_err().code(),
            "FILTER_TOO_COMPLEX"
        );
        assert!(
            sql_of(
                SqlDialect::Sqlite,
                &Filter::And(vec![cmp("n", CmpOp::Eq, json!(1)); 100])
            )
            .is_ok()
        );
        for alias in ["", "1d", "d.x", "d\"", "nimbus_je", "NIMBUS_JE"] {
            let mut builder = QueryBuilder::<Any>::new("");
            let err = push_filter(
                &mut builder,
                SqlDialect::Sqlite,
                alias,
                &ResolvedFilter::default(),
            )
            .unwrap_err();
            assert_eq!(err.code(), "INTERNAL");
            assert_eq!(builder.sql(), "");
        }
    }

    /// The collection's table, with a full-text index on `body` (MariaDB).
    async fn table(db: &TestDb) {
        let search = Index {
            key: "search".into(),
            kind: IndexKind::Fulltext,
            attributes: vec!["body".into()],
            orders: vec![],
            lengths: Vec::new(),
        };
        let mut statements = create_table_sql(db.dialect, "c_t", &attrs()).unwrap();
        statements.extend(create_index_sql(db.dialect, "c_t", &attrs(), &search).unwrap());
        for statement in statements {
            sqlx::query(&statement).execute(&db.pool).await.unwrap();
        }
    }

    async fn insert(pool: &sqlx::AnyPool, id: &str, created: i64, doc: Value) {
        let attrs = attrs();
        let names: Vec<String> = attrs.iter().map(Attribute::column).collect();
        let sql = format!(
            "INSERT INTO c_t (id, created_at, updated_at, {}) VALUES (?, ?, ?, {})",
            names.join(", "),
            vec!["?"; names.len()].join(", ")
        );
        let mut query = sqlx::query(&sql).bind(id).bind(created).bind(created);
        for a in &attrs {
            query = a.value_for_write(doc.get(&a.key)).unwrap().bind_to(query);
        }
        query.execute(pool).await.unwrap();
    }

    /// The documents `with_documents` writes, with their creation times.
    fn documents() -> Vec<(&'static str, i64, Value)> {
        let docs = [
            (
                "a",
                json!({"title": "Apple pie", "n": 1, "price": 1.5, "done": true,
                          "due": "2024-01-01T00:00:00Z", "body": "The big brown cat",
                          "ip": "10.0.0.1", "tags": ["red", "fruit"], "nums": [1, 2],
                          "flags": [true], "days": ["2024-01-01T00:00:00Z"]}),
            ),
            (
                "b",
                json!({"title": "apple tart", "n": 2, "price": 2.5, "done": false,
                          "due": "2024-06-01T00:00:00Z", "body": "a BIG dog",
                          "ip": "::1", "tags": ["green"], "nums": [3], "flags": [false]}),
            ),
            (
                "c",
                json!({"title": "50%_off", "n": 3, "price": -1.0,
                          "body": "100% cotton_wool", "tags": [], "nums": []}),
            ),
            (
                "d",
                json!({"title": "50x_off", "n": 4, "body": "cotton wool 100x"}),
            ),
            ("e", json!({"title": "a!b\\c", "n": 5})),
            ("f", json!({})),
        ];
        docs.into_iter()
            .enumerate()
            .map(|(i, (id, doc))| (id, 1000 * (i as i64 + 1), doc))
            .collect()
    }

    async fn with_documents(db: &TestDb) {
        table(db).await;
        for (id, created, doc) in documents() {
            insert(&db.pool, id, created, doc).await;
        }
    }

    /// The documents the matcher accepts, as events carry them.
    fn matched(filter: &Filter) -> String {
        let filter = filter.resolve(&target(), Use::Match).unwrap();
        documents()
            .into_iter()
            .filter(|(id, created, doc)| {
                let mut event = doc.as_object().unwrap().clone();
                let at = super::super::model::millis_to_rfc3339(*created).unwrap();
                event.insert("$id".into(), json!(id));
                event.insert("$createdAt".into(), json!(at));
                event.insert("$updatedAt".into(), json!(at));
                super::super::matcher::matches(&filter, &event)
            })
            .map(|(id, _, _)| id)
            .collect()
    }

    async fn matching(pool: &sqlx::AnyPool, dialect: SqlDialect, filter: &Filter) -> String {
        let mut builder = QueryBuilder::<Any>::new("SELECT d.id FROM c_t d WHERE ");
        push_filter(&mut builder, dialect, "d", &resolved(filter).unwrap()).unwrap();
        builder.push(" ORDER BY d.id");
        builder
            .build_query_scalar::<String>()
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", builder.sql()))
            .concat()
    }

    /// Every operator, run; both dialects give the same rows except for
    /// `search` (see the module doc).
    async fn every_operator(db: TestDb) {
        with_documents(&db).await;
        let (pool, dialect) = (&db.pool, db.dialect);
        let starts = |v: &str| Filter::StartsWith {
            field: f("title"),
            value: v.into(),
        };
        let ends = |v: &str| Filter::EndsWith {
            field: f("title"),
            value: v.into(),
        };
        let contains = |k: &str, v: Value| Filter::Contains {
            field: f(k),
            value: v,
        };
        let search = |v: &str| Filter::Search {
            field: f("body"),
            query: v.into(),
        };
        // query, rows on SQLite and in the matcher (word prefixes, case
        // ignored, words end at `%` and `_`), rows on MariaDB (word prefixes,
        // case ignored, `%` ends a word and `_` does not).
        let searches = [
            ("big", "ab", "ab"),
            ("BIG cat", "a", "a"),
            ("100%", "cd", "cd"),
            ("cotton_wool", "cd", "c"),
            ("cotton wool", "cd", "d"),
            ("   ", "", ""),
        ];
        let cases: Vec<(Filter, &str)> = vec![
            (cmp("title", CmpOp::Eq, json!("Apple pie")), "a"),
            (cmp("title", CmpOp::Eq, json!("apple pie")), ""),
            (cmp("title", CmpOp::Ne, json!("Apple pie")), "bcdef"),
            (cmp("n", CmpOp::Lt, json!(3)), "ab"),
            (cmp("n", CmpOp::Le, json!(3)), "abc"),
            (cmp("n", CmpOp::Gt, json!(3)), "de"),
            (cmp("n", CmpOp::Ge, json!(3)), "cde"),
            (cmp("n", CmpOp::Ne, json!(3)), "abdef"),
            (cmp("price", CmpOp::Gt, json!(0)), "ab"),
            (cmp("price", CmpOp::Eq, json!(2.5)), "b"),
            (cmp("done", CmpOp::Eq, json!(true)), "a"),
            (cmp("done", CmpOp::Ne, json!(true)), "bcdef"),
            (
                cmp("due", CmpOp::Gt, json!("2024-03-01T00:00:00+01:00")),
                "b",
            ),
            (cmp("ip", CmpOp::Eq, json!("0:0::1")), "b"),
            (
                Filter::Cmp {
                    field: Field::Id,
                    op: CmpOp::Ge,
                    value: json!("e"),
                },
                "ef",
            ),
            (
                Filter::Cmp {
                    field: Field::CreatedAt,
                    op: CmpOp::Gt,
                    value: json!("1970-01-01T00:00:03Z"),
                },
                "def",
            ),
            (
                Filter::In {
                    field: f("n"),
                    values: vec![json!(1), json!(4)],
                    negate: false,
                },
                "ad",
            ),
            (
                Filter::In {
                    field: f("n"),
                    values: vec![json!(1), json!(4)],
                    negate: true,
                },
                "bcef",
            ),
            (
                Filter::In {
                    field: f("n"),
                    values: vec![],
                    negate: false,
                },
                "",
            ),
            (
                Filter::In {
                    field: f("n"),
                    values: vec![],
                    negate: true,
                },
                "abcdef",
            ),
            (
                Filter::In {
                    field: Field::Id,
                    values: vec![json!("a"), json!("f")],
                    negate: true,
                },
                "bcde",
            ),
            (
                Filter::IsNull {
                    field: f("price"),
                    is_null: true,
                },
                "def",
            ),
            (
                Filter::IsNull {
                    field: f("price"),
                    is_null: false,
                },
                "abc",
            ),
            (
                Filter::IsNull {
                    field: f("tags"),
                    is_null: true,
                },
                "def",
            ),
            (
                Filter::Between {
                    field: f("n"),
                    low: json!(2),
                    high: json!(4),
                },
                "bcd",
            ),
            (
                Filter::Between {
                    field: f("due"),
                    low: json!("2024-01-01T00:00:00Z"),
                    high: json!("2024-02-01T00:00:00Z"),
                },
                "a",
            ),
            (starts("apple"), "b"),
            (starts("Apple"), "a"),
            (starts("50%"), "c"),
            (starts("50%_off"), "c"),
            (starts("50%_off and more"), ""),
            (starts(""), "abcde"),
            (starts("a!b\\"), "e"),
            (ends("_off"), "cd"),
            (ends("x_off"), "d"),
            (ends("PIE"), ""),
            (ends("c"), "e"),
            (ends("a longer string than any title"), ""),
            (contains("title", json!("pple")), "ab"),
            (contains("title", json!("PPLE")), ""),
            (contains("title", json!("%_")), "c"),
            (contains("title", json!("!b\\")), "e"),
            (contains("tags", json!("red")), "a"),
            (contains("tags", json!("re")), ""),
            (contains("nums", json!(3)), "b"),
            (contains("flags", json!(false)), "b"),
            (contains("flags", json!(true)), "a"),
            (contains("days", json!("2024-01-01T01:00:00+01:00")), "a"),
            (Filter::Not(Box::new(cmp("n", CmpOp::Gt, json!(2)))), "abf"),
            (
                Filter::Not(Box::new(contains("tags", json!("red")))),
                "bcdef",
            ),
            (Filter::And(vec![]), "abcdef"),
            (Filter::Or(vec![]), ""),
            (
                Filter::Or(vec![cmp("n", CmpOp::Eq, json!(1)), starts("50")]),
                "acd",
            ),
            (
                Filter::And(vec![
                    cmp("n", CmpOp::Gt, json!(1)),
                    Filter::Or(vec![ends("off"), cmp("done", CmpOp::Eq, json!(false))]),
                ]),
                "bcd",
            ),
        ];
        for (filter, expected) in &cases {
            assert_eq!(
                matching(pool, dialect, filter).await,
                *expected,
                "{filter:?}"
            );
            // The matcher of subscriptions agrees with the SQL.
            assert_eq!(matched(filter), *expected, "matched {filter:?}");
        }
        for (query, on_sqlite, on_mariadb) in searches {
            let expected = match dialect {
                SqlDialect::Sqlite => on_sqlite,
                SqlDialect::MySql => on_mariadb,
            };
            assert_eq!(
                matching(pool, dialect, &search(query)).await,
                expected,
                "{query}"
            );
            assert_eq!(matched(&search(query)), on_sqlite, "matched {query}");
        }
        if dialect == SqlDialect::MySql {
            db.close().await;
            return;
        }
        // MariaDB's LIKE patterns, run on SQLite (which reads backticks too),
        // prove the escaping; only SQLite's LIKE ignores ASCII case.
        let mysql_like: Vec<(Filter, &str)> = vec![
            (starts("50%"), "c"),
            (starts("50%_"), "c"),
            (ends("x_off"), "d"),
            (contains("title", json!("%_")), "c"),
            (contains("title", json!("!b\\")), "e"),
            (contains("title", json!("_")), "cd"),
            (starts(""), "abcde"),
        ];
        for (filter, expected) in &mysql_like {
            assert_eq!(
                matching(pool, SqlDialect::MySql, filter).await,
                *expected,
                "{filter:?}"
            );
        }
        db.close().await;
    }

    #[tokio::test]
    async fn every_operator_runs_on_sqlite() {
        every_operator(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn every_operator_runs_on_mariadb() {
        if let Some(db) = test_support::mariadb().await {
            every_operator(db).await;
        }
    }

    /// A row of the paging table, with the columns paged on.
    #[derive(Debug, Clone)]
    struct Row {
        id: String,
        n: Option<i64>,
        title: Option<String>,
        price: Option<f64>,
        done: Option<bool>,
        created: i64,
    }

    async fn paging_rows(db: &TestDb) -> Vec<Row> {
        table(db).await;
        let mut rows = Vec::new();
        for i in 0..37_i64 {
            let row = Row {
                id: format!("doc{:02}", (i * 17) % 37),
                n: (i % 5 != 0).then_some(i % 4),
                title: (i % 7 != 3).then(|| ["b", "a", "B", "a "][(i % 4) as usize].to_string()),
                price: (i % 6 != 1).then_some(((i % 3) as f64) * 0.1),
                done: (i % 9 != 0).then_some(i % 2 == 0),
                created: 1000 + i % 3,
            };
            let doc = json!({"n": row.n, "title": row.title, "price": row.price, "done": row.done});
            insert(&db.pool, &row.id, row.created, doc).await;
            rows.push(row);
        }
        rows
    }

    fn field_cmp(a: &Row, b: &Row, field: &Field) -> Ordering {
        match field {
            Field::Id => a.id.cmp(&b.id),
            Field::CreatedAt | Field::UpdatedAt => a.created.cmp(&b.created),
            Field::Sequence => unreachable!(),
            Field::Attribute(key) => match key.as_str() {
                "n" => a.n.cmp(&b.n),
                "title" => a.title.cmp(&b.title),
                "price" => a.price.partial_cmp(&b.price).unwrap(),
                "done" => a.done.cmp(&b.done),
                _ => unreachable!(),
            },
        }
    }

    /// The order as specified: `None` sorts first ascending (as NULL does), and
    /// ties go to id ascending.
    fn expected(rows: &[Row], orders: &[OrderBy]) -> Vec<String> {
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| {
            for order in orders {
                let o = field_cmp(a, b, &order.field);
                let o = if order.desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
        sorted.into_iter().map(|r| r.id).collect()
    }

    /// A keyset page as lists read it: one statement per part
    /// ([`keyset_parts`]), the next only while the page is not full.
    /// With `bounded`, the near part is first bounded on the first order
    /// column by a probe ([`push_lead_probe`]), as MariaDB lists do.
    async fn page(
        db: &TestDb,
        orders: &[OrderBy],
        cursor: Option<&Cursor>,
        from_end: bool,
        limit: usize,
        bounded: bool,
    ) -> (Vec<String>, Vec<Cursor>, bool) {
        let mut until = None;
        let lead = lead_column_sql(db.dialect, "d", &attrs(), orders).unwrap();
        if let (true, Some(lead)) = (bounded, lead) {
            let mut probe =
                QueryBuilder::<Any>::new(format!("SELECT d.id, {lead} FROM c_t d WHERE 1=1"));
            push_lead_probe(
                &mut probe,
                db.dialect,
                "d",
                &attrs(),
                orders,
                cursor,
                from_end,
                limit + 1,
            )
            .unwrap();
            if let Some(row) = probe.build().fetch_optional(&db.pool).await.unwrap() {
                until = cursor_for_row(&row, &attrs(), &orders[..1])
                    .unwrap()
                    .values
                    .pop();
            }
        }
        let mut rows = Vec::new();
        for part in keyset_parts(&attrs(), orders, cursor, from_end).unwrap() {
            if rows.len() > limit {
                break;
            }
            let mut builder = QueryBuilder::<Any>::new("SELECT d.* FROM c_t d WHERE 1=1");
            if let (KeysetPart::Near, Some(until)) = (part, &until) {
                push_lead_bound(
                    &mut builder,
                    db.dialect,
                    "d",
                    &attrs(),
                    orders,
                    from_end,
                    until,
                )
                .unwrap();
            }
            push_order_and_cursor(
                &mut builder,
                db.dialect,
                "d",
                &attrs(),
                orders,
                cursor,
                from_end,
                *part,
                limit + 1 - rows.len(),
            )
            .unwrap();
            rows.extend(
                builder
                    .build()
                    .fetch_all(&db.pool)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", builder.sql())),
            );
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        if from_end {
            rows.reverse();
        }
        let ids = rows.iter().map(|r| r.get::<String, _>("id")).collect();
        let cursors = rows
            .iter()
            .map(|r| {
                let cursor = cursor_for_row(r, &attrs(), orders).unwrap();
                // Every cursor survives its string form.
                let list = list_signature("c_t", orders);
                Cursor::decode(&cursor.encode(&list), &list).unwrap()
            })
            .collect();
        (ids, cursors, more)
    }

    /// An offset page.
    async fn offset_page(
        db: &TestDb,
        orders: &[OrderBy],
        limit: usize,
        offset: usize,
    ) -> Vec<String> {
        let mut builder = QueryBuilder::<Any>::new("SELECT d.id FROM c_t d");
        push_order_and_offset(
            &mut builder,
            db.dialect,
            "d",
            &attrs(),
            orders,
            limit,
            offset,
        )
        .unwrap();
        builder
            .build_query_scalar::<String>()
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    /// The orders paged on: nullable columns first in either direction, and
    /// behind others.
    fn paged_orders() -> Vec<Vec<OrderBy>> {
        vec![
            vec![],
            vec![OrderBy::asc(f("n"))],
            vec![OrderBy::desc(f("n"))],
            vec![OrderBy::asc(f("title")), OrderBy::desc(f("n"))],
            vec![OrderBy::desc(f("title")), OrderBy::asc(f("n"))],
            vec![
                OrderBy::desc(f("price")),
                OrderBy::asc(f("done")),
                OrderBy::desc(f("title")),
            ],
            vec![OrderBy::asc(f("price"))],
            vec![OrderBy::desc(f("done")), OrderBy::asc(Field::CreatedAt)],
            vec![OrderBy::desc(Field::Id)],
            vec![OrderBy::asc(Field::UpdatedAt), OrderBy::desc(f("price"))],
        ]
    }

    /// Pages of every size, forwards and backwards, by cursor and by offset,
    /// and from every row, give each row once in the specified order: every
    /// page boundary falls once among, before and after the NULLs.
    async fn check_paging(db: &TestDb, rows: &[Row], bounded: bool) {
        for orders in &paged_orders() {
            let want = expected(rows, orders);
            // The database agrees with the specified order.
            let (all, _, more) = page(db, orders, None, false, 1000, bounded).await;
            assert_eq!(all, want, "{orders:?}");
            assert!(!more);
            for limit in [1, 2, 5, 36, 37] {
                let mut forwards = Vec::new();
                let mut cursor = None;
                loop {
                    let (ids, cursors, more) =
                        page(db, orders, cursor.as_ref(), false, limit, bounded).await;
                    forwards.extend(ids);
                    if !more {
                        break;
                    }
                    cursor = cursors.last().cloned();
                }
                assert_eq!(forwards, want, "forwards {orders:?} by {limit}");

                let mut backwards: Vec<String> = Vec::new();
                let mut cursor = None;
                loop {
                    let (ids, cursors, more) =
                        page(db, orders, cursor.as_ref(), true, limit, bounded).await;
                    backwards.splice(0..0, ids);
                    if !more {
                        break;
                    }
                    cursor = cursors.first().cloned();
                }
                assert_eq!(backwards, want, "backwards {orders:?} by {limit}");

                let mut by_offset = Vec::new();
                for offset in (0..=want.len()).step_by(limit) {
                    by_offset.extend(offset_page(db, orders, limit, offset).await);
                }
                assert_eq!(by_offset, want, "by offset {orders:?} by {limit}");
            }
            // From any row, the next rows forwards and the previous rows
            // backwards, and the rows from any offset.
            let (_, cursors, _) = page(db, orders, None, false, 1000, bounded).await;
            for (i, cursor) in cursors.iter().enumerate() {
                let (after, _, _) = page(db, orders, Some(cursor), false, 3, bounded).await;
                assert_eq!(
                    after,
                    want[i + 1..(i + 4).min(want.len())],
                    "{orders:?} after {i}"
                );
                let (before, _, _) = page(db, orders, Some(cursor), true, 3, bounded).await;
                assert_eq!(
                    before,
                    want[i.saturating_sub(3)..i],
                    "{orders:?} before {i}"
                );
                assert_eq!(
                    offset_page(db, orders, 3, i).await,
                    want[i..(i + 3).min(want.len())],
                    "{orders:?} from offset {i}"
                );
            }
        }
    }

    /// The same pages without an index on the ordered columns, then with one
    /// on each (which the planners walk instead of sorting) and on pairs, read
    /// as they are and bounded by a probe first.
    async fn keyset_paging(db: TestDb) {
        let rows = paging_rows(&db).await;
        check_paging(&db, &rows, false).await;
        let indexes = [
            ("by_n", vec!["n"], vec![]),
            ("by_title", vec!["title"], vec![]),
            ("by_price", vec!["price"], vec![]),
            ("by_done", vec!["done"], vec![]),
            (
                "by_title_n",
                vec!["title", "n"],
                vec![IndexOrder::Asc, IndexOrder::Desc],
            ),
            ("by_price_desc", vec!["price"], vec![IndexOrder::Desc]),
        ];
        for (key, attributes, orders) in indexes {
            let index = Index {
                key: key.into(),
                kind: IndexKind::Key,
                attributes: attributes.into_iter().map(String::from).collect(),
                orders,
                lengths: Vec::new(),
            };
            for statement in create_index_sql(db.dialect, "c_t", &attrs(), &index).unwrap() {
                sqlx::query(&statement).execute(&db.pool).await.unwrap();
            }
        }
        check_paging(&db, &rows, false).await;
        check_paging(&db, &rows, true).await;
        db.close().await;
    }

    #[tokio::test]
    async fn keyset_pages_cover_every_row_once_in_both_directions_on_sqlite() {
        keyset_paging(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn keyset_pages_cover_every_row_once_in_both_directions_on_mariadb() {
        if let Some(db) = test_support::mariadb().await {
            keyset_paging(db).await;
        }
    }

    #[test]
    fn offset_pages_follow_the_same_order() {
        let orders = [OrderBy::asc(f("title")), OrderBy::desc(f("price"))];
        let mut builder = QueryBuilder::<Any>::new("");
        push_order_and_offset(
            &mut builder,
            SqlDialect::MySql,
            "d",
            &attrs(),
            &orders,
            6,
            12,
        )
        .unwrap();
        assert_eq!(
            builder.sql(),
            " ORDER BY `d`.`a_title` ASC, `d`.`a_price` DESC, `d`.`id` ASC LIMIT ? OFFSET ?"
        );
    }

    #[test]
    fn mysql_keyset_text() {
        let orders = [OrderBy::asc(f("n")), OrderBy::desc(f("title"))];
        let cursor = Cursor {
            values: vec![SqlValue::Int(3), SqlValue::Text("x".into())],
            id: "doc1".into(),
        };
        let mut builder = QueryBuilder::<Any>::new("WHERE 1=1");
        push_order_and_cursor(
            &mut builder,
            SqlDialect::MySql,
            "d",
            &attrs(),
            &orders,
            Some(&cursor),
            false,
            KeysetPart::Near,
            11,
        )
        .unwrap();
        assert_eq!(
            keyset_parts(&attrs(), &orders, Some(&cursor), false).unwrap(),
            [KeysetPart::Near]
        );
        assert_eq!(
            builder.sql(),
            "WHERE 1=1 AND (`d`.`a_n` >= ? AND ((`d`.`a_n` > ?) OR (`d`.`a_n` = ? AND (`d`.`a_title` < ? OR `d`.`a_title` IS NULL)) \
             OR (`d`.`a_n` = ? AND `d`.`a_title` = ? AND `d`.`id` > ?))) \
             ORDER BY `d`.`a_n` ASC, `d`.`a_title` DESC, `d`.`id` ASC LIMIT 11"
        );
        let nulls = Cursor {
            values: vec![SqlValue::Null, SqlValue::Null],
            id: "doc1".into(),
        };
        let mut builder = QueryBuilder::<Any>::new("");
        push_order_and_cursor(
            &mut builder,
            SqlDialect::MySql,
            "d",
            &attrs(),
            &orders,
            Some(&nulls),
            true,
            KeysetPart::Near,
            6,
        )
        .unwrap();
        // Backwards: n descending (NULLs last, so nothing after NULL), title ascending.
        assert_eq!(
            keyset_parts(&attrs(), &orders, Some(&nulls), true).unwrap(),
            [KeysetPart::Near]
        );
        assert_eq!(
            builder.sql(),
            " AND (`d`.`a_n` IS NULL AND ((`d`.`a_n` IS NULL AND `d`.`a_title` IS NOT NULL) \
             OR (`d`.`a_n` IS NULL AND `d`.`a_title` IS NULL AND `d`.`id` < ?))) \
             ORDER BY `d`.`a_n` DESC, `d`.`a_title` ASC, `d`.`id` DESC LIMIT 6"
        );

        // Across the NULLs: a value in descending order (forwards), a NULL in
        // ascending order (backwards from a descending list): each side is
        // one range, read in its own statement.
        let text = |cursor: &Cursor, from_end: bool, part: KeysetPart| {
            let orders = [OrderBy::desc(f("n")), OrderBy::asc(f("title"))];
            assert_eq!(
                keyset_parts(&attrs(), &orders, Some(cursor), from_end).unwrap(),
                [KeysetPart::Near, KeysetPart::Across]
            );
            let mut builder = QueryBuilder::<Any>::new("");
            push_order_and_cursor(
                &mut builder,
                SqlDialect::MySql,
                "d",
                &attrs(),
                &orders,
                Some(cursor),
                from_end,
                part,
                6,
            )
            .unwrap();
            builder.sql().to_string()
        };
        assert_eq!(
            text(&cursor, false, KeysetPart::Near),
            " AND (`d`.`a_n` <= ? AND ((`d`.`a_n` < ?) OR (`d`.`a_n` = ? AND `d`.`a_title` > ?) \
             OR (`d`.`a_n` = ? AND `d`.`a_title` = ? AND `d`.`id` > ?))) \
             ORDER BY `d`.`a_n` DESC, `d`.`a_title` ASC, `d`.`id` ASC LIMIT 6"
        );
        assert_eq!(
            text(&cursor, false, KeysetPart::Across),
            " AND `d`.`a_n` IS NULL ORDER BY `d`.`a_n` DESC, `d`.`a_title` ASC, `d`.`id` ASC LIMIT 6"
        );
        let null_n = Cursor {
            values: vec![SqlValue::Null, SqlValue::Text("x".into())],
            id: "doc1".into(),
        };
        assert_eq!(
            text(&null_n, true, KeysetPart::Near),
            " AND (`d`.`a_n` IS NULL AND ((`d`.`a_n` IS NULL AND (`d`.`a_title` < ? OR `d`.`a_title` IS NULL)) \
             OR (`d`.`a_n` IS NULL AND `d`.`a_title` = ? AND `d`.`id` < ?))) \
             ORDER BY `d`.`a_n` ASC, `d`.`a_title` DESC, `d`.`id` DESC LIMIT 6"
        );
        assert_eq!(
            text(&null_n, true, KeysetPart::Across),
            " AND `d`.`a_n` IS NOT NULL ORDER BY `d`.`a_n` ASC, `d`.`a_title` DESC, `d`.`id` DESC LIMIT 6"
        );
    }

    #[test]
    fn orders_and_cursors_are_checked() {
        let attrs = attrs();
        let try_page = |orders: &[OrderBy], cursor: Option<&Cursor>| {
            let mut builder = QueryBuilder::<Any>::new("X");
            let result = push_order_and_cursor(
                &mut builder,
                SqlDialect::Sqlite,
                "d",
                &attrs,
                orders,
                cursor,
                false,
                KeysetPart::Near,
                6,
            );
            if result.is_err() {
                assert_eq!(builder.sql(), "X");
            }
            result.map_err(|e| e.code())
        };
        assert_eq!(
            try_page(&[OrderBy::asc(f("tags"))], None),
            Err("FILTER_INVALID")
        );
        assert_eq!(
            try_page(&[OrderBy::asc(f("body"))], None),
            Err("FILTER_INVALID")
        );
        assert_eq!(
            try_page(&[OrderBy::asc(f("nope"))], None),
            Err("FILTER_UNKNOWN_FIELD")
        );
        assert_eq!(
            try_page(&vec![OrderBy::asc(f("n")); 9], None),
            Err("FILTER_TOO_COMPLEX")
        );

        let orders = [
            OrderBy::asc(f("n")),
            OrderBy::asc(f("price")),
            OrderBy::asc(Field::CreatedAt),
        ];
        let good = Cursor {
            values: vec![SqlValue::Int(1), SqlValue::Float(0.1), SqlValue::Int(5)],
            id: "doc".into(),
        };
        assert_eq!(try_page(&orders, Some(&good)), Ok(()));
        let list = list_signature("c_t", &orders);
        let decoded = Cursor::decode(&good.encode(&list), &list).unwrap();
        assert_eq!(decoded, good);
        let wrong = [
            Cursor {
                values: vec![SqlValue::Int(1)],
                id: "doc".into(),
            },
            Cursor {
                values: vec![
                    SqlValue::Text("1".into()),
                    SqlValue::Float(0.1),
                    SqlValue::Int(5),
                ],
                id: "doc".into(),
            },
            Cursor {
                values: vec![SqlValue::Int(1), SqlValue::Int(0), SqlValue::Int(5)],
                id: "doc".into(),
            },
            Cursor {
                values: vec![SqlValue::Int(1), SqlValue::Float(0.1), SqlValue::Null],
                id: "doc".into(),
            },
        ];
        for cursor in &wrong {
            assert_eq!(
                try_page(&orders, Some(cursor)),
                Err("INVALID_CURSOR"),
                "{cursor:?}"
            );
        }
        // Tampered strings, and cursors of another list.
        let encoded = good.encode(&list);
        let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let with_list = |rest: &str| b64(&format!("[{}, {rest}]", Value::from(list.as_str())));
        let garbage = [
            "".to_string(),
            "!!!!".to_string(),
            "a".to_string(),
            encoded[..encoded.len() - 1].to_string(),
            format!("{encoded}="),
            format!("{encoded}+"),
            b64("not json"),
            b64("{}"),
            b64("[]"),
            b64("[1, 2]"),
            b64("[\"c_t:`n`+:`price`+:`$createdAt`+\"]"),
            with_list("1.5, \"id\""),
            with_list("[1], \"id\""),
            with_list("true, \"id\""),
            with_list("{\"f\": \"7ff8000000000000\"}, \"id\""),
            with_list("{\"f\": \"xyz\"}, \"id\""),
            with_list("1, \"\""),
            good.encode(&list_signature("c_u", &orders)),
            good.encode(&list_signature("c_t", &orders[..2])),
            good.encode(&list_signature("c_t", &[OrderBy::desc(f("n"))])),
            "A".repeat(MAX_CURSOR_LEN + 4),
        ];
        for input in &garbage {
            let err = Cursor::decode(input, &list).unwrap_err();
            assert_eq!(err.code(), "INVALID_CURSOR", "{input}");
        }
        // Stray low bits in the last character: not what encode writes.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = b64("[\"x\", \"ab\"]");
        assert_eq!(Cursor::decode(&bits, "x").unwrap().id, "ab");
        let last = ALPHABET.find(bits.pop().unwrap()).unwrap();
        bits.push(char::from(ALPHABET.as_bytes()[last ^ 1]));
        assert!(Cursor::decode(&bits, "x").is_err(), "{bits}");
        // A cursor whose values were changed but still fit is just another position.
        let moved = with_list("99, {\"f\": \"3ff0000000000000\"}, 7, \"zzz\"");
        let cursor = Cursor::decode(&moved, &list).unwrap();
        assert_eq!(cursor.values[1], SqlValue::Float(1.0));
        assert_eq!(try_page(&orders, Some(&cursor)), Ok(()));
    }
}
