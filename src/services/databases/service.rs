//! The documents service: every read and write of documents, whichever API asks
//! (the generic, Appwrite-shaped fields, a collection's typed fields, and any
//! later caller with its own [`Access`]). A write takes one path here: the
//! caller's permission checks and the write, in the request's transaction
//! ([`RequestTx`]); the end of that operation (in a shared batch, a failed one is
//! undone alone); then its realtime events, queued to be published once the
//! transaction commits. A write answers with the document only when the caller
//! may read it as the write left it. No GraphQL here; the SQL of rows is
//! [`documents`]'s.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use crate::db::ids;
use crate::error::{AppError, AppResult, codes};

use super::documents::{
    self, Access, DeleteEffect, Document, DocumentChanges, ListQuery, Listed, NewDocument, Paging,
};
use super::filter::{Field, Filter, FilterError, OrderBy, ResolvedFilter, Target, Use};
use super::operators::is_operator;
use super::tx::{Conn, RequestTx, Sharing};

mod reverse;
use super::{Collection, DataModel};

/// Most levels of related documents one write nests (Appwrite's depth).
pub const MAX_NESTING: usize = 3;

/// Whether a relationship's value holds a document to write rather than ids
/// (an update operator, where operators are taken, is none).
fn holds_documents(value: &Value, operators: bool) -> bool {
    let document = |value: &Value| value.is_object() && !(operators && is_operator(value));
    match value {
        Value::Array(items) => items.iter().any(document),
        value => document(value),
    }
}

/// One document of [`Documents::upsert_many`].
#[derive(Debug)]
pub struct Upsert {
    pub id: String,
    /// Attribute values by key; where the document exists, those to set.
    pub data: Map<String, Value>,
    pub permissions: Option<Vec<String>>,
}

/// How the references (many-to-one and one-to-one fields) of an answered
/// document show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum References {
    /// As stored: the typed API resolves each reference through a read that
    /// applies the caller's permissions anyway.
    AsStored,
    /// Only those naming a document the caller may read; others are null.
    ReadableOnly,
}

/// A list in Appwrite's shape: its cursors name documents, or it skips an offset.
#[derive(Debug, Clone)]
pub struct ListByDocument {
    pub filter: Filter,
    pub orders: Vec<OrderBy>,
    /// The id of the document the page starts after.
    pub cursor_after: Option<String>,
    /// The id of the document the page ends before.
    pub cursor_before: Option<String>,
    pub limit: usize,
    pub offset: Option<usize>,
    pub want_total: bool,
}

/// The documents of a project as one caller reaches them, within one request.
pub struct Documents<'r> {
    tx: &'r RequestTx,
    model: &'r DataModel,
    access: &'r Access,
    /// Whether writes may answer with what they left (see [`Documents::answering`]).
    answers: bool,
}

impl<'r> Documents<'r> {
    /// The documents of `model` as `access` may read and write them, in the
    /// request transaction `tx`.
    pub fn new(tx: &'r RequestTx, model: &'r DataModel, access: &'r Access) -> Self {
        Documents {
            tx,
            model,
            access,
            answers: true,
        }
    }

    /// Whether writes answer with the documents they leave by the caller's own
    /// access: a key bypasses permissions, so one without `documents.read` is
    /// answered only what a guest may read
    /// ([`crate::auth::Caller::may_see_what_it_writes`]).
    pub fn answering(self, answers: bool) -> Self {
        Documents { answers, ..self }
    }

    /// The access what is answered is shown by: the caller's, or a guest's for a
    /// key that may not read documents.
    fn answered_as(&self) -> std::borrow::Cow<'r, Access> {
        if self.answers {
            std::borrow::Cow::Borrowed(self.access)
        } else {
            std::borrow::Cow::Owned(Access::guest())
        }
    }

    /// Whether the caller may be answered with `document` as a write left it.
    fn shows(&self, collection: &Collection, document: &Document) -> bool {
        documents::may_read(collection, &self.answered_as(), document)
    }

    /// A document by id, or `None` when it does not exist or the caller may not
    /// read it; with its permissions when `with_permissions` (one more query).
    pub async fn get(
        &self,
        collection: &Collection,
        id: &str,
        with_permissions: bool,
        references: References,
    ) -> AppResult<Option<Document>> {
        let mut conn = self.tx.reader().await?;
        let Some(document) =
            documents::get(&mut conn, collection, self.access, id, with_permissions).await?
        else {
            return Ok(None);
        };
        self.shown(&mut conn, collection, document, references)
            .await
            .map(Some)
    }

    /// `answers` with the references the caller may not read hidden, as a read
    /// shows them: for answers of writes that keep references they did not set.
    pub async fn readable_references(
        &self,
        collection: &Collection,
        mut answers: Vec<Document>,
    ) -> AppResult<Vec<Document>> {
        if answers.is_empty() || !collection.relationships.iter().any(|r| r.has_column()) {
            return Ok(answers);
        }
        let mut conn = self.tx.reader().await?;
        documents::hide_unreadable_references(
            &mut conn,
            collection,
            &self.answered_as(),
            self.model,
            &mut answers,
        )
        .await?;
        Ok(answers)
    }

    /// `document` with its references shown as `references` says.
    async fn shown(
        &self,
        conn: &mut Conn<'_>,
        collection: &Collection,
        document: Document,
        references: References,
    ) -> AppResult<Document> {
        let mut shown = [document];
        if references == References::ReadableOnly {
            documents::hide_unreadable_references(
                conn,
                collection,
                &self.answered_as(),
                self.model,
                &mut shown,
            )
            .await?;
        }
        let [shown] = shown;
        Ok(shown)
    }

    /// The documents the caller may read that match `query`.
    pub async fn list(&self, collection: &Collection, query: &ListQuery) -> AppResult<Listed> {
        let mut conn = self.tx.reader().await?;
        documents::list(&mut conn, collection, self.access, query).await
    }

    /// An Appwrite-style list: conditions or orders on references only for a
    /// caller that may read every related document, cursors that name documents
    /// the caller may read, and references shown only when readable.
    pub async fn list_by_document(
        &self,
        collection: &Collection,
        request: ListByDocument,
    ) -> AppResult<Listed> {
        documents::check_reference_conditions(
            collection,
            self.model,
            self.access,
            &request.filter,
            &request.orders,
        )?;
        let filter = request
            .filter
            .resolve(&Target::of(collection), Use::Query)
            .map_err(FilterError::into_app_error)?;
        let mut conn = self.tx.reader().await?;
        let mut cursor = async |id: &Option<String>| match id {
            Some(id) => {
                documents::cursor_of(&mut conn, collection, self.access, &request.orders, id)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        };
        let after = cursor(&request.cursor_after).await?;
        let before = cursor(&request.cursor_before).await?;
        let limit = request.limit;
        let paging = match (request.offset, &after, &before) {
            (Some(offset), None, None) => Paging::Offset { limit, offset },
            (Some(_), _, _) => {
                return Err(AppError::invalid(
                    "queries",
                    "use `offset` or a cursor, not both",
                ));
            }
            _ => Paging::Keyset {
                from_end: before.is_some(),
                after,
                before,
                limit,
            },
        };
        let query = ListQuery {
            orders: request.orders,
            want_total: request.want_total,
            ..ListQuery::all_of(filter, paging)
        };
        let mut listed = documents::list(&mut conn, collection, self.access, &query).await?;
        let (mut page, cursors): (Vec<Document>, Vec<_>) = listed.documents.drain(..).unzip();
        documents::hide_unreadable_references(
            &mut conn,
            collection,
            self.access,
            self.model,
            &mut page,
        )
        .await?;
        listed.documents = page.into_iter().zip(cursors).collect();
        Ok(listed)
    }

    /// Creates a document; needs the collection's `create` permission. A create
    /// that is its mutation's only write ([`Sharing::Sole`]) may share an insert
    /// with other requests' ([`RequestTx::shared_create`]).
    pub async fn create(
        &self,
        collection: &Collection,
        new: NewDocument,
        sharing: Sharing,
    ) -> AppResult<Option<Document>> {
        self.create_at(collection, new, sharing, 1).await
    }

    /// [`Documents::create`] of a document nested `depth` levels deep in its
    /// request's write (1: the write's own).
    async fn create_at(
        &self,
        collection: &Collection,
        mut new: NewDocument,
        sharing: Sharing,
        depth: usize,
    ) -> AppResult<Option<Document>> {
        self.write_nested(
            collection,
            &mut new.data,
            false,
            depth,
            new.permissions.as_deref(),
        )
        .await?;
        let reverse = self.take_reverse(collection, &mut new.data, false)?;
        // Kept for the documents written after it, when there are some.
        let inherited = match reverse.is_empty() {
            true => None,
            false => new.permissions.clone(),
        };
        if !reverse.is_empty() {
            // The documents pointing at this one are written after it, in the
            // same transaction: its id is needed now, and no shared insert.
            new.id = Some(ids::resolve("id", new.id.as_deref())?);
        }
        let sharing = if reverse.is_empty() {
            sharing
        } else {
            Sharing::Among
        };
        let mut prepared = documents::prepare_create(collection, self.access, new)?;
        if self.tx.may_share(collection, &prepared, sharing) {
            // The document and its event made before the shared insert, which
            // then takes only the row ([`RequestTx::shared_create`]).
            let mut document = prepared.to_document();
            let event = documents::event(collection, &document, "create", None);
            if let Some(sequence) = self
                .tx
                .shared_create(collection, &mut prepared, sharing, event)
                .await?
            {
                document.sequence = sequence;
                return Ok(self.shows(collection, &document).then_some(document));
            }
        }
        let mut op = self.tx.tracked_writer().await?;
        let first_write = op.first_write();
        let result = documents::create_prepared(
            &mut op,
            first_write,
            collection,
            self.access,
            self.model,
            prepared,
        )
        .await;
        let document = op.end(result)?;
        let id = document.id.clone();
        let answer = self.announce(collection, document, "create", None);
        let written = self
            .write_reverse(&id, true, depth, inherited.as_deref(), reverse)
            .await?;
        Ok(answer.map(|document| with_reverse(document, written)))
    }

    /// Creates documents one after the other, all in the request's transaction;
    /// answers those the caller may read, in input order.
    pub async fn create_many(
        &self,
        collection: &Collection,
        news: Vec<NewDocument>,
    ) -> AppResult<Vec<Document>> {
        let mut created = Vec::with_capacity(news.len());
        for new in news {
            created.extend(self.create(collection, new, Sharing::Among).await?);
        }
        Ok(created)
    }

    /// Changes a document; needs `update` permission on the collection or (with
    /// document security) on the document.
    pub async fn update(
        &self,
        collection: &Collection,
        id: &str,
        mut changes: DocumentChanges,
        references: References,
    ) -> AppResult<Option<Document>> {
        self.write_nested(
            collection,
            &mut changes.data,
            changes.operators,
            1,
            changes.permissions.as_deref(),
        )
        .await?;
        let reverse = self.take_reverse(collection, &mut changes.data, changes.operators)?;
        // Kept for the documents written after it, when there are some.
        let inherited = match reverse.is_empty() {
            true => None,
            false => changes.permissions.clone(),
        };
        let mut op = self.tx.writer().await?;
        let result = async {
            let (previous, document) =
                documents::update(&mut op, collection, self.access, id, changes, self.model)
                    .await?;
            // The answer, like a read, shows only the references asked for.
            let shown = match references {
                References::AsStored => None,
                References::ReadableOnly => Some(
                    self.shown(&mut op, collection, document.clone(), references)
                        .await?,
                ),
            };
            Ok((previous, document, shown))
        }
        .await;
        let (previous, document, shown) = op.end(result)?;
        let answer = self.announce(collection, document, "update", Some(&previous));
        let written = self
            .write_reverse(id, false, 1, inherited.as_deref(), reverse)
            .await?;
        Ok(answer.map(|document| with_reverse(shown.unwrap_or(document), written)))
    }

    /// Changes documents one after the other, all in the request's transaction;
    /// answers those the caller may read, in input order.
    pub async fn update_many(
        &self,
        collection: &Collection,
        changes: Vec<(String, DocumentChanges)>,
    ) -> AppResult<Vec<Document>> {
        let mut updated = Vec::with_capacity(changes.len());
        for (id, changes) in changes {
            let answer = self
                .update(collection, &id, changes, References::AsStored)
                .await?;
            updated.extend(answer);
        }
        Ok(updated)
    }

    /// Creates the document `id`, or changes it when it exists (needing `create`
    /// or `update` permission accordingly); `operators`: whether a change's
    /// values may be Appwrite's operators (the generic API's).
    pub async fn upsert(
        &self,
        collection: &Collection,
        id: String,
        data: Map<String, Value>,
        permissions: Option<Vec<String>>,
        operators: bool,
    ) -> AppResult<Option<Document>> {
        self.upsert_at(collection, id, data, permissions, operators, 1, None)
            .await
    }

    /// [`Documents::upsert`] of a document nested `depth` levels deep in its
    /// request's write (1: the write's own); created without `permissions`, it
    /// takes `fallback`'s.
    #[allow(clippy::too_many_arguments)]
    async fn upsert_at(
        &self,
        collection: &Collection,
        id: String,
        mut data: Map<String, Value>,
        permissions: Option<Vec<String>>,
        operators: bool,
        depth: usize,
        fallback: Option<&[String]>,
    ) -> AppResult<Option<Document>> {
        // Its related documents take what it takes.
        let inherited = permissions
            .clone()
            .or_else(|| fallback.map(<[String]>::to_vec));
        self.write_nested(
            collection,
            &mut data,
            operators,
            depth,
            inherited.as_deref(),
        )
        .await?;
        let reverse = self.take_reverse(collection, &mut data, operators)?;
        let mut op = self.tx.writer().await?;
        let result = async {
            if documents::upsert_updates(&mut op, collection, self.access, &id).await? {
                let changes = DocumentChanges {
                    data,
                    permissions,
                    expected_updated_at: None,
                    times: Default::default(),
                    operators,
                };
                let (previous, document) =
                    documents::update(&mut op, collection, self.access, &id, changes, self.model)
                        .await?;
                Ok((Some(previous), document))
            } else {
                let new = NewDocument {
                    id: Some(id.clone()),
                    data,
                    permissions: permissions.or_else(|| fallback.map(<[String]>::to_vec)),
                    times: Default::default(),
                };
                let first_write = op.first_write();
                let document = documents::create(
                    &mut op,
                    first_write,
                    collection,
                    self.access,
                    new,
                    self.model,
                )
                .await?;
                Ok((None, document))
            }
        }
        .await;
        let (previous, document) = op.end(result)?;
        let created = previous.is_none();
        let action = if created { "create" } else { "update" };
        // Its id as written: the create makes `unique()` one.
        let id = document.id.clone();
        let answer = self.announce(collection, document, action, previous.as_ref());
        let written = self
            .write_reverse(&id, created, depth, inherited.as_deref(), reverse)
            .await?;
        Ok(answer.map(|document| with_reverse(document, written)))
    }

    /// Appwrite's nested writes: a relationship's value given as a document (an
    /// object, or objects among the ids of a many-to-many list) rather than an
    /// id is written first, as the caller, with the permission checks of any
    /// write: created (its `$id` generated when not given), or upserted when
    /// its `$id` is given, with its own `$permissions` (without them, a
    /// created one takes `inherited`, those the write gives its document, as
    /// Appwrite's do); an object holding its `$id` alone only names that
    /// document. Its id then stands in its place. Documents nest at most
    /// [`MAX_NESTING`] levels deep, and a request writes at most
    /// [`super::tx::MAX_NESTED_PER_REQUEST`] of them; they commit with the
    /// write or not at all. `operators`: whether the write takes Appwrite's
    /// update operators, which are no documents; `depth`: the write's own (1
    /// for a request's). A write with no relationship set to an object passes
    /// through untouched.
    async fn write_nested(
        &self,
        collection: &Collection,
        data: &mut Map<String, Value>,
        operators: bool,
        depth: usize,
        inherited: Option<&[String]>,
    ) -> AppResult<()> {
        if !collection.relationships.iter().any(|r| {
            data.get(&r.key)
                .is_some_and(|value| holds_documents(value, operators))
        }) {
            return Ok(());
        }
        let nesting = Nesting { depth, inherited };
        for relationship in &collection.relationships {
            let Some(value) = data.get_mut(&relationship.key) else {
                continue;
            };
            if !holds_documents(value, operators) {
                continue;
            }
            let related = self.related_of(collection, &relationship.related_collection)?;
            let field = relationship.key.as_str();
            match value {
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if let Value::Object(document) = item {
                            let document = std::mem::take(document);
                            let id = self
                                .nested_document(&related, field, document, nesting)
                                .await?;
                            *item = Value::String(id);
                        }
                    }
                }
                Value::Object(document) => {
                    let document = std::mem::take(document);
                    let id = self
                        .nested_document(&related, field, document, nesting)
                        .await?;
                    data.insert(relationship.key.clone(), Value::String(id));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The collection `id` of `collection`'s database, which a relationship of
    /// the model names.
    fn related_of(&self, collection: &Collection, id: &str) -> AppResult<Arc<Collection>> {
        self.model
            .collection(&collection.database_id, id)
            .cloned()
            .ok_or_else(|| AppError::NotFound {
                what: "collection",
                id: id.to_string(),
            })
    }

    /// Writes one nested document of `related`, given for the field `field`;
    /// answers its id.
    fn nested_document<'a>(
        &'a self,
        related: &'a Collection,
        field: &'a str,
        mut document: Map<String, Value>,
        nesting: Nesting<'a>,
    ) -> BoxFuture<'a, AppResult<String>> {
        Box::pin(async move {
            let invalid = |reason: String| AppError::Invalid {
                code: codes::VALUE_INVALID,
                field: field.to_string(),
                reason,
            };
            let given = match document.remove("$id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id),
                Some(_) => return Err(invalid("a related document's `$id` is a string".into())),
            };
            let permissions = match document.remove("$permissions") {
                None | Some(Value::Null) => None,
                Some(value) => {
                    Some(serde_json::from_value::<Vec<String>>(value).map_err(|_| {
                        invalid("a related document's `$permissions` is a list of strings".into())
                    })?)
                }
            };
            // What Appwrite's clients send back with a document, and no nested
            // write sets.
            for system in [
                "$sequence",
                "$databaseId",
                "$collectionId",
                "$createdAt",
                "$updatedAt",
            ] {
                document.remove(system);
            }
            let id = ids::resolve(field, given.as_deref())?;
            let named = given.as_deref().is_some_and(|given| given == id);
            if named && document.is_empty() && permissions.is_none() {
                // Names a document, as its id would; the write checks it exists.
                return Ok(id);
            }
            if nesting.depth > MAX_NESTING {
                return Err(invalid(format!(
                    "related documents nest at most {MAX_NESTING} levels deep"
                )));
            }
            self.tx.spend_nested(field)?;
            let depth = nesting.depth + 1;
            let written = async {
                if named {
                    self.upsert_at(
                        related,
                        id.clone(),
                        document,
                        permissions,
                        false,
                        depth,
                        nesting.inherited,
                    )
                    .await?;
                } else {
                    let new = NewDocument {
                        id: Some(id.clone()),
                        data: document,
                        permissions: permissions
                            .or_else(|| nesting.inherited.map(<[String]>::to_vec)),
                        times: Default::default(),
                    };
                    self.create_at(related, new, Sharing::Among, depth).await?;
                }
                Ok(())
            }
            .await;
            // An error of the related document names its field by its path from
            // the document written (`author.name`).
            written.map_err(|err| within(field, err))?;
            Ok(id)
        })
    }

    /// Upserts documents one after the other ([`Documents::upsert`]), all in the
    /// request's transaction; answers those the caller may read, in input order.
    pub async fn upsert_many(
        &self,
        collection: &Collection,
        upserts: Vec<Upsert>,
    ) -> AppResult<Vec<Document>> {
        let mut written = Vec::with_capacity(upserts.len());
        for upsert in upserts {
            let answer = self
                .upsert(collection, upsert.id, upsert.data, upsert.permissions, true)
                .await?;
            written.extend(answer);
        }
        Ok(written)
    }

    /// Adds `by` (negative to subtract) to the numeric attribute `key`, refusing
    /// a result past `bound` (see [`documents::increment`]).
    pub async fn increment(
        &self,
        collection: &Collection,
        id: &str,
        key: &str,
        by: f64,
        bound: Option<f64>,
    ) -> AppResult<Option<Document>> {
        let mut op = self.tx.writer().await?;
        let result =
            documents::increment(&mut op, collection, self.access, id, key, by, bound).await;
        let (previous, document) = op.end(result)?;
        Ok(self.announce(collection, document, "update", Some(&previous)))
    }

    /// Deletes a document and what its relationships' on-delete rules take
    /// along (see [`documents::delete`]).
    pub async fn delete(&self, collection: &Arc<Collection>, id: &str) -> AppResult<()> {
        let mut op = self.tx.writer().await?;
        let result = documents::delete(&mut op, collection, self.access, id, self.model).await;
        let deleted = op.end(result)?;
        self.announce_deleted(deleted);
        Ok(())
    }

    /// The ids of the documents `resolved` finds that the caller may read, at
    /// most [`documents::MAX_BULK`] (more is `TOO_MANY_DOCUMENTS`, naming `field`),
    /// found on a reader.
    async fn candidates(
        &self,
        collection: &Collection,
        resolved: &ResolvedFilter,
        field: &str,
    ) -> AppResult<Vec<Value>> {
        let candidates = {
            let mut conn = self.tx.reader().await?;
            let query = ListQuery::first(resolved.clone(), documents::MAX_BULK);
            documents::list(&mut conn, collection, self.access, &query).await?
        };
        if candidates.has_more {
            return Err(AppError::Invalid {
                code: codes::TOO_MANY_DOCUMENTS,
                field: field.into(),
                reason: format!(
                    "more than {} documents match; narrow the {field}",
                    documents::MAX_BULK
                ),
            });
        }
        Ok(candidates
            .documents
            .iter()
            .map(|(document, _)| Value::String(document.id.clone()))
            .collect())
    }

    /// Those of the documents `ids` that `resolved` still finds, read on `op`
    /// (the writer): looked up by id, so the filter meets at most their rows.
    async fn still_matching(
        &self,
        op: &mut Conn<'_>,
        collection: &Collection,
        target: &Target,
        resolved: &ResolvedFilter,
        ids: &[Value],
    ) -> AppResult<Vec<Document>> {
        let mut matching = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::filter::MAX_IN_VALUES) {
            let by_id = Filter::In {
                field: Field::Id,
                values: chunk.to_vec(),
                negate: false,
            }
            .resolve(target, Use::Query)
            .map_err(FilterError::into_app_error)?;
            let query = ListQuery::first(
                ResolvedFilter::And(vec![by_id, resolved.clone()]),
                chunk.len(),
            );
            let listed = documents::list(op, collection, self.access, &query).await?;
            matching.extend(listed.documents.into_iter().map(|(document, _)| document));
        }
        Ok(matching)
    }

    /// Sets the same `data` (and `permissions`, when given) on the documents
    /// matching `filter` that the caller may read, at most [`documents::MAX_BULK`]
    /// (more is refused): all or none, each needing its `update` permission.
    /// Answers those the caller may read once written, in the filter's order.
    pub async fn update_matching(
        &self,
        collection: &Collection,
        filter: Filter,
        mut data: Map<String, Value>,
        permissions: Option<Vec<String>>,
    ) -> AppResult<Vec<Document>> {
        if let Some(field) = self.reverse_field_in(collection, &data) {
            return Err(AppError::Invalid {
                code: codes::VALUE_INVALID,
                field,
                reason:
                    "documents point at one document each: set this field one document at a time"
                        .into(),
            });
        }
        let (target, resolved) = resolved_filter(collection, filter)?;
        let ids = self.candidates(collection, &resolved, "queries").await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Under the writer, the candidates that still match: two such updates
        // at once change a document once each only while it matches.
        let matching = {
            let mut op = self.tx.writer().await?;
            let result = async {
                let matching = self
                    .still_matching(&mut op, collection, &target, &resolved, &ids)
                    .await?;
                // Counted with the request's deletes: aliases of one bulk write
                // must not change a collection a thousand at a time, without end.
                op.spend_deletions(matching.len())?;
                Ok(matching)
            }
            .await;
            op.end(result)?
        };
        if matching.is_empty() {
            return Ok(Vec::new());
        }
        // Once, before the change is copied to every document: they all point
        // at the same related documents.
        self.write_nested(collection, &mut data, true, 1, permissions.as_deref())
            .await?;
        let changes = matching
            .into_iter()
            .map(|document| {
                (
                    document.id,
                    DocumentChanges {
                        data: data.clone(),
                        permissions: permissions.clone(),
                        expected_updated_at: None,
                        times: Default::default(),
                        // The generic API's: its values may be Appwrite's operators.
                        operators: true,
                    },
                )
            })
            .collect();
        self.update_many(collection, changes).await
    }

    /// Deletes the documents matching `filter` that the caller may read, at most
    /// [`documents::MAX_BULK`] (more is refused): all or none. Answers the ids of
    /// the documents matched, cascades not included.
    pub async fn delete_matching(
        &self,
        collection: &Arc<Collection>,
        filter: Filter,
    ) -> AppResult<Vec<String>> {
        let (target, resolved) = resolved_filter(collection, filter)?;
        // What the filter costs is the client's choice: it runs on a reader (the
        // request's transaction only if it wrote already), not under the one
        // writer that every other write of the replica waits for. A filter
        // matching nothing never takes the writer.
        let ids = self.candidates(collection, &resolved, "filter").await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut op = self.tx.writer().await?;
        let result = async {
            let matching = self
                .still_matching(&mut op, collection, &target, &resolved, &ids)
                .await?;
            let mut deleted_ids = Vec::with_capacity(matching.len());
            for document in matching {
                match documents::delete(&mut op, collection, self.access, &document.id, self.model)
                    .await
                {
                    Ok(deleted) => {
                        self.announce_deleted(deleted);
                        deleted_ids.push(document.id);
                    }
                    // Taken along by an earlier one's cascade.
                    Err(AppError::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(deleted_ids)
        }
        .await;
        op.end(result)
    }

    /// Queues the event of a write for after the commit, and answers the
    /// document when the caller may read it as the write left it (a caller may
    /// write what it may not read, and learns no more of it by writing).
    fn announce(
        &self,
        collection: &Collection,
        document: Document,
        action: &str,
        previous: Option<&Document>,
    ) -> Option<Document> {
        self.tx
            .publish_after_commit(documents::event(collection, &document, action, previous));
        self.shows(collection, &document).then_some(document)
    }

    /// Queues the events of a delete, in the order it made its changes:
    /// cascades and cleared references included.
    fn announce_deleted(&self, deleted: documents::Deleted) {
        for effect in &deleted {
            let event = match effect {
                DeleteEffect::Removed(holder, document) => {
                    documents::event(holder, document, "delete", None)
                }
                DeleteEffect::Cleared {
                    holder,
                    before,
                    after,
                } => documents::event(holder, after, "update", Some(before)),
            };
            self.tx.publish_after_commit(event);
        }
    }
}

/// Where a nested write is: how deep, and the permissions its document was
/// given, which a related document created without its own takes.
#[derive(Debug, Clone, Copy)]
struct Nesting<'a> {
    depth: usize,
    inherited: Option<&'a [String]>,
}

/// `err`, of a related document written for `field`, naming its field by its
/// path from the document written (`author.name`).
fn within(field: &str, err: AppError) -> AppError {
    match err {
        AppError::Invalid {
            code,
            field: inner,
            reason,
        } => AppError::Invalid {
            code,
            field: format!("{field}.{inner}"),
            reason,
        },
        other => other,
    }
}

/// `document` as answered, with the reverse fields its write set.
fn with_reverse(mut document: Document, written: Map<String, Value>) -> Document {
    document.data.extend(written);
    document
}

/// `filter` resolved against `collection` for a query, with the target it was
/// resolved against.
fn resolved_filter(collection: &Collection, filter: Filter) -> AppResult<(Target, ResolvedFilter)> {
    let target = Target::of(collection);
    let resolved = filter
        .resolve(&target, Use::Query)
        .map_err(FilterError::into_app_error)?;
    Ok((target, resolved))
}
