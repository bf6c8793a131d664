//! The services of Nimbus, one folder each, and the one place that lists them.
//! Every service owns its part of the schema (`register`), its domain logic
//! (`service`) and its SQL (`store`); this module assembles a project's schema from
//! their parts with the toolkit in `graphql`, and says what the cache of built
//! schemas holds. Nothing below this module imports a service.

pub mod account;
pub mod admins;
pub mod avatars;
pub mod databases;
pub mod functions;
pub mod jobs;
pub mod keys;
pub mod locale;
pub mod projects;
pub mod realtime;
pub mod storage;
pub mod teams;
pub mod usage;
pub mod users;
pub mod webhooks;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use async_graphql::dynamic::{ResolverContext, Schema};
use async_graphql::registry::MetaType;

use crate::AppState;
use crate::auth::{AdminGrant, ScopedAccess};
use crate::config::Config;
use crate::error::AppResult;
use crate::graphql::types::{app, caller};
use crate::graphql::{LoadProject, SchemaParts};
use databases::DataModel;
use projects::Project;

/// Adds every service's fields and types to a project's schema.
pub fn register_all(parts: &mut SchemaParts, project: &Project, model: &DataModel) {
    projects::register(parts, project);
    keys::register(parts, project);
    users::register(parts, project);
    account::register(parts, project);
    teams::register(parts, project);
    realtime::register(parts, project);
    databases::register(parts, project, model);
    storage::register(parts, project);
    locale::register(parts, project);
    avatars::register(parts, project);
    webhooks::register(parts, project);
    functions::register(parts, project);
    jobs::register(parts, project);
    usage::register(parts, project);
}

/// Builds the schema of `project`. `state` is attached as schema data when given
/// (a running server); `nimbus schema print` builds without it.
pub fn build_schema(
    config: &Config,
    project: &Project,
    model: &Arc<DataModel>,
    state: Option<AppState>,
) -> AppResult<(Schema, crate::graphql::alike::Rules)> {
    let mut parts = SchemaParts::new();
    register_all(&mut parts, project, model);
    let resources: Arc<dyn realtime::ResourceAccess> = Arc::new(ResourceChannels);
    let project_data: Arc<dyn projects::service::ProjectData> = Arc::new(ProjectRemains);
    parts.finish(config, |builder| {
        let builder = builder
            .data(model.clone())
            .data(resources)
            .data(project_data);
        match state {
            Some(state) => builder.data(state),
            None => builder,
        }
    })
}

/// The services whose resources a presence channel can name, for realtime to ask
/// whether the caller may read one.
struct ResourceChannels;

#[async_trait::async_trait]
impl realtime::ResourceAccess for ResourceChannels {
    async fn check(&self, ctx: &ResolverContext<'_>, segments: &[&str]) -> Option<AppResult<()>> {
        Some(match ChannelResource::of(segments)? {
            ChannelResource::Document {
                database_id,
                collection_id,
                id,
            } => databases::schema::may_read_document(ctx, database_id, collection_id, id).await,
            ChannelResource::File { bucket_id, id } => may_read_file(ctx, bucket_id, id).await,
        })
    }

    async fn check_now(
        &self,
        state: &AppState,
        reader: &crate::auth::Caller,
        segments: &[&str],
    ) -> Option<AppResult<()>> {
        Some(match ChannelResource::of(segments)? {
            ChannelResource::Document {
                database_id,
                collection_id,
                id,
            } => {
                databases::schema::may_read_document_now(
                    state,
                    reader,
                    database_id,
                    collection_id,
                    id,
                )
                .await
            }
            ChannelResource::File { bucket_id, id } => {
                may_read_file_now(state, reader, bucket_id, id).await
            }
        })
    }

    async fn still_readable(
        &self,
        state: &AppState,
        reader: &crate::auth::Caller,
        roles: &crate::auth::permissions::RoleNames,
        events: Vec<crate::bus::Event>,
    ) -> AppResult<Vec<crate::bus::Event>> {
        if reader.key().is_some() || events.is_empty() {
            return Ok(events);
        }
        // The project's collections as this replica has them now: a change of
        // one reaches every replica's cache through the event log.
        let model = state
            .schemas
            .get(state, &reader.project.id)
            .await?
            .model
            .clone();
        let mut buckets: HashMap<String, Option<storage::Bucket>> = HashMap::new();
        let mut kept = Vec::with_capacity(events.len());
        for mut event in events {
            let resource = event.channels.iter().find_map(|channel| {
                let segments: Vec<&str> = channel.split('.').collect();
                Some(match ChannelResource::of(&segments)? {
                    ChannelResource::Document {
                        database_id,
                        collection_id,
                        ..
                    } => Container::Collection(database_id.to_string(), collection_id.to_string()),
                    ChannelResource::File { bucket_id, .. } => {
                        Container::Bucket(bucket_id.to_string())
                    }
                })
            });
            let readers_now =
                |version: &serde_json::Value,
                 buckets: &HashMap<String, Option<storage::Bucket>>| {
                    match &resource {
                        Some(Container::Collection(database_id, collection_id)) => model
                            .collection(database_id, collection_id)
                            .map(|c| databases::documents::read_roles_now(c, version))
                            .unwrap_or_default(),
                        Some(Container::Bucket(bucket_id)) => {
                            storage::service::file_read_roles_now(
                                buckets.get(bucket_id).and_then(Option::as_ref),
                                version,
                            )
                        }
                        None => Vec::new(),
                    }
                };
            match &resource {
                None => {
                    kept.push(event);
                    continue;
                }
                Some(Container::Bucket(bucket_id)) if !buckets.contains_key(bucket_id) => {
                    let bucket =
                        storage::service::bucket_now(state, &reader.project.id, bucket_id).await?;
                    buckets.insert(bucket_id.clone(), bucket);
                }
                Some(_) => {}
            }
            let readable = |roles_now: Vec<String>| roles_now.iter().any(|r| roles.contains(r));
            if !readable(readers_now(&event.payload, &buckets)) {
                continue;
            }
            if let Some(previous) = &event.previous
                && !readable(readers_now(previous, &buckets))
            {
                event.previous = None;
            }
            kept.push(event);
        }
        Ok(kept)
    }

    async fn hide_unreadable_references(
        &self,
        ctx: &ResolverContext<'_>,
        payload: &mut serde_json::Value,
    ) -> AppResult<()> {
        databases::schema::hide_unreadable_references_in(ctx, payload).await
    }

    fn document_filter(
        &self,
        ctx: &ResolverContext<'_>,
        channels: &[String],
        queries: &[String],
    ) -> AppResult<Arc<dyn realtime::EventFilter>> {
        databases::typed::queried_documents(ctx, channels, queries)
    }
}

/// What decides who may read a document or a file: its collection or its bucket.
enum Container {
    Collection(String, String),
    Bucket(String),
}

/// What realtime asks of the services owning resources, outside a schema.
pub fn resource_access() -> &'static dyn realtime::ResourceAccess {
    &ResourceChannels
}

/// The one resource a presence channel's segments name.
enum ChannelResource<'a> {
    Document {
        database_id: &'a str,
        collection_id: &'a str,
        id: &'a str,
    },
    File {
        bucket_id: &'a str,
        id: &'a str,
    },
}

impl<'a> ChannelResource<'a> {
    /// `databases.D.collections.C.documents.ID` or `buckets.B.files.ID`.
    fn of(segments: &[&'a str]) -> Option<Self> {
        match *segments {
            [
                "databases",
                database_id,
                "collections",
                collection_id,
                "documents",
                id,
            ] => Some(ChannelResource::Document {
                database_id,
                collection_id,
                id,
            }),
            ["buckets", bucket_id, "files", id] => Some(ChannelResource::File { bucket_id, id }),
            _ => None,
        }
    }
}

/// Whether the caller may read the file `id` of the bucket `bucket_id`.
async fn may_read_file(ctx: &ResolverContext<'_>, bucket_id: &str, id: &str) -> AppResult<()> {
    may_read_file_now(app(ctx)?, caller(ctx)?, bucket_id, id).await
}

async fn may_read_file_now(
    state: &AppState,
    caller: &crate::auth::Caller,
    bucket_id: &str,
    id: &str,
) -> AppResult<()> {
    let access = ScopedAccess::of(caller)?;
    storage::service::get_file(state, &access, bucket_id, id)
        .await
        .map(|_| ())
}

/// How users reaches the memberships the teams service owns.
struct MembershipsOfTeams;

#[async_trait::async_trait]
impl users::TeamMemberships for MembershipsOfTeams {
    async fn of_user(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        confirmed_only: bool,
    ) -> AppResult<Vec<teams::Membership>> {
        let rows =
            teams::store::memberships_of_user(state.db.pool(), project_id, user_id, confirmed_only)
                .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    fn value(&self, membership: &teams::Membership) -> async_graphql::Value {
        teams::schema::membership_value(membership)
    }

    async fn gone_with_user(
        &self,
        conn: &mut sqlx::AnyConnection,
        dialect: crate::db::Dialect,
        project_id: &str,
        user_id: &str,
    ) -> AppResult<Vec<crate::bus::BusMessage>> {
        let rows =
            teams::store::memberships_of_user_held(conn, dialect, project_id, user_id).await?;
        Ok(rows
            .into_iter()
            .map(|row| teams::service::membership_gone(&row.into()))
            .collect())
    }
}

/// The team memberships users reads, as `AppState::memberships` holds them.
pub fn team_memberships() -> &'static dyn users::TeamMemberships {
    &MembershipsOfTeams
}

/// What the services keep of a project outside its rows, for projects to remove
/// when it is deleted.
struct ProjectRemains;

#[async_trait::async_trait]
impl projects::service::ProjectData for ProjectRemains {
    async fn drop_before(&self, state: &AppState, admin: &AdminGrant) -> AppResult<()> {
        databases::structure::drop_project_tables(state, admin).await
    }

    async fn forget_after(&self, state: &AppState, admin: &AdminGrant) {
        storage::service::forget_project_files(state, admin).await;
        webhooks::service::forget_project(state, admin).await;
        functions::service::forget_project(state, admin).await;
        jobs::service::forget_project(state, admin).await;
        usage::service::forget_project(state, admin).await;
    }

    async fn clear_leftovers(
        &self,
        conn: &mut sqlx::AnyConnection,
        project_id: &str,
    ) -> AppResult<()> {
        let jobs = crate::jobs::store::delete_project_jobs(&mut *conn, project_id).await?;
        webhooks::store::delete_project_deliveries(&mut *conn, project_id).await?;
        functions::store::delete_project_executions(&mut *conn, project_id).await?;
        usage::store::delete_project(&mut *conn, project_id).await?;
        if jobs > 0 {
            tracing::warn!(project = %project_id, jobs,
                "a project made again had rows of a deleted one of its id; they are removed");
        }
        Ok(())
    }
}

/// The SDL of a project with no collections: what `schema/core.graphql` holds.
pub fn core_sdl(config: &Config) -> AppResult<String> {
    Ok(core_schema(config)?.sdl())
}

fn core_schema(config: &Config) -> AppResult<Schema> {
    let project = Project::placeholder("default");
    build_schema(config, &project, &Arc::default(), None).map(|(schema, _)| schema)
}

/// The type names and root field names of a project with no collections, which a
/// collection's GraphQL names must not take. Read once from the built core
/// schema's registry.
pub fn core_names() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let config = Config::with_data_dir(std::env::temp_dir());
        let mut names: HashSet<String> = [
            "Query",
            "Mutation",
            "Subscription",
            "String",
            "Int",
            "Float",
            "Boolean",
            "ID",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(schema) = core_schema(&config) {
            let registry = schema.registry();
            let roots = [
                Some(&registry.query_type),
                registry.mutation_type.as_ref(),
                registry.subscription_type.as_ref(),
            ];
            for (name, ty) in &registry.types {
                // Introspection types: a collection name never starts with `__`.
                if name.starts_with("__") {
                    continue;
                }
                if roots.contains(&Some(name))
                    && let MetaType::Object { fields, .. } = ty
                {
                    names.extend(fields.keys().filter(|f| !f.starts_with("__")).cloned());
                }
                names.insert(name.clone());
            }
        }
        names
    })
}

/// A project, its collections and its built schema, as cached.
pub struct LoadedProject {
    pub project: Arc<Project>,
    pub model: Arc<DataModel>,
    pub schema: Schema,
    /// Its operations whose answers are alike for every caller.
    pub alike: crate::graphql::alike::Rules,
    /// Its usage counters on this replica (none when usage is off), kept here so
    /// that a request counts without looking its project up.
    pub usage: Option<Arc<usage::counters::ProjectCounters>>,
}

impl LoadProject for LoadedProject {
    async fn load(state: &AppState, id: &str) -> AppResult<Option<Self>> {
        let Some(project) = projects::service::load_project(state, id).await? else {
            return Ok(None);
        };
        let model = Arc::new(databases::store::load_model(state, id).await?);
        let (schema, alike) = build_schema(&state.config, &project, &model, Some(state.clone()))?;
        Ok(Some(LoadedProject {
            project: Arc::new(project),
            model,
            schema,
            alike,
            usage: state.usage.project(id),
        }))
    }
}

#[cfg(test)]
mod tests {
    /// Statements a signed-in user's requests run, each with the index whose
    /// range holds that user's rows: their cost is the user's rows, not
    /// everyone's (a function's executions, a project's files, a team's
    /// memberships).
    #[tokio::test]
    async fn user_scoped_lookups_read_from_their_own_index_ranges() {
        use crate::db::Db;
        use crate::services::{functions, storage, teams};
        use sqlx::Row as _;
        use std::time::Duration;
        let own = " AND caller = ?";
        let cases = [
            (
                functions::store::list_executions_sql(own, " AND id > ? ORDER BY id ASC LIMIT 21"),
                "function_executions_by_function_caller",
            ),
            (
                functions::store::count_executions_sql(own),
                "function_executions_by_function_caller",
            ),
            (
                storage::store::PENDING_UPLOADS.to_string(),
                "storage_files_by_uploader",
            ),
            (
                teams::store::CONFIRMED_MEMBERS.to_string(),
                "memberships_confirmed",
            ),
        ];
        let plans = async |db: &Db, explain: &str, column: &str| {
            let mut plans = Vec::new();
            for (sql, index) in &cases {
                let explained = format!("{explain}{sql}");
                let query =
                    (0..sql.matches('?').count()).fold(sqlx::query(&explained), |q, _| q.bind("x"));
                let rows = query.fetch_all(db.pool()).await.unwrap();
                let plan: Vec<String> = rows
                    .iter()
                    .map(|row| {
                        row.try_get::<Option<String>, _>(column)
                            .unwrap()
                            .unwrap_or_default()
                    })
                    .collect();
                plans.push((plan.join("; "), *index, sql.clone()));
            }
            plans
        };
        let dir = tempfile::tempdir().unwrap();
        let config = Config::with_data_dir(dir.path().to_path_buf());
        let db = Db::connect(&config, Duration::from_secs(10)).await.unwrap();
        db.migrate().await.unwrap();
        for (plan, index, sql) in plans(&db, "EXPLAIN QUERY PLAN ", "detail").await {
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
        db.close().await;
        let Some(test) = crate::services::databases::model::test_support::mariadb().await else {
            return;
        };
        let mut config = Config::with_data_dir(dir.path().to_path_buf());
        config.database_url = Some(test.url.clone());
        let db = Db::connect(&config, Duration::from_secs(10)).await.unwrap();
        db.migrate().await.unwrap();
        // An empty table has no statistics to choose by: the index is one the
        // optimizer may take.
        for (plan, index, sql) in plans(&db, "EXPLAIN ", "possible_keys").await {
            assert!(plan.contains(index), "{sql}: {plan}");
        }
        db.close().await;
        test.close().await;
    }

    use super::*;

    /// A project's schema builds whatever keys its attributes and relationships
    /// have: every field a collection's generated types hold beside them is a key
    /// they may not take. Found from the built schema, so a field added to the
    /// generated types later is covered too.
    #[test]
    fn no_attribute_key_takes_a_generated_field() {
        use async_graphql::registry::MetaType;
        use databases::model::{Attribute, AttributeKind};
        let config = Config::with_data_dir(std::env::temp_dir());
        let project = Project::placeholder("default");
        let attribute = |key: &str, kind| Attribute {
            key: key.into(),
            kind,
            required: false,
            array: false,
            default: None,
        };
        let build = |attributes: Vec<Attribute>| {
            let model = Arc::new(DataModel {
                collections: vec![Arc::new(databases::test_collection(attributes))],
            });
            build_schema(&config, &project, &model, None).map(|_| ())
        };
        let ordinary = ["title", "votes"];
        let model = Arc::new(DataModel {
            collections: vec![Arc::new(databases::test_collection(vec![
                attribute(ordinary[0], AttributeKind::String { size: 10 }),
                attribute(
                    ordinary[1],
                    AttributeKind::Integer {
                        min: None,
                        max: None,
                    },
                ),
            ]))],
        });
        let (schema, _) = build_schema(&config, &project, &model, None).unwrap();
        let mut generated = std::collections::BTreeSet::new();
        for (name, ty) in &schema.registry().types {
            if core_names().contains(name) {
                continue;
            }
            let fields: Vec<&String> = match ty {
                MetaType::Object { fields, .. } => fields.keys().collect(),
                MetaType::InputObject { input_fields, .. } => input_fields.keys().collect(),
                _ => Vec::new(),
            };
            generated.extend(
                fields
                    .into_iter()
                    .filter(|f| !ordinary.contains(&f.as_str()))
                    .cloned(),
            );
        }
        assert!(generated.contains("expectedUpdatedAt"), "{generated:?}");
        // Keys taken before they were reserved still build.
        build(vec![
            attribute("and", AttributeKind::Boolean),
            attribute("expectedUpdatedAt", AttributeKind::Boolean),
        ])
        .unwrap();
        for key in generated {
            for kind in [
                AttributeKind::Boolean,
                AttributeKind::Integer {
                    min: None,
                    max: None,
                },
            ] {
                let taken = attribute(&key, kind);
                if taken.validate().is_err() {
                    continue;
                }
                let built = std::panic::catch_unwind(|| build(vec![taken]));
                assert!(
                    matches!(built, Ok(Ok(()))),
                    "an attribute `{key}` is accepted but the schema does not build with it"
                );
            }
        }
    }

    #[test]
    fn core_names_hold_the_core_types_and_root_fields() {
        let names = core_names();
        for name in [
            "Query",
            "User",
            "Team",
            "DateTime",
            "PageInfo",
            "users",
            "createTeam",
            "account",
        ] {
            assert!(names.contains(name), "{name} is not reserved");
        }
        assert!(!names.iter().any(|n| n.starts_with("__")));
    }

    #[test]
    fn core_names_are_those_the_printed_core_schema_declares() {
        use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
        let config = Config::with_data_dir(std::env::temp_dir());
        let sdl = core_sdl(&config).unwrap();
        let document = async_graphql::parser::parse_schema(&sdl).unwrap();
        let mut printed: HashSet<String> = ["Query", "Mutation", "Subscription"]
            .into_iter()
            .chain(["String", "Int", "Float", "Boolean", "ID"])
            .map(String::from)
            .collect();
        for definition in document.definitions {
            if let TypeSystemDefinition::Type(ty) = definition {
                let ty = ty.node;
                let name = ty.name.node.to_string();
                if let TypeKind::Object(object) = &ty.kind
                    && matches!(name.as_str(), "Query" | "Mutation" | "Subscription")
                {
                    printed.extend(object.fields.iter().map(|f| f.node.name.node.to_string()));
                }
                printed.insert(name);
            }
        }
        let mut missing: Vec<_> = printed.difference(core_names()).collect();
        let mut extra: Vec<_> = core_names().difference(&printed).collect();
        missing.sort();
        extra.sort();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );
    }
}
