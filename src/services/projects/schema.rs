//! GraphQL of projects: `project`, `projects`, `createProject`, `updateProject`,
//! `deleteProject`.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::auth::scopes::ProjectRead;
use crate::error::AppError;
use crate::graphql::SchemaParts;
use crate::graphql::input::GraphQLInput;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, deleted_payload_type, input,
    object, opt_string, page_request, prop, wants_total_count, with_connection_args,
};

use super::Project;
use super::service::{self, AuthChanges, NewProject, ProjectChanges};

/// The GraphQL value of a project.
pub fn project_value(project: &Project) -> Value {
    let auth = &project.auth;
    object([
        ("id", Value::from(project.id.as_str())),
        ("name", Value::from(project.name.as_str())),
        ("description", Value::from(project.description.as_str())),
        (
            "auth",
            object([
                ("passwordMinLength", Value::from(auth.password_min_length)),
                ("passwordHistory", Value::from(auth.password_history)),
                ("passwordDictionary", Value::from(auth.password_dictionary)),
                ("personalDataCheck", Value::from(auth.personal_data_check)),
                ("maxSessions", Value::from(auth.max_sessions)),
                ("sessionLength", Value::from(auth.session_length_secs)),
                ("emailPassword", Value::from(auth.email_password)),
                ("anonymous", Value::from(auth.anonymous)),
                ("magicUrl", Value::from(auth.magic_url)),
                ("emailOtp", Value::from(auth.email_otp)),
                ("presenceGuests", Value::from(auth.presence_guests)),
                ("avatarsPublic", Value::from(auth.avatars_public)),
                ("invalidateSessions", Value::from(auth.invalidate_sessions)),
                (
                    "redirectHosts",
                    Value::List(
                        auth.redirect_hosts
                            .iter()
                            .map(|h| Value::from(h.as_str()))
                            .collect(),
                    ),
                ),
            ]),
        ),
        ("createdAt", datetime(project.created_at)),
        ("updatedAt", datetime(project.updated_at)),
    ])
}

crate::graphql_input! {
    "A new project."
    struct CreateProjectInput {
        "Id to give the project (1-36 of `a-zA-Z0-9._-`); omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "Display name, 1-128 characters."
        name: String,
        "Free text, at most 1024 characters."
        description: Option<String>,
    }
}

crate::graphql_input! {
    "Changes to a project; omitted fields stay as they are."
    struct UpdateProjectInput {
        "The project to change."
        id: String as "ID",
        "New display name."
        name: Option<String>,
        "New description."
        description: Option<String>,
    }
}

crate::graphql_input! {
    "Changes to a project's sign-in policy; omitted fields stay as they are."
    struct UpdateProjectAuthInput {
        "The project."
        project_id: String as "ID",
        "Replace the host names that links in emails may point to."
        redirect_hosts: Option<Vec<String>>,
        "Fewest characters a password may have (6-256; default 8)."
        password_min_length: Option<u32>,
        "How many earlier passwords a new one may not repeat (0-20; default 0, no check)."
        password_history: Option<u32>,
        "Refuse passwords found among commonly used ones."
        password_dictionary: Option<bool>,
        "Refuse passwords containing the user's name, email, phone or id."
        personal_data_check: Option<bool>,
        "Most sessions per user (1-100; default 10); signing in past it ends the oldest."
        max_sessions: Option<u32>,
        "Session lifetime in seconds (60 to ten years; default one year)."
        session_length: Option<u64>,
        "Whether sign-up and sign-in with email and password are enabled."
        email_password: Option<bool>,
        "Whether anonymous sessions are enabled."
        anonymous: Option<bool>,
        "Whether sign-in by a link sent by email is enabled."
        magic_url: Option<bool>,
        "Whether sign-in by a code sent by email is enabled."
        email_otp: Option<bool>,
        "Whether callers who are not signed in may announce themselves on presence channels (default off)."
        presence_guests: Option<bool>,
        "Whether anyone may fetch the project's avatars (default on); off: only signed-in users and API keys, and others get `AVATARS_NOT_PUBLIC`."
        avatars_public: Option<bool>,
        "Whether a new password ends the user's other sessions at once, open sockets included (default on): a password changed by the user keeps the session that changed it; one set by a server or a recovery link ends them all."
        invalidate_sessions: Option<bool>,
    }
}

crate::graphql_input! {
    "The project to delete, with everything in it."
    struct DeleteProjectInput {
        "The project to delete."
        id: String as "ID",
    }
}

/// `ty` as a type that is never null: what an output holds where the input may
/// leave a field out.
fn required(ty: TypeRef) -> TypeRef {
    match ty {
        TypeRef::NonNull(_) => ty,
        nullable => TypeRef::NonNull(Box::new(nullable)),
    }
}

pub fn register(parts: &mut SchemaParts, _project: &super::Project) {
    parts.add_type(project_type());
    parts.add_types(connection_types("Project", "projects"));
    parts.add_type(
        // The policy as it reads is the policy as it is written, minus the project.
        UpdateProjectAuthInput::fields().into_iter().skip(2).fold(
            Object::new("ProjectAuth")
                .description("A project's sign-in policy.")
                .field(prop(
                    "redirectHosts",
                    TypeRef::named_nn_list_nn(TypeRef::STRING),
                    "Host names that links in emails may point to (default `localhost`).",
                )),
            |object, (name, ty, about)| object.field(prop(&name, required(ty), about)),
        ),
    );
    parts.add_input::<UpdateProjectAuthInput>();
    parts.add_input::<CreateProjectInput>();
    parts.add_input::<UpdateProjectInput>();
    parts.add_input::<DeleteProjectInput>();
    parts.add_type(delete_project_payload_type());

    parts.query(project());
    parts.query(projects());
    parts.mutation(create_project());
    parts.mutation(update_project());
    parts.mutation(update_project_auth());
    parts.mutation(delete_project());
}

fn project_type() -> Object {
    Object::new("Project")
        .description(
            "An isolated tenant of the server: its users, data, files and keys are its own.",
        )
        .field(prop(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id, chosen at creation.",
        ))
        .field(prop(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            "Display name.",
        ))
        .field(prop(
            "description",
            TypeRef::named_nn(TypeRef::STRING),
            "Free text about the project.",
        ))
        .field(prop(
            "auth",
            TypeRef::named_nn("ProjectAuth"),
            "How the project's users sign in.",
        ))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the project was created.",
        ))
        .field(prop(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When the project last changed.",
        ))
}

fn delete_project_payload_type() -> Object {
    deleted_payload_type(
        "DeleteProjectPayload",
        "The result of `deleteProject`.",
        "Id of the deleted project.",
    )
}

fn project() -> Field {
    Field::new("project", TypeRef::named_nn("Project"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let project = match opt_string(&ctx, "id")? {
                None => {
                    caller.require::<ProjectRead>()?;
                    (*caller.project).clone()
                }
                Some(id) => service::get_project(app(&ctx)?, &caller.require_in(Some(&id))?).await?,
            };
            Ok(Some(FieldValue::value(project_value(&project))))
        })
    })
    .description("A project: the one this request addresses (scope `project.read`), or any by id (scope `admin`).")
    .argument(InputValue::new("id", TypeRef::named(TypeRef::ID)).description("The project; omitted: the addressed one."))
}

fn projects() -> Field {
    with_connection_args(Field::new(
        "projects",
        TypeRef::named_nn("ProjectConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let page = page_request(&ctx)?;
                let (projects, total) =
                    service::list_projects(app(&ctx)?, &admin, &page, wants_total_count(&ctx))
                        .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    projects,
                    total,
                    |p| &p.id,
                    project_value,
                ))))
            })
        },
    ))
    .description("Every project of the server, by id (scope `admin`).")
}

fn create_project() -> Field {
    Field::new("createProject", TypeRef::named_nn("Project"), |ctx| {
        FieldFuture::new(async move {
            let admin = caller(&ctx)?.require_admin()?;
            let input: CreateProjectInput = input(&ctx)?;
            let data = project_data(&ctx)?;
            let project = service::create_project(
                app(&ctx)?,
                &admin,
                NewProject {
                    id: input.id,
                    name: input.name,
                    description: input.description,
                },
                data.as_ref(),
            )
            .await?;
            Ok(Some(FieldValue::value(project_value(&project))))
        })
    })
    .description("Creates a project (scope `admin`).")
    .argument(CreateProjectInput::argument())
}

fn update_project() -> Field {
    Field::new("updateProject", TypeRef::named_nn("Project"), |ctx| {
        FieldFuture::new(async move {
            let admin = caller(&ctx)?.require_admin()?;
            let input: UpdateProjectInput = input(&ctx)?;
            let admin = caller(&ctx)?.extend_to(admin, Some(&input.id))?;
            let project = service::update_project(
                app(&ctx)?,
                &admin,
                ProjectChanges {
                    name: input.name,
                    description: input.description,
                },
            )
            .await?;
            Ok(Some(FieldValue::value(project_value(&project))))
        })
    })
    .description("Changes a project's name or description (scope `admin`).")
    .argument(UpdateProjectInput::argument())
}

fn update_project_auth() -> Field {
    Field::new("updateProjectAuth", TypeRef::named_nn("Project"), |ctx| {
        FieldFuture::new(async move {
            let admin = caller(&ctx)?.require_admin()?;
            let input: UpdateProjectAuthInput = input(&ctx)?;
            let changes = AuthChanges {
                password_min_length: input.password_min_length,
                password_history: input.password_history,
                password_dictionary: input.password_dictionary,
                personal_data_check: input.personal_data_check,
                max_sessions: input.max_sessions,
                session_length_secs: input.session_length,
                email_password: input.email_password,
                anonymous: input.anonymous,
                magic_url: input.magic_url,
                email_otp: input.email_otp,
                presence_guests: input.presence_guests,
                avatars_public: input.avatars_public,
                invalidate_sessions: input.invalidate_sessions,
                redirect_hosts: input.redirect_hosts,
            };
            let project = service::update_project_auth(
                app(&ctx)?,
                &caller(&ctx)?.extend_to(admin, Some(&input.project_id))?,
                changes,
            )
            .await?;
            Ok(Some(FieldValue::value(project_value(&project))))
        })
    })
    .description("Changes a project's sign-in policy (scope `admin`).")
    .argument(UpdateProjectAuthInput::argument())
}

/// What other services keep of a project, as the registry attached it.
fn project_data<'a>(
    ctx: &async_graphql::dynamic::ResolverContext<'a>,
) -> crate::error::AppResult<&'a Arc<dyn service::ProjectData>> {
    ctx.data::<Arc<dyn service::ProjectData>>()
        .map_err(|_| AppError::Internal(anyhow::anyhow!("ProjectData missing from schema data")))
}

fn delete_project() -> Field {
    Field::new("deleteProject", TypeRef::named_nn("DeleteProjectPayload"), |ctx| {
        FieldFuture::new(async move {
            let admin = caller(&ctx)?.require_admin()?;
            let input: DeleteProjectInput = input(&ctx)?;
            let data = project_data(&ctx)?;
            let admin = caller(&ctx)?.extend_to(admin, Some(&input.id))?;
            service::delete_project(app(&ctx)?, &admin, data.as_ref()).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
        })
    })
    .description("Deletes a project and everything in it: keys, users, data, files (scope `admin`). The `default` project cannot be deleted.")
    .argument(DeleteProjectInput::argument())
}
