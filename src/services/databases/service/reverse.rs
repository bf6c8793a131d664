//! Writes through reverse fields: the side of a two-way relationship that holds
//! no reference. Appwrite's clients write a person's `libraries` (the parent
//! side of a one-to-many, kept here as the libraries' many-to-one `person`), a
//! one-to-one's other side, and a many-to-many's related side as they write
//! any field; each is written as what it means. For a reference, every
//! document whose reference changes is updated as the caller, with every check
//! an update makes (its `update` permission, the document pointed at readable),
//! and announces its own event; documents the caller may not read are left as
//! they are, as a read of the field does not list them either. For a
//! many-to-many, the junction's links of the document are replaced, as its
//! other side's field replaces them.
//!
//! A value is a list of ids or documents (one, or null, for a one-to-one): a
//! document is written as a nested one ([`Documents::nested_document`]),
//! pointing at the document written.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use crate::db::ids;
use crate::error::{AppError, AppResult, codes};

use super::super::documents::{self, DocumentChanges, Links, ListQuery, MAX_LINKS};
use super::super::filter::{Field, Filter, FilterError, Target, Use};
use super::super::operators::is_operator;
use super::super::{Collection, RelationKind, Relationship};
use super::{Documents, Nesting, References, within};

/// A reverse field's value taken from a write, written once its document is.
pub(in super::super) struct ReverseWrite {
    /// The reverse field, as the write named it.
    field: String,
    /// The collection holding the relationship.
    holder: Arc<Collection>,
    relationship: Relationship,
    value: Value,
}

/// One document a reverse field's value names.
enum Named {
    Id(String),
    Document(Map<String, Value>),
}

impl Named {
    /// The id it names, when known before it is written.
    fn id(&self) -> Option<&str> {
        match self {
            Named::Id(id) => Some(id),
            Named::Document(document) => document
                .get("$id")
                .and_then(Value::as_str)
                .filter(|id| *id != ids::UNIQUE),
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::VALUE_INVALID,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The documents `value` names for reverse field `field`: a list (`one`: a
/// single one, or null for none) of ids or documents; `{"$id": …}` alone names
/// the document as its id does.
fn named(field: &str, value: Value, one: bool) -> AppResult<Vec<Named>> {
    let expected = if one {
        "expected a document, its id, or null"
    } else {
        "expected a list of documents or their ids"
    };
    let item = |value: Value| match value {
        Value::String(id) => {
            ids::validate(field, &id).map_err(|_| invalid(field, expected))?;
            Ok(Named::Id(id))
        }
        Value::Object(document) => match document.get("$id").and_then(Value::as_str) {
            Some(id) if document.len() == 1 && id != ids::UNIQUE => {
                ids::validate(field, id).map_err(|_| invalid(field, expected))?;
                Ok(Named::Id(id.to_string()))
            }
            _ => Ok(Named::Document(document)),
        },
        _ => Err(invalid(field, expected)),
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) if !one => {
            if items.len() > MAX_LINKS {
                return Err(invalid(
                    field,
                    format!("at most {MAX_LINKS} documents at once"),
                ));
            }
            items.into_iter().map(item).collect()
        }
        value @ (Value::String(_) | Value::Object(_)) if one => Ok(vec![item(value)?]),
        _ => Err(invalid(field, expected)),
    }
}

impl<'r> Documents<'r> {
    /// The reverse fields of `collection` that `data` sets, taken out of it.
    /// `operators`: whether the write takes update operators, which a reverse
    /// field does not.
    pub(super) fn take_reverse(
        &self,
        collection: &Collection,
        data: &mut Map<String, Value>,
        operators: bool,
    ) -> AppResult<Vec<ReverseWrite>> {
        if data.keys().all(|key| collection.has_key(key)) {
            return Ok(Vec::new());
        }
        let mut writes = Vec::new();
        for (holder, relationship) in self.model.references_to(collection) {
            let Some(field) = relationship.two_way_key.as_deref() else {
                continue;
            };
            let Some(value) = data.remove(field) else {
                continue;
            };
            if holder.id == collection.id && data.contains_key(&relationship.key) {
                // A relationship of the collection with itself, both sides set.
                return Err(invalid(
                    field,
                    format!(
                        "`{}` and `{field}` are two sides of one relationship: set one",
                        relationship.key
                    ),
                ));
            }
            if operators && is_operator(&value) {
                return Err(invalid(
                    field,
                    "update operators do not apply to the documents pointing at this one: list them all",
                ));
            }
            writes.push(ReverseWrite {
                field: field.to_string(),
                holder: holder.clone(),
                relationship: relationship.clone(),
                value,
            });
        }
        Ok(writes)
    }

    /// A reverse field of `collection` that `data` sets, if any.
    pub(super) fn reverse_field_in(
        &self,
        collection: &Collection,
        data: &Map<String, Value>,
    ) -> Option<String> {
        if data.keys().all(|key| collection.has_key(key)) {
            return None;
        }
        self.model
            .references_to(collection)
            .filter_map(|(_, relationship)| relationship.two_way_key.as_deref())
            .find(|field| data.contains_key(*field))
            .map(String::from)
    }

    /// Writes `writes`, taken from the write of document `id` (`created`: just
    /// made, so nothing points at it yet) made `depth` levels deep with the
    /// permissions `inherited`; answers each field's value as the answer to
    /// the write shows it: the ids it names now.
    pub(super) async fn write_reverse(
        &self,
        id: &str,
        created: bool,
        depth: usize,
        inherited: Option<&[String]>,
        writes: Vec<ReverseWrite>,
    ) -> AppResult<Map<String, Value>> {
        let mut written = Map::new();
        let nesting = Nesting { depth, inherited };
        for mut write in writes {
            let one = write.relationship.kind == RelationKind::OneToOne;
            let items = named(&write.field, std::mem::take(&mut write.value), one)?;
            let value = match write.relationship.kind {
                RelationKind::ManyToMany => {
                    self.link_from_related(&write, id, items, nesting).await?
                }
                RelationKind::ManyToOne | RelationKind::OneToOne => {
                    let ids = self.point_at(&write, id, created, items, nesting).await?;
                    if one {
                        ids.into_iter().next().map_or(Value::Null, Value::String)
                    } else {
                        Value::Array(ids.into_iter().map(Value::String).collect())
                    }
                }
            };
            written.insert(write.field, value);
        }
        Ok(written)
    }

    /// Makes the documents `items` name, and only them among those the caller
    /// may read, point at document `id` through `write`'s reference; answers
    /// their ids, in the order given.
    async fn point_at(
        &self,
        write: &ReverseWrite,
        id: &str,
        created: bool,
        items: Vec<Named>,
        nesting: Nesting<'_>,
    ) -> AppResult<Vec<String>> {
        let current = if created {
            Vec::new()
        } else {
            self.pointing_at(write, id).await?
        };
        let wanted: HashSet<&str> = items.iter().filter_map(Named::id).collect();
        // Cleared first: a one-to-one's reference is unique.
        for gone in current.iter().filter(|c| !wanted.contains(c.as_str())) {
            self.repoint(write, gone, Value::Null).await?;
        }
        let mut listed: Vec<String> = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for item in items {
            let child = match item {
                Named::Id(child) => {
                    if !current.contains(&child) && !seen.contains(&child) {
                        self.repoint(write, &child, Value::String(id.to_string()))
                            .await?;
                    }
                    child
                }
                Named::Document(mut document) => {
                    document.insert(
                        write.relationship.key.clone(),
                        Value::String(id.to_string()),
                    );
                    self.nested_document(&write.holder, &write.field, document, nesting)
                        .await?
                }
            };
            if seen.insert(child.clone()) {
                listed.push(child);
            }
        }
        Ok(listed)
    }

    /// The ids of the documents of `write`'s holder pointing at `id` that the
    /// caller may read, at most [`MAX_LINKS`] (more is refused: such a list is
    /// changed from the other side).
    async fn pointing_at(&self, write: &ReverseWrite, id: &str) -> AppResult<Vec<String>> {
        let filter = Filter::In {
            field: Field::attribute(write.relationship.key.clone()),
            values: vec![Value::String(id.to_string())],
            negate: false,
        }
        .resolve(&Target::of(&write.holder), Use::Query)
        .map_err(FilterError::into_app_error)?;
        let query = ListQuery {
            want_permissions: false,
            only: Some(Vec::new()),
            ..ListQuery::first(filter, MAX_LINKS)
        };
        let mut op = self.tx.writer().await?;
        let result = documents::list(&mut op, &write.holder, self.access, &query).await;
        let listed = op.end(result)?;
        if listed.has_more {
            return Err(AppError::Invalid {
                code: codes::TOO_MANY_DOCUMENTS,
                field: write.field.clone(),
                reason: format!(
                    "more than {MAX_LINKS} documents point at this one: change them from their side"
                ),
            });
        }
        Ok(listed
            .documents
            .into_iter()
            .map(|(document, _)| document.id)
            .collect())
    }

    /// Sets the reference of document `child` of `write`'s holder to `to` (an
    /// id, or null), as the caller's update of it.
    fn repoint<'a>(
        &'a self,
        write: &'a ReverseWrite,
        child: &'a str,
        to: Value,
    ) -> BoxFuture<'a, AppResult<()>> {
        Box::pin(async move {
            self.tx.spend_links(1)?;
            let mut data = Map::new();
            data.insert(write.relationship.key.clone(), to);
            let changes = DocumentChanges {
                data,
                ..Default::default()
            };
            match self
                .update(&write.holder, child, changes, References::AsStored)
                .await
            {
                Ok(_) => Ok(()),
                Err(AppError::NotFound { .. }) => Err(AppError::Invalid {
                    code: codes::RELATED_DOCUMENT_NOT_FOUND,
                    field: write.field.clone(),
                    reason: format!(
                        "`{}` names no document of `{}`",
                        child.chars().take(64).collect::<String>(),
                        write.holder.name
                    ),
                }),
                Err(err) => Err(within(&write.field, err)),
            }
        })
    }

    /// Replaces the links of document `id`, on the related side of `write`'s
    /// many-to-many, by links to the documents `items` name (documents written
    /// first); answers their ids.
    async fn link_from_related(
        &self,
        write: &ReverseWrite,
        id: &str,
        items: Vec<Named>,
        nesting: Nesting<'_>,
    ) -> AppResult<Value> {
        let Some(junction) = write.relationship.junction.as_deref() else {
            return Err(AppError::Internal(anyhow::anyhow!(
                "a many-to-many relationship without its junction"
            )));
        };
        let mut targets = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for item in items {
            let target = match item {
                Named::Id(target) => target,
                Named::Document(document) => {
                    self.nested_document(&write.holder, &write.field, document, nesting)
                        .await?
                }
            };
            if seen.insert(target.clone()) {
                targets.push(target);
            }
        }
        let links = Links {
            junction,
            own: "b_id",
            other: "a_id",
            field: &write.field,
        };
        let mut op = self.tx.writer().await?;
        let result = documents::replace_links(
            &mut op,
            &links,
            &write.holder,
            self.access,
            id,
            targets.clone(),
        )
        .await;
        op.end(result)?;
        Ok(Value::Array(
            targets.into_iter().map(Value::String).collect(),
        ))
    }
}
