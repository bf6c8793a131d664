//! Related documents nested in the generic API's answers, as Appwrite's
//! `select` asks for them: `author.*` replaces a post's `author` id with the
//! author itself (in Appwrite's shape: `$id`, `$createdAt`, `$updatedAt`,
//! `$permissions`, `$collectionId`, `$databaseId`, then its attributes), and
//! `author.name` keeps the system fields and `name` alone. A to-many field
//! (`tags.*`, or the reverse field of a two-way relationship, `author.posts.*`
//! seen from an author) nests the list. One level deep.
//!
//! Only documents the caller may read are nested: an unreadable one is null,
//! or left out of a list. Each relationship costs one statement for a whole
//! page (a windowed one for lists), at most [`MAX_PER_DOCUMENT`] documents per
//! list and [`MAX_NESTED`] in all for a page.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{AppError, AppResult, codes};

use super::documents::{self, Access, Document, ParentScope};
use super::filter::{Filter, FilterError, Link, Target, Use};
use super::tx::Conn;
use super::{Collection, DataModel, RelationKind};

/// Most documents one nested list holds.
pub const MAX_PER_DOCUMENT: usize = 100;
/// Most documents nested in one page, every list together.
pub const MAX_NESTED: usize = 5000;

/// How a field's related documents are found.
#[derive(Debug, Clone)]
enum Reach {
    /// The document holds the related id in the field.
    Held,
    /// The related documents point at the document (`Reference`) or a junction
    /// links them; `one`: at most one (a one-to-one's reverse side).
    Parents { scope: ParentScope, one: bool },
}

/// One field nested by a `select`.
#[derive(Debug, Clone)]
struct Nested {
    key: String,
    related: std::sync::Arc<Collection>,
    reach: Reach,
    /// The related attributes kept; `None`: all of them.
    keep: Option<Vec<String>>,
}

/// The fields a `select` nests.
#[derive(Debug, Clone, Default)]
pub struct Nesting {
    fields: Vec<Nested>,
}

impl Nesting {
    /// The relationships `select` nests (`key.*`, `key.attribute`, `key.$id`, …)
    /// among `collection`'s own and the reverse fields of two-way ones pointing
    /// at it. A name past the dot that the related collection has no attribute
    /// of is refused, as a misspelt selection is.
    pub fn of(
        collection: &Collection,
        model: &DataModel,
        select: Option<&[String]>,
    ) -> AppResult<Nesting> {
        let mut fields: Vec<Nested> = Vec::new();
        for name in select.unwrap_or_default() {
            let Some((key, rest)) = name.split_once('.') else {
                continue;
            };
            let Some((related, reach)) = reach_of(collection, model, key) else {
                continue;
            };
            if rest != "*" && !rest.starts_with('$') && related.attribute(rest).is_none() {
                return Err(AppError::Invalid {
                    code: codes::QUERY_INVALID,
                    field: "queries".into(),
                    reason: format!(
                        "select names {}, which `{}` has no attribute of",
                        super::model::shown(name),
                        related.name
                    ),
                });
            }
            let nested = match fields.iter_mut().find(|f| f.key == key) {
                Some(nested) => nested,
                None => {
                    fields.push(Nested {
                        key: key.to_string(),
                        related,
                        reach,
                        keep: Some(Vec::new()),
                    });
                    fields.last_mut().expect("just pushed")
                }
            };
            match (&mut nested.keep, rest) {
                (keep @ Some(_), "*") => *keep = None,
                (Some(keep), attribute) if !attribute.starts_with('$') => {
                    keep.push(attribute.to_string())
                }
                _ => {}
            }
        }
        Ok(Nesting { fields })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether `key` is a field this nesting fills (a reverse field has no
    /// value of its own otherwise).
    pub fn covers(&self, key: &str) -> bool {
        self.fields.iter().any(|f| f.key == key)
    }

    /// Puts the related documents in `documents`' data, read on `conn` as
    /// `access` may read them (their own references to documents it may not
    /// read hidden, as on the page's).
    pub async fn fill(
        &self,
        conn: &mut Conn<'_>,
        access: &Access,
        model: &DataModel,
        documents: &mut [&mut Document],
    ) -> AppResult<()> {
        if documents.is_empty() || self.fields.is_empty() {
            return Ok(());
        }
        let per_document = self.per_document(documents.len())?;
        for field in &self.fields {
            match &field.reach {
                Reach::Held => fill_held(conn, access, model, field, documents).await?,
                Reach::Parents { scope, one } => {
                    let limit = if *one { 1 } else { per_document };
                    let listed = Listing {
                        scope,
                        one: *one,
                        limit,
                    };
                    fill_listed(conn, access, model, field, &listed, documents).await?
                }
            }
        }
        Ok(())
    }

    /// How many documents each nested list of a page of `page` documents may
    /// hold: what the fields nesting one document each leave of
    /// [`MAX_NESTED`], shared by the lists; refused when that is none.
    fn per_document(&self, page: usize) -> AppResult<usize> {
        let lists = self
            .fields
            .iter()
            .filter(|f| matches!(f.reach, Reach::Parents { one: false, .. }))
            .count();
        let singles = self.fields.len() - lists;
        let left = MAX_NESTED.saturating_sub(singles * page);
        let per_document = match lists {
            0 => MAX_PER_DOCUMENT,
            lists => (left / (lists * page)).min(MAX_PER_DOCUMENT),
        };
        if (singles > 0 && singles * page > MAX_NESTED) || per_document == 0 {
            return Err(AppError::Invalid {
                code: codes::QUERY_INVALID,
                field: "queries".into(),
                reason: format!(
                    "the selection would nest more than {MAX_NESTED} documents in a page: \
                     nest fewer relationships, or ask for fewer documents (`limit`)"
                ),
            });
        }
        Ok(per_document)
    }
}

/// The related collection of field `key` of `collection`, and how its
/// documents are found.
fn reach_of(
    collection: &Collection,
    model: &DataModel,
    key: &str,
) -> Option<(std::sync::Arc<Collection>, Reach)> {
    if let Some(relationship) = collection.relationship(key) {
        let related = model
            .collection(&collection.database_id, &relationship.related_collection)?
            .clone();
        let reach = match &relationship.junction {
            Some(junction) => Reach::Parents {
                scope: ParentScope::Junction(Link {
                    junction: junction.clone(),
                    near: "b_id",
                    far: "a_id",
                }),
                one: false,
            },
            None => Reach::Held,
        };
        return Some((related, reach));
    }
    let (holder, relationship) = model
        .references_to(collection)
        .find(|(_, r)| r.two_way_key.as_deref() == Some(key))?;
    let scope = match &relationship.junction {
        Some(junction) => ParentScope::Junction(Link {
            junction: junction.clone(),
            near: "a_id",
            far: "b_id",
        }),
        None => ParentScope::Reference(relationship.key.clone()),
    };
    let one = relationship.kind == RelationKind::OneToOne;
    Some((holder.clone(), Reach::Parents { scope, one }))
}

/// A related document as nested: Appwrite's shape, its attributes cut to `keep`.
fn shown(nested: &Nested, document: &Document) -> Value {
    let mut value = document.to_json(&nested.related);
    if let (Some(keep), Value::Object(map)) = (&nested.keep, &mut value) {
        map.retain(|k, _| k.starts_with('$') || keep.iter().any(|kept| kept == k));
    }
    value
}

async fn fill_held(
    conn: &mut Conn<'_>,
    access: &Access,
    model: &DataModel,
    field: &Nested,
    documents: &mut [&mut Document],
) -> AppResult<()> {
    let mut ids: Vec<String> = documents
        .iter()
        .filter_map(|d| d.data.get(&field.key).and_then(Value::as_str))
        .map(String::from)
        .collect();
    ids.sort();
    ids.dedup();
    let mut related = if ids.is_empty() {
        Vec::new()
    } else {
        documents::get_many(conn, &field.related, access, &ids).await?
    };
    documents::hide_unreadable_references(conn, &field.related, access, model, &mut related)
        .await?;
    let found: HashMap<String, Document> = related.into_iter().map(|d| (d.id.clone(), d)).collect();
    for document in documents.iter_mut() {
        let Some(slot) = document.data.get_mut(&field.key) else {
            continue;
        };
        *slot = match slot.as_str().and_then(|id| found.get(id)) {
            Some(related) => shown(field, related),
            // None, or one the caller may not read: as missing.
            None => Value::Null,
        };
    }
    Ok(())
}

/// How a field's documents pointing at (or linked to) each document are read.
struct Listing<'a> {
    scope: &'a ParentScope,
    /// At most one: a one-to-one's reverse side, nested as an object.
    one: bool,
    limit: usize,
}

async fn fill_listed(
    conn: &mut Conn<'_>,
    access: &Access,
    model: &DataModel,
    field: &Nested,
    listing: &Listing<'_>,
    documents: &mut [&mut Document],
) -> AppResult<()> {
    let parents: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
    let everything = Filter::default()
        .resolve(&Target::of(&field.related), Use::Query)
        .map_err(FilterError::into_app_error)?;
    let pages = documents::list_for_parents(
        conn,
        &field.related,
        access,
        listing.scope,
        &everything,
        &[],
        listing.limit,
        false,
        &parents,
    )
    .await?;
    // Every page's documents at once, their references hidden in one pass.
    let (owners, mut related): (Vec<String>, Vec<Document>) = pages
        .into_iter()
        .flat_map(|(parent, page)| {
            page.documents
                .into_iter()
                .map(move |(related, _)| (parent.clone(), related))
        })
        .unzip();
    documents::hide_unreadable_references(conn, &field.related, access, model, &mut related)
        .await?;
    let mut by_parent: HashMap<String, Vec<Value>> = HashMap::new();
    for (parent, related) in owners.into_iter().zip(&related) {
        by_parent
            .entry(parent)
            .or_default()
            .push(shown(field, related));
    }
    for document in documents.iter_mut() {
        let listed = by_parent.remove(&document.id).unwrap_or_default();
        let value = if listing.one {
            listed.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(listed)
        };
        document.data.insert(field.key.clone(), value);
    }
    Ok(())
}
