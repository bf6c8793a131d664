//! What the generic API's document writes take from their input, whichever
//! way they come (a mutation's arguments, or an operation staged in a
//! transaction): a document's `data` as an object, Appwrite's system fields in
//! it, and the filter of a bulk write with what reaching its documents needs.

use serde_json::Map;

use crate::error::{AppError, AppResult, codes};

use super::appwrite_query::parse_query_strings;
use super::documents::{self, Access, NewDocument};
use super::service::Upsert;
use super::{Collection, DataModel};

/// `data` of a document write: a JSON object, or, as Appwrite takes it, a JSON
/// string holding one.
pub(crate) fn data_object(value: serde_json::Value) -> AppResult<Map<String, serde_json::Value>> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::String(text) => match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(AppError::invalid(
                "data",
                "expected a JSON object of attribute values (or a string holding one)",
            )),
        },
        _ => Err(AppError::invalid(
            "data",
            "expected a JSON object of attribute values",
        )),
    }
}

/// Appwrite's system fields in a document's `data`, as its clients send them
/// back with a document: `$id` and `$permissions` stand for the arguments when
/// those are not given (`$id` on a create only), `$createdAt` and `$updatedAt`
/// set the document's times when a server key writes it (an import, as Appwrite
/// lets keys do); `$sequence`, `$databaseId`, `$collectionId` and the times
/// from anyone else are left out, as Appwrite leaves them out.
pub(crate) struct SystemFields {
    pub id: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub times: documents::GivenTimes,
}

impl SystemFields {
    pub fn take(
        data: &mut Map<String, serde_json::Value>,
        by_key: bool,
    ) -> AppResult<SystemFields> {
        let time =
            |data: &mut Map<String, serde_json::Value>, name: &str| -> AppResult<Option<i64>> {
                match data.remove(name) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(_) if !by_key => Ok(None),
                    // Short of the last day there is: later updates step past it.
                    Some(serde_json::Value::String(text)) => {
                        super::model::document_datetime_to_millis(&text)
                            .filter(|&at| at < super::model::MAX_DATETIME_MS - 86_400_000)
                            .map(Some)
                            .ok_or_else(|| {
                                AppError::invalid(name, "expected a date-time before 9999-12-31")
                            })
                    }
                    Some(_) => Err(AppError::invalid(name, "expected a date-time")),
                }
            };
        let times = documents::GivenTimes {
            created_at: time(data, "$createdAt")?,
            updated_at: time(data, "$updatedAt")?,
        };
        for ignored in ["$sequence", "$databaseId", "$collectionId"] {
            data.remove(ignored);
        }
        let id = match data.remove("$id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id)) => Some(id),
            Some(_) => return Err(AppError::invalid("$id", "expected a string")),
        };
        let permissions = match data.remove("$permissions") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value::<Vec<String>>(value)
                    .map_err(|_| AppError::invalid("$permissions", "expected a list of strings"))?,
            ),
        };
        Ok(SystemFields {
            id,
            permissions,
            times,
        })
    }
}

/// The filter of a bulk write's `queries`: filter queries only (a page, an
/// order or a selection says nothing about which documents to write).
pub(crate) fn filter_queries(queries: Option<Vec<String>>) -> AppResult<super::filter::Filter> {
    let parsed =
        parse_query_strings(&queries.unwrap_or_default()).map_err(|err| AppError::Invalid {
            code: err.code(),
            field: "queries".into(),
            reason: err.to_string(),
        })?;
    if !parsed.only_filter() {
        return Err(AppError::Invalid {
            code: codes::QUERY_INVALID,
            field: "queries".into(),
            reason:
                "a bulk write takes filter queries only (no select, order, cursor, limit or offset)"
                    .into(),
        });
    }
    Ok(parsed.filter)
}

/// What a bulk write by queries needs besides each document's permission, as
/// the generic `documents` list needs it: to reach the collection's documents at
/// all (`PERMISSION_DENIED`, or `COLLECTION_NOT_FOUND` while it is disabled), and
/// to read every related document a condition on a relationship compares.
/// Answers the filter with its conditions across relationships (`author.name`)
/// made conditions on the related documents.
pub(crate) fn bulk_reach(
    model: &DataModel,
    collection: &Collection,
    access: &Access,
    filter: super::filter::Filter,
) -> AppResult<super::filter::Filter> {
    documents::require_list_reach(collection, access)?;
    let filter = super::typed::across_relationships(collection, model, access, filter, 0)?;
    documents::check_reference_conditions(collection, model, access, &filter, &[])?;
    Ok(filter)
}

impl SystemFields {
    /// The document to create from `data` and these system fields.
    pub fn into_new(self, data: Map<String, serde_json::Value>) -> NewDocument {
        NewDocument {
            id: self.id,
            data,
            permissions: self.permissions,
            times: self.times,
        }
    }
}

/// The documents of a bulk upsert, each id once (`field` names them in errors),
/// none with times (an upsert takes none).
pub(crate) fn upserts_of(
    given: Vec<(Map<String, serde_json::Value>, SystemFields)>,
    field: &str,
) -> AppResult<Vec<Upsert>> {
    let mut named = std::collections::HashSet::new();
    given
        .into_iter()
        .map(|(data, system)| {
            if let Some(id) = system.id.as_deref().filter(|id| *id != crate::db::ids::UNIQUE)
                && !named.insert(id.to_string())
            {
                return Err(AppError::Invalid {
                    code: codes::VALUE_INVALID,
                    field: field.into(),
                    reason: format!(
                        "`{}` is given twice; each document once",
                        id.chars().take(64).collect::<String>()
                    ),
                });
            }
            if system.times != documents::GivenTimes::default() {
                return Err(AppError::invalid(
                    field,
                    "an upsert takes no `$createdAt` or `$updatedAt`; create or update the documents",
                ));
            }
            Ok(Upsert {
                id: crate::db::ids::resolve("$id", system.id.as_deref())?,
                data,
                permissions: system.permissions,
            })
        })
        .collect()
}
