//! GraphQL of teams: `team`, `teams`, `memberships`, `createTeam`, `updateTeamName`,
//! `deleteTeam`, `createMembership`, `updateMembership`, `updateMembershipStatus`,
//! `deleteMembership`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};
use serde::Deserialize;

use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, IdInput, app, caller, connection, connection_types, datetime, input, input_object,
    object, opt_string, page_request, prop, wants_total_count, with_connection_args,
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
        ("createdAt", datetime(team.created_at)),
        ("updatedAt", datetime(team.updated_at)),
    ])
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
        ("createdAt", datetime(membership.created_at)),
        ("updatedAt", datetime(membership.updated_at)),
    ])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTeamInput {
    id: Option<String>,
    name: String,
    roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateTeamNameInput {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateMembershipInput {
    team_id: String,
    user_id: Option<String>,
    email: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MembershipRolesInput {
    team_id: String,
    membership_id: String,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MembershipRefInput {
    team_id: String,
    membership_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MembershipStatusInput {
    team_id: String,
    membership_id: String,
    user_id: Option<String>,
    secret: Option<String>,
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    let id = || TypeRef::named_nn(TypeRef::ID);
    let roles = || TypeRef::named_nn_list_nn(TypeRef::STRING);
    parts.add_type(
        Object::new("Team")
            .description(
                "A group of users; its members hold the roles `team:ID` and `team:ID/ROLE`.",
            )
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
            )),
    );
    parts.add_types(connection_types("Team", "teams"));
    parts.add_type(
        Object::new("Membership")
            .description("A user's place in a team. Until `confirmed`, it is an invitation and grants no roles.")
            .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id; gives its user the role `member:ID`."))
            .field(prop("teamId", TypeRef::named_nn(TypeRef::ID), "The team."))
            .field(prop("userId", TypeRef::named(TypeRef::ID), "The member; null while an invitation by email waits for an address that has no verified account (its user is created or found when the invitation is accepted through the emailed link)."))
            .field(prop("email", TypeRef::named(TypeRef::STRING), "The invited address, while `userId` is null."))
            .field(prop("roles", TypeRef::named_nn_list_nn(TypeRef::STRING), "The member's roles in the team; `owner` manages it."))
            .field(prop("confirmed", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether the user accepted (or a server added them)."))
            .field(prop("joinedAt", TypeRef::named(DATETIME), "When the membership was confirmed."))
            .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the membership was created."))
            .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the membership last changed.")),
    );
    parts.add_type(
        Object::new("DeleteTeamPayload")
            .description("The result of `deleteTeam`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of the deleted team.",
            )),
    );
    parts.add_type(
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
            )),
    );
    parts.add_type(
        Object::new("DeleteMembershipPayload")
            .description("The result of `deleteMembership`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of the deleted membership.",
            )),
    );
    parts.add_type(input_object(
        "CreateTeamInput",
        "A new team.",
        &[
            (
                "id",
                TypeRef::named(TypeRef::ID),
                "Id to give the team; omitted or `unique()` generates one.",
            ),
            (
                "name",
                TypeRef::named_nn(TypeRef::STRING),
                "Display name, 1-128 characters.",
            ),
            (
                "roles",
                TypeRef::named_nn_list(TypeRef::STRING),
                "Roles the signed-in creator gets in the team besides `owner`, which they always get.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "UpdateTeamNameInput",
        "A team's new name.",
        &[
            ("id", id(), "The team."),
            (
                "name",
                TypeRef::named_nn(TypeRef::STRING),
                "Display name, 1-128 characters.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "DeleteTeamInput",
        "The team to delete, with its memberships.",
        &[("id", id(), "The team.")],
    ));
    parts.add_type(input_object(
        "CreateMembershipInput",
        "A user to add to a team.",
        &[
            ("teamId", id(), "The team."),
            ("userId", TypeRef::named(TypeRef::ID), "An existing user (or give `email`)."),
            ("email", TypeRef::named(TypeRef::STRING), "Whom to invite by email. An owner's invitation to an address without a verified account creates no user: the membership names the address until the invitation is accepted through the emailed link, which creates the user (email verified) or signs in the one with this address. A server adds the user with this email, created without a password when there is none."),
            ("name", TypeRef::named(TypeRef::STRING), "Name of a user created for `email`, at most 128 characters."),
            ("roles", roles(), "The user's roles in the team."),
            ("url", TypeRef::named(TypeRef::STRING), "Your app's page that accepts invitations (a `redirectHosts` host): the emailed link goes there with `membershipId`, `secret` and `teamId`. Needed when an owner invites by email."),
        ],
    ));
    parts.add_type(input_object(
        "UpdateMembershipInput",
        "A member's new roles.",
        &[
            ("teamId", id(), "The team."),
            ("membershipId", id(), "The membership."),
            ("roles", roles(), "The new roles."),
        ],
    ));
    parts.add_type(input_object(
        "UpdateMembershipStatusInput",
        "An invitation to accept: signed in as the invitee (or as the user whose verified email was invited), or with `secret` from the emailed link.",
        &[
            ("teamId", id(), "The team."),
            ("membershipId", id(), "The membership (invitation)."),
            ("userId", TypeRef::named(TypeRef::ID), "Optional with `secret`: when given, it must be the membership's user."),
            ("secret", TypeRef::named(TypeRef::STRING), "From the emailed link; accepting with it also signs the invitee in, creating their user (email verified) for an invitation by email to an address without one."),
        ],
    ));
    parts.add_type(input_object(
        "DeleteMembershipInput",
        "A membership to remove.",
        &[
            ("teamId", id(), "The team."),
            ("membershipId", id(), "The membership."),
        ],
    ));

    parts.query(
        Field::new("team", TypeRef::named_nn("Team"), |ctx| {
            FieldFuture::new(async move {
                let id = opt_string(&ctx, "id")?.unwrap_or_default();
                let team = service::get_team(app(&ctx)?, &caller(&ctx)?.actor()?, &id).await?;
                Ok(Some(FieldValue::value(team_value(&team))))
            })
        })
        .description(
            "A team: any for a server (scope `teams.read`); for a user, one they belong to.",
        )
        .argument(InputValue::new("id", id()).description("The team.")),
    );
    parts.query(
        with_connection_args(Field::new("teams", TypeRef::named_nn("TeamConnection"), |ctx| {
            FieldFuture::new(async move {
                let page = page_request(&ctx)?;
                let (teams, total) = service::list_teams(app(&ctx)?, &caller(&ctx)?.actor()?, &page, wants_total_count(&ctx)).await?;
                Ok(Some(FieldValue::value(connection(&page, teams, total, |t| &t.id, team_value))))
            })
        }))
        .description("Teams by id: every team for a server (scope `teams.read`); for a user, the teams they belong to."),
    );
    parts.query(
        Field::new(
            "memberships",
            TypeRef::named_nn_list_nn("Membership"),
            |ctx| {
                FieldFuture::new(async move {
                    let team_id = opt_string(&ctx, "teamId")?.unwrap_or_default();
                    let memberships =
                        service::list_memberships(app(&ctx)?, &caller(&ctx)?.actor()?, &team_id)
                            .await?;
                    Ok(Some(FieldValue::list(
                        memberships
                            .iter()
                            .map(|m| FieldValue::value(membership_value(m))),
                    )))
                })
            },
        )
        .description(
            "A team's memberships, oldest first (a server with `teams.read`, or a member).",
        )
        .argument(InputValue::new("teamId", id()).description("The team.")),
    );
    parts.mutation(
        Field::new("createTeam", TypeRef::named_nn("Team"), |ctx| {
            FieldFuture::new(async move {
                let input: CreateTeamInput = input(&ctx)?;
                let team = service::create_team(app(&ctx)?, &caller(&ctx)?.actor()?, input.id, input.name, input.roles).await?;
                Ok(Some(FieldValue::value(team_value(&team))))
            })
        })
        .description("Creates a team; a signed-in creator becomes its member (default role `owner`). Servers need `teams.write`.")
        .argument(InputValue::new("input", TypeRef::named_nn("CreateTeamInput"))),
    );
    parts.mutation(
        Field::new("updateTeamName", TypeRef::named_nn("Team"), |ctx| {
            FieldFuture::new(async move {
                let input: UpdateTeamNameInput = input(&ctx)?;
                let team = service::rename_team(
                    app(&ctx)?,
                    &caller(&ctx)?.actor()?,
                    &input.id,
                    input.name,
                )
                .await?;
                Ok(Some(FieldValue::value(team_value(&team))))
            })
        })
        .description("Renames a team (a server with `teams.write`, or an owner).")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateTeamNameInput"),
        )),
    );
    parts.mutation(
        Field::new("deleteTeam", TypeRef::named_nn("DeleteTeamPayload"), |ctx| {
            FieldFuture::new(async move {
                let input: IdInput = input(&ctx)?;
                service::delete_team(app(&ctx)?, &caller(&ctx)?.actor()?, &input.id).await?;
                Ok(Some(FieldValue::value(object([("deletedId", Value::from(input.id))]))))
            })
        })
        .description("Deletes a team and its memberships; members lose its roles at once (a server with `teams.write`, or an owner).")
        .argument(InputValue::new("input", TypeRef::named_nn("DeleteTeamInput"))),
    );
    parts.mutation(
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
        .argument(InputValue::new("input", TypeRef::named_nn("CreateMembershipInput"))),
    );
    parts.mutation(
        Field::new("updateMembership", TypeRef::named_nn("Membership"), |ctx| {
            FieldFuture::new(async move {
                let input: MembershipRolesInput = input(&ctx)?;
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
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateMembershipInput"),
        )),
    );
    parts.mutation(
        Field::new(
            "updateMembershipStatus",
            TypeRef::named_nn("UpdateMembershipStatusPayload"),
            |ctx| {
                FieldFuture::new(async move {
                    let input: MembershipStatusInput = input(&ctx)?;
                    let state = app(&ctx)?;
                    let caller = caller(&ctx)?;
                    let (membership, session) = match (input.user_id, input.secret) {
                        (user_id, Some(secret)) => {
                            let client = ctx.data::<ClientInfo>().cloned().unwrap_or_default();
                            let (membership, session, secret) = service::accept_invitation(
                                state,
                                &caller.project.id,
                                &input.team_id,
                                &input.membership_id,
                                user_id.as_deref(),
                                &secret,
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
        .description("Accepts an invitation: signed in as the invitee (or as the user whose verified email was invited), or with `secret` from the emailed link, which also signs the invitee in (session cookie, and `session.secret` for apps) and, for an invitation by email to an address without an account, creates their user with the email verified.")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateMembershipStatusInput"),
        )),
    );
    parts.mutation(
        Field::new(
            "deleteMembership",
            TypeRef::named_nn("DeleteMembershipPayload"),
            |ctx| {
                FieldFuture::new(async move {
                    let input: MembershipRefInput = input(&ctx)?;
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
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("DeleteMembershipInput"),
        )),
    );
}
