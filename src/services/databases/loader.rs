//! Batched reads across relationships: every `post.author` of one request is
//! collected for a moment and read with one `SELECT … WHERE id IN (…)` per
//! related collection, and every first page of `author.posts(...)` with the same
//! arguments with one windowed query, so a list of 50 posts with their authors
//! (or 50 authors with their posts) costs a constant number of statements. One
//! loader of each per request: they read through the request's transaction
//! (seeing its writes) with the caller's permissions.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_graphql::dataloader::Loader;

use crate::error::AppError;

use super::DataModel;
use super::documents::{self, Access, Document, Listed, ParentScope};
use super::filter::{OrderBy, ResolvedFilter};
use super::tx::RequestTx;

/// A referenced document: database, collection and document id.
pub type RelatedKey = (String, String, String);

pub struct RelatedLoader {
    /// Weak: the request's transaction owns this loader.
    pub tx: Weak<RequestTx>,
    pub access: Access,
    pub model: Arc<DataModel>,
}

impl Loader<RelatedKey> for RelatedLoader {
    type Value = Document;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[RelatedKey],
    ) -> Result<HashMap<RelatedKey, Document>, async_graphql::Error> {
        let tx = self
            .tx
            .upgrade()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the request ended")).to_graphql())?;
        let mut by_collection: HashMap<(&str, &str), Vec<String>> = HashMap::new();
        for (database, collection, id) in keys {
            by_collection
                .entry((database, collection))
                .or_default()
                .push(id.clone());
        }
        let mut found = HashMap::with_capacity(keys.len());
        let mut conn = tx.reader().await.map_err(|e| e.to_graphql())?;
        for ((database, collection_id), ids) in by_collection {
            let Some(collection) = self.model.collection(database, collection_id) else {
                continue;
            };
            let documents = documents::get_many(&mut conn, collection, &self.access, &ids)
                .await
                .map_err(|e| e.to_graphql())?;
            for document in documents {
                found.insert(
                    (
                        database.to_string(),
                        collection_id.to_string(),
                        document.id.clone(),
                    ),
                    document,
                );
            }
        }
        Ok(found)
    }
}

/// The arguments of a batched list, the same for every parent: compared by
/// `signature` (the arguments as the client wrote them).
#[derive(Debug)]
pub struct ListSpec {
    pub signature: String,
    pub filter: ResolvedFilter,
    pub orders: Vec<OrderBy>,
    pub limit: usize,
    pub want_total: bool,
}

/// One parent's first page of a list.
#[derive(Debug, Clone)]
pub struct ListKey {
    pub database: String,
    pub collection: String,
    pub scope: ParentScope,
    pub spec: Arc<ListSpec>,
    pub parent: String,
}

impl ListKey {
    fn group(&self) -> (&str, &str, &ParentScope, &str) {
        (
            &self.database,
            &self.collection,
            &self.scope,
            &self.spec.signature,
        )
    }
}

impl PartialEq for ListKey {
    fn eq(&self, other: &Self) -> bool {
        self.group() == other.group() && self.parent == other.parent
    }
}

impl Eq for ListKey {}

impl std::hash::Hash for ListKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.group().hash(state);
        self.parent.hash(state);
    }
}

pub struct ListLoader {
    pub tx: Weak<RequestTx>,
    pub access: Access,
    pub model: Arc<DataModel>,
}

impl Loader<ListKey> for ListLoader {
    type Value = Listed;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ListKey],
    ) -> Result<HashMap<ListKey, Listed>, async_graphql::Error> {
        let tx = self
            .tx
            .upgrade()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the request ended")).to_graphql())?;
        let mut groups: HashMap<(&str, &str, &ParentScope, &str), Vec<&ListKey>> = HashMap::new();
        for key in keys {
            groups.entry(key.group()).or_default().push(key);
        }
        let mut found = HashMap::with_capacity(keys.len());
        let mut conn = tx.reader().await.map_err(|e| e.to_graphql())?;
        for ((database, collection_id, scope, _), members) in groups {
            let Some(collection) = self.model.collection(database, collection_id) else {
                continue;
            };
            let spec = &members[0].spec;
            let parents: Vec<String> = members.iter().map(|k| k.parent.clone()).collect();
            let mut pages = documents::list_for_parents(
                &mut conn,
                collection,
                &self.access,
                scope,
                &spec.filter,
                &spec.orders,
                spec.limit,
                spec.want_total,
                &parents,
            )
            .await
            .map_err(|e| e.to_graphql())?;
            for key in members {
                if let Some(page) = pages.remove(&key.parent) {
                    found.insert(key.clone(), page);
                }
            }
        }
        Ok(found)
    }
}
