//! The DDL of user-defined collections, for both dialects: the table of a
//! collection and its permission side table ([`create_table_sql`]), columns
//! added and dropped as attributes come and go, and the indexes a collection
//! declares ([`Index`], validated against its attributes).
//!
//! Every function returns the statements to run in order, or an error before
//! any SQL is produced. Identifiers are either fixed, or the caller's table name
//! (checked by [`check_table_name`]), or derived from validated keys (`a_<key>`,
//! `i_…`), always quoted per dialect. Defaults are the only values rendered into
//! DDL (DDL takes no bind parameters); they were validated first and are
//! rendered as literals with quotes doubled.
//!
//! The MariaDB schema stays within what sqlx's `Any` driver reads (ADR 0001):
//! `VARCHAR`/`LONGTEXT`, `BIGINT`, `DOUBLE`, `SMALLINT`. String columns use
//! `utf8mb4_nopad_bin`, so that comparisons are exact like SQLite's `BINARY`
//! (the `utf8mb4_bin` of the table default ignores trailing spaces, which would
//! make `"a"` and `"a "` one value for equality and unique indexes on MariaDB
//! only). MariaDB 10.6 or later is assumed.
//!
//! Index names: SQLite's are global to the database and MariaDB's are per table
//! but at most 64 characters. So SQLite gets `i_<table>__<key>` (the table name
//! has no `__`, so the name is unique) and MariaDB `i_<key>`. The indexes the
//! system needs are `s_…`; the twins led by the sole reader ([`reader_twins`])
//! are `r_…` in place of their index's `i_…`.

use std::collections::HashSet;

use crate::error::codes;

use super::model::{
    Attribute, AttributeKind, MAX_ATTRIBUTES, SqlDialect, SqlValue, ValueError, is_valid_key,
    shown, validate_attributes,
};

/// Longest table name: `<table>_perms` must fit in MariaDB's 64 characters.
pub const MAX_TABLE_NAME_LEN: usize = 58;

/// MariaDB's limit on the declared width of a row, in bytes.
pub const MAX_ROW_WIDTH: usize = 65_535;

/// InnoDB's limit on the part of a record kept in its page, in bytes (under
/// half a 16 KiB page). With `innodb_strict_mode`, on by default, `CREATE` and
/// `ALTER TABLE` refuse a table whose largest record could pass it.
pub const MAX_IN_PAGE_SIZE: usize = 8125;

/// InnoDB's limit on the width of one index key, in bytes.
pub const MAX_INDEX_KEY_WIDTH: usize = 3072;

/// Most attributes in one index.
pub const MAX_INDEX_ATTRIBUTES: usize = 8;

/// Keys one collection table may carry: InnoDB's limit of 64 per table, kept on
/// SQLite too so that a collection moves between the backends unchanged.
pub const MAX_TABLE_KEYS: usize = 64;

/// Keys every collection table has before any of its own: the primary key, the
/// `created`/`updated` keys that lists page by, and on MariaDB the key of the
/// sequence ([`SEQUENCE_COLUMN`]), counted on SQLite too.
pub const BUILT_IN_TABLE_KEYS: usize = 4;

/// Characters of a long string column that a MariaDB key or unique index
/// covers. A unique index on such a column compares only this prefix: two
/// values that share their first 191 characters collide on MariaDB.
pub const INDEX_PREFIX_CHARS: u32 = 191;

const MYSQL_TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";
const MYSQL_TEXT_COLLATION: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin";

/// Why a DDL request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    /// `INTERNAL`: the table name the caller chose is not acceptable; a bug in
    /// the caller, never client input.
    #[error("invalid table name {name}: {reason}")]
    InvalidTable { name: String, reason: String },
    /// An attribute definition was refused (its own code).
    #[error(transparent)]
    Attribute(#[from] ValueError),
    /// `ATTRIBUTE_NOT_FOUND`: an operation names an attribute the collection
    /// does not have.
    #[error("the collection has no attribute {key}")]
    UnknownAttribute { key: String },
    /// `INDEX_INVALID`: an index definition was refused.
    #[error("invalid index {key}: {reason}")]
    InvalidIndex { key: String, reason: String },
    /// `ATTRIBUTE_LIMIT_EXCEEDED`: a collection holds as many attributes as it may.
    #[error("a collection has at most {max} attributes")]
    TooManyAttributes { max: usize },
    /// `ATTRIBUTE_LIMIT_EXCEEDED`: the attributes would not fit in a MariaDB row
    /// (enforced on SQLite too, so that a collection moves between the two).
    #[error(
        "the attributes would take {width} bytes of a row, more than the {max} MariaDB allows; {advice}"
    )]
    TooWide {
        width: usize,
        max: usize,
        advice: &'static str,
    },
}

impl DdlError {
    /// The stable `extensions.code` this error reaches a client with.
    pub fn code(&self) -> &'static str {
        match self {
            DdlError::InvalidTable { .. } => codes::INTERNAL,
            DdlError::Attribute(err) => err.code(),
            DdlError::UnknownAttribute { .. } => codes::ATTRIBUTE_NOT_FOUND,
            DdlError::InvalidIndex { .. } => codes::INDEX_INVALID,
            DdlError::TooWide { .. } | DdlError::TooManyAttributes { .. } => {
                codes::ATTRIBUTE_LIMIT_EXCEEDED
            }
        }
    }
}

/// Checks a physical table name: an ASCII letter, then letters, digits and
/// `_`, at most [`MAX_TABLE_NAME_LEN`], with no `__`, no trailing `_` and not
/// ending in `_perms` (so that no table, side table or index of one collection
/// can have the name of another's). `c_<32 hex digits>` is fine.
pub fn check_table_name(name: &str) -> Result<(), DdlError> {
    let fail = |reason: &str| {
        Err(DdlError::InvalidTable {
            name: shown(name),
            reason: reason.into(),
        })
    };
    let mut bytes = name.bytes();
    if !matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic()) {
        return fail("it must start with a letter");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return fail("it may contain only letters, digits and `_`");
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return fail("it is longer than 58 characters");
    }
    if name.contains("__") || name.ends_with('_') {
        return fail("it may not contain `__` nor end with `_`");
    }
    if name.to_ascii_lowercase().ends_with("_perms") {
        return fail("it may not end with `_perms`");
    }
    Ok(())
}

/// The permission side table of a collection table: `(resource_id, role,
/// actions)` rows, as `auth::permissions::push_permission_filter` reads them.
pub fn perms_table(table: &str) -> String {
    format!("{table}_perms")
}

/// The column type of an attribute.
fn column_type(dialect: SqlDialect, attr: &Attribute) -> String {
    match dialect {
        SqlDialect::Sqlite => match &attr.kind {
            _ if attr.array => "TEXT",
            kind if kind.is_textual() || kind.shape().is_some() => "TEXT",
            AttributeKind::Float { .. } => "REAL",
            _ => "INTEGER",
        }
        .to_string(),
        SqlDialect::MySql => {
            if attr.array {
                return format!("LONGTEXT {MYSQL_TEXT_COLLATION}");
            }
            match &attr.kind {
                kind if kind.is_textual() => match kind.max_chars() {
                    Some(n) => format!("VARCHAR({n}) {MYSQL_TEXT_COLLATION}"),
                    None => format!("LONGTEXT {MYSQL_TEXT_COLLATION}"),
                },
                AttributeKind::Float { .. } => "DOUBLE".into(),
                AttributeKind::Boolean => "SMALLINT".into(),
                kind if kind.shape().is_some() => "LONGTEXT".into(),
                _ => "BIGINT".into(),
            }
        }
    }
}

/// A validated default as an SQL literal. Strings double their single quotes
/// (standard SQL) and, on MariaDB, their backslashes (which MariaDB treats as
/// escapes unless `NO_BACKSLASH_ESCAPES` is set; with it set, the default gains
/// backslashes but the literal still cannot end early). NUL was refused by
/// validation.
fn literal(dialect: SqlDialect, value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".into(),
        SqlValue::Int(i) => i.to_string(),
        // Exponent form: exact (shortest round-trip digits) and short for any
        // magnitude, and both dialects read `1.5e-7` as a double.
        SqlValue::Float(f) => format!("{f:e}"),
        SqlValue::Bool(b) => if *b { "1" } else { "0" }.into(),
        SqlValue::Text(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            out.push('\'');
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' if dialect == SqlDialect::MySql => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
    }
}

/// `"a_key" TYPE [NOT NULL] [DEFAULT literal]`. SQLite refuses `ADD COLUMN …
/// NOT NULL` without a non-null default, so an added required column there is
/// `CHECK (col IS NOT NULL)` instead: it holds for new rows alike, and SQLite
/// (3.37+) checks it against the rows already there.
fn column_def(dialect: SqlDialect, attr: &Attribute, adding: bool) -> String {
    let name = dialect.quote(&attr.column());
    let mut def = format!("{name} {}", column_type(dialect, attr));
    if attr.required {
        if adding && dialect == SqlDialect::Sqlite {
            def.push_str(&format!(" CHECK ({name} IS NOT NULL)"));
        } else {
            def.push_str(" NOT NULL");
        }
    }
    if let Some(default) = attr.default_sql_value() {
        def.push_str(" DEFAULT ");
        def.push_str(&literal(dialect, &default));
    }
    def
}

/// The width an attribute's column adds to a MariaDB row, in bytes: utf8mb4
/// `VARCHAR(n)` is up to `4n` plus 1 or 2 length bytes, `LONGTEXT` (stored off
/// the row) counts 12.
fn mysql_column_width(attr: &Attribute) -> usize {
    if attr.array {
        return 12;
    }
    match (&attr.kind, attr.kind.max_chars()) {
        (_, Some(n)) => {
            let bytes = n as usize * 4;
            bytes + if bytes > 255 { 2 } else { 1 }
        }
        (kind, None) if kind.is_textual() || kind.shape().is_some() => 12,
        (AttributeKind::Boolean, None) => 2,
        _ => 8,
    }
}

/// The declared width of a row of a collection with these attributes on
/// MariaDB, system columns (the sole reader's `VARCHAR(128)` among them) and
/// NULL bitmap included, against [`MAX_ROW_WIDTH`].
pub fn row_width(attrs: &[Attribute]) -> usize {
    let system = 145 + 8 + 8 + READER_WIDTH + SEQUENCE_WIDTH;
    let nullable = attrs.iter().filter(|a| !a.required).count() + 1;
    system + attrs.iter().map(mysql_column_width).sum::<usize>() + nullable.div_ceil(8)
}

/// The declared width of [`READER_COLUMN`] on MariaDB: 128 utf8mb4 characters
/// and two length bytes.
const READER_WIDTH: usize = 128 * 4 + 2;
/// What [`READER_COLUMN`] can take in its page: longer than 255 bytes, it can
/// move off the page as a string attribute of more than 63 characters does.
const READER_IN_PAGE: usize = 21;
/// The bytes of [`SEQUENCE_COLUMN`] on MariaDB (a `BIGINT`), in its page too.
const SEQUENCE_WIDTH: usize = 8;

/// The bytes an attribute's column can take in its InnoDB page: a column of at
/// most 255 bytes is stored there whole (with one length byte), a longer one
/// can move off the page and leaves 21 (a pointer and its length).
fn in_page_column_size(attr: &Attribute) -> usize {
    if attr.array {
        return 21;
    }
    match (&attr.kind, attr.kind.max_chars()) {
        (_, Some(n)) if n as usize * 4 <= 255 => n as usize * 4 + 1,
        (_, Some(_)) => 21,
        (kind, None) if kind.is_textual() || kind.shape().is_some() => 21,
        (AttributeKind::Boolean, None) => 2,
        _ => 8,
    }
}

/// The largest in-page size of a record, against [`MAX_IN_PAGE_SIZE`]: 179
/// bytes of header, id, transaction fields and timestamps, the sole reader's
/// part, the NULL bitmap and each column's part. (Measured on MariaDB 10.11 at the edges,
/// before the sole reader took its 21 bytes: 977 nullable integers fit and 978 did not;
/// 43 IPs and 44; 376 long strings and 377.)
pub fn in_page_size(attrs: &[Attribute]) -> usize {
    let system = 5 + 145 + 13 + 16 + READER_IN_PAGE + SEQUENCE_WIDTH;
    let nullable = attrs.iter().filter(|a| !a.required).count() + 1;
    system + nullable.div_ceil(8) + attrs.iter().map(in_page_column_size).sum::<usize>()
}

/// Both MariaDB limits on a row, enforced on both dialects so that a
/// collection made on SQLite also fits on MariaDB.
fn check_width(attrs: &[Attribute]) -> Result<(), DdlError> {
    let width = row_width(attrs);
    if width > MAX_ROW_WIDTH {
        return Err(DdlError::TooWide {
            width,
            max: MAX_ROW_WIDTH,
            advice: "use fewer or shorter string attributes; \
                     strings over 16383 characters are stored apart from the row",
        });
    }
    let size = in_page_size(attrs);
    if size > MAX_IN_PAGE_SIZE {
        return Err(DdlError::TooWide {
            width: size,
            max: MAX_IN_PAGE_SIZE,
            advice: "use fewer attributes; strings of more than 63 characters and arrays \
                     take 21 bytes each, numbers 8, short strings 4 a character",
        });
    }
    Ok(())
}

/// The statements creating a collection's table, its system indexes on
/// `(created_at, id)` and `(updated_at, id)`, and its permission side table
/// ([`perms_table_sql`]).
pub fn create_table_sql(
    dialect: SqlDialect,
    table: &str,
    attrs: &[Attribute],
) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    validate_attributes(attrs)?;
    check_width(attrs)?;
    let q = |name: &str| dialect.quote(name);
    let t = q(table);
    let mut columns = Vec::with_capacity(attrs.len() + 3);
    match dialect {
        SqlDialect::Sqlite => columns.push(format!("{} TEXT NOT NULL PRIMARY KEY", q("id"))),
        SqlDialect::MySql => columns.push(format!(
            "{} VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
            q("id")
        )),
    }
    columns.push(format!("{} BIGINT NOT NULL", q("created_at")));
    columns.push(format!("{} BIGINT NOT NULL", q("updated_at")));
    columns.push(reader_column_def(dialect));
    if dialect == SqlDialect::MySql {
        columns.push(sequence_column_def());
    }
    columns.extend(attrs.iter().map(|a| column_def(dialect, a, false)));
    let (id, created, updated) = (q("id"), q("created_at"), q("updated_at"));
    let mut statements = match dialect {
        SqlDialect::Sqlite => vec![
            format!("CREATE TABLE {t} ({})", columns.join(", ")),
            format!(
                "CREATE INDEX {} ON {t} ({created}, {id})",
                q(&format!("s_{table}__created"))
            ),
            format!(
                "CREATE INDEX {} ON {t} ({updated}, {id})",
                q(&format!("s_{table}__updated"))
            ),
        ],
        SqlDialect::MySql => vec![format!(
            "CREATE TABLE {t} ({}, PRIMARY KEY ({id}), KEY {} ({created}, {id}), \
                 KEY {} ({updated}, {id}), {}) {MYSQL_TABLE_OPTIONS}",
            columns.join(", "),
            q("s_created"),
            q("s_updated"),
            sequence_key_def(),
        )],
    };
    statements.extend(perms_table_sql(dialect, table, &perms_table(table)));
    Ok(statements)
}

/// The column of a collection table numbering its documents in the order they
/// were made (`$sequence`): SQLite's own row id, which every table has and
/// which keeps its values through `ALTER TABLE` (nothing here runs `VACUUM`,
/// which may renumber it); on MariaDB an `AUTO_INCREMENT` column of the same
/// name, so that statements name it alike on both. SQLite gives the next
/// document the largest number plus one, so the number of the last document,
/// once it is deleted, may be given again; MariaDB never gives one twice.
pub const SEQUENCE_COLUMN: &str = "rowid";

/// The definition of [`SEQUENCE_COLUMN`] on MariaDB.
pub fn sequence_column_def() -> String {
    format!(
        "{} BIGINT NOT NULL AUTO_INCREMENT",
        SqlDialect::MySql.quote(SEQUENCE_COLUMN)
    )
}

/// The key MariaDB needs on an `AUTO_INCREMENT` column, which also serves
/// orders and ranges on `$sequence`.
pub fn sequence_key_def() -> String {
    format!(
        "KEY {} ({})",
        SqlDialect::MySql.quote("s_sequence"),
        SqlDialect::MySql.quote(SEQUENCE_COLUMN)
    )
}

/// The column of a collection table holding each document's sole reader
/// (`auth::permissions::sole_reader`), `NULL` when none or several roles may
/// read it: a reader's documents are then a range of an index led by it (ADR
/// 0022). No attribute can take the name: their columns are `a_…`.
pub const READER_COLUMN: &str = "nimbus_reader";

/// The definition of [`READER_COLUMN`]: as wide as a side table's `role`.
fn reader_column_def(dialect: SqlDialect) -> String {
    match dialect {
        SqlDialect::Sqlite => format!("{} TEXT", dialect.quote(READER_COLUMN)),
        SqlDialect::MySql => format!("{} VARCHAR(128)", dialect.quote(READER_COLUMN)),
    }
}

/// The statements giving a collection created before ADR 0022 its sole-reader
/// column (unless `has_reader`) and its side table the `sole` column and the
/// index of [`perms_table_sql`] (unless `has_sole`): on SQLite each statement
/// alone is atomic and the side table's are run in one transaction by the
/// caller; on MariaDB each is one `ALTER TABLE`. Values are filled in by
/// [`backfill_readers_sql`].
pub fn add_readers_sql(
    dialect: SqlDialect,
    table: &str,
    has_reader: bool,
    has_sole: bool,
) -> Result<(Vec<String>, Vec<String>), DdlError> {
    check_table_name(table)?;
    let q = |name: &str| dialect.quote(name);
    let mut columns = Vec::new();
    if !has_reader {
        columns.push(format!(
            "ALTER TABLE {} ADD COLUMN {}",
            q(table),
            reader_column_def(dialect)
        ));
    }
    let mut side = Vec::new();
    if !has_sole {
        let perms = q(&perms_table(table));
        let (resource, role, actions, sole) =
            (q("resource_id"), q("role"), q("actions"), q("sole"));
        match dialect {
            SqlDialect::Sqlite => {
                let index = q(&format!("s_{table}__perms"));
                side.push(format!(
                    "ALTER TABLE {perms} ADD COLUMN {sole} INTEGER NOT NULL DEFAULT 0"
                ));
                side.push(format!("DROP INDEX IF EXISTS {index}"));
                side.push(format!(
                    "CREATE INDEX {index} ON {perms} ({role}, {sole}, {resource}, {actions})"
                ));
            }
            SqlDialect::MySql => {
                let index = q("s_role");
                side.push(format!(
                    "ALTER TABLE {perms} ADD COLUMN {sole} SMALLINT NOT NULL DEFAULT 0, \
                     DROP KEY {index}, ADD KEY {index} ({role}, {sole}, {resource}, {actions})"
                ));
            }
        }
    }
    Ok((columns, side))
}

/// The two statements that derive, for the documents of `table` whose ids lie
/// in `(?, ?]`, their sole reader from their grants (the role of the one grant
/// holding `read`, as `auth::permissions::sole_reader` derives it from the
/// permissions) and then the side table's `sole` marks from it. Idempotent.
pub fn backfill_readers_sql(dialect: SqlDialect, table: &str) -> Result<[String; 2], DdlError> {
    check_table_name(table)?;
    let q = |name: &str| dialect.quote(name);
    let (t, perms, reader) = (q(table), q(&perms_table(table)), q(READER_COLUMN));
    let read = crate::auth::permissions::Action::Read.bit();
    Ok([
        format!(
            "UPDATE {t} SET {reader} = (SELECT CASE WHEN COUNT(*) = 1 THEN MIN(p.role) END \
             FROM {perms} p WHERE p.resource_id = {t}.id AND (p.actions & {read}) <> 0) \
             WHERE {t}.id > ? AND {t}.id <= ?"
        ),
        format!(
            "UPDATE {perms} SET sole = CASE WHEN EXISTS (SELECT 1 FROM {t} d \
             WHERE d.id = {perms}.resource_id AND d.{reader} = {perms}.role) THEN 1 ELSE 0 END \
             WHERE {perms}.resource_id > ? AND {perms}.resource_id <= ?"
        ),
    ])
}

/// The statements creating the permission side table `perms` of the collection
/// table `table`: one row per document and role, the role's actions as bits
/// (`auth::permissions::permission_grants`), keyed by `(resource_id, role)`,
/// indexed by `(role, resource_id, actions)`, rows deleted with their document.
/// The index covers a reader's grants with their actions, so that a list
/// driving from them reads it alone (ADR 0017). `perms`
/// is another name than [`perms_table`] only while an older side table is
/// converted ([`upgrade_perms_sql`]).
fn perms_table_sql(dialect: SqlDialect, table: &str, perms: &str) -> Vec<String> {
    let q = |name: &str| dialect.quote(name);
    let (t, perms, id) = (q(table), q(perms), q("id"));
    let (resource, role, actions, sole) = (q("resource_id"), q("role"), q("actions"), q("sole"));
    match dialect {
        SqlDialect::Sqlite => vec![
            format!(
                "CREATE TABLE {perms} ({resource} TEXT NOT NULL REFERENCES {t} ({id}) \
                 ON DELETE CASCADE, {role} TEXT NOT NULL, {actions} INTEGER NOT NULL, \
                 {sole} INTEGER NOT NULL DEFAULT 0, \
                 PRIMARY KEY ({resource}, {role})) WITHOUT ROWID"
            ),
            format!(
                "CREATE INDEX {} ON {perms} ({role}, {sole}, {resource}, {actions})",
                q(&format!("s_{table}__perms"))
            ),
        ],
        // The foreign key is named after the collection table, not the side
        // table, so that it keeps its name when a converted side table is renamed.
        SqlDialect::MySql => vec![format!(
            "CREATE TABLE {perms} ({resource} VARCHAR(36) NOT NULL, \
             {role} VARCHAR(128) NOT NULL, {actions} SMALLINT NOT NULL, \
             {sole} SMALLINT NOT NULL DEFAULT 0, \
             PRIMARY KEY ({resource}, {role}), KEY {} ({role}, {sole}, {resource}, {actions}), \
             CONSTRAINT {} FOREIGN KEY ({resource}) REFERENCES {t} ({id}) ON DELETE CASCADE) \
             {MYSQL_TABLE_OPTIONS}",
            q("s_role"),
            q(&format!("f_{table}")),
        )],
    }
}

/// The statements giving the side table of `table`, in the layout of one row
/// per role, the covering index of [`perms_table_sql`] in place of its index on
/// `(role, resource_id)` alone: one transaction on SQLite, one `ALTER TABLE` on
/// MariaDB (which builds the new index before it drops the older one).
pub fn cover_perms_index_sql(dialect: SqlDialect, table: &str) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    let q = |name: &str| dialect.quote(name);
    let perms = q(&perms_table(table));
    let (resource, role, actions) = (q("resource_id"), q("role"), q("actions"));
    Ok(match dialect {
        SqlDialect::Sqlite => {
            let index = q(&format!("s_{table}__perms"));
            vec![
                format!("DROP INDEX IF EXISTS {index}"),
                format!("CREATE INDEX {index} ON {perms} ({role}, {resource}, {actions})"),
            ]
        }
        SqlDialect::MySql => {
            let index = q("s_role");
            vec![format!(
                "ALTER TABLE {perms} DROP KEY {index}, ADD KEY {index} ({role}, {resource}, {actions})"
            )]
        }
    })
}

/// The side table's name while [`upgrade_perms_sql`] fills it: `__` keeps it
/// apart from every collection table ([`check_table_name`]).
pub const UPGRADE_PERMS_NEW: &str = "nimbus__perms_new";
/// The older side table's name between the swap and its drop.
pub const UPGRADE_PERMS_OLD: &str = "nimbus__perms_old";

/// The statements converting the side table of `table` from one row per
/// permission (`resource_id, action, role`) to one row per role
/// ([`perms_table_sql`]). SQLite runs them in one transaction; on MariaDB, where
/// DDL commits, they are ordered so that a conversion cut short leaves either the
/// older table in place (and the new one to drop) or the new table in place (and
/// the older one to drop): the caller drops [`UPGRADE_PERMS_NEW`] and
/// [`UPGRADE_PERMS_OLD`] before each conversion.
pub fn upgrade_perms_sql(dialect: SqlDialect, table: &str) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    let q = |name: &str| dialect.quote(name);
    let perms = perms_table(table);
    let bits = "CASE action WHEN 'read' THEN 1 WHEN 'create' THEN 2 \
                WHEN 'update' THEN 4 WHEN 'delete' THEN 8 ELSE 0 END";
    let new = UPGRADE_PERMS_NEW;
    let mut statements = match dialect {
        // The index of the older table carries the name the new one's takes.
        SqlDialect::Sqlite => vec![format!(
            "DROP INDEX IF EXISTS {}",
            q(&format!("s_{table}__perms"))
        )],
        SqlDialect::MySql => Vec::new(),
    };
    // SQLite's index is made on the renamed table, under the older index's name.
    let mut create = perms_table_sql(dialect, table, new);
    create.truncate(1);
    statements.extend(create);
    // Rows are unique per (resource_id, action, role): their bits add up to the
    // role's actions.
    statements.push(format!(
        "INSERT INTO {} (resource_id, role, actions) SELECT resource_id, role, SUM({bits}) \
         FROM {} GROUP BY resource_id, role",
        q(new),
        q(&perms)
    ));
    match dialect {
        SqlDialect::Sqlite => {
            statements.push(format!("DROP TABLE {}", q(&perms)));
            statements.push(format!("ALTER TABLE {} RENAME TO {}", q(new), q(&perms)));
            statements.extend(perms_table_sql(dialect, table, &perms).into_iter().skip(1));
        }
        SqlDialect::MySql => {
            statements.push(format!(
                "RENAME TABLE {} TO {}, {} TO {}",
                q(&perms),
                q(UPGRADE_PERMS_OLD),
                q(new),
                q(&perms)
            ));
            statements.push(format!("DROP TABLE {}", q(UPGRADE_PERMS_OLD)));
        }
    }
    Ok(statements)
}

/// The statements dropping a collection: its side table, then its table (with
/// their indexes).
pub fn drop_table_sql(dialect: SqlDialect, table: &str) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    Ok(vec![
        format!("DROP TABLE {}", dialect.quote(&perms_table(table))),
        format!("DROP TABLE {}", dialect.quote(table)),
    ])
}

/// The statement adding `attr` to a collection that has `existing`. The
/// attribute is checked against the others (a key that differs only in case is
/// refused) and the row width. A required attribute is `NOT NULL` (SQLite:
/// `CHECK … IS NOT NULL`); on MariaDB adding one to a table with rows would
/// fill them with `''` or `0`, so the caller refuses that.
pub fn add_column_sql(
    dialect: SqlDialect,
    table: &str,
    existing: &[Attribute],
    attr: &Attribute,
) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    attr.validate()?;
    if existing.len() >= MAX_ATTRIBUTES {
        return Err(DdlError::TooManyAttributes {
            max: MAX_ATTRIBUTES,
        });
    }
    if existing
        .iter()
        .any(|a| a.key.eq_ignore_ascii_case(&attr.key))
    {
        return Err(ValueError::InvalidAttribute {
            key: shown(&attr.key),
            reason: "another attribute has the same key (keys are compared ignoring case)".into(),
        }
        .into());
    }
    let mut all = existing.to_vec();
    all.push(attr.clone());
    check_width(&all)?;
    Ok(vec![format!(
        "ALTER TABLE {} ADD COLUMN {}",
        dialect.quote(table),
        column_def(dialect, attr, true)
    )])
}

/// The name a SQLite column takes for a moment while its attribute's column is
/// made again ([`change_column_sql`]); no attribute's column can have it.
const SWAP_COLUMN: &str = "nimbus_swap";

/// The statements that change the column of attribute `old` into that of `new`
/// (`columns` are the table's columns after the change, `new` among them), and
/// those undoing them on MariaDB, where DDL is not transactional. The indexes
/// that use the column are the caller's to drop before and make again after.
///
/// MariaDB redefines (and renames) the column in place. SQLite keeps no size,
/// so only two changes reach its schema: a new key renames the column, and an
/// attribute no longer required needs a column without the `NOT NULL` it was
/// made with, which SQLite cannot drop: the column is made again beside the old
/// one and the values copied. A newly required attribute is enforced by Nimbus's
/// writes on SQLite (the caller checks that no document lacks a value).
pub fn change_column_sql(
    dialect: SqlDialect,
    table: &str,
    columns: &[Attribute],
    old: &Attribute,
    new: &Attribute,
) -> Result<(Vec<String>, Vec<String>), DdlError> {
    check_table_name(table)?;
    // Only the changed attribute is checked: an older one whose key has since
    // become reserved must not hold every other change back.
    new.validate()?;
    if columns
        .iter()
        .filter(|column| column.key.eq_ignore_ascii_case(&new.key))
        .count()
        > 1
    {
        return Err(ValueError::InvalidAttribute {
            key: shown(&new.key),
            reason: "another attribute has the same key (keys are compared ignoring case)".into(),
        }
        .into());
    }
    if !columns.iter().any(|column| column == new) {
        return Err(DdlError::UnknownAttribute {
            key: shown(&new.key),
        });
    }
    check_width(columns)?;
    let t = dialect.quote(table);
    let (old_column, new_column) = (dialect.quote(&old.column()), dialect.quote(&new.column()));
    match dialect {
        SqlDialect::MySql => {
            if column_def(dialect, old, false) == column_def(dialect, new, false) {
                return Ok((Vec::new(), Vec::new()));
            }
            Ok((
                vec![format!(
                    "ALTER TABLE {t} CHANGE COLUMN {old_column} {}",
                    column_def(dialect, new, false)
                )],
                vec![format!(
                    "ALTER TABLE {t} CHANGE COLUMN {new_column} {}",
                    column_def(dialect, old, false)
                )],
            ))
        }
        SqlDialect::Sqlite if old.required && !new.required => {
            let swap = dialect.quote(SWAP_COLUMN);
            Ok((
                vec![
                    format!("ALTER TABLE {t} RENAME COLUMN {old_column} TO {swap}"),
                    format!(
                        "ALTER TABLE {t} ADD COLUMN {}",
                        column_def(dialect, new, true)
                    ),
                    format!("UPDATE {t} SET {new_column} = {swap}"),
                    format!("ALTER TABLE {t} DROP COLUMN {swap}"),
                ],
                Vec::new(),
            ))
        }
        SqlDialect::Sqlite if old.key != new.key => Ok((
            vec![format!(
                "ALTER TABLE {t} RENAME COLUMN {old_column} TO {new_column}"
            )],
            Vec::new(),
        )),
        SqlDialect::Sqlite => Ok((Vec::new(), Vec::new())),
    }
}

/// The statement giving the documents that have no value of `attr` its
/// default (none when it has no default): a default fills every document.
pub fn fill_default_sql(dialect: SqlDialect, table: &str, attr: &Attribute) -> Option<String> {
    let default = attr.default_sql_value()?;
    let column = dialect.quote(&attr.column());
    Some(format!(
        "UPDATE {} SET {column} = {} WHERE {column} IS NULL",
        dialect.quote(table),
        literal(dialect, &default)
    ))
}

/// The statements dropping the column of attribute `key`: first every index in
/// `indexes` that uses it (SQLite cannot drop an indexed column, and MariaDB
/// would silently narrow a composite index, turning `unique(a, b)` into
/// `unique(b)`), then the column. The caller deletes the metadata of those
/// indexes too ([`indexes_using`]).
pub fn drop_column_sql(
    dialect: SqlDialect,
    table: &str,
    key: &str,
    indexes: &[Index],
) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    if !is_valid_key(key) {
        return Err(DdlError::UnknownAttribute { key: shown(key) });
    }
    let mut statements = Vec::new();
    for index in indexes_using(indexes, key) {
        statements.extend(drop_index_sql(dialect, table, index)?);
    }
    statements.push(format!(
        "ALTER TABLE {} DROP COLUMN {}",
        dialect.quote(table),
        dialect.quote(&format!("a_{key}"))
    ));
    Ok(statements)
}

/// The indexes that use attribute `key`.
pub fn indexes_using<'a>(indexes: &'a [Index], key: &'a str) -> impl Iterator<Item = &'a Index> {
    indexes
        .iter()
        .filter(move |i| i.attributes.iter().any(|a| a == key))
}

/// What an index does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Key,
    Unique,
    /// Full-text search on string attributes. MariaDB only: on SQLite no
    /// statement is made, and search scans with `LIKE` (see `filter`).
    Fulltext,
    /// One required point, line or polygon, as Appwrite's MariaDB takes it:
    /// an R-tree of the shapes (see [`create_index_sql`]) that spatial
    /// conditions narrow by before comparing shapes.
    Spatial,
}

/// The order of one attribute in an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IndexOrder {
    Asc,
    Desc,
}

/// An index a collection declares, as stored in its metadata. `attributes`
/// are attribute keys, or `$id`, `$createdAt`, `$updatedAt` for the system
/// fields (as in Appwrite); `orders` is empty or one per attribute; `lengths`
/// (Appwrite's) at most one per attribute, by position: the characters of a
/// string attribute a MariaDB key covers (none: the whole value, or the first
/// [`INDEX_PREFIX_CHARS`] of a longer one). SQLite indexes whole values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Index {
    pub key: String,
    pub kind: IndexKind,
    pub attributes: Vec<String>,
    #[serde(default)]
    pub orders: Vec<IndexOrder>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lengths: Vec<Option<u32>>,
}

/// A column an index covers.
enum IndexColumn<'a> {
    Id,
    Timestamp(&'static str),
    Attr(&'a Attribute),
}

impl IndexColumn<'_> {
    fn name(&self) -> String {
        match self {
            IndexColumn::Id => "id".into(),
            IndexColumn::Timestamp(name) => (*name).into(),
            IndexColumn::Attr(attr) => attr.column(),
        }
    }

    /// Characters of a MariaDB key or unique index on it, when a prefix is needed:
    /// `length` when given and shorter than the column, else the first
    /// [`INDEX_PREFIX_CHARS`] of a longer column.
    fn mysql_prefix(&self, length: Option<u32>) -> Option<u32> {
        match self {
            IndexColumn::Attr(attr) if attr.kind.is_textual() => {
                match (length, attr.kind.max_chars()) {
                    (Some(length), Some(n)) if length >= n => None,
                    (Some(length), _) => Some(length),
                    (None, Some(n)) if n <= INDEX_PREFIX_CHARS => None,
                    (None, _) => Some(INDEX_PREFIX_CHARS),
                }
            }
            _ => None,
        }
    }

    /// Bytes of a MariaDB key on it, covering `length` characters of a string
    /// (utf8mb4 text is 4 bytes a character).
    fn key_width(&self, length: Option<u32>) -> usize {
        match self {
            IndexColumn::Id => 36 * 4 + 2,
            IndexColumn::Timestamp(_) => 8,
            IndexColumn::Attr(attr) if attr.kind.is_textual() => {
                let chars = self.mysql_prefix(length).or(attr.kind.max_chars());
                chars.unwrap_or(INDEX_PREFIX_CHARS) as usize * 4 + 2
            }
            IndexColumn::Attr(attr) if attr.kind == AttributeKind::Boolean => 2,
            IndexColumn::Attr(_) => 8,
        }
    }
}

impl Index {
    fn invalid(&self, reason: impl Into<String>) -> DdlError {
        DdlError::InvalidIndex {
            key: shown(&self.key),
            reason: reason.into(),
        }
    }

    /// The length given for the attribute at `position`, if any.
    pub fn length(&self, position: usize) -> Option<u32> {
        self.lengths.get(position).copied().flatten()
    }

    /// Lengths only on string attributes, none past the attribute's size.
    fn check_lengths(&self, columns: &[IndexColumn<'_>]) -> Result<(), DdlError> {
        for (i, column) in columns.iter().enumerate() {
            let Some(length) = self.length(i) else {
                continue;
            };
            let IndexColumn::Attr(attr) = column else {
                return Err(self.invalid(format!(
                    "a length applies to a string attribute, and {} is a system field",
                    shown(&self.attributes[i])
                )));
            };
            if !attr.kind.is_textual() {
                return Err(self.invalid(format!(
                    "a length applies to a string attribute, and {} is {}",
                    shown(&attr.key),
                    attr.kind.name()
                )));
            }
            let size = attr.kind.text_limit().or(attr.kind.max_chars());
            if let Some(size) = size.filter(|size| length > *size) {
                return Err(self.invalid(format!(
                    "the length {length} is more than the {size} characters of {}",
                    shown(&attr.key)
                )));
            }
        }
        Ok(())
    }

    fn resolve<'a>(&self, attrs: &'a [Attribute]) -> Result<Vec<IndexColumn<'a>>, DdlError> {
        self.attributes
            .iter()
            .map(|name| match name.as_str() {
                "$id" => Ok(IndexColumn::Id),
                "$createdAt" => Ok(IndexColumn::Timestamp("created_at")),
                "$updatedAt" => Ok(IndexColumn::Timestamp("updated_at")),
                key => attrs
                    .iter()
                    .find(|a| a.key == key)
                    .map(IndexColumn::Attr)
                    .ok_or_else(|| {
                        self.invalid(format!("the collection has no attribute {}", shown(key)))
                    }),
            })
            .collect()
    }

    /// Checks the index against the collection's attributes: the key, 1 to 8
    /// distinct attributes that exist, orders matching, full-text only on
    /// string attributes, no arrays in key or unique indexes (their JSON text
    /// is no useful key), and a key no wider than InnoDB allows (string columns
    /// counted at their prefix of 191 characters).
    pub fn validate(&self, attrs: &[Attribute]) -> Result<(), DdlError> {
        if !is_valid_key(&self.key) {
            return Err(
                self.invalid("a key starts with a letter and has 1 to 62 letters, digits and `_`")
            );
        }
        if self.attributes.is_empty() || self.attributes.len() > MAX_INDEX_ATTRIBUTES {
            return Err(self.invalid(format!(
                "an index has 1 to {MAX_INDEX_ATTRIBUTES} attributes"
            )));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = self.attributes.iter().find(|a| !seen.insert(a.as_str())) {
            return Err(self.invalid(format!("the attribute {} is listed twice", shown(twice))));
        }
        if !self.orders.is_empty() && self.orders.len() != self.attributes.len() {
            return Err(self.invalid("give one order per attribute, or none"));
        }
        if self.lengths.len() > self.attributes.len() {
            return Err(self.invalid("give at most one length per attribute"));
        }
        if self.lengths.iter().any(|length| length.is_some())
            && matches!(self.kind, IndexKind::Fulltext | IndexKind::Spatial)
        {
            return Err(self.invalid("lengths apply to key and unique indexes only"));
        }
        let columns = self.resolve(attrs)?;
        match self.kind {
            IndexKind::Fulltext => {
                if !self.orders.is_empty() {
                    return Err(self.invalid("a full-text index has no order"));
                }
                for column in &columns {
                    let IndexColumn::Attr(attr) = column else {
                        return Err(self.invalid("a full-text index covers string attributes only"));
                    };
                    if !attr.kind.is_textual() || attr.array {
                        return Err(self.invalid(format!(
                            "a full-text index covers string attributes only, and {} is {}",
                            shown(&attr.key),
                            if attr.array {
                                "an array"
                            } else {
                                attr.kind.name()
                            }
                        )));
                    }
                }
            }
            IndexKind::Spatial => {
                let [IndexColumn::Attr(attr)] = columns.as_slice() else {
                    return Err(
                        self.invalid("a spatial index covers one point, line or polygon attribute")
                    );
                };
                if attr.kind.shape().is_none() {
                    return Err(self.invalid(format!(
                        "a spatial index covers a point, line or polygon attribute, and {} is {}",
                        shown(&attr.key),
                        attr.kind.name()
                    )));
                }
                if !attr.required {
                    return Err(self.invalid(format!(
                        "a spatial index covers a required attribute (every document has a \
                         shape), and {} is optional",
                        shown(&attr.key)
                    )));
                }
                if !self.orders.is_empty() {
                    return Err(self.invalid("a spatial index has no order"));
                }
            }
            IndexKind::Key | IndexKind::Unique => {
                if let Some(IndexColumn::Attr(attr)) = columns
                    .iter()
                    .find(|c| matches!(c, IndexColumn::Attr(a) if a.array))
                {
                    return Err(self.invalid(format!(
                        "{} is an array; arrays can only be searched with contains",
                        shown(&attr.key)
                    )));
                }
                if let Some(IndexColumn::Attr(attr)) = columns
                    .iter()
                    .find(|c| matches!(c, IndexColumn::Attr(a) if a.kind.shape().is_some()))
                {
                    return Err(self.invalid(format!(
                        "{} is a {}; shapes take a SPATIAL index",
                        shown(&attr.key),
                        attr.kind.name()
                    )));
                }
                self.check_lengths(&columns)?;
                let width: usize = columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| column.key_width(self.length(i)))
                    .sum();
                if width > MAX_INDEX_KEY_WIDTH {
                    return Err(self.invalid(format!(
                        "the key would be {width} bytes wide, more than {MAX_INDEX_KEY_WIDTH}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Checks all the indexes of a collection: each one, and no two keys that
/// differ only in case (MariaDB index names ignore case).
pub fn validate_indexes(indexes: &[Index], attrs: &[Attribute]) -> Result<(), DdlError> {
    let mut seen = HashSet::new();
    let mut shapes = HashSet::new();
    for index in indexes {
        index.validate(attrs)?;
        if !seen.insert(index.key.to_ascii_lowercase()) {
            return Err(index.invalid("another index has the same key (compared ignoring case)"));
        }
        if index.kind == IndexKind::Spatial && !shapes.insert(index.attributes.first()) {
            return Err(index.invalid("the attribute has a spatial index already"));
        }
    }
    Ok(())
}

/// Whether a full-text index on exactly the attribute `key` exists: what a
/// MariaDB `MATCH (col) AGAINST (…)` needs before `search` can run.
pub fn fulltext_index_covers(indexes: &[Index], key: &str) -> bool {
    indexes.iter().any(|i| {
        i.kind == IndexKind::Fulltext
            && i.attributes.len() == 1
            && i.attributes.first().is_some_and(|a| a == key)
    })
}

/// The FTS5 table of a SQLite full-text index on attribute `key`.
pub fn fts_table(table: &str, key: &str) -> String {
    format!("{table}_fts_{key}")
}

/// Which FTS5 row holds which document: FTS5 rows have integer ids, documents
/// have text ones.
pub fn fts_map_table(table: &str, key: &str) -> String {
    format!("{table}_ftm_{key}")
}

fn fts_trigger(table: &str, key: &str, which: &str) -> String {
    format!("{table}_fts_{key}_{which}")
}

/// A SQLite full-text index: an FTS5 table of the attribute's words (Unicode
/// aware, case-insensitive, like MariaDB's), a map from its rows to documents,
/// filled with the existing documents and kept current by triggers, so every
/// write, in any transaction, updates it atomically.
fn sqlite_fts_sql(table: &str, key: &str) -> Vec<String> {
    let q = |name: &str| SqlDialect::Sqlite.quote(name);
    let (t, fts, map) = (
        q(table),
        q(&fts_table(table, key)),
        q(&fts_map_table(table, key)),
    );
    let column = q(&format!("a_{key}"));
    let trigger = |which: &str| q(&fts_trigger(table, key, which));
    vec![
        format!("CREATE VIRTUAL TABLE {fts} USING fts5(body, tokenize = 'unicode61')"),
        format!(
            "CREATE TABLE {map} (doc_id TEXT NOT NULL PRIMARY KEY, fts_rowid INTEGER NOT NULL)"
        ),
        format!(
            "INSERT INTO {fts} (rowid, body) SELECT rowid, {column} FROM {t} WHERE {column} IS NOT NULL"
        ),
        format!(
            "INSERT INTO {map} (doc_id, fts_rowid) SELECT id, rowid FROM {t} WHERE {column} IS NOT NULL"
        ),
        format!(
            "CREATE TRIGGER {} AFTER INSERT ON {t} WHEN new.{column} IS NOT NULL BEGIN \
             INSERT INTO {fts} (body) VALUES (new.{column}); \
             INSERT INTO {map} (doc_id, fts_rowid) VALUES (new.id, last_insert_rowid()); END",
            trigger("ai")
        ),
        format!(
            "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN \
             DELETE FROM {fts} WHERE rowid = (SELECT fts_rowid FROM {map} WHERE doc_id = old.id); \
             DELETE FROM {map} WHERE doc_id = old.id; END",
            trigger("ad")
        ),
        format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {column} ON {t} BEGIN \
             DELETE FROM {fts} WHERE rowid = (SELECT fts_rowid FROM {map} WHERE doc_id = old.id); \
             DELETE FROM {map} WHERE doc_id = old.id; \
             INSERT INTO {fts} (body) SELECT new.{column} WHERE new.{column} IS NOT NULL; \
             INSERT INTO {map} (doc_id, fts_rowid) SELECT new.id, last_insert_rowid() \
             WHERE new.{column} IS NOT NULL; END",
            trigger("au")
        ),
    ]
}

/// The geometry column a MariaDB spatial index on attribute `key` covers: the
/// shape read from the attribute's coordinates, kept by triggers.
pub fn shape_column(key: &str) -> String {
    format!("g_{key}")
}

/// The R*Tree of a SQLite spatial index on attribute `key`: each document's
/// bounding box, by the row id of its row.
pub fn rtree_table(table: &str, key: &str) -> String {
    format!("{table}_rtree_{key}")
}

/// A trigger keeping a spatial index on attribute `key`: named by a digest of
/// the key, since the table's name and a key of 62 characters would pass
/// MariaDB's 64 (trigger names are per schema there, not per table).
fn spatial_trigger(table: &str, key: &str, which: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    format!("{table}_sp_{}_{which}", &digest[..12])
}

/// A spatial index (validated): on MariaDB a `GEOMETRY NOT NULL` column read
/// from the coordinates, filled, kept by triggers before every insert and
/// update, under a SPATIAL index (an R-tree); on SQLite an R*Tree of bounding
/// boxes by row id, filled and kept by triggers. Every write path, in any
/// transaction, keeps it without knowing of it, as the full-text indexes are.
fn spatial_index_sql(
    dialect: SqlDialect,
    table: &str,
    attr: &Attribute,
    index: &Index,
) -> Vec<String> {
    let q = |name: &str| dialect.quote(name);
    let shape = attr.kind.shape().unwrap_or(super::spatial::Shape::Point);
    let (t, column) = (q(table), q(&attr.column()));
    let trigger = |which: &str| q(&spatial_trigger(table, &attr.key, which));
    match dialect {
        SqlDialect::MySql => {
            let g = q(&shape_column(&attr.key));
            let read = |row: &str| super::spatial::mysql_geometry(shape, &format!("{row}{column}"));
            vec![
                format!("ALTER TABLE {t} ADD COLUMN {g} GEOMETRY NOT NULL"),
                format!("UPDATE {t} SET {g} = {}", read("")),
                format!(
                    "CREATE TRIGGER {} BEFORE INSERT ON {t} FOR EACH ROW SET NEW.{g} = {}",
                    trigger("bi"),
                    read("NEW.")
                ),
                format!(
                    "CREATE TRIGGER {} BEFORE UPDATE ON {t} FOR EACH ROW SET NEW.{g} = {}",
                    trigger("bu"),
                    read("NEW.")
                ),
                format!(
                    "CREATE SPATIAL INDEX {} ON {t} ({g})",
                    q(&index_name(dialect, table, &index.key))
                ),
            ]
        }
        SqlDialect::Sqlite => {
            let rtree = q(&rtree_table(table, &attr.key));
            let corners = |row: &str| {
                (0..4)
                    .map(|corner| {
                        format!(
                            "{}({row}{column}, {corner})",
                            super::spatial::SQLITE_BOX_FUNCTION
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                format!("CREATE VIRTUAL TABLE {rtree} USING rtree(id, min_x, max_x, min_y, max_y)"),
                format!(
                    "INSERT INTO {rtree} SELECT rowid, {} FROM {t} WHERE {column} IS NOT NULL",
                    corners("")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER INSERT ON {t} WHEN new.{column} IS NOT NULL BEGIN \
                     INSERT INTO {rtree} VALUES (new.rowid, {}); END",
                    trigger("ai"),
                    corners("new.")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER UPDATE OF {column} ON {t} BEGIN \
                     DELETE FROM {rtree} WHERE id = old.rowid; \
                     INSERT INTO {rtree} SELECT new.rowid, {} WHERE new.{column} IS NOT NULL; END",
                    trigger("au"),
                    corners("new.")
                ),
                format!(
                    "CREATE TRIGGER {} AFTER DELETE ON {t} BEGIN \
                     DELETE FROM {rtree} WHERE id = old.rowid; END",
                    trigger("ad")
                ),
            ]
        }
    }
}

/// The statements dropping a spatial index on attribute `key`.
fn drop_spatial_sql(dialect: SqlDialect, table: &str, key: &str, index: &Index) -> Vec<String> {
    let q = |name: &str| dialect.quote(name);
    let trigger = |which: &str| {
        format!(
            "DROP TRIGGER IF EXISTS {}",
            q(&spatial_trigger(table, key, which))
        )
    };
    match dialect {
        SqlDialect::MySql => vec![
            trigger("bi"),
            trigger("bu"),
            format!(
                "DROP INDEX {} ON {}",
                q(&index_name(dialect, table, &index.key)),
                q(table)
            ),
            format!(
                "ALTER TABLE {} DROP COLUMN {}",
                q(table),
                q(&shape_column(key))
            ),
        ],
        SqlDialect::Sqlite => vec![
            trigger("ai"),
            trigger("au"),
            trigger("ad"),
            format!("DROP TABLE IF EXISTS {}", q(&rtree_table(table, key))),
        ],
    }
}

/// The case-insensitive copy of a string attribute that a MariaDB full-text
/// index covers (see [`create_index_sql`]).
pub fn search_column(key: &str) -> String {
    format!("s_{key}")
}

/// The name of a user index in the database (see the module doc).
pub fn index_name(dialect: SqlDialect, table: &str, key: &str) -> String {
    match dialect {
        SqlDialect::Sqlite => format!("i_{table}__{key}"),
        SqlDialect::MySql => format!("i_{key}"),
    }
}

/// The statements creating `index` (validated first): none for a full-text
/// index on SQLite. On MariaDB, string columns longer than 191 characters are
/// indexed by their first 191 ([`INDEX_PREFIX_CHARS`]).
pub fn create_index_sql(
    dialect: SqlDialect,
    table: &str,
    attrs: &[Attribute],
    index: &Index,
) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    index.validate(attrs)?;
    if index.kind == IndexKind::Spatial {
        let columns = index.resolve(attrs)?;
        let [IndexColumn::Attr(attr)] = columns.as_slice() else {
            return Err(index.invalid("a spatial index covers one attribute"));
        };
        return Ok(spatial_index_sql(dialect, table, attr, index));
    }
    if index.kind == IndexKind::Fulltext && dialect == SqlDialect::Sqlite {
        let [key] = index.attributes.as_slice() else {
            return Err(index.invalid("a full-text index covers exactly one attribute"));
        };
        return Ok(sqlite_fts_sql(table, key));
    }
    if index.kind == IndexKind::Fulltext {
        // InnoDB keeps full-text tokens lower-cased on disk but compares them with
        // the column's collation, so on a binary column a search finds a row
        // only until its tokens are flushed. The index goes on a case-insensitive
        // copy of the column instead: every search behaves alike, and like
        // SQLite's case-insensitive word match.
        let [key] = index.attributes.as_slice() else {
            return Err(index.invalid("a full-text index covers exactly one attribute"));
        };
        let q = |name: &str| dialect.quote(name);
        return Ok(vec![
            format!(
                "ALTER TABLE {} ADD COLUMN {} LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci AS ({}) STORED",
                q(table),
                q(&search_column(key)),
                q(&format!("a_{key}"))
            ),
            format!(
                "CREATE FULLTEXT INDEX {} ON {} ({})",
                q(&index_name(dialect, table, &index.key)),
                q(table),
                q(&search_column(key))
            ),
        ]);
    }
    let columns = index.resolve(attrs)?;
    let mut parts = key_parts(dialect, index, &columns);
    // A list is ordered by its attributes, then by id. InnoDB's secondary
    // indexes end with the primary key; SQLite's end with the rowid, so there a
    // key index ends with the id too: the order is then read from the index
    // alone, and a deep offset or a run of ties skips entries, not table rows
    // (ADR 0029).
    if dialect == SqlDialect::Sqlite && index.kind == IndexKind::Key {
        parts.push(dialect.quote("id"));
    }
    let kind = match index.kind {
        IndexKind::Key => "INDEX",
        IndexKind::Unique => "UNIQUE INDEX",
        IndexKind::Fulltext => "FULLTEXT INDEX",
        IndexKind::Spatial => return Ok(Vec::new()),
    };
    Ok(vec![format!(
        "CREATE {kind} {} ON {} ({})",
        dialect.quote(&index_name(dialect, table, &index.key)),
        dialect.quote(table),
        parts.join(", ")
    )])
}

/// The parts of a key or unique index: each column quoted, with its MariaDB
/// prefix and its declared order.
fn key_parts(dialect: SqlDialect, index: &Index, columns: &[IndexColumn<'_>]) -> Vec<String> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let mut part = dialect.quote(&column.name());
            if dialect == SqlDialect::MySql
                && let Some(prefix) = column.mysql_prefix(index.length(i))
            {
                part.push_str(&format!("({prefix})"));
            }
            match index.orders.get(i) {
                Some(IndexOrder::Asc) => part.push_str(" ASC"),
                Some(IndexOrder::Desc) => part.push_str(" DESC"),
                None => {}
            }
            part
        })
        .collect()
}

/// What decides the twin indexes of a collection (ADR 0022): whether it reads
/// per document, its stored columns, its indexes in the order they were made,
/// and how many reference keys its table holds.
pub struct TwinSource<'a> {
    pub document_security: bool,
    pub columns: &'a [Attribute],
    pub indexes: &'a [Index],
    pub references: usize,
}

/// A twin index: an index of a collection table led by [`READER_COLUMN`], so
/// that a reader's own documents are a range of it in an index's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    /// Its name in the database ([`twin_name`], [`READER_TWIN`]).
    pub name: String,
    /// `CREATE INDEX IF NOT EXISTS …`
    pub create: String,
    /// `DROP INDEX IF EXISTS …`
    pub drop: String,
}

/// The key of the collection's own twin on `(nimbus_reader, id)`, for lists
/// without a filter or order of their own. `s_…`, like the system indexes: no
/// user index (`i_…`) nor index twin (`r_…`) can take its name.
pub const READER_TWIN: &str = "reader";

/// The name of the twin of the user index `key`: `r_` in place of the `i_` of
/// [`index_name`], so it is unique wherever that one is and, on MariaDB, at
/// most 64 characters like it (a key has at most 62).
pub fn twin_name(dialect: SqlDialect, table: &str, key: &str) -> String {
    match dialect {
        SqlDialect::Sqlite => format!("r_{table}__{key}"),
        SqlDialect::MySql => format!("r_{key}"),
    }
}

/// The name of the collection's own twin ([`READER_TWIN`]).
pub fn collection_twin_name(dialect: SqlDialect, table: &str) -> String {
    match dialect {
        SqlDialect::Sqlite => format!("s_{table}__{READER_TWIN}"),
        SqlDialect::MySql => format!("s_{READER_TWIN}"),
    }
}

/// Whether `name`, an index of `table`, is one of its twins.
pub fn is_twin_name(dialect: SqlDialect, table: &str, name: &str) -> bool {
    name == collection_twin_name(dialect, table)
        || name
            .strip_prefix(&twin_name(dialect, table, ""))
            .is_some_and(is_valid_key)
}

/// The twins a collection has, a function of its metadata alone, the same on
/// both backends: none without `documentSecurity`; else the collection's own,
/// then one per key or unique index in the order they were made, each on
/// `(nimbus_reader, <the index's columns, prefixes and orders>, id)` and never
/// unique, while the table has room for another key ([`MAX_TABLE_KEYS`],
/// counting the built-in keys, every index and every reference key). A twin
/// wider than InnoDB's key limit is left out, as is every twin that finds no
/// room: twins only make lists cheaper, and a list reads the same rows
/// without them, so the indexes a user may make stay what they were.
pub fn reader_twins(
    dialect: SqlDialect,
    table: &str,
    source: &TwinSource<'_>,
) -> Result<Vec<Twin>, DdlError> {
    check_table_name(table)?;
    if !source.document_security {
        return Ok(Vec::new());
    }
    let room = MAX_TABLE_KEYS
        .saturating_sub(BUILT_IN_TABLE_KEYS + source.indexes.len() + source.references);
    let q = |name: &str| dialect.quote(name);
    let (t, reader, id) = (q(table), q(READER_COLUMN), q("id"));
    let twin = |name: String, parts: &str| Twin {
        create: format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({reader}, {parts})",
            q(&name)
        ),
        drop: drop_twin_sql(dialect, table, &name),
        name,
    };
    let mut twins = vec![twin(collection_twin_name(dialect, table), &id)];
    for index in source.indexes {
        if matches!(index.kind, IndexKind::Fulltext | IndexKind::Spatial) {
            continue;
        }
        let columns = index.resolve(source.columns)?;
        let has_id = columns.iter().any(|c| matches!(c, IndexColumn::Id));
        let width = READER_KEY_WIDTH
            + columns
                .iter()
                .enumerate()
                .map(|(i, column)| column.key_width(index.length(i)))
                .sum::<usize>()
            + if has_id {
                0
            } else {
                IndexColumn::Id.key_width(None)
            };
        if width > MAX_INDEX_KEY_WIDTH {
            continue;
        }
        let mut parts = key_parts(dialect, index, &columns);
        // A key names a column once (MariaDB refuses it twice).
        if !has_id {
            parts.push(id.clone());
        }
        twins.push(twin(
            twin_name(dialect, table, &index.key),
            &parts.join(", "),
        ));
    }
    twins.truncate(room);
    Ok(twins)
}

/// The statement dropping the twin `name` of `table`, if it exists.
pub fn drop_twin_sql(dialect: SqlDialect, table: &str, name: &str) -> String {
    match dialect {
        SqlDialect::Sqlite => format!("DROP INDEX IF EXISTS {}", dialect.quote(name)),
        SqlDialect::MySql => format!(
            "DROP INDEX IF EXISTS {} ON {}",
            dialect.quote(name),
            dialect.quote(table)
        ),
    }
}

/// Bytes of [`READER_COLUMN`] in a MariaDB key: 128 utf8mb4 characters and two
/// length bytes.
const READER_KEY_WIDTH: usize = 128 * 4 + 2;

/// The statements that take a collection's twins from those of `before` (none
/// for a new collection) to those of `after`: drops first (they make room for
/// the change's own keys, and SQLite cannot drop a column a twin covers), then
/// creates, to run after the change's own statements. Every statement is
/// idempotent (`IF [NOT] EXISTS`), so undoing or repeating one is safe.
pub fn twin_changes(
    dialect: SqlDialect,
    table: &str,
    before: Option<&TwinSource<'_>>,
    after: &TwinSource<'_>,
) -> Result<(Vec<Twin>, Vec<Twin>), DdlError> {
    let before = match before {
        Some(source) => reader_twins(dialect, table, source)?,
        None => Vec::new(),
    };
    let after = reader_twins(dialect, table, after)?;
    let dropped = before
        .iter()
        .filter(|old| !after.iter().any(|new| new.name == old.name))
        .cloned()
        .collect();
    let created = after
        .into_iter()
        .filter(|new| !before.iter().any(|old| old.name == new.name))
        .collect();
    Ok((dropped, created))
}

/// The statements dropping `index`: none for a full-text index on SQLite,
/// which was never created.
pub fn drop_index_sql(
    dialect: SqlDialect,
    table: &str,
    index: &Index,
) -> Result<Vec<String>, DdlError> {
    check_table_name(table)?;
    if !is_valid_key(&index.key) {
        return Err(index.invalid("not a valid index key"));
    }
    let name = dialect.quote(&index_name(dialect, table, &index.key));
    Ok(match (dialect, index.kind) {
        (_, IndexKind::Spatial) => match index.attributes.first() {
            Some(key) if is_valid_key(key) => drop_spatial_sql(dialect, table, key, index),
            _ => Vec::new(),
        },
        (SqlDialect::Sqlite, IndexKind::Fulltext) => match index.attributes.first() {
            Some(key) if is_valid_key(key) => {
                let q = |name: &str| dialect.quote(name);
                let mut statements: Vec<String> = ["ai", "ad", "au"]
                    .iter()
                    .map(|t| format!("DROP TRIGGER IF EXISTS {}", q(&fts_trigger(table, key, t))))
                    .collect();
                statements.push(format!(
                    "DROP TABLE IF EXISTS {}",
                    q(&fts_table(table, key))
                ));
                statements.push(format!(
                    "DROP TABLE IF EXISTS {}",
                    q(&fts_map_table(table, key))
                ));
                statements
            }
            _ => Vec::new(),
        },
        (SqlDialect::Sqlite, _) => vec![format!("DROP INDEX {name}")],
        (SqlDialect::MySql, IndexKind::Fulltext) => {
            let mut statements = vec![format!("DROP INDEX {name} ON {}", dialect.quote(table))];
            if let Some(key) = index.attributes.first().filter(|k| is_valid_key(k)) {
                statements.push(format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    dialect.quote(table),
                    dialect.quote(&search_column(key))
                ));
            }
            statements
        }
        (SqlDialect::MySql, _) => vec![format!("DROP INDEX {name} ON {}", dialect.quote(table))],
    })
}

#[cfg(test)]
mod tests {
    use super::super::model::test_support::attribute as attr;
    use super::super::model::test_support::{self, TestDb};
    use super::*;
    use serde_json::json;
    use sqlx::Row as _;

    fn collection() -> Vec<Attribute> {
        vec![
            Attribute {
                required: true,
                ..attr("title", AttributeKind::String { size: 100 })
            },
            Attribute {
                default: Some(json!("it's a \\ test")),
                ..attr("note", AttributeKind::String { size: 300 })
            },
            attr("body", AttributeKind::String { size: 20_000 }),
            Attribute {
                default: Some(json!(7)),
                ..attr(
                    "count",
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                default: Some(json!(-0.5)),
                ..attr(
                    "price",
                    AttributeKind::Float {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                default: Some(json!(true)),
                ..attr("done", AttributeKind::Boolean)
            },
            Attribute {
                default: Some(json!("1970-01-01T00:00:01Z")),
                ..attr("due", AttributeKind::Datetime)
            },
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
        ]
    }

    fn index(key: &str, kind: IndexKind, attributes: &[&str]) -> Index {
        Index {
            key: key.into(),
            kind,
            attributes: attributes.iter().map(|a| a.to_string()).collect(),
            orders: Vec::new(),
            lengths: Vec::new(),
        }
    }

    #[test]
    fn table_names_are_checked() {
        for good in ["c_3f2a9b", "docs", "C1"] {
            assert!(check_table_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "_c",
            "1c",
            "c-1",
            "c 1",
            "c;drop",
            "c__x",
            "c_",
            "c_perms",
            "C_PERMS",
            &"c".repeat(59),
            "c\"x",
        ] {
            assert_eq!(
                check_table_name(bad).unwrap_err().code(),
                "INTERNAL",
                "{bad}"
            );
            assert!(create_table_sql(SqlDialect::Sqlite, bad, &[]).is_err());
        }
    }

    #[test]
    fn mysql_create_table_text() {
        let attrs = vec![
            Attribute {
                required: true,
                ..attr("title", AttributeKind::String { size: 100 })
            },
            Attribute {
                default: Some(json!("it's a \\ test")),
                ..attr("note", AttributeKind::String { size: 20_000 })
            },
            Attribute {
                default: Some(json!(1.5e-7)),
                ..attr(
                    "price",
                    AttributeKind::Float {
                        min: None,
                        max: None,
                    },
                )
            },
            Attribute {
                default: Some(json!(false)),
                ..attr("done", AttributeKind::Boolean)
            },
            attr("due", AttributeKind::Datetime),
            attr(
                "n",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            ),
            attr("mail", AttributeKind::Email),
            attr("site", AttributeKind::Url),
            attr("addr", AttributeKind::Ip),
            attr(
                "status",
                AttributeKind::Enum {
                    elements: vec!["a".into()],
                },
            ),
            Attribute {
                array: true,
                ..attr(
                    "tags",
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                )
            },
        ];
        let sql = create_table_sql(SqlDialect::MySql, "c_1", &attrs).unwrap();
        let text = "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin";
        assert_eq!(
            sql,
            vec![
                format!(
                    "CREATE TABLE `c_1` (`id` VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                     `created_at` BIGINT NOT NULL, `updated_at` BIGINT NOT NULL, \
                     `nimbus_reader` VARCHAR(128), `rowid` BIGINT NOT NULL AUTO_INCREMENT, \
                     `a_title` VARCHAR(100) {text} NOT NULL, `a_note` LONGTEXT {text} DEFAULT 'it''s a \\\\ test', \
                     `a_price` DOUBLE DEFAULT 1.5e-7, `a_done` SMALLINT DEFAULT 0, \
                     `a_due` BIGINT, `a_n` BIGINT, `a_mail` VARCHAR(255) {text}, \
                     `a_site` VARCHAR(2048) {text}, `a_addr` VARCHAR(45) {text}, \
                     `a_status` VARCHAR(255) {text}, `a_tags` LONGTEXT {text}, \
                     PRIMARY KEY (`id`), KEY `s_created` (`created_at`, `id`), \
                     KEY `s_updated` (`updated_at`, `id`), KEY `s_sequence` (`rowid`)) \
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                ),
                "CREATE TABLE `c_1_perms` (`resource_id` VARCHAR(36) NOT NULL, \
                 `role` VARCHAR(128) NOT NULL, `actions` SMALLINT NOT NULL, \
                 `sole` SMALLINT NOT NULL DEFAULT 0, PRIMARY KEY (`resource_id`, `role`), \
                 KEY `s_role` (`role`, `sole`, `resource_id`, `actions`), CONSTRAINT `f_c_1` FOREIGN KEY (`resource_id`) REFERENCES `c_1` (`id`) \
                 ON DELETE CASCADE) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                    .to_string(),
            ]
        );
        assert_eq!(
            drop_table_sql(SqlDialect::MySql, "c_1").unwrap(),
            ["DROP TABLE `c_1_perms`", "DROP TABLE `c_1`"]
        );
    }

    #[test]
    fn mysql_column_and_index_text() {
        let attrs = collection();
        let new = Attribute {
            required: true,
            ..attr(
                "rank",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            )
        };
        assert_eq!(
            add_column_sql(SqlDialect::MySql, "c_1", &attrs, &new).unwrap(),
            ["ALTER TABLE `c_1` ADD COLUMN `a_rank` BIGINT NOT NULL"]
        );
        let idx = Index {
            orders: vec![
                IndexOrder::Asc,
                IndexOrder::Desc,
                IndexOrder::Asc,
                IndexOrder::Asc,
            ],
            ..index(
                "by_title",
                IndexKind::Unique,
                &["title", "note", "addr", "$createdAt"],
            )
        };
        assert_eq!(
            create_index_sql(SqlDialect::MySql, "c_1", &attrs, &idx).unwrap(),
            ["CREATE UNIQUE INDEX `i_by_title` ON `c_1` \
              (`a_title` ASC, `a_note`(191) DESC, `a_addr` ASC, `created_at` ASC)"]
        );
        let long = index("by_body", IndexKind::Key, &["body", "mail", "site"]);
        assert_eq!(
            create_index_sql(SqlDialect::MySql, "c_1", &attrs, &long).unwrap(),
            ["CREATE INDEX `i_by_body` ON `c_1` (`a_body`(191), `a_mail`(191), `a_site`(191))"]
        );
        // On SQLite a key index ends with the id, as InnoDB's end with the
        // primary key: lists order by their attributes, then id. A unique one
        // does not (it would no longer be unique).
        assert_eq!(
            create_index_sql(SqlDialect::Sqlite, "c_1", &attrs, &long).unwrap(),
            [
                "CREATE INDEX \"i_c_1__by_body\" ON \"c_1\" (\"a_body\", \"a_mail\", \"a_site\", \"id\")"
            ]
        );
        assert_eq!(
            create_index_sql(SqlDialect::Sqlite, "c_1", &attrs, &idx).unwrap(),
            ["CREATE UNIQUE INDEX \"i_c_1__by_title\" ON \"c_1\" \
              (\"a_title\" ASC, \"a_note\" DESC, \"a_addr\" ASC, \"created_at\" ASC)"]
        );
        let two = index("search", IndexKind::Fulltext, &["body", "title"]);
        assert!(create_index_sql(SqlDialect::MySql, "c_1", &attrs, &two).is_err());
        let ft = index("search", IndexKind::Fulltext, &["body"]);
        assert_eq!(
            create_index_sql(SqlDialect::MySql, "c_1", &attrs, &ft).unwrap(),
            [
                "ALTER TABLE `c_1` ADD COLUMN `s_body` LONGTEXT CHARACTER SET utf8mb4 \
                 COLLATE utf8mb4_unicode_ci AS (`a_body`) STORED",
                "CREATE FULLTEXT INDEX `i_search` ON `c_1` (`s_body`)"
            ]
        );
        assert_eq!(
            drop_index_sql(SqlDialect::MySql, "c_1", &ft).unwrap(),
            [
                "DROP INDEX `i_search` ON `c_1`",
                "ALTER TABLE `c_1` DROP COLUMN `s_body`"
            ]
        );
        assert_eq!(
            drop_column_sql(
                SqlDialect::MySql,
                "c_1",
                "body",
                &[idx.clone(), long.clone(), ft.clone()]
            )
            .unwrap(),
            [
                "DROP INDEX `i_by_body` ON `c_1`",
                "DROP INDEX `i_search` ON `c_1`",
                "ALTER TABLE `c_1` DROP COLUMN `s_body`",
                "ALTER TABLE `c_1` DROP COLUMN `a_body`"
            ]
        );
        // SQLite: an FTS5 table, its map to documents and three triggers.
        let created = create_index_sql(SqlDialect::Sqlite, "c_1", &attrs, &ft).unwrap();
        assert!(created[0].starts_with("CREATE VIRTUAL TABLE \"c_1_fts_body\" USING fts5"));
        assert_eq!(created.len(), 7);
        assert_eq!(
            drop_index_sql(SqlDialect::Sqlite, "c_1", &ft).unwrap(),
            [
                "DROP TRIGGER IF EXISTS \"c_1_fts_body_ai\"",
                "DROP TRIGGER IF EXISTS \"c_1_fts_body_ad\"",
                "DROP TRIGGER IF EXISTS \"c_1_fts_body_au\"",
                "DROP TABLE IF EXISTS \"c_1_fts_body\"",
                "DROP TABLE IF EXISTS \"c_1_ftm_body\""
            ]
        );
        assert!(fulltext_index_covers(
            &[ft.clone(), index("b", IndexKind::Fulltext, &["body"])],
            "body"
        ));
        assert!(fulltext_index_covers(&[ft], "body"));
        assert!(!fulltext_index_covers(
            &[index("two", IndexKind::Fulltext, &["body", "title"])],
            "body"
        ));
    }

    #[test]
    fn indexes_are_validated() {
        let attrs = collection();
        let cases = [
            index("bad-key", IndexKind::Key, &["title"]),
            index("none", IndexKind::Key, &[]),
            index(
                "nine",
                IndexKind::Key,
                &[
                    "title",
                    "count",
                    "price",
                    "done",
                    "due",
                    "addr",
                    "$id",
                    "$createdAt",
                    "$updatedAt",
                ],
            ),
            index("missing", IndexKind::Key, &["nope"]),
            index("twice", IndexKind::Key, &["title", "title"]),
            Index {
                orders: vec![IndexOrder::Asc],
                ..index("orders", IndexKind::Key, &["title", "count"])
            },
            index("ft_int", IndexKind::Fulltext, &["count"]),
            index("ft_arr", IndexKind::Fulltext, &["tags"]),
            index("ft_sys", IndexKind::Fulltext, &["$id"]),
            Index {
                orders: vec![IndexOrder::Asc],
                ..index("ft_order", IndexKind::Fulltext, &["title"])
            },
            index("arr", IndexKind::Unique, &["tags"]),
            index(
                "wide",
                IndexKind::Key,
                &["note", "body", "mail", "site", "status"],
            ),
        ];
        for idx in cases {
            let err = idx.validate(&attrs).unwrap_err();
            assert_eq!(err.code(), "INDEX_INVALID", "{idx:?}");
            assert!(create_index_sql(SqlDialect::Sqlite, "c_1", &attrs, &idx).is_err());
        }
        let fine = index("four", IndexKind::Key, &["note", "body", "mail", "site"]);
        assert!(fine.validate(&attrs).is_ok());
        let twins = [
            index("a", IndexKind::Key, &["title"]),
            index("A", IndexKind::Key, &["count"]),
        ];
        assert_eq!(
            validate_indexes(&twins, &attrs).unwrap_err().code(),
            "INDEX_INVALID"
        );
    }

    /// Appwrite's `lengths`: a MariaDB prefix of each string attribute given one,
    /// counted in the key's width; refused on other kinds, past the attribute's
    /// size, more than the attributes, or on full-text and spatial indexes.
    #[test]
    fn index_lengths_are_prefixes_of_string_attributes() {
        let attrs = collection();
        let with = |key: &str, kind, attributes: &[&str], lengths: &[Option<u32>]| Index {
            lengths: lengths.to_vec(),
            ..index(key, kind, attributes)
        };
        let sql = |idx: &Index| create_index_sql(SqlDialect::MySql, "c_1", &attrs, idx).unwrap();
        assert_eq!(
            sql(&with(
                "pair",
                IndexKind::Key,
                &["title", "body", "count"],
                &[Some(40), Some(500)]
            )),
            ["CREATE INDEX `i_pair` ON `c_1` (`a_title`(40), `a_body`(500), `a_count`)"]
        );
        // A length the column does not exceed indexes it whole; none keeps the
        // default prefix of a long column.
        assert_eq!(
            sql(&with(
                "whole",
                IndexKind::Unique,
                &["title", "note"],
                &[Some(100), None]
            )),
            ["CREATE UNIQUE INDEX `i_whole` ON `c_1` (`a_title`, `a_note`(191))"]
        );
        assert_eq!(
            create_index_sql(
                SqlDialect::Sqlite,
                "c_1",
                &attrs,
                &with("pair", IndexKind::Key, &["title"], &[Some(40)])
            )
            .unwrap(),
            ["CREATE INDEX \"i_c_1__pair\" ON \"c_1\" (\"a_title\", \"id\")"]
        );
        // 3 × 256 characters and more are wider than InnoDB's 3,072 bytes.
        let wide = with(
            "wide",
            IndexKind::Key,
            &["note", "body", "count"],
            &[Some(256), Some(512)],
        );
        let fine = with(
            "fine",
            IndexKind::Key,
            &["note", "body"],
            &[Some(256), Some(500)],
        );
        assert!(fine.validate(&attrs).is_ok());
        for idx in [
            wide,
            with("int", IndexKind::Key, &["count"], &[Some(4)]),
            with("sys", IndexKind::Key, &["$id"], &[Some(4)]),
            with("past", IndexKind::Key, &["title"], &[Some(101)]),
            with("more", IndexKind::Key, &["title"], &[Some(10), Some(10)]),
            with("text", IndexKind::Fulltext, &["body"], &[Some(10)]),
        ] {
            let err = idx.validate(&attrs).unwrap_err();
            assert_eq!(err.code(), "INDEX_INVALID", "{idx:?}");
        }
        // Stored only when given: the metadata of indexes made before is unchanged.
        let plain = serde_json::to_value(index("p", IndexKind::Key, &["title"])).unwrap();
        assert!(plain.get("lengths").is_none(), "{plain}");
    }

    #[test]
    fn rows_must_fit_in_a_mariadb_row() {
        let (fit, too_big) = row_limit_edges();
        for attrs in &fit {
            if let Err(e) = create_table_sql(SqlDialect::Sqlite, "c_1", attrs) {
                panic!("{} attributes: {e}", attrs.len());
            }
        }
        for attrs in &too_big {
            let err = create_table_sql(SqlDialect::Sqlite, "c_1", attrs).unwrap_err();
            assert_eq!(
                err.code(),
                "ATTRIBUTE_LIMIT_EXCEEDED",
                "{} attributes",
                attrs.len()
            );
            let (last, rest) = attrs.split_last().unwrap();
            let err = add_column_sql(SqlDialect::MySql, "c_1", rest, last).unwrap_err();
            assert_eq!(err.code(), "ATTRIBUTE_LIMIT_EXCEEDED");
        }
        // 161 bytes of system columns and 514 of the sole reader, 4 bytes a
        // character plus 2, one bitmap byte.
        assert_eq!(row_width(&fit[0]), 65_534);
        assert_eq!(in_page_size(&fit[1]), 8122);
        let dup = attr("TITLE", AttributeKind::Boolean);
        assert_eq!(
            add_column_sql(SqlDialect::Sqlite, "c_1", &collection(), &dup)
                .unwrap_err()
                .code(),
            "ATTRIBUTE_INVALID"
        );
    }

    /// Collections at the edges of MariaDB's row limits: the largest that fit,
    /// and the same with one more attribute (or character). The MariaDB test
    /// creates the first ones for real.
    fn row_limit_edges() -> (Vec<Vec<Attribute>>, Vec<Vec<Attribute>>) {
        let many = |n: usize, kind: AttributeKind| -> Vec<Attribute> {
            (0..n)
                .map(|i| attr(&format!("a{i}"), kind.clone()))
                .collect()
        };
        let int = AttributeKind::Integer {
            min: None,
            max: None,
        };
        let long = AttributeKind::String { size: 20_000 };
        let fit = vec![
            many(1, AttributeKind::String { size: 16_212 }),
            many(974, int.clone()),
            many(43, AttributeKind::Ip),
            many(374, long.clone()),
            many(63, AttributeKind::Email),
            [
                many(20, AttributeKind::String { size: 63 }),
                vec![attr("flag", AttributeKind::Boolean)],
            ]
            .concat(),
        ];
        let too_big = vec![
            many(1, AttributeKind::String { size: 16_213 }),
            many(975, int),
            many(44, AttributeKind::Ip),
            many(375, long),
            many(64, AttributeKind::Email),
            many(32, AttributeKind::String { size: 63 }),
        ];
        (fit, too_big)
    }

    async fn run(pool: &sqlx::AnyPool, statements: &[String]) {
        for statement in statements {
            sqlx::query(statement)
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    async fn fails(pool: &sqlx::AnyPool, sql: &str) -> bool {
        sqlx::query(sql).execute(pool).await.is_err()
    }

    /// The index names of a table, sorted by byte.
    #[test]
    fn a_changed_column_is_redefined_on_mariadb_and_made_again_on_sqlite_only_when_it_must() {
        let required = Attribute {
            required: true,
            ..attr("title", AttributeKind::String { size: 20 })
        };
        let optional = Attribute {
            required: false,
            ..required.clone()
        };
        let renamed = Attribute {
            key: "heading".into(),
            ..required.clone()
        };
        let longer = Attribute {
            kind: AttributeKind::String { size: 40 },
            ..required.clone()
        };
        let change = |dialect, old: &Attribute, new: &Attribute| {
            change_column_sql(dialect, "c_1", std::slice::from_ref(new), old, new).unwrap()
        };
        let (run, undo) = change(SqlDialect::MySql, &required, &renamed);
        assert_eq!(
            run,
            [
                "ALTER TABLE `c_1` CHANGE COLUMN `a_title` `a_heading` VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"
            ]
        );
        assert_eq!(
            undo,
            [
                "ALTER TABLE `c_1` CHANGE COLUMN `a_heading` `a_title` VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"
            ]
        );
        assert_eq!(change(SqlDialect::MySql, &required, &required).0.len(), 0);
        assert_eq!(change(SqlDialect::MySql, &required, &longer).0.len(), 1);
        // SQLite keeps no size, and renames in place.
        assert!(change(SqlDialect::Sqlite, &required, &longer).0.is_empty());
        assert_eq!(
            change(SqlDialect::Sqlite, &required, &renamed).0,
            ["ALTER TABLE \"c_1\" RENAME COLUMN \"a_title\" TO \"a_heading\""]
        );
        // Its NOT NULL cannot be dropped: the column is made again.
        assert_eq!(
            change(SqlDialect::Sqlite, &required, &optional).0,
            [
                "ALTER TABLE \"c_1\" RENAME COLUMN \"a_title\" TO \"nimbus_swap\"",
                "ALTER TABLE \"c_1\" ADD COLUMN \"a_title\" TEXT",
                "UPDATE \"c_1\" SET \"a_title\" = \"nimbus_swap\"",
                "ALTER TABLE \"c_1\" DROP COLUMN \"nimbus_swap\"",
            ]
        );
        // The new attribute must be among the columns, which must fit.
        assert!(change_column_sql(SqlDialect::Sqlite, "c_1", &[], &required, &optional).is_err());
    }

    #[test]
    fn a_new_default_fills_the_documents_without_a_value() {
        let with_default = Attribute {
            default: Some(json!("it's")),
            ..attr("note", AttributeKind::String { size: 20 })
        };
        assert_eq!(
            fill_default_sql(SqlDialect::Sqlite, "c_1", &with_default).as_deref(),
            Some("UPDATE \"c_1\" SET \"a_note\" = 'it''s' WHERE \"a_note\" IS NULL")
        );
        let without = attr("note", AttributeKind::String { size: 20 });
        assert_eq!(fill_default_sql(SqlDialect::MySql, "c_1", &without), None);
    }

    async fn index_names(db: &TestDb, table: &str) -> Vec<String> {
        let sql = match db.dialect {
            SqlDialect::Sqlite => "SELECT name FROM pragma_index_list(?)",
            SqlDialect::MySql => {
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
            }
        };
        sqlx::query(sql)
            .bind(table)
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The DDL of one dialect, run: defaults, required, added and dropped
    /// columns, indexes, the side table's keys and cascade, dropping it all.
    async fn ddl_runs_and_behaves(db: TestDb) {
        let (dialect, pool) = (db.dialect, db.pool.clone());
        let mut attrs = collection();
        run(&pool, &create_table_sql(dialect, "c_1", &attrs).unwrap()).await;

        // Defaults fill what an insert leaves out; required is enforced.
        run(
            &pool,
            &[
                "INSERT INTO c_1 (id, created_at, updated_at, a_title) VALUES ('d1', 1, 1, 't')"
                    .into(),
            ],
        )
        .await;
        let row = sqlx::query("SELECT * FROM c_1 WHERE id = 'd1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        let value = |key: &str| {
            attrs
                .iter()
                .find(|a| a.key == key)
                .unwrap()
                .from_sql(&row)
                .unwrap()
        };
        assert_eq!(value("note"), json!("it's a \\ test"));
        assert_eq!(value("count"), json!(7));
        assert_eq!(value("price"), json!(-0.5));
        assert_eq!(value("done"), json!(true));
        assert_eq!(value("due"), json!("1970-01-01T00:00:01.000Z"));
        assert_eq!(value("mail"), json!(null));
        assert!(
            fails(
                &pool,
                "INSERT INTO c_1 (id, created_at, updated_at) VALUES ('d2', 1, 1)"
            )
            .await
        );

        // A new column with a default fills the existing rows.
        let extra = Attribute {
            default: Some(json!("x'y")),
            ..attr("extra", AttributeKind::String { size: 10 })
        };
        run(
            &pool,
            &add_column_sql(dialect, "c_1", &attrs, &extra).unwrap(),
        )
        .await;
        attrs.push(extra);
        let got: String = sqlx::query_scalar("SELECT a_extra FROM c_1 WHERE id = 'd1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(got, "x'y");

        // A required column: SQLite checks the rows already there; MariaDB would
        // fill them with 0, which is why the caller refuses a non-empty table.
        let rank = Attribute {
            required: true,
            ..attr(
                "rank",
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            )
        };
        let add_rank = add_column_sql(dialect, "c_1", &attrs, &rank).unwrap();
        if dialect == SqlDialect::Sqlite {
            assert!(fails(&pool, &add_rank[0]).await, "rows without rank exist");
        }
        run(&pool, &["DELETE FROM c_1".into()]).await;
        run(&pool, &add_rank).await;
        attrs.push(rank);
        assert!(
            fails(
                &pool,
                "INSERT INTO c_1 (id, created_at, updated_at, a_title) VALUES ('d3', 1, 1, 't')"
            )
            .await
        );

        // A unique index refuses duplicates; the permission rows go with their document.
        let unique = Index {
            orders: vec![IndexOrder::Desc, IndexOrder::Asc],
            ..index("uniq", IndexKind::Unique, &["title", "rank"])
        };
        let by_note = index("by_note", IndexKind::Key, &["note", "$createdAt"]);
        let search = index("search", IndexKind::Fulltext, &["body"]);
        let long = index("long", IndexKind::Key, &["body", "mail", "site", "addr"]);
        for idx in [&unique, &by_note, &search, &long] {
            run(
                &pool,
                &create_index_sql(dialect, "c_1", &attrs, idx).unwrap(),
            )
            .await;
        }
        let insert = "INSERT INTO c_1 (id, created_at, updated_at, a_title, a_rank) VALUES (?, 1, 1, 't', 1)";
        sqlx::query(insert).bind("d4").execute(&pool).await.unwrap();
        assert!(sqlx::query(insert).bind("d5").execute(&pool).await.is_err());
        let grant = "INSERT INTO c_1_perms (resource_id, role, actions) VALUES (?, 'any', 1)";
        sqlx::query(grant).bind("d4").execute(&pool).await.unwrap();
        assert!(sqlx::query(grant).bind("d4").execute(&pool).await.is_err());
        assert!(
            sqlx::query(grant)
                .bind("nope")
                .execute(&pool)
                .await
                .is_err()
        );
        run(&pool, &["DELETE FROM c_1 WHERE id = 'd4'".into()]).await;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM c_1_perms")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0);

        // On MariaDB a unique index on a long string compares its first 191
        // characters only (documented on INDEX_PREFIX_CHARS).
        let unique_note = index("unote", IndexKind::Unique, &["note"]);
        run(
            &pool,
            &create_index_sql(dialect, "c_1", &attrs, &unique_note).unwrap(),
        )
        .await;
        let noted = "INSERT INTO c_1 (id, created_at, updated_at, a_title, a_rank, a_note) \
                     VALUES (?, 1, 1, ?, 1, ?)";
        for (id, tail) in [("n1", "a"), ("n2", "b")] {
            let result = sqlx::query(noted)
                .bind(id)
                .bind(id)
                .bind(format!("{}{tail}", "x".repeat(191)))
                .execute(&pool)
                .await;
            assert_eq!(
                result.is_ok(),
                id == "n1" || dialect == SqlDialect::Sqlite,
                "{id}"
            );
        }
        run(
            &pool,
            &drop_index_sql(dialect, "c_1", &unique_note).unwrap(),
        )
        .await;

        // SQLite refuses to drop an indexed column (and MariaDB would narrow a
        // composite index), so the indexes go first.
        if dialect == SqlDialect::Sqlite {
            assert!(fails(&pool, "ALTER TABLE c_1 DROP COLUMN a_title").await);
        }
        let indexes = [
            unique.clone(),
            by_note.clone(),
            search.clone(),
            long.clone(),
        ];
        let drop = drop_column_sql(dialect, "c_1", "title", &indexes).unwrap();
        assert_eq!(drop.len(), 2);
        run(&pool, &drop).await;
        run(
            &pool,
            &drop_column_sql(dialect, "c_1", "body", &indexes).unwrap(),
        )
        .await;
        run(
            &pool,
            &drop_column_sql(dialect, "c_1", "rank", &[]).unwrap(),
        )
        .await;
        let expected: &[&str] = match dialect {
            SqlDialect::Sqlite => &[
                "i_c_1__by_note",
                "s_c_1__created",
                "s_c_1__updated",
                "sqlite_autoindex_c_1_1",
            ],
            SqlDialect::MySql => &[
                "PRIMARY",
                "i_by_note",
                "s_created",
                "s_sequence",
                "s_updated",
            ],
        };
        assert_eq!(index_names(&db, "c_1").await, expected);
        run(&pool, &drop_index_sql(dialect, "c_1", &by_note).unwrap()).await;
        run(&pool, &drop_table_sql(dialect, "c_1").unwrap()).await;
        let tables_sql = match dialect {
            SqlDialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master",
            SqlDialect::MySql => {
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
            }
        };
        let tables: i64 = sqlx::query_scalar(tables_sql)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(tables, 0);
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_ddl_runs_and_behaves() {
        ddl_runs_and_behaves(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_ddl_runs_and_behaves() {
        if let Some(db) = test_support::mariadb().await {
            ddl_runs_and_behaves(db).await;
        }
    }

    #[test]
    fn twins_are_named_apart_from_every_other_index() {
        let key = "k".repeat(62);
        assert!(is_valid_key(&key));
        assert_eq!(twin_name(SqlDialect::MySql, "c_1", &key).len(), 64);
        assert_eq!(twin_name(SqlDialect::Sqlite, "c_1", "k"), "r_c_1__k");
        assert_eq!(collection_twin_name(SqlDialect::MySql, "c_1"), "s_reader");
        for dialect in [SqlDialect::Sqlite, SqlDialect::MySql] {
            let twin = twin_name(dialect, "c_1", "k");
            assert_ne!(twin, index_name(dialect, "c_1", "k"));
            assert!(is_twin_name(dialect, "c_1", &twin));
            assert!(is_twin_name(
                dialect,
                "c_1",
                &collection_twin_name(dialect, "c_1")
            ));
            for other in [
                index_name(dialect, "c_1", "k"),
                "s_created".into(),
                "s_c_1__created".into(),
                "PRIMARY".into(),
            ] {
                assert!(!is_twin_name(dialect, "c_1", &other), "{other}");
            }
        }
        // SQLite's names are global: another table's twins are not this one's.
        assert!(!is_twin_name(
            SqlDialect::Sqlite,
            "c_1",
            &twin_name(SqlDialect::Sqlite, "c_2", "k")
        ));
        // Without documentSecurity, none.
        let attrs = collection();
        let indexes = [index("by_title", IndexKind::Key, &["title"])];
        let source = |document_security| TwinSource {
            document_security,
            columns: &attrs,
            indexes: &indexes,
            references: 0,
        };
        assert!(
            reader_twins(SqlDialect::Sqlite, "c_1", &source(false))
                .unwrap()
                .is_empty()
        );
        let twins = reader_twins(SqlDialect::MySql, "c_1", &source(true)).unwrap();
        assert_eq!(
            twins.iter().map(|t| t.create.as_str()).collect::<Vec<_>>(),
            [
                "CREATE INDEX IF NOT EXISTS `s_reader` ON `c_1` (`nimbus_reader`, `id`)",
                "CREATE INDEX IF NOT EXISTS `r_by_title` ON `c_1` (`nimbus_reader`, `a_title`, `id`)"
            ]
        );
    }

    /// Each key as [`index_names`] lists it, for a twin its column parts:
    /// `(column, descending, MariaDB prefix)`.
    async fn index_parts(db: &TestDb, table: &str, name: &str) -> Vec<(String, bool, Option<i64>)> {
        match db.dialect {
            SqlDialect::Sqlite => sqlx::query_as::<_, (String, i64)>(
                "SELECT name, \"desc\" FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno",
            )
            .bind(name)
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(column, desc)| (column, desc != 0, None))
            .collect(),
            SqlDialect::MySql => sqlx::query_as::<_, (String, Option<String>, Option<i64>)>(
                "SELECT COLUMN_NAME, COLLATION, CAST(SUB_PART AS SIGNED) \
                 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ? AND INDEX_NAME = ? ORDER BY SEQ_IN_INDEX",
            )
            .bind(table)
            .bind(name)
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(column, order, prefix)| (column, order.as_deref() == Some("D"), prefix))
            .collect(),
        }
    }

    /// A table's twins, as the keys they twin (`reader` for the collection's),
    /// sorted.
    async fn twins_of(db: &TestDb, table: &str) -> Vec<String> {
        let own = collection_twin_name(db.dialect, table);
        let prefix = twin_name(db.dialect, table, "");
        let mut keys: Vec<String> = index_names(db, table)
            .await
            .into_iter()
            .filter(|name| is_twin_name(db.dialect, table, name))
            .map(|name| {
                if name == own {
                    READER_TWIN.to_string()
                } else {
                    name[prefix.len()..].to_string()
                }
            })
            .collect();
        keys.sort();
        keys
    }

    fn secured<'a>(
        document_security: bool,
        columns: &'a [Attribute],
        indexes: &'a [Index],
    ) -> TwinSource<'a> {
        TwinSource {
            document_security,
            columns,
            indexes,
            references: 0,
        }
    }

    /// A structural change as `structure` runs it: the twins `before` has and
    /// `after` lacks dropped, the change's own statements, the twins `after`
    /// adds made.
    async fn change(
        db: &TestDb,
        table: &str,
        before: Option<&TwinSource<'_>>,
        after: &TwinSource<'_>,
        own: &[String],
    ) {
        let (dropped, created) = twin_changes(db.dialect, table, before, after).unwrap();
        let mut statements: Vec<String> = dropped.into_iter().map(|t| t.drop).collect();
        statements.extend_from_slice(own);
        statements.extend(created.into_iter().map(|t| t.create));
        run(&db.pool, &statements).await;
    }

    /// Twins made and dropped with their indexes and with `documentSecurity`,
    /// in their index's orders and MariaDB prefixes; none for a full-text
    /// index or one too wide to take the sole reader.
    async fn twins_follow_indexes(db: TestDb) {
        let dialect = db.dialect;
        let attrs = collection();
        let mut statements = create_table_sql(dialect, "c_1", &attrs).unwrap();
        let (_, created) = twin_changes(dialect, "c_1", None, &secured(true, &attrs, &[])).unwrap();
        statements.extend(created.into_iter().map(|t| t.create));
        run(&db.pool, &statements).await;
        assert_eq!(twins_of(&db, "c_1").await, ["reader"]);

        // Each index in turn, as `createIndex` makes them.
        let all = [
            Index {
                orders: vec![IndexOrder::Desc, IndexOrder::Asc],
                ..index("uniq", IndexKind::Unique, &["title", "count"])
            },
            Index {
                orders: vec![IndexOrder::Desc],
                ..index("by_note", IndexKind::Key, &["note"])
            },
            index("search", IndexKind::Fulltext, &["body"]),
            // 766 + 766 + 766 + 158 bytes: no room for the sole reader's 514
            // and the id's 146.
            index("long", IndexKind::Key, &["body", "mail", "site", "addr"]),
            index("by_id", IndexKind::Key, &["$id", "count"]),
        ];
        for n in 1..=all.len() {
            let own = create_index_sql(dialect, "c_1", &attrs, &all[n - 1]).unwrap();
            change(
                &db,
                "c_1",
                Some(&secured(true, &attrs, &all[..n - 1])),
                &secured(true, &attrs, &all[..n]),
                &own,
            )
            .await;
        }
        let made = ["by_id", "by_note", "reader", "uniq"];
        assert_eq!(twins_of(&db, "c_1").await, made);
        // The user's indexes are all there.
        let users: Vec<String> = index_names(&db, "c_1")
            .await
            .into_iter()
            .filter(|n| n.starts_with("i_"))
            .collect();
        assert_eq!(users.len(), 4 + usize::from(dialect == SqlDialect::MySql));
        let prefix = match dialect {
            SqlDialect::Sqlite => None,
            SqlDialect::MySql => Some(191),
        };
        let part = |c: &str, desc: bool, prefix: Option<i64>| (c.to_string(), desc, prefix);
        assert_eq!(
            index_parts(&db, "c_1", &twin_name(dialect, "c_1", "by_note")).await,
            [
                part("nimbus_reader", false, None),
                part("a_note", true, prefix),
                part("id", false, None)
            ]
        );
        assert_eq!(
            index_parts(&db, "c_1", &twin_name(dialect, "c_1", "uniq")).await,
            [
                part("nimbus_reader", false, None),
                part("a_title", true, None),
                part("a_count", false, None),
                part("id", false, None)
            ]
        );
        // Named once when the index has it.
        assert_eq!(
            index_parts(&db, "c_1", &twin_name(dialect, "c_1", "by_id")).await,
            [
                part("nimbus_reader", false, None),
                part("id", false, None),
                part("a_count", false, None)
            ]
        );
        // A twin never refuses what its index accepts.
        let insert = "INSERT INTO c_1 (id, created_at, updated_at, a_title, a_count, nimbus_reader) \
                      VALUES (?, 1, 1, ?, 1, 'user:u1')";
        sqlx::query(insert)
            .bind("d1")
            .bind("a")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(insert)
            .bind("d2")
            .bind("b")
            .execute(&db.pool)
            .await
            .unwrap();

        // Dropped with its index, or with the column its index covers.
        let without_uniq = &all[1..];
        change(
            &db,
            "c_1",
            Some(&secured(true, &attrs, &all)),
            &secured(true, &attrs, without_uniq),
            &drop_index_sql(dialect, "c_1", &all[0]).unwrap(),
        )
        .await;
        assert_eq!(twins_of(&db, "c_1").await, ["by_id", "by_note", "reader"]);
        let without_note = &all[2..];
        change(
            &db,
            "c_1",
            Some(&secured(true, &attrs, without_uniq)),
            &secured(true, &attrs, without_note),
            &drop_column_sql(dialect, "c_1", "note", without_uniq).unwrap(),
        )
        .await;
        assert_eq!(twins_of(&db, "c_1").await, ["by_id", "reader"]);

        // documentSecurity off: none; on again: all of them.
        change(
            &db,
            "c_1",
            Some(&secured(true, &attrs, without_note)),
            &secured(false, &attrs, without_note),
            &[],
        )
        .await;
        assert!(twins_of(&db, "c_1").await.is_empty());
        change(
            &db,
            "c_1",
            Some(&secured(false, &attrs, without_note)),
            &secured(true, &attrs, without_note),
            &[],
        )
        .await;
        assert_eq!(twins_of(&db, "c_1").await, ["by_id", "reader"]);
        run(&db.pool, &drop_table_sql(dialect, "c_1").unwrap()).await;
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_twins_follow_indexes() {
        twins_follow_indexes(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_twins_follow_indexes() {
        if let Some(db) = test_support::mariadb().await {
            twins_follow_indexes(db).await;
        }
    }

    /// The indexes `n` distinct key shapes over eight integer attributes can be.
    fn distinct_indexes(n: usize) -> Vec<Index> {
        let singles = (0..8).map(|a| vec![a]);
        let pairs = (0..8).flat_map(|a| (0..8).filter(move |b| *b != a).map(move |b| vec![a, b]));
        singles
            .chain(pairs)
            .take(n)
            .enumerate()
            .map(|(i, attrs)| {
                let keys: Vec<String> = attrs.iter().map(|a| format!("n{a}")).collect();
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                index(&format!("k{i}"), IndexKind::Key, &keys)
            })
            .collect()
    }

    /// Twins take only the keys the table has left: at the limit of its own
    /// indexes a table has none, and every user index is still made.
    async fn twins_take_only_the_keys_left(db: TestDb) {
        let dialect = db.dialect;
        let int = AttributeKind::Integer {
            min: None,
            max: None,
        };
        let mut attrs: Vec<Attribute> = (0..8)
            .map(|a| attr(&format!("n{a}"), int.clone()))
            .collect();
        attrs.push(attr("body", AttributeKind::String { size: 20_000 }));
        let mut indexes = distinct_indexes(57);
        // A full-text index is a key of the table on MariaDB, and counts.
        indexes.insert(1, index("words", IndexKind::Fulltext, &["body"]));
        let source = |indexes: &[Index], references| {
            reader_twins(
                dialect,
                "c_2",
                &TwinSource {
                    document_security: true,
                    columns: &attrs,
                    indexes,
                    references,
                },
            )
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
        };
        // 58 of its own: room for two twins, the collection's and the first index's.
        assert_eq!(
            source(&indexes, 0),
            [
                collection_twin_name(dialect, "c_2"),
                twin_name(dialect, "c_2", "k0")
            ]
        );
        assert_eq!(source(&indexes, 1), [collection_twin_name(dialect, "c_2")]);
        assert!(source(&indexes, 2).is_empty());
        let mut statements = create_table_sql(dialect, "c_2", &attrs).unwrap();
        for index in &indexes {
            statements.extend(create_index_sql(dialect, "c_2", &attrs, index).unwrap());
        }
        let (_, created) =
            twin_changes(dialect, "c_2", None, &secured(true, &attrs, &indexes)).unwrap();
        statements.extend(created.into_iter().map(|t| t.create));
        run(&db.pool, &statements).await;
        assert_eq!(twins_of(&db, "c_2").await, ["k0", "reader"]);
        // The 60th and 61st: each takes a twin's key.
        let more = distinct_indexes(61);
        for next in &more[58..60] {
            let before = indexes.clone();
            indexes.push(next.clone());
            change(
                &db,
                "c_2",
                Some(&secured(true, &attrs, &before)),
                &secured(true, &attrs, &indexes),
                &create_index_sql(dialect, "c_2", &attrs, next).unwrap(),
            )
            .await;
        }
        assert!(twins_of(&db, "c_2").await.is_empty());
        assert_eq!(
            index_names(&db, "c_2").await.len(),
            // SQLite has no FTS index, and its sequence is the row id, no key.
            MAX_TABLE_KEYS - 2 * usize::from(dialect == SqlDialect::Sqlite)
        );
        // One dropped: its key goes to the collection's twin.
        let before = indexes.clone();
        let gone = indexes.remove(0);
        change(
            &db,
            "c_2",
            Some(&secured(true, &attrs, &before)),
            &secured(true, &attrs, &indexes),
            &drop_index_sql(dialect, "c_2", &gone).unwrap(),
        )
        .await;
        assert_eq!(twins_of(&db, "c_2").await, ["reader"]);
        run(&db.pool, &drop_table_sql(dialect, "c_2").unwrap()).await;
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_twins_take_only_the_keys_left() {
        twins_take_only_the_keys_left(test_support::sqlite().await).await;
    }

    #[tokio::test]
    async fn mariadb_twins_take_only_the_keys_left() {
        if let Some(db) = test_support::mariadb().await {
            twins_take_only_the_keys_left(db).await;
        }
    }

    /// The largest collections the width checks allow are ones MariaDB creates.
    #[tokio::test]
    async fn mariadb_creates_the_widest_collections_allowed() {
        let Some(db) = test_support::mariadb().await else {
            return;
        };
        for attrs in row_limit_edges().0 {
            run(
                &db.pool,
                &create_table_sql(db.dialect, "c_edge", &attrs).unwrap(),
            )
            .await;
            run(&db.pool, &drop_table_sql(db.dialect, "c_edge").unwrap()).await;
        }
        db.close().await;
    }
}
