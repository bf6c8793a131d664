//! GraphQL of teams: `team`, `teams`, `memberships`, `createTeam`, `updateTeamName`,
//! `deleteTeam`, `createMembership`, `updateMembership`, `updateMembershipStatus`,
//! `deleteMembership`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, JSON, MAX_PAGE_SIZE, app, caller, connection, connection_types, count_arg, datetime,
    deleted_payload_type, input, object, opt_string, page_request, parent_value, prop,
    wants_total_count, with_connection_args,
};

use super::service;
use super::{Membership, Team};
use crate::error::AppError;
use crate::services::account::schema::session_payload;
use crate::services::users::service::ClientInfo;

pub fn team_value(team: &Team) -> Value {
    object([
        ("id", Value::from(team.id.as_str())),
        ("name", Value::from(team.name.as_str())),
        ("prefs", team_prefs(team)),
        ("createdAt", datetime(team.created_at)),
        ("updatedAt", datetime(team.updated_at)),
    ])
}

/// The team's preferences, `{}` when none are set (or the stored text does not
/// parse, which a write never stores).
fn team_prefs(team: &Team) -> Value {
    team.prefs
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|json| Value::from_json(json).ok())
        .unwrap_or_else(|| Value::Object(Default::default()))
}

/// The text entry `key` of the parent object.
fn parent_text(ctx: &async_graphql::dynamic::ResolverContext<'_>, key: &str) -> Option<String> {
    match parent_value(ctx)? {
        Value::Object(map) => match map.get(key)? {
            Value::String(text) => Some(text.clone()),
            _ => None,
        },
        _ => None,
    }
}

pub fn membership_value(membership: &Membership) -> Value {
    object([
        ("id", Value::from(membership.id.as_str())),
        ("teamId", Value::from(membership.team_id.as_str())),
        (
            "userId",
            membership
                .user_id
                .as_deref()
                .map_or(Value::Null, Value::from),
        ),
        (
            "email",
            membership.email.as_deref().map_or(Value::Null, Value::from),
        ),
        (
            "roles",
            Value::List(
                membership
                    .roles
                    .iter()
                    .map(|r| Value::from(r.as_str()))
                    .collect(),
            ),
        ),
        ("confirmed", Value::from(membership.confirmed)),
        (
            "joinedAt",
            membership.joined_at.map_or(Value::Null, datetime),
        ),
        ("invitedAt", datetime(membership.invited_at)),
        ("createdAt", datetime(membership.created_at)),
        ("updatedAt", datetime(membership.updated_at)),
    ])
}

crate::graphql_input! {
    "A new team."
    struct CreateTeamInput {
        "Id to give the team; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "Display name, 1-128 characters."
        name: String,
        "Roles the signed-in creator gets in the team besides `owner`, which they always get."
        roles: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "A team's new preferences."
    struct UpdateTeamPrefsInput {
        "The team."
        id: String as "ID",
        "A JSON object of at most 64 KiB; replaces the old one."
        prefs: serde_json::Map<String, serde_json::Value>,
    }
}

crate::graphql_input! {
    "A team's new name."
    struct UpdateTeamNameInput {
        "The team."
        id: String as "ID",
        "Display name, 1-128 characters."
        name: String,
    }
}

crate::graphql_input! {
    "A user to add to a team."
    struct CreateMembershipInput {
        "The team."
        team_id: String as "ID",
        "An existing user (or give `email`)."
        user_id: Option<String> as "ID",
        "Whom to invite by email. An owner's invitation to an address without a verified account creates no user: the membership names the address until the invitation is accepted through the emailed link, which creates the user (email verified) or signs in the one with this address. A server adds the user with this email, created without a password when there is none."
        email: Option<String>,
        "Name of a user created for `email`, at most 128 characters."
        name: Option<String>,
        "The user's roles in the team."
        roles: Vec<String>,
        "Your app's page that accepts invitations (a `redirectHosts` host): the emailed link goes there with `membershipId`, `secret` and `teamId`. Needed when an owner invites by email."
        url: Option<String>,
    }
}

crate::graphql_input! {
    "A member's new roles."
    struct UpdateMembershipInput {
        "The team."
        team_id: String as "ID",
        "The membership."
        membership_id: String as "ID",
        "The new roles."
        roles: Vec<String>,
    }
}

crate::graphql_input! {
    "A membership to remove."
    struct DeleteMembershipInput {
        "The team."
        team_id: String as "ID",
        "The membership."
        membership_id: String as "ID",
    }
}

crate::graphql_input! {
    "An invitation to accept: signed in as the invitee (or as the user whose verified email was invited), or with `secret` from the emailed link."
    struct UpdateMembershipStatusInput {
        "The team."
        team_id: String as "ID",
        "The membership (invitation)."
        membership_id: String as "ID",
        "Optional with `secret`: when given, it must be the membership's user."
        user_id: Option<String> as "ID",
        "From the emailed link; accepting with it also signs the invitee in, creating their user (email verified) for an invitation by email to an address without one."
        secret: Option<String>,
    }
}

crate::graphql_input! {
    "The team to delete, with its memberships."
    struct DeleteTeamInput {
        "The team."
        id: String as "ID",
    }
}

fn id() -> TypeRef {
    TypeRef::named_nn(TypeRef::ID)
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(team_type());
    parts.add_types(connection_types("Team", "teams"));
    parts.add_type(membership_type());
    parts.add_type(delete_team_payload_type());
    parts.add_type(update_membership_status_payload_type());
    parts.add_type(delete_membership_payload_type());
    parts.add_input::<CreateTeamInput>();
    parts.add_input::<UpdateTeamNameInput>();
    parts.add_input::<UpdateTeamPrefsInput>();
    parts.add_input::<DeleteTeamInput>();
    parts.add_input::<CreateMembershipInput>();
    parts.add_input::<UpdateMembershipInput>();
    parts.add_input::<UpdateMembershipStatusInput>();
    parts.add_input::<DeleteMembershipInput>();

    parts.query(team());
    parts.query(teams());
    parts.query(memberships());
    parts.query(membership());
    parts.mutation(create_team());
    parts.mutation(update_team_name());
    parts.mutation(update_team_prefs());
    parts.mutation(delete_team());
    parts.mutation(create_membership());
    parts.mutation(update_membership());
    parts.mutation(update_membership_status());
    parts.mutation(delete_membership());
}

fn team_type() -> Object {
    Object::new("Team")
        .description("A group of users; its members hold the roles `team:ID` and `team:ID/ROLE`.")
        .field(prop(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id within the project.",
        ))
        .field(prop(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            "Display name.",
        ))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the team was created.",
        ))
        .field(prop(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When the team last changed.",
        ))
        .field(prop(
            "prefs",
            TypeRef::named_nn(JSON),
            "The team's preferences, a JSON object its members read (`{}` when none are set).",
        ))
        .field(
            Field::new("total", TypeRef::named_nn(TypeRef::INT), |ctx| {
                FieldFuture::new(async move {
                    let Some(team_id) = parent_text(&ctx, "id") else {
                        return Ok(None);
                    };
                    let total = super::store::count_confirmed_members(
                        app(&ctx)?.db.pool(),
                        &caller(&ctx)?.project.id,
                        &team_id,
                    )
                    .await
                    .map_err(AppError::from)?;
                    Ok(Some(FieldValue::value(Value::from(total))))
                })
            })
            .description("How many members the team has (confirmed memberships; invitations wait outside it), as Appwrite's `total`."),
        )
}

fn membership_type() -> Object {
    Object::new("Membership")
        .description("A user's place in a team. Until `confirmed`, it is an invitation and grants no roles.")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id; gives its user the role `member:ID`."))
        .field(prop("teamId", TypeRef::named_nn(TypeRef::ID), "The team."))
        .field(prop("userId", TypeRef::named(TypeRef::ID), "The member; null while an owner's invitation by email waits to be accepted (its user is found or created then)."))
        .field(prop("email", TypeRef::named(TypeRef::STRING), "The invited address, while `userId` is null."))
        .field(prop("roles", TypeRef::named_nn_list_nn(TypeRef::STRING), "The member's roles in the team; `owner` manages it."))
        .field(prop("confirmed", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether the user accepted (or a server added them)."))
        .field(prop("joinedAt", TypeRef::named(DATETIME), "When the membership was confirmed."))
        .field(prop("invitedAt", TypeRef::named_nn(DATETIME), "When the invitation was last sent (a member added by a server: when added). Its link works for a week from then; changing roles does not extend it."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the membership was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the membership last changed."))
        .field(
            Field::new("userName", TypeRef::named(TypeRef::STRING), |ctx| {
                FieldFuture::new(async move {
                    let Some(user_id) = parent_text(&ctx, "userId") else {
                        return Ok(None);
                    };
                    let user = crate::services::users::store::find_user(
                        app(&ctx)?.db.pool(),
                        &caller(&ctx)?.project.id,
                        &user_id,
                    )
                    .await
                    .map_err(AppError::from)?;
                    Ok(user.map(|user| FieldValue::value(Value::from(user.name))))
                })
            })
            .description("The member's name, as Appwrite's membership has it; null while `userId` is."),
        )
        .field(
            Field::new("teamName", TypeRef::named_nn(TypeRef::STRING), |ctx| {
                FieldFuture::new(async move {
                    let Some(team_id) = parent_text(&ctx, "teamId") else {
                        return Ok(None);
                    };
                    let team = super::store::find_team(
                        app(&ctx)?.db.pool(),
                        &caller(&ctx)?.project.id,
                        &team_id,
                    )
                    .await
                    .map_err(AppError::from)?;
                    Ok(Some(FieldValue::value(Value::from(
                        team.map(|team| team.name).unwrap_or_default(),
                    ))))
                })
            })
            .description("The team's name, as Appwrite's membership has it."),
        )
}

fn delete_team_payload_type() -> Object {
    deleted_payload_type(
        "DeleteTeamPayload",
        "The result of `deleteTeam`.",
        "Id of the deleted team.",
    )
}

fn update_membership_status_payload_type() -> Object {
    Object::new("UpdateMembershipStatusPayload")
        .description("The result of `updateMembershipStatus`.")
        .field(prop(
            "membership",
            TypeRef::named_nn("Membership"),
            "The accepted membership.",
        ))
        .field(prop(
            "session",
            TypeRef::named("SessionPayload"),
            "The invitee's new session, when accepted through the emailed link.",
        ))
}

fn delete_membership_payload_type() -> Object {
    deleted_payload_type(
        "DeleteMembershipPayload",
        "The result of `deleteMembership`.",
        "Id of the deleted membership.",
    )
}

fn team() -> Field {
    Field::new("team", TypeRef::named_nn("Team"), |ctx| {
        FieldFuture::new(async move {
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let team = service::get_team(app(&ctx)?, &caller(&ctx)?.actor()?, &id).await?;
            Ok(Some(FieldValue::value(team_value(&team))))
        })
    })
    .description("A team: any for a server (scope `teams.read`); for a user, one they belong to.")
    .argument(InputValue::new("id", id()).description("The team."))
}

fn teams() -> Field {
    with_connection_args(Field::new("teams", TypeRef::named_nn("TeamConnection"), |ctx| {
        FieldFuture::new(async move {
            let page = page_request(&ctx)?;
            let search = opt_string(&ctx, "search")?;
            let (teams, total) = service::list_teams(app(&ctx)?, &caller(&ctx)?.actor()?, search.as_deref(), &page, wants_total_count(&ctx)).await?;
            Ok(Some(FieldValue::value(connection(&page, teams, total, |t| &t.id, team_value))))
        })
    }))
    .description("Teams by id: every team for a server (scope `teams.read`); for a user, the teams they belong to.")
    .argument(
        InputValue::new("search", TypeRef::named(TypeRef::STRING))
            .description("Only teams whose name or id starts with this text (any case)."),
    )
}

fn membership() -> Field {
    Field::new("membership", TypeRef::named_nn("Membership"), |ctx| {
        FieldFuture::new(async move {
            let team_id = opt_string(&ctx, "teamId")?.unwrap_or_default();
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let membership =
                service::get_membership(app(&ctx)?, &caller(&ctx)?.actor()?, &team_id, &id).await?;
            Ok(Some(FieldValue::value(membership_value(&membership))))
        })
    })
    .description("One membership of a team (a server with `teams.read`, or a member).")
    .argument(InputValue::new("teamId", id()).description("The team."))
    .argument(InputValue::new("id", id()).description("The membership."))
}

fn memberships() -> Field {
    Field::new(
        "memberships",
        TypeRef::named_nn_list_nn("Membership"),
        |ctx| {
            FieldFuture::new(async move {
                let team_id = opt_string(&ctx, "teamId")?.unwrap_or_default();
                let first = count_arg(&ctx, "first", MAX_PAGE_SIZE)?
                    .unwrap_or(service::MEMBERSHIPS_PAGE);
                let after = opt_string(&ctx, "after")?;
                let memberships = service::list_memberships(
                    app(&ctx)?,
                    &caller(&ctx)?.actor()?,
                    &team_id,
                    first,
                    after.as_deref(),
                )
                .await?;
                Ok(Some(FieldValue::list(
                    memberships
                        .iter()
                        .map(|m| FieldValue::value(membership_value(m))),
                )))
            })
        },
    )
    .description("A team's memberships, oldest first, a page at a time (a server with `teams.read`, or a member).")
    .argument(InputValue::new("teamId", id()).description("The team."))
    .argument(
        InputValue::new("first", TypeRef::named(TypeRef::INT))
            .default_value(service::MEMBERSHIPS_PAGE as i32)
            .description("How many memberships, at most 100."),
    )
    .argument(
        InputValue::new("after", TypeRef::named(TypeRef::ID))
            .description("The id of the last membership of the page before: the page goes on after it."),
    )
}

fn create_team() -> Field {
    Field::new("createTeam", TypeRef::named_nn("Team"), |ctx| {
        FieldFuture::new(async move {
            let input: CreateTeamInput = input(&ctx)?;
            let team = service::create_team(app(&ctx)?, &caller(&ctx)?.actor()?, input.id, input.name, input.roles).await?;
            Ok(Some(FieldValue::value(team_value(&team))))
        })
    })
    .description("Creates a team; a signed-in creator becomes its member (default role `owner`). Servers need `teams.write`.")
    .argument(CreateTeamInput::argument())
}

fn update_team_name() -> Field {
    Field::new("updateTeamName", TypeRef::named_nn("Team"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateTeamNameInput = input(&ctx)?;
            let team =
                service::rename_team(app(&ctx)?, &caller(&ctx)?.actor()?, &input.id, input.name)
                    .await?;
            Ok(Some(FieldValue::value(team_value(&team))))
        })
    })
    .description("Renames a team (a server with `teams.write`, or an owner).")
    .argument(UpdateTeamNameInput::argument())
}

fn update_team_prefs() -> Field {
    Field::new("updateTeamPrefs", TypeRef::named_nn("Team"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateTeamPrefsInput = input(&ctx)?;
            let team = service::update_team_prefs(
                app(&ctx)?,
                &caller(&ctx)?.actor()?,
                &input.id,
                input.prefs,
            )
            .await?;
            Ok(Some(FieldValue::value(team_value(&team))))
        })
    })
    .description("Replaces a team's preferences, which its members read (a server with `teams.write`, or an owner).")
    .argument(UpdateTeamPrefsInput::argument())
}

fn delete_team() -> Field {
    Field::new("deleteTeam", TypeRef::named_nn("DeleteTeamPayload"), |ctx| {
        FieldFuture::new(async move {
            let input: DeleteTeamInput = input(&ctx)?;
            service::delete_team(app(&ctx)?, &caller(&ctx)?.actor()?, &input.id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
        })
    })
    .description("Deletes a team and its memberships; members lose its roles at once (a server with `teams.write`, or an owner).")
    .argument(DeleteTeamInput::argument())
}

fn create_membership() -> Field {
    Field::new("createMembership", TypeRef::named_nn("Membership"), |ctx| {
        FieldFuture::new(async move {
            let input: CreateMembershipInput = input(&ctx)?;
            let new = service::NewMembership {
                team_id: input.team_id,
                user_id: input.user_id,
                email: input.email,
                name: input.name,
                roles: input.roles,
                url: input.url,
            };
            let client = ctx.data::<ClientInfo>().cloned().unwrap_or_default();
            let membership =
                service::create_membership(app(&ctx)?, &caller(&ctx)?.actor()?, new, &client).await?;
            Ok(Some(FieldValue::value(membership_value(&membership))))
        })
    })
    .description("Adds a user (by id, or by email) to a team: at once for a server (`teams.write`), creating the user for an email when needed; as an invitation when an owner does it, emailed when `url` is given, which the user accepts with `updateMembershipStatus`. An owner's invitation to an address without a verified account creates no user before it is accepted. Inviting someone whose invitation is pending renews it (new roles, a new emailed link; the old one stops working); a server confirms it.")
    .argument(CreateMembershipInput::argument())
}

fn update_membership() -> Field {
    Field::new("updateMembership", TypeRef::named_nn("Membership"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateMembershipInput = input(&ctx)?;
            let membership = service::update_membership_roles(
                app(&ctx)?,
                &caller(&ctx)?.actor()?,
                &input.team_id,
                &input.membership_id,
                input.roles,
            )
            .await?;
            Ok(Some(FieldValue::value(membership_value(&membership))))
        })
    })
    .description("Changes a member's roles (a server with `teams.write`, or an owner).")
    .argument(UpdateMembershipInput::argument())
}

fn update_membership_status() -> Field {
    Field::new(
        "updateMembershipStatus",
        TypeRef::named_nn("UpdateMembershipStatusPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let input: UpdateMembershipStatusInput = input(&ctx)?;
                let state = app(&ctx)?;
                let caller = caller(&ctx)?;
                let (membership, session) = match (input.user_id, input.secret) {
                    (user_id, Some(secret)) => {
                        let client = ctx.data::<ClientInfo>().cloned().unwrap_or_default();
                        let signed_in = caller.require_session_owing_mfa().ok();
                        if let Some(me) = signed_in {
                            // The link opens a session, which a JWT may not.
                            crate::services::users::service::require_session_secret(
                                me,
                                "accept invitations by link",
                            )?;
                        }
                        let (membership, session, secret) = service::accept_invitation(
                            state,
                            &caller.project.id,
                            &input.team_id,
                            &input.membership_id,
                            service::InvitationLink {
                                user_id: user_id.as_deref(),
                                secret: &secret,
                            },
                            signed_in,
                            client,
                        )
                        .await?;
                        (membership, session_payload(&ctx, &session, secret)?)
                    }
                    (None, None) => {
                        let membership = service::accept_membership(
                            state,
                            caller.require_session()?,
                            &input.team_id,
                            &input.membership_id,
                        )
                        .await?;
                        (membership, Value::Null)
                    }
                    _ => {
                        return Err(AppError::invalid(
                            "secret",
                            "give `secret` from the link with `userId`, or neither",
                        )
                        .into());
                    }
                };
                Ok(Some(FieldValue::value(object([
                    ("membership", membership_value(&membership)),
                    ("session", session),
                ]))))
            })
        },
    )
    .description("Accepts an invitation: signed in as the invitee (or as the user whose verified email was invited), or with `secret` from the emailed link, which also signs the invitee in (session cookie, and `session.secret` for apps; refused with `TEAM_INVITE_MISMATCH` to a caller signed in as someone else) and, for an invitation by email to an address without an account, creates their user with the email verified.")
    .argument(UpdateMembershipStatusInput::argument())
}

fn delete_membership() -> Field {
    Field::new(
        "deleteMembership",
        TypeRef::named_nn("DeleteMembershipPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteMembershipInput = input(&ctx)?;
                service::delete_membership(
                    app(&ctx)?,
                    &caller(&ctx)?.actor()?,
                    &input.team_id,
                    &input.membership_id,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.membership_id),
                )]))))
            })
        },
    )
    .description(
        "Removes a membership: a server with `teams.write`, an owner, or the member leaving.",
    )
    .argument(DeleteMembershipInput::argument())
}
