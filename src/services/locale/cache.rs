//! The answers of `locale`'s lists, kept per (list, language, selection): the
//! data is compiled in, so a list asked for in the same language with the same
//! fields is always the same value, and resolving its hundreds of objects field by
//! field is most of what such a request costs. A schema extension answers a list
//! field from here before the executor walks it. Only plain selections are kept
//! (fields without arguments, aliases allowed; no fragments or directives, which
//! may depend on variables); anything else is resolved as usual. Bounded in
//! entries; shared by every project, since no list depends on one.

use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::{Field, Selection};
use async_graphql::{ServerResult, Value};
use lru::LruCache;

use super::data::data;
use super::negotiate;
use crate::services::users::service::ClientInfo;

/// The lists of `Locale`, by field name.
const LISTS: &[&str] = &[
    "countries",
    "countriesEU",
    "countriesPhones",
    "continents",
    "currencies",
    "languages",
    "localeCodes",
];
/// Most answers kept: every list in a dozen languages with a few selections each.
const MAX_ENTRIES: usize = 256;
/// Longest selection kept; a longer one (many aliases) is resolved as usual.
const MAX_SELECTION_BYTES: usize = 512;

type Cache = Mutex<LruCache<String, Arc<Value>>>;

static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(MAX_ENTRIES).unwrap_or(NonZeroUsize::MIN),
    ))
});
static EXTENSION: LazyLock<Arc<ListCache>> = LazyLock::new(|| Arc::new(ListCache));

/// Adds the cache to a schema.
pub struct ListCacheFactory;

impl ExtensionFactory for ListCacheFactory {
    fn create(&self) -> Arc<dyn Extension> {
        // Stateless per request: one instance serves them all.
        EXTENSION.clone()
    }
}

struct ListCache;

/// The key of a list field's answer: its name, the request's language and its
/// plain selection; `None` when the selection is not plain.
fn key(ctx: &ExtensionContext<'_>, info: &ResolveInfo<'_>) -> Option<String> {
    if info.parent_type != "Locale" || !LISTS.contains(&info.name) {
        return None;
    }
    let asked = ctx
        .data_opt::<ClientInfo>()
        .map_or("", |c| c.locale.as_str());
    let locale = negotiate::pick(data(), asked);
    let mut key = format!("{}\0{}\0", info.name, locale.code());
    selection(info.field, &mut key)?;
    (key.len() <= MAX_SELECTION_BYTES).then_some(key)
}

/// Appends the plain selection of `field` to `key`, or `None` when it is not plain.
fn selection(field: &Field, key: &mut String) -> Option<()> {
    if !field.directives.is_empty() {
        return None;
    }
    for item in &field.selection_set.node.items {
        let Selection::Field(child) = &item.node else {
            return None;
        };
        let child = &child.node;
        if !child.arguments.is_empty()
            || !child.directives.is_empty()
            || !child.selection_set.node.items.is_empty()
        {
            return None;
        }
        if let Some(alias) = &child.alias {
            key.push_str(alias.node.as_str());
            key.push(':');
        }
        key.push_str(child.name.node.as_str());
        key.push(',');
    }
    Some(())
}

fn lock() -> std::sync::MutexGuard<'static, LruCache<String, Arc<Value>>> {
    // A panic while holding the lock leaves a consistent map: keep using it.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl Extension for ListCache {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let Some(key) = key(ctx, &info) else {
            return next.run(ctx, info).await;
        };
        let kept = lock().get(&key).cloned();
        if let Some(value) = kept {
            return Ok(Some(Value::clone(&value)));
        }
        let value = next.run(ctx, info).await?;
        if let Some(value) = &value {
            lock().put(key, Arc::new(value.clone()));
        }
        Ok(value)
    }
}
