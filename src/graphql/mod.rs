//! The toolkit every service builds its part of a project's schema with: the
//! parts services add their fields to (`SchemaParts`), the stitching of those parts
//! into one `async_graphql::dynamic` schema with the shared scalars and limits, and
//! the per-project cache that keeps a built schema until the bus announces that
//! the project changed. It knows no service: `services` lists them and assembles.

pub mod alike;
pub mod budget;
pub mod input;
pub mod limits;
pub mod nodes;
pub mod parsed;
pub mod types;
pub mod variables;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_graphql::dynamic::{
    Field, Object, Schema, SchemaBuilder, Subscription, SubscriptionField, Type,
};
use async_graphql::extensions::{Extension, ExtensionFactory};
use tokio::sync::{OnceCell, RwLock};

use crate::AppState;
use crate::config::Config;
use crate::error::{AppError, AppResult};

/// The fields and types that services contribute to a project's schema.
#[derive(Default)]
pub struct SchemaParts {
    query: Vec<Field>,
    mutation: Vec<Field>,
    subscription: Vec<SubscriptionField>,
    types: Vec<Type>,
    extensions: Vec<Box<dyn ExtensionFactory>>,
    alike: Vec<Box<dyn alike::SameForAll>>,
}

/// A service's extension, as the schema builder takes one.
struct ServiceExtension(Box<dyn ExtensionFactory>);

impl ExtensionFactory for ServiceExtension {
    fn create(&self) -> Arc<dyn Extension> {
        self.0.create()
    }
}

impl SchemaParts {
    pub fn query(&mut self, field: Field) {
        self.query.push(field);
    }

    pub fn mutation(&mut self, field: Field) {
        self.mutation.push(field);
    }

    pub fn subscription(&mut self, field: SubscriptionField) {
        self.subscription.push(field);
    }

    pub fn add_type(&mut self, ty: impl Into<Type>) {
        self.types.push(ty.into());
    }

    pub fn add_types(&mut self, types: impl IntoIterator<Item = Type>) {
        self.types.extend(types);
    }

    /// Adds an extension that sees every request of the schema (after the limits):
    /// for a service whose answers need more than a resolver. Each one costs every
    /// request of the schema its hooks.
    pub fn extension(&mut self, factory: impl ExtensionFactory) {
        self.extensions.push(Box::new(factory));
    }

    /// Declares operations whose whole answers are alike for every caller, for the
    /// HTTP handler to keep and send again.
    pub fn answers_alike(&mut self, rule: impl alike::SameForAll) {
        self.alike.push(Box::new(rule));
    }

    /// Adds an input type declared with [`graphql_input!`](crate::graphql_input).
    pub fn add_input<T: input::GraphQLInput>(&mut self) {
        self.add_type(T::input_object());
    }
}

impl SchemaParts {
    /// Parts holding the shared scalars and types every schema starts with.
    pub fn new() -> Self {
        let mut parts = Self::default();
        parts.add_types(types::scalars());
        parts.add_type(types::page_info());
        parts
    }

    /// Stitches the parts into one schema with the limits of `config`; `data`
    /// attaches the schema data its resolvers need. Also hands back the operations
    /// declared alike for every caller.
    pub fn finish(
        self,
        config: &Config,
        data: impl FnOnce(SchemaBuilder) -> SchemaBuilder,
    ) -> AppResult<(Schema, alike::Rules)> {
        let rules: alike::Rules = self.alike.into();
        let query = self.query.into_iter().fold(
            Object::new("Query").description("Reads of every Nimbus service."),
            Object::field,
        );
        let mutation = self.mutation.into_iter().fold(
            Object::new("Mutation").description("Writes of every Nimbus service."),
            Object::field,
        );
        let subscription = self.subscription.into_iter().fold(
            Subscription::new("Subscription")
                .description("Realtime events, over `/v1/graphql/ws`."),
            Subscription::field,
        );
        let mut builder = Schema::build("Query", Some("Mutation"), Some("Subscription"))
            .register(query)
            .register(mutation)
            .register(subscription)
            .enable_uploading()
            .limit_recursive_depth(limits::MAX_NESTING)
            .limit_directives(config.graphql_max_directives)
            .extension(limits::LimitsFactory::new(limits::QueryLimits::of(config)));
        for ty in self.types {
            builder = builder.register(ty);
        }
        for extension in self.extensions {
            builder = builder.extension(ServiceExtension(extension));
        }
        if !config.introspection {
            // "Did you mean …" in validation errors would spell the schema out field by
            // field to whoever guesses near a name.
            builder = builder.disable_introspection().disable_suggestions();
        }
        let schema = data(builder).finish().map_err(|err| {
            AppError::Internal(anyhow::anyhow!("building the schema failed: {err}"))
        })?;
        Ok((schema, rules))
    }
}

/// What the cache keeps per project, and how it is loaded on first use.
pub trait LoadProject: Sized + Send + Sync + 'static {
    /// Loads project `id`; `None` when there is no such project.
    fn load(state: &AppState, id: &str) -> impl Future<Output = AppResult<Option<Self>>> + Send;
}

/// Loaded projects, by id. Each project's schema is built once even when many
/// requests (or reconnecting WebSockets) ask for it at the same moment: they wait on
/// one cell. Bounded: past `MAX_CACHED` entries an arbitrary one is dropped (it is
/// rebuilt on its next request).
pub struct ProjectSchemas<T> {
    loaded: RwLock<HashMap<String, Arc<OnceCell<Arc<T>>>>>,
    /// Counts invalidations: a project loaded apart from the map
    /// ([`ProjectSchemas::load_in_place_of_another`]) across one is not kept.
    invalidations: std::sync::atomic::AtomicU64,
}

impl<T> Default for ProjectSchemas<T> {
    fn default() -> Self {
        Self {
            loaded: RwLock::default(),
            invalidations: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

const MAX_CACHED: usize = 512;

impl<T: LoadProject> ProjectSchemas<T> {
    /// The loaded project `id`, building its schema on first use.
    pub async fn get(&self, state: &AppState, id: &str) -> AppResult<Arc<T>> {
        // Nearly every request finds its project loaded: that path awaits nothing,
        // and the loading one is boxed, so every request's future (which holds this
        // one) stays small instead of carrying a schema build's state.
        if let Ok(loaded) = self.loaded.try_read()
            && let Some(project) = loaded.get(id).and_then(|cell| cell.get())
        {
            return Ok(project.clone());
        }
        Box::pin(self.get_or_load(state, id)).await
    }

    async fn get_or_load(&self, state: &AppState, id: &str) -> AppResult<Arc<T>> {
        let cached = self.loaded.read().await.get(id).cloned();
        let cell = match cached {
            Some(cell) => cell,
            None => {
                let mut map = self.loaded.write().await;
                if map.contains_key(id) || map.len() < MAX_CACHED {
                    map.entry(id.to_string()).or_default().clone()
                } else {
                    // Full: the project is loaded apart and takes another's place
                    // only once it is known to exist, so requests naming unknown
                    // ids cannot push loaded projects out.
                    drop(map);
                    return self.load_in_place_of_another(state, id).await;
                }
            }
        };
        let loaded = cell
            .get_or_try_init(|| async {
                let loaded = T::load(state, id)
                    .await?
                    .ok_or_else(|| AppError::ProjectNotFound { id: id.to_string() })?;
                Ok::<_, AppError>(Arc::new(loaded))
            })
            .await;
        match loaded {
            Ok(loaded) => Ok(loaded.clone()),
            Err(err) => {
                // Unknown projects must not fill the cache with empty cells.
                let mut map = self.loaded.write().await;
                if map.get(id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    map.remove(id);
                }
                Err(err)
            }
        }
    }

    async fn load_in_place_of_another(&self, state: &AppState, id: &str) -> AppResult<Arc<T>> {
        use std::sync::atomic::Ordering;
        let before = self.invalidations.load(Ordering::SeqCst);
        let loaded = Arc::new(
            T::load(state, id)
                .await?
                .ok_or_else(|| AppError::ProjectNotFound { id: id.to_string() })?,
        );
        let mut map = self.loaded.write().await;
        // Changed while it loaded: answered, not kept (it may be older than the
        // change).
        if self.invalidations.load(Ordering::SeqCst) != before {
            return Ok(loaded);
        }
        if !map.contains_key(id)
            && map.len() >= MAX_CACHED
            && let Some(evicted) = map.keys().next().cloned()
        {
            map.remove(&evicted);
        }
        let cell = map.entry(id.to_string()).or_default().clone();
        // Loaded meanwhile by another request: theirs is kept, and answered.
        let _ = cell.set(loaded.clone());
        Ok(cell.get().cloned().unwrap_or(loaded))
    }

    /// Forgets project `id`; its next request reloads it. A load already under way
    /// finishes for its waiters but is not kept.
    pub async fn invalidate(&self, id: &str) {
        let mut map = self.loaded.write().await;
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.remove(id);
    }
}

impl<T: LoadProject> ProjectSchemas<T> {
    /// Forgets every project.
    pub async fn invalidate_all(&self) {
        let mut map = self.loaded.write().await;
        self.invalidations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        map.clear();
    }
}
