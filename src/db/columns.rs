//! Reading and writing the columns both backends store differently: JSON kept as
//! text, which SQLite hands back as a string and MariaDB's MEDIUMTEXT as bytes
//! (ADR 0001).

use sqlx::Row as _;
use sqlx::any::AnyRow;

/// A text column, read as a string on SQLite and as bytes from MariaDB's MEDIUMTEXT.
pub fn text(row: &AnyRow, column: &str) -> Result<String, sqlx::Error> {
    match row.try_get::<String, _>(column) {
        Ok(text) => Ok(text),
        Err(_) => {
            let bytes: Vec<u8> = row.try_get(column)?;
            String::from_utf8(bytes).map_err(|err| sqlx::Error::Decode(Box::new(err)))
        }
    }
}

/// A nullable text column, as [`text`] reads one.
pub fn optional_text(row: &AnyRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(text) => Ok(text),
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(column)?
            .map(String::from_utf8)
            .transpose()
            .map_err(|err| sqlx::Error::Decode(Box::new(err))),
    }
}

/// The error of a stored value that does not parse back.
pub fn corrupt(what: &str, err: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} do not parse: {err}").into())
}

/// A value as the JSON text of its column.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}
