//! Batched reads of referenced documents: every `post.author` of one request is
//! collected for a moment and read with one `SELECT … WHERE id IN (…)` per
//! related collection, so a list of 50 posts with their authors costs a constant
//! number of statements. One loader per request: it reads through the request's
//! transaction (seeing its writes) with the caller's permissions.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_graphql::dataloader::Loader;

use crate::AppState;
use crate::error::AppError;

use super::documents::{self, Access, Document};
use super::tx::RequestTx;
use super::{DataModel, sql_dialect};

/// A referenced document: database, collection and document id.
pub type RelatedKey = (String, String, String);

pub struct RelatedLoader {
    pub state: AppState,
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
        let dialect = sql_dialect(self.state.db.dialect());
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
            let documents = documents::get_many(&mut conn, dialect, collection, &self.access, &ids)
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
