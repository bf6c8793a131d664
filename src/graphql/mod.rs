//! The per-project GraphQL schema: each service adds its fields through
//! `register(&mut SchemaParts)`, this module stitches them into one
//! `async_graphql::dynamic` schema with the shared scalars and limits, and caches it
//! per project until the bus announces that the project changed.

pub mod limits;
pub mod parsed;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dynamic::{Field, Object, Schema, Subscription, SubscriptionField, Type};
use tokio::sync::{OnceCell, RwLock};

use crate::AppState;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::services::databases::DataModel;
use crate::services::{self, projects::Project};

/// The fields and types that services contribute to a project's schema.
#[derive(Default)]
pub struct SchemaParts {
    query: Vec<Field>,
    mutation: Vec<Field>,
    subscription: Vec<SubscriptionField>,
    types: Vec<Type>,
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
}

/// Builds the schema of `project`. `state` is attached as schema data when given
/// (a running server); `nimbus schema print` builds without it.
pub fn build_schema(
    config: &Config,
    project: &Project,
    model: &Arc<DataModel>,
    state: Option<AppState>,
) -> AppResult<Schema> {
    let mut parts = SchemaParts::default();
    parts.add_types(types::scalars());
    parts.add_type(types::page_info());
    services::register_all(&mut parts, project, model);

    let query = parts.query.into_iter().fold(
        Object::new("Query").description("Reads of every Nimbus service."),
        Object::field,
    );
    let mutation = parts.mutation.into_iter().fold(
        Object::new("Mutation").description("Writes of every Nimbus service."),
        Object::field,
    );
    let subscription = parts.subscription.into_iter().fold(
        Subscription::new("Subscription").description("Realtime events, over `/v1/graphql/ws`."),
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
    for ty in parts.types {
        builder = builder.register(ty);
    }
    if !config.introspection {
        // "Did you mean …" in validation errors would spell the schema out field by
        // field to whoever guesses near a name.
        builder = builder.disable_introspection().disable_suggestions();
    }
    builder = builder.data(model.clone());
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder
        .finish()
        .map_err(|err| AppError::Internal(anyhow::anyhow!("building the schema failed: {err}")))
}

/// The SDL of a project with no collections: what `schema/core.graphql` holds.
pub fn core_sdl(config: &Config) -> AppResult<String> {
    let project = Project::placeholder("default");
    Ok(build_schema(config, &project, &Arc::default(), None)?.sdl())
}

/// A project, its collections and its built schema, as cached.
pub struct LoadedProject {
    pub project: Arc<Project>,
    pub model: Arc<DataModel>,
    pub schema: Schema,
}

/// Loaded projects, by id. Each project's schema is built once even when many
/// requests (or reconnecting WebSockets) ask for it at the same moment: they wait on
/// one cell. Bounded: past `MAX_CACHED` entries an arbitrary one is dropped (it is
/// rebuilt on its next request).
#[derive(Default)]
pub struct ProjectSchemas {
    loaded: RwLock<HashMap<String, Arc<OnceCell<Arc<LoadedProject>>>>>,
}

const MAX_CACHED: usize = 512;

impl ProjectSchemas {
    /// The loaded project `id`, building its schema on first use.
    pub async fn get(&self, state: &AppState, id: &str) -> AppResult<Arc<LoadedProject>> {
        let cached = self.loaded.read().await.get(id).cloned();
        let cell = match cached {
            Some(cell) => cell,
            None => {
                let mut map = self.loaded.write().await;
                if !map.contains_key(id)
                    && map.len() >= MAX_CACHED
                    && let Some(evicted) = map.keys().next().cloned()
                {
                    map.remove(&evicted);
                }
                map.entry(id.to_string()).or_default().clone()
            }
        };
        let loaded = cell
            .get_or_try_init(|| async {
                let project = services::projects::service::load_project(state, id)
                    .await?
                    .ok_or_else(|| AppError::ProjectNotFound { id: id.to_string() })?;
                let model = Arc::new(services::databases::store::load_model(state, id).await?);
                let schema = build_schema(&state.config, &project, &model, Some(state.clone()))?;
                Ok::<_, AppError>(Arc::new(LoadedProject {
                    project: Arc::new(project),
                    model,
                    schema,
                }))
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

    /// Forgets project `id`; its next request reloads it. A load already under way
    /// finishes for its waiters but is not kept.
    pub async fn invalidate(&self, id: &str) {
        self.loaded.write().await.remove(id);
    }
}

impl ProjectSchemas {
    /// Forgets every project.
    pub async fn invalidate_all(&self) {
        self.loaded.write().await.clear();
    }
}
