//! GraphQL of projects: `project`, `projects`, `createProject`, `updateProject`,
//! `deleteProject`.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputObject, InputValue, Object, TypeRef,
};
use serde::Deserialize;

use crate::auth::scopes::ProjectRead;
use crate::error::AppError;
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, input, object, opt_string,
    page_request, prop, wants_total_count, with_connection_args,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateProjectInput {
    id: Option<String>,
    name: String,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateProjectInput {
    id: String,
    name: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateProjectAuthInput {
    project_id: String,
    password_min_length: Option<u32>,
    password_history: Option<u32>,
    password_dictionary: Option<bool>,
    personal_data_check: Option<bool>,
    max_sessions: Option<u32>,
    session_length: Option<u64>,
    email_password: Option<bool>,
    anonymous: Option<bool>,
    magic_url: Option<bool>,
    email_otp: Option<bool>,
    presence_guests: Option<bool>,
    redirect_hosts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteProjectInput {
    id: String,
}

pub fn register(parts: &mut SchemaParts, _project: &super::Project) {
    parts.add_type(
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
            )),
    );
    parts.add_types(connection_types("Project", "projects"));
    let int = || TypeRef::named_nn(TypeRef::INT);
    let boolean = || TypeRef::named_nn(TypeRef::BOOLEAN);
    const AUTH_FIELDS: &[(&str, bool, &str)] = &[
        (
            "passwordMinLength",
            false,
            "Fewest characters a password may have (6-256; default 8).",
        ),
        (
            "passwordHistory",
            false,
            "How many earlier passwords a new one may not repeat (0-20; default 0, no check).",
        ),
        (
            "passwordDictionary",
            true,
            "Refuse passwords found among commonly used ones.",
        ),
        (
            "personalDataCheck",
            true,
            "Refuse passwords containing the user's name, email, phone or id.",
        ),
        (
            "maxSessions",
            false,
            "Most sessions per user (1-100; default 10); signing in past it ends the oldest.",
        ),
        (
            "sessionLength",
            false,
            "Session lifetime in seconds (60 to ten years; default one year).",
        ),
        (
            "emailPassword",
            true,
            "Whether sign-up and sign-in with email and password are enabled.",
        ),
        ("anonymous", true, "Whether anonymous sessions are enabled."),
        (
            "magicUrl",
            true,
            "Whether sign-in by a link sent by email is enabled.",
        ),
        (
            "emailOtp",
            true,
            "Whether sign-in by a code sent by email is enabled.",
        ),
        (
            "presenceGuests",
            true,
            "Whether callers who are not signed in may announce themselves on presence channels (default off).",
        ),
    ];
    parts.add_type(
        AUTH_FIELDS.iter().fold(
            Object::new("ProjectAuth")
                .description("A project's sign-in policy.")
                .field(prop(
                    "redirectHosts",
                    TypeRef::named_nn_list_nn(TypeRef::STRING),
                    "Host names that links in emails may point to (default `localhost`).",
                )),
            |object, (name, is_bool, about)| {
                object.field(prop(name, if *is_bool { boolean() } else { int() }, about))
            },
        ),
    );
    parts.add_type(
        AUTH_FIELDS.iter().fold(
            InputObject::new("UpdateProjectAuthInput")
                .description(
                    "Changes to a project's sign-in policy; omitted fields stay as they are.",
                )
                .field(
                    InputValue::new("projectId", TypeRef::named_nn(TypeRef::ID))
                        .description("The project."),
                )
                .field(
                    InputValue::new("redirectHosts", TypeRef::named_nn_list(TypeRef::STRING))
                        .description("Replace the host names that links in emails may point to."),
                ),
            |object, (name, is_bool, about)| {
                let ty = if *is_bool {
                    TypeRef::named(TypeRef::BOOLEAN)
                } else {
                    TypeRef::named(TypeRef::INT)
                };
                object.field(InputValue::new(*name, ty).description(*about))
            },
        ),
    );
    parts.add_type(
        InputObject::new("CreateProjectInput")
            .description("A new project.")
            .field(InputValue::new("id", TypeRef::named(TypeRef::ID)).description("Id to give the project (1-36 of `a-zA-Z0-9._-`); omitted or `unique()` generates one."))
            .field(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)).description("Display name, 1-128 characters."))
            .field(InputValue::new("description", TypeRef::named(TypeRef::STRING)).description("Free text, at most 1024 characters.")),
    );
    parts.add_type(
        InputObject::new("UpdateProjectInput")
            .description("Changes to a project; omitted fields stay as they are.")
            .field(
                InputValue::new("id", TypeRef::named_nn(TypeRef::ID))
                    .description("The project to change."),
            )
            .field(
                InputValue::new("name", TypeRef::named(TypeRef::STRING))
                    .description("New display name."),
            )
            .field(
                InputValue::new("description", TypeRef::named(TypeRef::STRING))
                    .description("New description."),
            ),
    );
    parts.add_type(
        InputObject::new("DeleteProjectInput")
            .description("The project to delete, with everything in it.")
            .field(
                InputValue::new("id", TypeRef::named_nn(TypeRef::ID))
                    .description("The project to delete."),
            ),
    );
    parts.add_type(
        Object::new("DeleteProjectPayload")
            .description("The result of `deleteProject`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of the deleted project.",
            )),
    );

    parts.query(
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
        .argument(InputValue::new("id", TypeRef::named(TypeRef::ID)).description("The project; omitted: the addressed one.")),
    );
    parts.query(
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
        .description("Every project of the server, by id (scope `admin`)."),
    );
    parts.mutation(
        Field::new("createProject", TypeRef::named_nn("Project"), |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let input: CreateProjectInput = input(&ctx)?;
                let project = service::create_project(
                    app(&ctx)?,
                    &admin,
                    NewProject {
                        id: input.id,
                        name: input.name,
                        description: input.description,
                    },
                )
                .await?;
                Ok(Some(FieldValue::value(project_value(&project))))
            })
        })
        .description("Creates a project (scope `admin`).")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("CreateProjectInput"),
        )),
    );
    parts.mutation(
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
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateProjectInput"),
        )),
    );
    parts.mutation(
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
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateProjectAuthInput"),
        )),
    );
    parts.mutation(
        Field::new("deleteProject", TypeRef::named_nn("DeleteProjectPayload"), |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let input: DeleteProjectInput = input(&ctx)?;
                let data = ctx.data::<Arc<dyn service::ProjectData>>().map_err(|_| {
                    AppError::Internal(anyhow::anyhow!("ProjectData missing from schema data"))
                })?;
                let admin = caller(&ctx)?.extend_to(admin, Some(&input.id))?;
                service::delete_project(app(&ctx)?, &admin, data.as_ref()).await?;
                Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
            })
        })
        .description("Deletes a project and everything in it: keys, users, data, files (scope `admin`). The `default` project cannot be deleted.")
        .argument(InputValue::new("input", TypeRef::named_nn("DeleteProjectInput"))),
    );
}
