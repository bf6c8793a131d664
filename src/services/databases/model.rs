//! The data model of user-defined collections: an attribute's type
//! ([`AttributeKind`]) and definition ([`Attribute`]), the checks a definition
//! must pass, and the one conversion between a client's JSON value and the SQL
//! value stored in the attribute's column ([`Attribute::to_sql_value`] on the way
//! in, [`Attribute::from_sql`] on the way out).
//!
//! Stored forms are the same on SQLite and MariaDB, so that one `AnyPool` code
//! path reads and writes both (ADR 0001): datetimes are `BIGINT` milliseconds
//! since the Unix epoch (UTC), booleans are `SMALLINT` 0/1, and arrays are JSON
//! text whose elements are in the stored form of one scalar (datetimes as
//! milliseconds, booleans as JSON `true`/`false`).
//!
//! Each attribute lives in a column named `a_<key>`, so that a key can never be
//! a system column (`id`, `created_at`, `updated_at`) nor an SQL keyword.
//!
//! Also here: [`SqlDialect`], the two SQL dialects as the rest of this service
//! sees them, with identifier quoting, and [`shown`], the bounded excerpt of
//! client input every error message of the service uses.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::{Any, ColumnIndex, QueryBuilder, Row as _, ValueRef as _};

use super::spatial::{self, Shape};
use crate::error::codes;
pub use crate::error::shown;
pub use crate::graphql::types::{
    MAX_DATETIME_MS, MIN_DATETIME_MS, millis_to_rfc3339, rfc3339_to_millis,
};

/// Milliseconds of a date-time a document holds or a filter compares with: RFC
/// 3339, or, as Appwrite takes them, a date alone (`2024-05-01`) or a date and
/// time without an offset (`2024-05-01 14:00:00`, `2024-05-01T14:00:00.5`), both
/// read as UTC, or either followed by a time zone's IANA name
/// (`1975-06-12 14:12:55 America/New_York`), read as that zone's local time (one
/// that a change of clocks skips is refused; one it repeats is the earlier).
/// Years 0000 to 9999.
pub fn document_datetime_to_millis(input: &str) -> Option<i64> {
    if let Some(millis) = rfc3339_to_millis(input) {
        return Some(millis);
    }
    let millis = match naive_datetime(input) {
        Some(naive) => naive.and_utc().timestamp_millis(),
        None => {
            use chrono::TimeZone as _;
            let (local, zone) = input.rsplit_once(' ')?;
            let zone: chrono_tz::Tz = zone.parse().ok()?;
            let local = naive_datetime(local)?;
            zone.from_local_datetime(&local)
                .earliest()?
                .timestamp_millis()
        }
    };
    (MIN_DATETIME_MS..=MAX_DATETIME_MS)
        .contains(&millis)
        .then_some(millis)
}

/// A date and time without an offset, or a date alone (its midnight).
fn naive_datetime(input: &str) -> Option<chrono::NaiveDateTime> {
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| chrono::NaiveDateTime::parse_from_str(input, format).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(input, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
    })
}

/// Longest attribute or index key. The brief's pattern allows 64 characters, but
/// the column is `a_<key>` and MariaDB identifiers have at most 64.
pub const MAX_KEY_LEN: usize = 62;

/// Largest string size stored as `VARCHAR` on MariaDB; larger ones are `LONGTEXT`.
pub const MAX_VARCHAR_SIZE: u32 = 16_383;

/// Largest string size an attribute may declare (1 GiB of characters).
pub const MAX_STRING_SIZE: u32 = 1_073_741_824;

/// Most elements in one array value.
pub const MAX_ARRAY_LEN: usize = 1000;

/// Most elements of an enum, and the longest element.
pub const MAX_ENUM_ELEMENTS: usize = 100;
pub const MAX_ENUM_ELEMENT_LEN: usize = 255;

/// Longest email address (RFC 5321's path limit less the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// Longest URL; the MariaDB column is `VARCHAR(2048)`.
pub const MAX_URL_LEN: usize = 2048;

/// Most attributes in one collection: InnoDB allows 1017 columns, three of
/// which are the system columns.
pub const MAX_ATTRIBUTES: usize = 1000;

/// Keys the document API uses for its own fields.
/// The document's own fields, and the fields its generated input types hold
/// beside the attributes (`and`/`or`/`not` of a filter, `expectedUpdatedAt` of an
/// update): an attribute of the same name would be a second field of that name,
/// and the project's schema would not build.
const RESERVED_KEYS: [&str; 8] = [
    "id",
    "createdAt",
    "updatedAt",
    "permissions",
    "and",
    "or",
    "not",
    "expectedUpdatedAt",
];

/// Largest integer a JSON float carries exactly (2^53); `1e3` is accepted as an
/// integer, `1e300` is not.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// The SQL dialect of the pool. The integrator maps `crate::db::Dialect` to it;
/// it is its own type so that this module compiles on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    Sqlite,
    MySql,
}

impl SqlDialect {
    /// `name` quoted as an identifier: `"name"` on SQLite, `` `name` `` on
    /// MariaDB. Callers pass validated identifiers only; a quote character inside
    /// is doubled anyway, so that even a mistake cannot end the identifier.
    pub fn quote(self, name: &str) -> String {
        let mut out = String::with_capacity(name.len() + 2);
        self.push_quoted(&mut out, "", name);
        out
    }

    /// Appends `prefix` and `name`, together one identifier, quoted as by
    /// [`SqlDialect::quote`]: for statements built piece by piece into one text,
    /// with no allocation per identifier.
    pub fn push_quoted(self, out: &mut String, prefix: &str, name: &str) {
        let q = match self {
            SqlDialect::Sqlite => '"',
            SqlDialect::MySql => '`',
        };
        out.push(q);
        for c in prefix.chars().chain(name.chars()) {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
    }
}

/// Whether `key` is a well-formed attribute or index key:
/// `^[A-Za-z][A-Za-z0-9_]{0,61}$`.
pub fn is_valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && key.len() <= MAX_KEY_LEN
}

/// Why a key is refused, or `None` when it is fine.
fn key_problem(key: &str) -> Option<String> {
    if key.starts_with(['_', '$']) {
        return Some("a key may not start with `_` or `$`".into());
    }
    if !is_valid_key(key) {
        return Some(format!(
            "a key starts with a letter and has 1 to {MAX_KEY_LEN} letters, digits and `_`"
        ));
    }
    if is_reserved_key(key) {
        return Some(format!(
            "{} is reserved for the document's own field",
            shown(key)
        ));
    }
    None
}

/// Whether `key` is one no attribute or relationship may take now. A key taken
/// before it was reserved keeps its column but no field in the generated input
/// types that hold the reserved one, so the project's schema still builds.
pub fn is_reserved_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key)
}

/// The type of an attribute, stored as JSON in the collection's metadata:
/// `{"type": "string", "size": 128}`, `{"type": "boolean"}`, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AttributeKind {
    /// At most `size` characters; `VARCHAR(size)` on MariaDB up to
    /// [`MAX_VARCHAR_SIZE`], `LONGTEXT` beyond.
    String {
        size: u32,
    },
    Integer {
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
    },
    Float {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    Boolean,
    Datetime,
    Email,
    Url,
    Ip,
    Enum {
        elements: Vec<String>,
    },
    /// A point `[x, y]`, stored as its JSON text (see `spatial`).
    Point,
    /// A line `[[x, y], …]` of at least two points.
    Line,
    /// A polygon `[[[x, y], …], …]`: closed rings, the first its outline.
    Polygon,
    /// Appwrite's string types by their MariaDB names: at most `size`
    /// characters (up to [`MAX_APPWRITE_VARCHAR`]) in a `VARCHAR`, …
    Varchar {
        size: u32,
    },
    /// … and texts of at most [`MAX_TEXT`], [`MAX_MEDIUMTEXT`] and
    /// [`MAX_STRING_SIZE`] characters, stored as `LONGTEXT`.
    Text,
    Mediumtext,
    Longtext,
}

/// The most characters of a `VARCHAR` attribute, as Appwrite allows.
pub const MAX_APPWRITE_VARCHAR: u32 = 16_381;
/// The most characters of a `TEXT` attribute (MariaDB's `TEXT` holds 65,535 bytes).
pub const MAX_TEXT: u32 = 65_535;
/// The most characters of a `MEDIUMTEXT` attribute.
pub const MAX_MEDIUMTEXT: u32 = 16_777_215;

impl AttributeKind {
    /// The name used in messages and in the metadata's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            AttributeKind::String { .. } => "string",
            AttributeKind::Integer { .. } => "integer",
            AttributeKind::Float { .. } => "float",
            AttributeKind::Boolean => "boolean",
            AttributeKind::Datetime => "datetime",
            AttributeKind::Email => "email",
            AttributeKind::Url => "url",
            AttributeKind::Ip => "ip",
            AttributeKind::Enum { .. } => "enum",
            AttributeKind::Point => "point",
            AttributeKind::Line => "line",
            AttributeKind::Polygon => "polygon",
            AttributeKind::Varchar { .. } => "varchar",
            AttributeKind::Text => "text",
            AttributeKind::Mediumtext => "mediumtext",
            AttributeKind::Longtext => "longtext",
        }
    }

    /// The most characters a value of a string kind holds; `None` for the
    /// other kinds.
    pub fn text_limit(&self) -> Option<u32> {
        match self {
            AttributeKind::String { size } | AttributeKind::Varchar { size } => Some(*size),
            AttributeKind::Text => Some(MAX_TEXT),
            AttributeKind::Mediumtext => Some(MAX_MEDIUMTEXT),
            AttributeKind::Longtext => Some(MAX_STRING_SIZE),
            _ => None,
        }
    }

    /// The shape a spatial attribute holds; `None` for the other kinds.
    pub fn shape(&self) -> Option<Shape> {
        match self {
            AttributeKind::Point => Some(Shape::Point),
            AttributeKind::Line => Some(Shape::Line),
            AttributeKind::Polygon => Some(Shape::Polygon),
            _ => None,
        }
    }

    /// Whether values are stored as text (strings, emails, URLs, IPs, enums):
    /// the kinds that substring filters, search and full-text indexes apply to.
    pub fn is_textual(&self) -> bool {
        matches!(
            self,
            AttributeKind::String { .. }
                | AttributeKind::Varchar { .. }
                | AttributeKind::Text
                | AttributeKind::Mediumtext
                | AttributeKind::Longtext
                | AttributeKind::Email
                | AttributeKind::Url
                | AttributeKind::Ip
                | AttributeKind::Enum { .. }
        )
    }

    /// Whether the stored form is an integer (integers, booleans as 0/1,
    /// datetimes as milliseconds).
    pub fn is_stored_as_integer(&self) -> bool {
        matches!(
            self,
            AttributeKind::Integer { .. } | AttributeKind::Boolean | AttributeKind::Datetime
        )
    }

    /// The longest value in characters for textual kinds, as the MariaDB column
    /// declares it; `None` for `LONGTEXT` strings and non-textual kinds.
    pub fn max_chars(&self) -> Option<u32> {
        match self {
            AttributeKind::String { size } | AttributeKind::Varchar { size }
                if *size <= MAX_VARCHAR_SIZE =>
            {
                Some(*size)
            }
            AttributeKind::Email | AttributeKind::Enum { .. } => Some(255),
            AttributeKind::Url => Some(2048),
            AttributeKind::Ip => Some(45),
            _ => None,
        }
    }
}

/// One attribute of a collection, as stored in its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub key: String,
    pub kind: AttributeKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub array: bool,
    /// Used when a document omits the attribute; `null` means none.
    #[serde(default)]
    pub default: Option<Value>,
}

/// Why an attribute definition or a value was refused. `key` is the attribute
/// key as [`shown`] prints it; messages never contain SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `ATTRIBUTE_INVALID`: the attribute definition itself is wrong.
    #[error("invalid attribute {key}: {reason}")]
    InvalidAttribute { key: String, reason: String },
    /// `VALUE_INVALID`: a value has the wrong type or format.
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: String, reason: String },
    /// `VALUE_REQUIRED`: a required attribute got `null` or nothing.
    #[error("{key} is required")]
    Required { key: String },
    /// `VALUE_OUT_OF_RANGE`: too long, too large, too small, too many elements.
    #[error("value for {key} is out of range: {reason}")]
    OutOfRange { key: String, reason: String },
    /// `INTERNAL`: a stored value does not decode as its attribute says: a bug
    /// or a schema out of step with the metadata, never client input.
    #[error("the stored value of {key} cannot be read: {reason}")]
    Unreadable { key: String, reason: String },
}

impl ValueError {
    /// The stable `extensions.code` this error reaches a client with.
    pub fn code(&self) -> &'static str {
        match self {
            ValueError::InvalidAttribute { .. } => codes::ATTRIBUTE_INVALID,
            ValueError::Invalid { .. } => codes::VALUE_INVALID,
            ValueError::Required { .. } => codes::VALUE_REQUIRED,
            ValueError::OutOfRange { .. } => codes::VALUE_OUT_OF_RANGE,
            ValueError::Unreadable { .. } => codes::INTERNAL,
        }
    }

    /// What is wrong, without the attribute key (for callers that name the
    /// field themselves, like the filter builder).
    pub fn reason(&self) -> String {
        match self {
            ValueError::InvalidAttribute { reason, .. }
            | ValueError::Invalid { reason, .. }
            | ValueError::OutOfRange { reason, .. }
            | ValueError::Unreadable { reason, .. } => reason.clone(),
            ValueError::Required { .. } => "a value is required".into(),
        }
    }

    fn prefixed(self, prefix: &str) -> Self {
        match self {
            ValueError::Invalid { key, reason } => ValueError::Invalid {
                key,
                reason: format!("{prefix}{reason}"),
            },
            ValueError::OutOfRange { key, reason } => ValueError::OutOfRange {
                key,
                reason: format!("{prefix}{reason}"),
            },
            other => other,
        }
    }
}

/// A value ready to be bound: the stored form of one attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl SqlValue {
    /// Appends `?` and binds the value. Booleans are bound as the integers 0/1,
    /// which is what the `SMALLINT` columns hold on both backends.
    pub fn push_bind(self, builder: &mut QueryBuilder<'_, Any>) {
        match self {
            SqlValue::Null => builder.push_bind(None::<i64>),
            SqlValue::Int(i) => builder.push_bind(i),
            SqlValue::Float(f) => builder.push_bind(f),
            SqlValue::Text(s) => builder.push_bind(s),
            SqlValue::Bool(b) => builder.push_bind(i64::from(b)),
        };
    }

    /// Binds the value, borrowed, as the next item of a `VALUES` row (see
    /// [`Self::push_bind`]).
    pub fn push_bind_separated<'a>(&'a self, row: &mut Separated<'_, 'a, Any, &str>) {
        match self {
            SqlValue::Null => row.push_bind(None::<i64>),
            SqlValue::Int(i) => row.push_bind(*i),
            SqlValue::Float(f) => row.push_bind(*f),
            SqlValue::Text(s) => row.push_bind(s.as_str()),
            SqlValue::Bool(b) => row.push_bind(i64::from(*b)),
        };
    }

    /// About how many bytes the value takes on the wire.
    pub fn size(&self) -> usize {
        match self {
            SqlValue::Text(s) => s.len() + 8,
            _ => 8,
        }
    }

    /// Binds the value to the next `?` of a plain query, as [`Self::push_bind`].
    pub fn bind_to<'q>(
        self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        match self {
            SqlValue::Null => query.bind(None::<i64>),
            SqlValue::Int(i) => query.bind(i),
            SqlValue::Float(f) => query.bind(f),
            SqlValue::Text(s) => query.bind(s),
            SqlValue::Bool(b) => query.bind(i64::from(b)),
        }
    }

    /// The value as an element of a stored JSON array (booleans as JSON
    /// `true`/`false`).
    pub fn to_json_element(&self) -> Value {
        match self {
            SqlValue::Null => Value::Null,
            SqlValue::Int(i) => Value::from(*i),
            SqlValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            SqlValue::Text(s) => Value::String(s.clone()),
            SqlValue::Bool(b) => Value::Bool(*b),
        }
    }
}

/// How strictly a scalar is checked: values written to a document pass every
/// check; values in a filter only need the right type (`lessThan(age, 1000)` is
/// a fine filter even when `age` is at most 150, and `startsWith(email, "bob")`
/// is not an email).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Write,
    Filter,
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Attribute {
    /// The column holding the attribute: `a_<key>`.
    pub fn column(&self) -> String {
        format!("a_{}", self.key)
    }

    fn shown_key(&self) -> String {
        shown(&self.key)
    }

    fn invalid_attribute(&self, reason: impl Into<String>) -> ValueError {
        ValueError::InvalidAttribute {
            key: self.shown_key(),
            reason: reason.into(),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> ValueError {
        ValueError::Invalid {
            key: self.shown_key(),
            reason: reason.into(),
        }
    }

    fn out_of_range(&self, reason: impl Into<String>) -> ValueError {
        ValueError::OutOfRange {
            key: self.shown_key(),
            reason: reason.into(),
        }
    }

    fn unreadable(&self, reason: impl Into<String>) -> ValueError {
        ValueError::Unreadable {
            key: self.shown_key(),
            reason: reason.into(),
        }
    }

    /// Checks the definition: the key, the type's parameters and the default.
    pub fn validate(&self) -> Result<(), ValueError> {
        if let Some(reason) = key_problem(&self.key) {
            return Err(self.invalid_attribute(reason));
        }
        match &self.kind {
            AttributeKind::String { size } => {
                if !(1..=MAX_STRING_SIZE).contains(size) {
                    return Err(self.invalid_attribute(format!(
                        "the size must be between 1 and {MAX_STRING_SIZE}"
                    )));
                }
            }
            AttributeKind::Integer {
                min: Some(min),
                max: Some(max),
            } if min > max => {
                return Err(self.invalid_attribute(format!(
                    "the minimum {min} is greater than the maximum {max}"
                )));
            }
            AttributeKind::Integer { .. } => {}
            AttributeKind::Float { min, max } => {
                if min.is_some_and(|m| !m.is_finite()) || max.is_some_and(|m| !m.is_finite()) {
                    return Err(self.invalid_attribute("the bounds must be finite numbers"));
                }
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    return Err(self.invalid_attribute(format!(
                        "the minimum {min} is greater than the maximum {max}"
                    )));
                }
            }
            AttributeKind::Enum { elements } => self.validate_elements(elements)?,
            AttributeKind::Varchar { size } => {
                if !(1..=MAX_APPWRITE_VARCHAR).contains(size) {
                    return Err(self.invalid_attribute(format!(
                        "the size of a varchar must be between 1 and {MAX_APPWRITE_VARCHAR}"
                    )));
                }
            }
            AttributeKind::Text | AttributeKind::Mediumtext | AttributeKind::Longtext => {}
            AttributeKind::Point | AttributeKind::Line | AttributeKind::Polygon => {
                if self.array {
                    return Err(self.invalid_attribute(format!(
                        "a {} attribute holds one shape; it cannot be an array",
                        self.kind.name()
                    )));
                }
            }
            AttributeKind::Boolean
            | AttributeKind::Datetime
            | AttributeKind::Email
            | AttributeKind::Url
            | AttributeKind::Ip => {}
        }
        self.validate_default()
    }

    fn validate_elements(&self, elements: &[String]) -> Result<(), ValueError> {
        if elements.is_empty() || elements.len() > MAX_ENUM_ELEMENTS {
            return Err(
                self.invalid_attribute(format!("an enum has 1 to {MAX_ENUM_ELEMENTS} elements"))
            );
        }
        let mut seen = HashSet::new();
        for (i, element) in elements.iter().enumerate() {
            if element.is_empty() || element.chars().count() > MAX_ENUM_ELEMENT_LEN {
                return Err(self.invalid_attribute(format!(
                    "enum element #{i} must have 1 to {MAX_ENUM_ELEMENT_LEN} characters"
                )));
            }
            if !seen.insert(element.as_str()) {
                return Err(self.invalid_attribute(format!(
                    "the enum element {} is listed twice",
                    shown(element)
                )));
            }
        }
        Ok(())
    }

    fn validate_default(&self) -> Result<(), ValueError> {
        let Some(default) = self.default.as_ref().filter(|d| !d.is_null()) else {
            return Ok(());
        };
        if self.required {
            return Err(self.invalid_attribute(
                "a required attribute cannot have a default: every document gives a value",
            ));
        }
        if self.array {
            return Err(self.invalid_attribute("an array attribute cannot have a default"));
        }
        // The default is rendered as an SQL literal by the DDL; SQLite reads SQL
        // text only up to a NUL byte.
        if default.as_str().is_some_and(|s| s.contains('\0')) {
            return Err(self.invalid_attribute("the default may not contain a NUL character"));
        }
        self.to_sql_value(default).map(|_| ()).map_err(|err| {
            self.invalid_attribute(format!("the default is not valid: {}", err.reason()))
        })
    }

    /// The stored default, if the attribute has one (already validated by
    /// [`Self::validate`]; an invalid one counts as none).
    pub fn default_sql_value(&self) -> Option<SqlValue> {
        let default = self.default.as_ref().filter(|d| !d.is_null())?;
        if self.array || self.required {
            return None;
        }
        self.to_sql_value(default).ok()
    }

    /// The value to store for a document that gives `given` (or omits the
    /// attribute): the default when omitted, `null` when there is none, and
    /// `VALUE_REQUIRED` when the attribute is required.
    pub fn value_for_write(&self, given: Option<&Value>) -> Result<SqlValue, ValueError> {
        match given {
            Some(value) => self.to_sql_value(value),
            None if self.required => Err(ValueError::Required {
                key: self.shown_key(),
            }),
            None => Ok(self.default_sql_value().unwrap_or(SqlValue::Null)),
        }
    }

    /// Checks a client's value for this attribute and converts it to its stored
    /// form. `null` is allowed only when the attribute is not required.
    pub fn to_sql_value(&self, json: &Value) -> Result<SqlValue, ValueError> {
        if json.is_null() {
            return if self.required {
                Err(ValueError::Required {
                    key: self.shown_key(),
                })
            } else {
                Ok(SqlValue::Null)
            };
        }
        if !self.array {
            return self.scalar(json, Check::Write);
        }
        let Value::Array(items) = json else {
            return Err(self.invalid(format!("expected an array, got {}", json_type(json))));
        };
        if items.len() > MAX_ARRAY_LEN {
            return Err(self.out_of_range(format!(
                "an array has at most {MAX_ARRAY_LEN} elements, got {}",
                items.len()
            )));
        }
        let mut stored = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                return Err(self.invalid(format!("element #{i} is null")));
            }
            let value = self
                .scalar(item, Check::Write)
                .map_err(|e| e.prefixed(&format!("element #{i}: ")))?;
            stored.push(value.to_json_element());
        }
        serde_json::to_string(&stored)
            .map(SqlValue::Text)
            .map_err(|e| self.invalid(e.to_string()))
    }

    /// Converts a value a filter compares this attribute (or, for an array
    /// attribute, one of its elements) with: the type is checked and the value
    /// is put in stored form (a datetime becomes milliseconds, an IP its
    /// canonical form), but lengths, bounds, formats and enum membership are
    /// not checked: a filter value that no document can hold matches nothing.
    pub fn filter_value(&self, json: &Value) -> Result<SqlValue, ValueError> {
        if json.is_null() {
            return Err(self.invalid("null cannot be compared; use isNull or isNotNull"));
        }
        self.scalar(json, Check::Filter)
    }

    /// Checks one value (not an array) against the attribute's type and converts
    /// it; `Check::Write` also checks lengths, bounds, formats and enum members.
    fn scalar(&self, json: &Value, check: Check) -> Result<SqlValue, ValueError> {
        let strict = check == Check::Write;
        match &self.kind {
            AttributeKind::String { size } | AttributeKind::Varchar { size } => {
                self.string_value(json, *size, strict)
            }
            AttributeKind::Text => self.string_value(json, MAX_TEXT, strict),
            AttributeKind::Mediumtext => self.string_value(json, MAX_MEDIUMTEXT, strict),
            AttributeKind::Longtext => self.string_value(json, MAX_STRING_SIZE, strict),
            AttributeKind::Integer { min, max } => {
                let value = self.integer_value(json)?;
                if strict {
                    self.check_bounds(value, min.as_ref(), max.as_ref())?;
                }
                Ok(SqlValue::Int(value))
            }
            AttributeKind::Float { min, max } => {
                let Value::Number(n) = json else {
                    return Err(self.expected("a number", json));
                };
                let Some(value) = n.as_f64().filter(|f| f.is_finite()) else {
                    return Err(self.invalid("expected a finite number"));
                };
                if strict {
                    self.check_bounds(value, min.as_ref(), max.as_ref())?;
                }
                Ok(SqlValue::Float(value))
            }
            AttributeKind::Boolean => match json {
                Value::Bool(b) => Ok(SqlValue::Bool(*b)),
                _ => Err(self.expected("a boolean", json)),
            },
            AttributeKind::Datetime => self.datetime_value(json),
            AttributeKind::Email => {
                let s = self.text(json, "an email address")?;
                if strict {
                    check_email(s).map_err(|reason| {
                        self.invalid(format!("{} is not an email address: {reason}", shown(s)))
                    })?;
                }
                Ok(SqlValue::Text(s.to_owned()))
            }
            AttributeKind::Url => {
                let s = self.text(json, "a URL")?;
                if strict {
                    check_url(s).map_err(|reason| {
                        self.invalid(format!("{} is not an http(s) URL: {reason}", shown(s)))
                    })?;
                }
                Ok(SqlValue::Text(s.to_owned()))
            }
            AttributeKind::Ip => self.ip_value(json, strict),
            AttributeKind::Enum { elements } => self.enum_value(json, elements, strict),
            AttributeKind::Point | AttributeKind::Line | AttributeKind::Polygon => {
                let shape = self.kind.shape().unwrap_or(Shape::Point);
                spatial::check(shape, json)
                    .map(|checked| SqlValue::Text(checked.text()))
                    .map_err(|reason| self.invalid(reason))
            }
        }
    }

    /// The error for a value of the wrong JSON type.
    fn expected(&self, what: &str, json: &Value) -> ValueError {
        self.invalid(format!("expected {what}, got {}", json_type(json)))
    }

    /// The string a value must be, `what` naming it in the error.
    fn text<'v>(&self, json: &'v Value, what: &str) -> Result<&'v str, ValueError> {
        match json {
            Value::String(s) => Ok(s),
            _ => Err(self.expected(what, json)),
        }
    }

    /// A string of at most `size` characters (counted only when its bytes could
    /// be over).
    fn string_value(&self, json: &Value, size: u32, strict: bool) -> Result<SqlValue, ValueError> {
        let s = self.text(json, "a string")?;
        if strict && s.len() > size as usize {
            let count = s.chars().count();
            if count > size as usize {
                return Err(self.out_of_range(format!(
                    "at most {size} characters are allowed, got {count}"
                )));
            }
        }
        Ok(SqlValue::Text(s.to_owned()))
    }

    /// A JSON number that is an integer of 64 bits; a float with no fraction
    /// counts while it is exact.
    fn integer_value(&self, json: &Value) -> Result<i64, ValueError> {
        let Value::Number(n) = json else {
            return Err(self.expected("an integer", json));
        };
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        if n.is_u64() {
            return Err(self.out_of_range("the value does not fit in a 64-bit integer"));
        }
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(self.invalid(format!("expected an integer, got {n}")));
        }
        if f.abs() > MAX_EXACT_FLOAT_INT {
            return Err(self.out_of_range(format!("{n} is too large for an integer")));
        }
        Ok(f as i64)
    }

    /// Refuses a number outside the attribute's `min` and `max`.
    fn check_bounds<T: PartialOrd + std::fmt::Display>(
        &self,
        value: T,
        min: Option<&T>,
        max: Option<&T>,
    ) -> Result<(), ValueError> {
        if let Some(min) = min
            && value < *min
        {
            return Err(self.out_of_range(format!("{value} is less than {min}")));
        }
        if let Some(max) = max
            && value > *max
        {
            return Err(self.out_of_range(format!("{value} is greater than {max}")));
        }
        Ok(())
    }

    /// A date-time ([`document_datetime_to_millis`]), stored as milliseconds since
    /// the epoch.
    fn datetime_value(&self, json: &Value) -> Result<SqlValue, ValueError> {
        let s = self.text(json, "an RFC 3339 date-time string")?;
        document_datetime_to_millis(s)
            .map(SqlValue::Int)
            .ok_or_else(|| {
                self.invalid(format!(
                    "{} is not an RFC 3339 date-time such as 2024-05-01T12:00:00.000Z \
                     (years 0000 to 9999; a date alone or a time without offset is UTC)",
                    shown(s)
                ))
            })
    }

    fn ip_value(&self, json: &Value, strict: bool) -> Result<SqlValue, ValueError> {
        let s = self.text(json, "an IP address")?;
        // Stored in canonical form, so `::FFFF:1.2.3.4` and
        // `::ffff:1.2.3.4` are one value for equality and unique indexes.
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SqlValue::Text(ip.to_string())),
            Err(_) if !strict => Ok(SqlValue::Text(s.to_owned())),
            Err(_) => Err(self.invalid(format!("{} is not an IPv4 or IPv6 address", shown(s)))),
        }
    }

    fn enum_value(
        &self,
        json: &Value,
        elements: &[String],
        strict: bool,
    ) -> Result<SqlValue, ValueError> {
        let s = self.text(json, "a string")?;
        if strict && !elements.iter().any(|e| e == s) {
            let listed: Vec<String> = elements.iter().take(10).map(|e| shown(e)).collect();
            let more = if elements.len() > 10 { ", …" } else { "" };
            return Err(self.invalid(format!(
                "{} is not one of {}{more}",
                shown(s),
                listed.join(", ")
            )));
        }
        Ok(SqlValue::Text(s.to_owned()))
    }

    /// Reads the attribute's column (`a_<key>`) from a row as the client sees it.
    pub fn from_sql(&self, row: &AnyRow) -> Result<Value, ValueError> {
        self.from_sql_column(row, self.column().as_str())
    }

    /// Reads the attribute from the column `column` of a row: strings (which
    /// MariaDB returns as bytes for `LONGTEXT`), integers, floats, booleans from
    /// 0/1, datetimes from milliseconds to RFC 3339, arrays from JSON text.
    pub fn from_sql_column<I>(&self, row: &AnyRow, column: I) -> Result<Value, ValueError>
    where
        I: ColumnIndex<AnyRow> + Copy,
    {
        let raw = row
            .try_get_raw(column)
            .map_err(|e| self.unreadable(e.to_string()))?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        if self.array {
            let text = read_text(row, column).map_err(|e| self.unreadable(e))?;
            let items: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| self.unreadable(format!("not a JSON array: {e}")))?;
            return items
                .into_iter()
                .map(|item| self.element_from_stored(item))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array);
        }
        match &self.kind {
            kind if kind.is_textual() => read_text(row, column)
                .map(Value::String)
                .map_err(|e| self.unreadable(e)),
            AttributeKind::Integer { .. } => read_int(row, column)
                .map(Value::from)
                .map_err(|e| self.unreadable(e)),
            AttributeKind::Float { .. } => {
                let f = read_float(row, column).map_err(|e| self.unreadable(e))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| self.unreadable("the number is not finite"))
            }
            AttributeKind::Boolean => read_int(row, column)
                .map(|i| Value::Bool(i != 0))
                .map_err(|e| self.unreadable(e)),
            AttributeKind::Datetime => {
                let millis = read_int(row, column).map_err(|e| self.unreadable(e))?;
                millis_to_rfc3339(millis).map(Value::String).ok_or_else(|| {
                    self.unreadable(format!("{millis} ms is not a printable datetime"))
                })
            }
            AttributeKind::Point | AttributeKind::Line | AttributeKind::Polygon => {
                let text = read_text(row, column).map_err(|e| self.unreadable(e))?;
                self.shape_from_stored(&text)
            }
            _ => Err(self.unreadable("unknown kind")),
        }
    }

    /// A value as the client sees it, from the stored form a write produced:
    /// what [`Self::from_sql_column`] would read back, without reading.
    pub fn from_stored(&self, value: &SqlValue) -> Result<Value, ValueError> {
        match (value, &self.kind) {
            (SqlValue::Null, _) => Ok(Value::Null),
            (SqlValue::Text(text), _) if self.array => {
                let items: Vec<Value> = serde_json::from_str(text)
                    .map_err(|e| self.unreadable(format!("not a JSON array: {e}")))?;
                items
                    .into_iter()
                    .map(|item| self.element_from_stored(item))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            (SqlValue::Text(text), kind) if kind.is_textual() => Ok(Value::String(text.clone())),
            (SqlValue::Text(text), kind) if kind.shape().is_some() => self.shape_from_stored(text),
            (SqlValue::Int(i), AttributeKind::Integer { .. }) => Ok(Value::from(*i)),
            (SqlValue::Int(i), AttributeKind::Float { .. }) => Ok(Value::from(*i as f64)),
            (SqlValue::Float(f), AttributeKind::Float { .. }) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| self.unreadable("the number is not finite")),
            (SqlValue::Bool(b), AttributeKind::Boolean) => Ok(Value::Bool(*b)),
            (SqlValue::Int(i), AttributeKind::Boolean) => Ok(Value::Bool(*i != 0)),
            (SqlValue::Int(millis), AttributeKind::Datetime) => millis_to_rfc3339(*millis)
                .map(Value::String)
                .ok_or_else(|| self.unreadable(format!("{millis} ms is not a printable datetime"))),
            _ => Err(self.unreadable("the stored form does not fit the attribute's type")),
        }
    }

    /// A stored shape as the client sees it: its coordinates.
    fn shape_from_stored(&self, text: &str) -> Result<Value, ValueError> {
        serde_json::from_str(text).map_err(|e| self.unreadable(format!("not a stored shape: {e}")))
    }

    /// One element of a stored array as the client sees it.
    fn element_from_stored(&self, item: Value) -> Result<Value, ValueError> {
        match (&self.kind, item) {
            (AttributeKind::Datetime, Value::Number(n)) => n
                .as_i64()
                .and_then(millis_to_rfc3339)
                .map(Value::String)
                .ok_or_else(|| self.unreadable(format!("{n} is not a stored datetime"))),
            (AttributeKind::Boolean, Value::Number(n)) => Ok(Value::Bool(n.as_i64() != Some(0))),
            (_, Value::Null | Value::Array(_) | Value::Object(_)) => {
                Err(self.unreadable("an array element is not a scalar"))
            }
            (_, item) => Ok(item),
        }
    }
}

/// Checks a whole collection's attributes: each one, their number, and that no
/// two keys differ only in case (MariaDB column names ignore case).
pub fn validate_attributes(attrs: &[Attribute]) -> Result<(), ValueError> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(ValueError::InvalidAttribute {
            key: "(collection)".into(),
            reason: format!("a collection has at most {MAX_ATTRIBUTES} attributes"),
        });
    }
    let mut seen = HashSet::new();
    for attr in attrs {
        attr.validate()?;
        if !seen.insert(attr.key.to_ascii_lowercase()) {
            return Err(attr.invalid_attribute(
                "another attribute has the same key (keys are compared ignoring case)",
            ));
        }
    }
    Ok(())
}

/// A text column: `VARCHAR` arrives as text, `LONGTEXT` on MariaDB as bytes.
pub(crate) fn read_text<I: ColumnIndex<AnyRow> + Copy>(
    row: &AnyRow,
    column: I,
) -> Result<String, String> {
    match row.try_get::<String, _>(column) {
        Ok(s) => Ok(s),
        Err(text_err) => match row.try_get::<Vec<u8>, _>(column) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| "the text is not UTF-8".to_string()),
            Err(_) => Err(text_err.to_string()),
        },
    }
}

pub(crate) fn read_int<I: ColumnIndex<AnyRow> + Copy>(
    row: &AnyRow,
    column: I,
) -> Result<i64, String> {
    row.try_get::<i64, _>(column).map_err(|e| e.to_string())
}

/// A `REAL`/`DOUBLE` column; an integer is accepted too (SQLite stores what it
/// is given when a value has no exact REAL form, which never happens here, but
/// reading it costs nothing).
pub(crate) fn read_float<I: ColumnIndex<AnyRow> + Copy>(
    row: &AnyRow,
    column: I,
) -> Result<f64, String> {
    match row.try_get::<f64, _>(column) {
        Ok(f) => Ok(f),
        Err(float_err) => row
            .try_get::<i64, _>(column)
            .map(|i| i as f64)
            .map_err(|_| float_err.to_string()),
    }
}

/// A sane email check, not RFC 5322: one `@`, a dot-atom local part of at most
/// 64 characters, and a domain of at least two DNS labels.
fn check_email(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_EMAIL_LEN {
        return Err("it is longer than 254 characters");
    }
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("it must contain exactly one `@`");
    };
    if local.is_empty() || local.len() > 64 {
        return Err("the part before `@` must have 1 to 64 characters");
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    if !local.bytes().all(|b| atext(b) || b == b'.') {
        return Err("the part before `@` contains a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before `@` has a misplaced dot");
    }
    check_domain(domain, true)
}

/// DNS labels of letters, digits and `-` (not at either end), 1 to 63
/// characters each, 253 in all; `need_dot` asks for at least two labels and a
/// top-level label that is not all digits.
fn check_domain(domain: &str, need_dot: bool) -> Result<(), &'static str> {
    if domain.is_empty() || domain.len() > 253 {
        return Err("the domain must have 1 to 253 characters");
    }
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each part of the domain has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("the domain may contain only letters, digits, `-` and dots");
        }
        labels += 1;
        last = label;
    }
    if need_dot && (labels < 2 || last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the domain needs a dot and a top-level name");
    }
    Ok(())
}

/// An absolute `http` or `https` URL with a host (a DNS name, an IPv4 address
/// or a bracketed IPv6 address), an optional port, and nothing in the rest that
/// RFC 3986 requires to be percent-encoded.
fn check_url(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("it is longer than 2048 characters");
    }
    if !s.is_ascii() {
        return Err("non-ASCII characters must be percent-encoded");
    }
    if s.bytes().any(|b| {
        b <= b' '
            || b == 0x7f
            || matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
    }) {
        return Err("it contains a space or a character that must be percent-encoded");
    }
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err("a `%` must be followed by two hex digits");
        }
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("it must start with http:// or https://");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("it must start with http:// or https://");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 host needs a closing `]`");
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err("the IPv6 host is not valid");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err("unexpected text after the IPv6 host"),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(host_port), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err("the port must be a number from 0 to 65535");
    }
    if let Some(host) = host {
        if host.is_empty() {
            return Err("it has no host");
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if host.parse::<Ipv4Addr>().is_err() {
                return Err("the IPv4 host is not valid");
            }
        } else {
            check_domain(host, false).map_err(|_| "the host is not a valid name")?;
        }
    }
    Ok(())
}

/// Databases for the tests of this service: an in-memory SQLite, and a fresh
/// MariaDB database when `NIMBUS_TEST_DATABASE_URL` names a server (the
/// project's MariaDB pass, see `scripts/test`); the MariaDB tests pass without
/// doing anything when it is not set.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sqlx::AnyPool;
    use sqlx::any::AnyPoolOptions;

    use super::{Attribute, AttributeKind, SqlDialect};

    /// An optional, single-valued attribute of `kind`.
    pub fn attribute(key: &str, kind: AttributeKind) -> Attribute {
        Attribute {
            key: key.into(),
            kind,
            required: false,
            array: false,
            default: None,
        }
    }

    pub struct TestDb {
        pub pool: AnyPool,
        pub dialect: SqlDialect,
        /// Where `pool` connects.
        pub url: String,
        /// The server connection and the database to drop at the end.
        drop: Option<(AnyPool, String)>,
    }

    impl TestDb {
        pub async fn close(self) {
            self.pool.close().await;
            if let Some((server, name)) = self.drop {
                let _ = sqlx::query(&format!("DROP DATABASE {name}"))
                    .execute(&server)
                    .await;
                server.close().await;
            }
        }
    }

    pub async fn sqlite() -> TestDb {
        sqlx::any::install_default_drivers();
        // One connection: each connection to `sqlite::memory:` is its own database.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&pool)
            .await
            .unwrap();
        TestDb {
            pool,
            dialect: SqlDialect::Sqlite,
            url: "sqlite::memory:".into(),
            drop: None,
        }
    }

    pub async fn mariadb() -> Option<TestDb> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let url = crate::db::test_mariadb_server()?;
        let name = format!(
            "dbcore_{}_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let server = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to the test MariaDB server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&server)
            .await
            .expect("create a test database");
        let url = format!("{}/{name}", url.trim_end_matches('/'));
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to the test database");
        Some(TestDb {
            pool,
            dialect: SqlDialect::MySql,
            url,
            drop: Some((server, name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::attribute as attr;
    use super::*;
    use serde_json::json;

    fn all_kinds() -> Vec<Attribute> {
        vec![
            attr("title", AttributeKind::String { size: 10 }),
            attr("body", AttributeKind::String { size: 100_000 }),
            attr(
                "count",
                AttributeKind::Integer {
                    min: Some(-5),
                    max: Some(1000),
                },
            ),
            attr(
                "price",
                AttributeKind::Float {
                    min: Some(0.0),
                    max: None,
                },
            ),
            attr("done", AttributeKind::Boolean),
            attr("due", AttributeKind::Datetime),
            attr("mail", AttributeKind::Email),
            attr("site", AttributeKind::Url),
            attr("addr", AttributeKind::Ip),
            attr(
                "status",
                AttributeKind::Enum {
                    elements: vec!["open".into(), "closed".into()],
                },
            ),
            Attribute {
                array: true,
                ..attr("tags", AttributeKind::String { size: 20 })
            },
            Attribute {
                array: true,
                ..attr("dates", AttributeKind::Datetime)
            },
            Attribute {
                array: true,
                ..attr("flags", AttributeKind::Boolean)
            },
            Attribute {
                array: true,
                ..attr(
                    "scores",
                    AttributeKind::Float {
                        min: None,
                        max: None,
                    },
                )
            },
        ]
    }

    #[test]
    fn keys_follow_the_pattern_and_avoid_reserved_names() {
        for good in ["a", "title", "A_b_9", &"k".repeat(MAX_KEY_LEN)] {
            assert!(
                attr(good, AttributeKind::Boolean).validate().is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "1a",
            "_a",
            "$a",
            "a-b",
            "a b",
            "é",
            "a;DROP",
            &"k".repeat(MAX_KEY_LEN + 1),
        ]
        .into_iter()
        .chain(RESERVED_KEYS)
        {
            let err = attr(bad, AttributeKind::Boolean).validate().unwrap_err();
            assert_eq!(err.code(), "ATTRIBUTE_INVALID", "{bad}");
        }
    }

    #[test]
    fn definitions_are_checked() {
        let bad = [
            attr("s", AttributeKind::String { size: 0 }),
            attr(
                "s",
                AttributeKind::String {
                    size: MAX_STRING_SIZE + 1,
                },
            ),
            attr(
                "i",
                AttributeKind::Integer {
                    min: Some(5),
                    max: Some(4),
                },
            ),
            attr(
                "f",
                AttributeKind::Float {
                    min: Some(1.5),
                    max: Some(1.0),
                },
            ),
            attr(
                "f",
                AttributeKind::Float {
                    min: Some(f64::NAN),
                    max: None,
                },
            ),
            attr("e", AttributeKind::Enum { elements: vec![] }),
            attr(
                "e",
                AttributeKind::Enum {
                    elements: vec!["".into()],
                },
            ),
            attr(
                "e",
                AttributeKind::Enum {
                    elements: vec!["a".into(), "a".into()],
                },
            ),
            attr(
                "e",
                AttributeKind::Enum {
                    elements: vec!["x".repeat(256)],
                },
            ),
            attr(
                "e",
                AttributeKind::Enum {
                    elements: (0..101).map(|i| i.to_string()).collect(),
                },
            ),
            Attribute {
                default: Some(json!("x")),
                required: true,
                ..attr("s", AttributeKind::String { size: 5 })
            },
            Attribute {
                default: Some(json!(["x"])),
                array: true,
                ..attr("s", AttributeKind::String { size: 5 })
            },
            Attribute {
                default: Some(json!("toolong")),
                ..attr("s", AttributeKind::String { size: 5 })
            },
            Attribute {
                default: Some(json!(1.5)),
                ..attr(
                    "i",
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                default: Some(json!("maybe")),
                ..attr(
                    "e",
                    AttributeKind::Enum {
                        elements: vec!["yes".into()],
                    },
                )
            },
            Attribute {
                default: Some(json!("a\0b")),
                ..attr("s", AttributeKind::String { size: 5 })
            },
        ];
        for a in bad {
            assert_eq!(
                a.validate().unwrap_err().code(),
                "ATTRIBUTE_INVALID",
                "{a:?}"
            );
        }
        let good = [
            Attribute {
                default: Some(json!(null)),
                required: true,
                ..attr("s", AttributeKind::String { size: 5 })
            },
            Attribute {
                default: Some(json!("it's")),
                ..attr("s", AttributeKind::String { size: 5 })
            },
            Attribute {
                default: Some(json!(3)),
                ..attr(
                    "f",
                    AttributeKind::Float {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                default: Some(json!("2024-01-01T00:00:00Z")),
                ..attr("d", AttributeKind::Datetime)
            },
        ];
        for a in good {
            assert!(a.validate().is_ok(), "{a:?}");
        }
        let twins = [
            attr("Title", AttributeKind::Boolean),
            attr("title", AttributeKind::Boolean),
        ];
        assert_eq!(
            validate_attributes(&twins).unwrap_err().code(),
            "ATTRIBUTE_INVALID"
        );
        assert!(validate_attributes(&all_kinds()).is_ok());
    }

    #[test]
    fn kinds_serialize_with_a_type_tag() {
        let a = Attribute {
            default: Some(json!(3)),
            ..attr(
                "n",
                AttributeKind::Integer {
                    min: Some(1),
                    max: None,
                },
            )
        };
        let text = serde_json::to_value(&a).unwrap();
        assert_eq!(
            text,
            json!({"key": "n", "kind": {"type": "integer", "min": 1, "max": null},
                   "required": false, "array": false, "default": 3})
        );
        assert_eq!(serde_json::from_value::<Attribute>(text).unwrap(), a);
        let minimal: Attribute =
            serde_json::from_value(json!({"key": "b", "kind": {"type": "boolean"}})).unwrap();
        assert_eq!(minimal, attr("b", AttributeKind::Boolean));
        let e: AttributeKind =
            serde_json::from_value(json!({"type": "enum", "elements": ["a"]})).unwrap();
        assert_eq!(
            e,
            AttributeKind::Enum {
                elements: vec!["a".into()]
            }
        );
        assert!(serde_json::from_value::<AttributeKind>(json!({"type": "money"})).is_err());
    }

    fn code(a: &Attribute, v: Value) -> &'static str {
        match a.to_sql_value(&v) {
            Ok(_) => "OK",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn date_times_take_appwrites_forms_a_named_time_zone_included() {
        let at = |text: &str| document_datetime_to_millis(text).and_then(millis_to_rfc3339);
        // Appwrite's own fixture: 14:12:55 in New York in June is 18:12:55 UTC.
        assert_eq!(
            at("1975-06-12 14:12:55 America/New_York").as_deref(),
            Some("1975-06-12T18:12:55.000Z")
        );
        assert_eq!(
            at("2024-01-15 09:30:00 Europe/Berlin").as_deref(),
            Some("2024-01-15T08:30:00.000Z")
        );
        assert_eq!(
            at("2024-05-01 UTC").as_deref(),
            Some("2024-05-01T00:00:00.000Z")
        );
        assert_eq!(
            at("2024-05-01 14:00:00").as_deref(),
            Some("2024-05-01T14:00:00.000Z")
        );
        // A time the clocks skip, an unknown zone, and junk are refused.
        for refused in [
            "2024-03-31 02:30:00 Europe/Berlin",
            "2024-05-01 14:00:00 Mars/Olympus",
            "2024-05-01 14:00:00 America/New_York extra",
            "America/New_York",
            "",
        ] {
            assert_eq!(at(refused), None, "{refused}");
        }
    }

    #[test]
    fn values_are_type_checked_and_converted() {
        let kinds = all_kinds();
        let get = |k: &str| kinds.iter().find(|a| a.key == k).unwrap();
        let s = get("title");
        assert_eq!(
            s.to_sql_value(&json!("héllo wörl")).unwrap(),
            SqlValue::Text("héllo wörl".into())
        );
        assert_eq!(code(s, json!("héllo wörld")), "VALUE_OUT_OF_RANGE");
        assert_eq!(code(s, json!(5)), "VALUE_INVALID");
        assert_eq!(s.to_sql_value(&json!(null)).unwrap(), SqlValue::Null);
        let required = Attribute {
            required: true,
            ..s.clone()
        };
        assert_eq!(code(&required, json!(null)), "VALUE_REQUIRED");
        assert_eq!(
            required.value_for_write(None).unwrap_err().code(),
            "VALUE_REQUIRED"
        );

        let i = get("count");
        assert_eq!(i.to_sql_value(&json!(7)).unwrap(), SqlValue::Int(7));
        assert_eq!(i.to_sql_value(&json!(1e3)).unwrap(), SqlValue::Int(1000));
        assert_eq!(code(i, json!(1.5)), "VALUE_INVALID");
        assert_eq!(code(i, json!("7")), "VALUE_INVALID");
        assert_eq!(code(i, json!(1001)), "VALUE_OUT_OF_RANGE");
        assert_eq!(code(i, json!(-6)), "VALUE_OUT_OF_RANGE");
        assert_eq!(code(i, json!(u64::MAX)), "VALUE_OUT_OF_RANGE");
        assert_eq!(code(i, json!(1e300)), "VALUE_OUT_OF_RANGE");
        let unbounded = attr(
            "n",
            AttributeKind::Integer {
                min: None,
                max: None,
            },
        );
        assert_eq!(
            unbounded.to_sql_value(&json!(i64::MIN)).unwrap(),
            SqlValue::Int(i64::MIN)
        );

        let f = get("price");
        assert_eq!(f.to_sql_value(&json!(2)).unwrap(), SqlValue::Float(2.0));
        assert_eq!(f.to_sql_value(&json!(2.5)).unwrap(), SqlValue::Float(2.5));
        assert_eq!(code(f, json!(-0.1)), "VALUE_OUT_OF_RANGE");
        assert_eq!(code(f, json!(true)), "VALUE_INVALID");

        let b = get("done");
        assert_eq!(b.to_sql_value(&json!(true)).unwrap(), SqlValue::Bool(true));
        assert_eq!(code(b, json!(1)), "VALUE_INVALID");

        let d = get("due");
        assert_eq!(
            d.to_sql_value(&json!("2024-05-01T14:00:00.123+02:00"))
                .unwrap(),
            SqlValue::Int(1_714_564_800_123)
        );
        // As Appwrite reads them: a date alone, or a time without an offset, in UTC.
        for (lenient, millis) in [
            ("2024-05-01", 1_714_521_600_000),
            ("2024-05-01 14:00:00", 1_714_572_000_000),
            ("2024-05-01T14:00:00.5", 1_714_572_000_500),
        ] {
            assert_eq!(
                d.to_sql_value(&json!(lenient)).unwrap(),
                SqlValue::Int(millis)
            );
        }
        for refused in ["2024-05-32", "14:00", "2024-05-01 25:00:00", "yesterday"] {
            assert_eq!(code(d, json!(refused)), "VALUE_INVALID", "{refused}");
        }
        assert_eq!(code(d, json!("9999-12-31T23:59:59-01:00")), "VALUE_INVALID");
        assert_eq!(code(d, json!(1_714_564_800_123_i64)), "VALUE_INVALID");

        let e = get("status");
        assert_eq!(code(e, json!("open")), "OK");
        assert_eq!(code(e, json!("Open")), "VALUE_INVALID");

        let ip = get("addr");
        assert_eq!(
            ip.to_sql_value(&json!("::FFFF:1.2.3.4")).unwrap(),
            SqlValue::Text("::ffff:1.2.3.4".into())
        );
        assert_eq!(code(ip, json!("1.2.3.256")), "VALUE_INVALID");
        assert_eq!(code(ip, json!("10.0.0.1")), "OK");

        let tags = get("tags");
        assert_eq!(
            tags.to_sql_value(&json!(["a", "b"])).unwrap(),
            SqlValue::Text(r#"["a","b"]"#.into())
        );
        assert_eq!(code(tags, json!("a")), "VALUE_INVALID");
        assert_eq!(code(tags, json!(["a", null])), "VALUE_INVALID");
        assert_eq!(code(tags, json!(["x".repeat(21)])), "VALUE_OUT_OF_RANGE");
        assert_eq!(
            code(tags, Value::Array(vec![json!("a"); 1001])),
            "VALUE_OUT_OF_RANGE"
        );
        assert_eq!(code(tags, Value::Array(vec![json!("a"); 1000])), "OK");
        let err = tags.to_sql_value(&json!(["a", 3])).unwrap_err();
        assert!(err.to_string().contains("element #1"), "{err}");
        assert!(err.to_string().contains("`tags`"), "{err}");
        assert_eq!(
            get("dates")
                .to_sql_value(&json!(["1970-01-01T00:00:01Z"]))
                .unwrap(),
            SqlValue::Text("[1000]".into())
        );
        assert_eq!(
            get("flags").to_sql_value(&json!([true, false])).unwrap(),
            SqlValue::Text("[true,false]".into())
        );
    }

    #[test]
    fn filter_values_only_check_types() {
        let kinds = all_kinds();
        let get = |k: &str| kinds.iter().find(|a| a.key == k).unwrap();
        assert_eq!(
            get("count").filter_value(&json!(5000)).unwrap(),
            SqlValue::Int(5000)
        );
        assert_eq!(
            get("title").filter_value(&json!("x".repeat(50))).unwrap(),
            SqlValue::Text("x".repeat(50))
        );
        assert_eq!(
            get("mail").filter_value(&json!("bob")).unwrap(),
            SqlValue::Text("bob".into())
        );
        assert_eq!(
            get("addr").filter_value(&json!("::FFFF:1.2.3.4")).unwrap(),
            SqlValue::Text("::ffff:1.2.3.4".into())
        );
        assert_eq!(
            get("count").filter_value(&json!("5")).unwrap_err().code(),
            "VALUE_INVALID"
        );
        assert_eq!(
            get("count").filter_value(&json!(null)).unwrap_err().code(),
            "VALUE_INVALID"
        );
        assert_eq!(
            get("tags").filter_value(&json!("a")).unwrap(),
            SqlValue::Text("a".into())
        );
    }

    #[test]
    fn emails_and_urls_are_checked_sanely() {
        for good in ["a@b.co", "first.last+tag@sub.example.org", "x_y-z@a-b.io"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "@b.co",
            "a@",
            "a@b",
            "a@@b.co",
            "a@b@c.co",
            ".a@b.co",
            "a..b@c.co",
            "a b@c.co",
            "a@-b.co",
            "a@b..co",
            "a@b.123",
            "a@b.co ",
            "ä@b.co",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_email(&format!("{}@b.co", "a".repeat(65))).is_err());
        for good in [
            "http://example.com",
            "https://example.com/",
            "HTTPS://Example.COM:8443/a/b?c=d&e=%20#frag",
            "http://user:pw@host/x",
            "http://127.0.0.1:80",
            "http://[::1]:8080/x",
            "http://localhost",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "example.com",
            "ftp://example.com",
            "http://",
            "http:///x",
            "http://exa mple.com",
            "http://example.com/a b",
            "http://ex_ample.com",
            "http://-a.com",
            "http://a.com:",
            "http://a.com:99999",
            "http://a.com:8x",
            "http://[::1",
            "http://[zz]/",
            "http://300.1.1.1",
            "http://a.com/%zz",
            "http://a.com/é",
            "javascript:alert(1)",
            "http://a.com/<script>",
            "http://a..com",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("http://a.com/{}", "x".repeat(2048))).is_err());
    }

    #[test]
    fn datetimes_print_with_milliseconds_and_z() {
        assert_eq!(millis_to_rfc3339(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(millis_to_rfc3339(-1).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_to_millis("9999-12-31T23:59:59.999Z"),
            Some(MAX_DATETIME_MS)
        );
        assert_eq!(
            rfc3339_to_millis("0000-01-01T00:00:00Z"),
            Some(MIN_DATETIME_MS)
        );
        assert_eq!(millis_to_rfc3339(MAX_DATETIME_MS + 1), None);
        assert_eq!(millis_to_rfc3339(i64::MIN), None);
        assert_eq!(millis_to_rfc3339(i64::MAX), None);
    }

    #[test]
    fn identifiers_are_quoted_per_dialect() {
        assert_eq!(SqlDialect::Sqlite.quote("a_x"), "\"a_x\"");
        assert_eq!(SqlDialect::MySql.quote("a_x"), "`a_x`");
        assert_eq!(SqlDialect::MySql.quote("a`b"), "`a``b`");
        assert_eq!(SqlDialect::Sqlite.quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(shown("a\u{202e}b"), "`a\\u{202e}b`");
    }

    /// Every kind written with `to_sql_value` and read back with `from_sql`, in
    /// a table made by the DDL of the dialect.
    async fn round_trip(db: test_support::TestDb) {
        let pool = db.pool.clone();
        let attrs = all_kinds();
        for statement in super::super::ddl::create_table_sql(db.dialect, "t", &attrs).unwrap() {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        let full = json!({
            "title": "naïve ☃",
            "body": "x".repeat(20_000),
            "count": -5,
            "price": 0.1,
            "done": true,
            "due": "2024-05-01T12:34:56.789Z",
            "mail": "a@b.co",
            "site": "https://example.com/x?y=1",
            "addr": "2001:db8::1",
            "status": "closed",
            "tags": ["x", "y"],
            "dates": ["2024-05-01T12:34:56.789Z", "1969-07-20T20:17:40.000Z"],
            "flags": [false, true],
            "scores": [1.5, 2.0, -0.25],
        });
        let falsy = json!({"done": false, "count": 0, "tags": [], "price": 0});
        for (id, doc) in [("full", &full), ("falsy", &falsy), ("empty", &json!({}))] {
            let placeholders = vec!["?"; attrs.len()].join(", ");
            let names: Vec<String> = attrs.iter().map(Attribute::column).collect();
            let sql = format!(
                "INSERT INTO t (id, created_at, updated_at, {}) VALUES (?, 0, 0, {placeholders})",
                names.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(id);
            for a in &attrs {
                query = a.value_for_write(doc.get(&a.key)).unwrap().bind_to(query);
            }
            query.execute(&pool).await.unwrap();
        }
        let read = |id: &'static str| {
            let pool = pool.clone();
            let attrs = attrs.clone();
            async move {
                let row = sqlx::query("SELECT * FROM t WHERE id = ?")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let mut out = serde_json::Map::new();
                for a in &attrs {
                    out.insert(a.key.clone(), a.from_sql(&row).unwrap());
                }
                Value::Object(out)
            }
        };
        let mut expected = full.clone();
        expected["scores"] = json!([1.5, 2.0, -0.25]);
        assert_eq!(read("full").await, expected);
        // What a write answers without reading back is what a read returns.
        for (id, doc) in [("full", &full), ("falsy", &falsy), ("empty", &json!({}))] {
            let mut answered = serde_json::Map::new();
            for a in &attrs {
                let stored = a.value_for_write(doc.get(&a.key)).unwrap();
                answered.insert(a.key.clone(), a.from_stored(&stored).unwrap());
            }
            assert_eq!(Value::Object(answered), read(id).await, "{id}");
        }
        let falsy_back = read("falsy").await;
        assert_eq!(falsy_back["done"], json!(false));
        assert_eq!(falsy_back["count"], json!(0));
        assert_eq!(falsy_back["price"], json!(0.0));
        assert_eq!(falsy_back["tags"], json!([]));
        assert_eq!(falsy_back["title"], Value::Null);
        let empty = read("empty").await;
        assert!(
            empty.as_object().unwrap().values().all(Value::is_null),
            "{empty}"
        );

        // A column that is not what the metadata says is an internal error, not a panic.
        let row = sqlx::query(
            "SELECT 'abc' AS a_count, 'not json' AS a_tags, 99999999999999999 AS a_due",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        for key in ["count", "tags", "due"] {
            let err = attrs
                .iter()
                .find(|a| a.key == key)
                .unwrap()
                .from_sql(&row)
                .unwrap_err();
            assert_eq!(err.code(), "INTERNAL", "{key}");
        }
        let missing = attr("nothere", AttributeKind::Boolean)
            .from_sql(&row)
            .unwrap_err();
        assert_eq!(missing.code(), "INTERNAL");
        db.close().await;
    }

    #[tokio::test]
    async fn every_kind_round_trips_through_a_sqlite_table() {
        round_trip(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn every_kind_round_trips_through_a_mariadb_table() {
        if let Some(db) = test_support::mariadb().await {
            round_trip(db).await;
        }
    }

    #[tokio::test]
    async fn text_read_as_bytes_is_decoded() {
        let db = test_support::sqlite().await;
        let pool = db.pool;
        let row = sqlx::query(
            "SELECT CAST('héllo' AS BLOB) AS a_title, CAST('[\"a\"]' AS BLOB) AS a_tags",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let kinds = all_kinds();
        assert_eq!(kinds[0].from_sql(&row).unwrap(), json!("héllo"));
        assert_eq!(kinds[10].from_sql(&row).unwrap(), json!(["a"]));
    }
}
