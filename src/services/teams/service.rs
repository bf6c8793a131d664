//! Team rules: who may see and manage a team (servers with `teams.*` scopes, its
//! members, its owners), valid names and roles, invitations (accepted signed in,
//! or through an emailed link that also signs the invitee in and, for an invitation
//! by email, creates the invitee's user only then), and refreshing the roles of
//! every user whose memberships change.

use crate::AppState;
use crate::auth::Actor;
use crate::auth::principal::AuthSettings;
use crate::auth::rate_limit::{self, Limit};
use crate::auth::scopes::{ScopeMarker, TeamsRead, TeamsWrite};
use crate::auth::secrets;
use crate::auth::session_cache::ResolvedSession;
use crate::bus::BusMessage;
use crate::db::{DbErrorExt as _, Page, claimed_ids, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::mail::templates;
use crate::services::account::service::{
    check_redirect_url, count_mail_from, link_with, project_name, queue_mail,
};
use crate::services::users::service::{
    ClientInfo, UserChanges, check_name as check_user_name, commit_logged, insert_invited_user,
    insert_session_in, insert_user_in, normalize_email, passwordless_user, policy, prepare_changes,
    session_opened, user_changed, user_created,
};
use crate::services::users::{Session, User, store as users_store};

use super::{Membership, OWNER, Team, store};

/// The event subscribers see of a change to a team (`teams`, `teams.T`): its
/// members may read it.
fn team_event(team: &Team, action: &str) -> BusMessage {
    BusMessage::Event(crate::bus::Event {
        channels: vec!["teams".into(), format!("teams.{}", team.id)],
        read_roles: vec![format!("team:{}", team.id)],
        key_scope: TeamsRead::NAME.into(),
        ..crate::bus::Event::change(
            &team.project_id,
            &format!("teams.{}", team.id),
            "teams.*",
            action,
            super::schema::team_value(team)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

/// The event subscribers see of a change to a membership (`memberships`,
/// `memberships.M`, `teams.T`): the team's members and the member may read it.
fn membership_event(membership: &Membership, action: &str) -> BusMessage {
    BusMessage::Event(crate::bus::Event {
        channels: vec![
            "memberships".into(),
            format!("memberships.{}", membership.id),
            format!("teams.{}", membership.team_id),
        ],
        // An invitation by email carries its address: only the team's owners hear
        // of it, as only they see it in `memberships`.
        read_roles: std::iter::once(if membership.email.is_some() {
            format!("team:{}/{OWNER}", membership.team_id)
        } else {
            format!("team:{}", membership.team_id)
        })
        .chain(membership.user_id.iter().map(|u| format!("user:{u}")))
        .collect(),
        key_scope: TeamsRead::NAME.into(),
        ..crate::bus::Event::change(
            &membership.project_id,
            &format!("teams.{}.memberships.{}", membership.team_id, membership.id),
            "teams.*.memberships.*",
            action,
            super::schema::membership_value(membership)
                .into_json()
                .unwrap_or_default(),
        )
    })
}

/// The `delete` event of a membership that went with its user: the team's
/// members and owners hear of it as of any membership deleted.
pub(crate) fn membership_gone(membership: &Membership) -> BusMessage {
    membership_event(membership, "delete")
}

/// `teams.T.memberships.M.update.status`: an invitation accepted (Appwrite's name).
fn membership_accepted(membership: &Membership) -> BusMessage {
    match membership_event(membership, "update") {
        BusMessage::Event(event) => BusMessage::Event(event.detailed("status")),
        other => other,
    }
}

const MAX_NAME: usize = 128;
const MAX_ROLES: usize = 100;

fn check_name(name: &str) -> AppResult<()> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(AppError::invalid(
            "name",
            format!("1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

fn check_roles(roles: &[String]) -> AppResult<Vec<String>> {
    if roles.len() > MAX_ROLES {
        return Err(AppError::invalid(
            "roles",
            format!("at most {MAX_ROLES} roles"),
        ));
    }
    for role in roles {
        ids::validate("roles", role).map_err(|_| {
            AppError::invalid(
                "roles",
                format!("`{role}`: a role is 1 to 36 of a-z, A-Z, 0-9, '.', '_', '-'"),
            )
        })?;
    }
    // In the order given, as Appwrite keeps them; a role repeated counts once.
    let mut seen = std::collections::HashSet::new();
    Ok(roles
        .iter()
        .filter(|role| seen.insert(role.as_str()))
        .cloned()
        .collect())
}

async fn load_team(state: &AppState, project_id: &str, id: &str) -> AppResult<Team> {
    ids::validate("id", id)?;
    store::find_team(state.db.pool(), project_id, id)
        .await?
        .map(Team::from)
        .ok_or_else(|| AppError::NotFound {
            what: "team",
            id: id.into(),
        })
}

/// The caller's confirmed membership of the team, if any.
async fn own_membership(
    state: &AppState,
    me: &ResolvedSession,
    team_id: &str,
) -> AppResult<Option<Membership>> {
    Ok(
        store::membership_of(state.db.pool(), &me.user.project_id, team_id, &me.user.id)
            .await?
            .map(Membership::from)
            .filter(|m| m.confirmed),
    )
}

/// The team, if the actor may see it (a server, or a member). A non-member gets
/// "not found", so team ids cannot be probed.
async fn visible_team<S: ScopeMarker>(
    state: &AppState,
    actor: &Actor<'_, S>,
    id: &str,
) -> AppResult<(Team, Option<Membership>)> {
    let team = load_team(state, actor.project(), id).await?;
    match actor {
        Actor::Server(_) => Ok((team, None)),
        Actor::User(me) => match own_membership(state, me, id).await? {
            Some(membership) => Ok((team, Some(membership))),
            None => Err(AppError::NotFound {
                what: "team",
                id: id.into(),
            }),
        },
    }
}

/// Like [`visible_team`], but a user must also be an owner.
async fn managed_team(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    id: &str,
) -> AppResult<Team> {
    let (team, membership) = visible_team(state, actor, id).await?;
    if membership.is_some_and(|m| !m.roles.iter().any(|r| r == OWNER)) {
        return Err(AppError::PermissionDenied {
            reason: "only the team's owners may do this".into(),
        });
    }
    Ok(team)
}

/// Creates a team; a signed-in creator joins it as `owner`, with `roles` besides.
/// A team id is never given out twice (see [`claimed_ids`]).
pub async fn create_team(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    id: Option<String>,
    name: String,
    roles: Option<Vec<String>>,
) -> AppResult<Team> {
    check_name(&name)?;
    // The creator stays able to manage the team whatever roles they name.
    let mut roles = check_roles(&roles.unwrap_or_default())?;
    if !roles.iter().any(|r| r == OWNER) {
        roles.push(OWNER.to_string());
        roles.sort();
    }
    let now = now_millis();
    let team = Team {
        project_id: actor.project().to_string(),
        id: ids::resolve("id", id.as_deref())?,
        name,
        prefs: None,
        created_at: now,
        updated_at: now,
    };
    // Each id stays claimed for good: creating and deleting teams in a loop would
    // grow the database without end (`NIMBUS_TEAMS_PER_USER_PER_HOUR`).
    let per_hour = state.config.teams_per_user_per_hour;
    if let Actor::User(me) = actor
        && per_hour > 0
    {
        state
            .rate_limiter
            .hit(
                &format!("team-create:{}:{}", team.project_id, me.user.id),
                Limit::per_hour(per_hour),
            )
            .await?;
    }
    if let Actor::User(me) = actor {
        room_for_one_more_team(state.db.pool(), state, &team.project_id, &me.user.id).await?;
    }
    let mut tx = state.db.pool().begin().await?;
    claimed_ids::claim(
        &mut *tx,
        &team.project_id,
        claimed_ids::Kind::Team,
        &team.id,
    )
    .await
    .conflict_as("team", &team.id)?;
    store::insert_team(&mut *tx, &team)
        .await
        .conflict_as("team", &team.id)?;
    if let Actor::User(me) = actor {
        let membership = Membership {
            project_id: team.project_id.clone(),
            id: ids::generate(),
            team_id: team.id.clone(),
            user_id: Some(me.user.id.clone()),
            email: None,
            invite_name: None,
            roles,
            confirmed: true,
            joined_at: Some(now),
            invited_at: now,
            created_at: now,
            updated_at: now,
        };
        store::insert_membership(&mut *tx, &membership).await?;
        let mut messages = user_changed(&mut tx, &team.project_id, &me.user.id).await?;
        messages.push(membership_event(&membership, "create"));
        messages.push(team_event(&team, "create"));
        commit_logged(state, tx, messages).await?;
    } else {
        commit_logged(state, tx, vec![team_event(&team, "create")]).await?;
    }
    Ok(team)
}

/// Refuses one more confirmed team for `user_id` once they are in
/// `NIMBUS_TEAMS_MAX_PER_USER`: each of a user's requests carries the roles of every
/// team they are in. Pending invitations do not count, so nobody fills another
/// user's teams by inviting them.
async fn room_for_one_more_team<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    state: &AppState,
    project_id: &str,
    user_id: &str,
) -> AppResult<()> {
    let most = state.config.teams_max_per_user;
    if most == 0 || store::count_confirmed_of_user(db, project_id, user_id, most).await? < most {
        return Ok(());
    }
    Err(AppError::Invalid {
        code: codes::TOO_MANY_TEAMS,
        field: "teamId".into(),
        reason: format!("a user is a member of at most {most} teams"),
    })
}

pub async fn get_team(state: &AppState, actor: &Actor<'_, TeamsRead>, id: &str) -> AppResult<Team> {
    visible_team(state, actor, id).await.map(|(team, _)| team)
}

/// Every team for a server; the teams they belong to for a user; only those whose
/// name starts with `search` (any case) when given.
pub async fn list_teams(
    state: &AppState,
    actor: &Actor<'_, TeamsRead>,
    search: Option<&str>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Team>, i64)> {
    let member = match actor {
        Actor::Server(_) => None,
        Actor::User(me) => Some(me.user.id.as_str()),
    };
    let search = search.map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.len() > 256) {
        return Err(AppError::invalid("search", "at most 256 characters"));
    }
    let pool = state.db.pool();
    let dialect = state.db.dialect();
    let rows = store::list_teams(pool, dialect, actor.project(), member, search, page).await?;
    let total = if with_total {
        store::count_teams(pool, dialect, actor.project(), member, search).await?
    } else {
        0
    };
    Ok((rows.into_iter().map(Team::from).collect(), total))
}

pub async fn rename_team(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    id: &str,
    name: String,
) -> AppResult<Team> {
    let mut team = managed_team(state, actor, id).await?;
    check_name(&name)?;
    team.name = name;
    team.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    store::rename_team(
        &mut *tx,
        &team.project_id,
        &team.id,
        &team.name,
        team.updated_at,
    )
    .await?;
    commit_logged(state, tx, vec![team_event(&team, "update")]).await?;
    Ok(team)
}

/// Replaces the team's preferences (an owner, or a server), at most 64 KiB of JSON.
pub async fn update_team_prefs(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    id: &str,
    prefs: serde_json::Map<String, serde_json::Value>,
) -> AppResult<Team> {
    let mut team = managed_team(state, actor, id).await?;
    crate::services::users::service::check_prefs(&prefs)?;
    team.prefs = Some(serde_json::Value::Object(prefs).to_string());
    team.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    store::set_team_prefs(
        &mut *tx,
        &team.project_id,
        &team.id,
        team.prefs.as_deref(),
        team.updated_at,
    )
    .await?;
    commit_logged(state, tx, vec![team_event(&team, "update")]).await?;
    Ok(team)
}

/// Deletes the team and its memberships; the members lose its roles at once.
pub async fn delete_team(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    id: &str,
) -> AppResult<()> {
    let team = managed_team(state, actor, id).await?;
    // Under the team's lock, which an acceptance takes too: a member who joins
    // at this moment is either listed here (and loses the team's roles) or finds
    // the team gone.
    let mut tx = state.db.begin_write().await?;
    store::lock_team(&mut tx, &team.project_id, &team.id).await?;
    let members = store::list_memberships(&mut *tx, &team.project_id, &team.id).await?;
    store::delete_team(&mut *tx, &team.project_id, &team.id).await?;
    // Logged before the members' changes, so they may still read it.
    let mut messages = vec![team_event(&team, "delete")];
    for user_id in members.iter().filter_map(|m| m.user_id.as_deref()) {
        messages.extend(user_changed(&mut tx, &team.project_id, user_id).await?);
    }
    commit_logged(state, tx, messages).await?;
    Ok(())
}

/// Memberships a page of `memberships` holds when the request does not say.
pub const MEMBERSHIPS_PAGE: usize = 100;

/// A page of a team's memberships, oldest first: `first` of them, after the
/// membership `after` (the last of the page before) when given.
pub async fn list_memberships(
    state: &AppState,
    actor: &Actor<'_, TeamsRead>,
    team_id: &str,
    first: usize,
    after: Option<&str>,
) -> AppResult<Vec<Membership>> {
    let (team, mine) = visible_team(state, actor, team_id).await?;
    let after = match after {
        Some(id) => {
            let not_one = || AppError::Invalid {
                code: codes::INVALID_CURSOR,
                field: "after".into(),
                reason: "not a membership of this team".into(),
            };
            ids::validate("after", id).map_err(|_| not_one())?;
            let last = store::find_membership(state.db.pool(), &team.project_id, &team.id, id)
                .await?
                .ok_or_else(not_one)?;
            Some((last.created_at, last.id))
        }
        None => None,
    };
    let rows = store::page_memberships(
        state.db.pool(),
        &team.project_id,
        &team.id,
        after.as_ref().map(|(at, id)| (*at, id.as_str())),
        first,
    )
    .await?;
    // The address of an invitation by email is the invitee's, not the team's: only
    // owners (who invite) and servers see it; other members see that an invitation
    // waits, not to whom.
    let shows_addresses = mine.is_none_or(|m| m.roles.iter().any(|r| r == OWNER));
    Ok(rows
        .into_iter()
        .map(Membership::from)
        .map(|mut membership| {
            if !shows_addresses {
                membership.email = None;
            }
            membership
        })
        .collect())
}

/// One membership of a team, to whoever may list the team's memberships, the
/// invited address shown as [`list_memberships`] shows it.
pub async fn get_membership(
    state: &AppState,
    actor: &Actor<'_, TeamsRead>,
    team_id: &str,
    id: &str,
) -> AppResult<Membership> {
    let (team, mine) = visible_team(state, actor, team_id).await?;
    let not_found = || AppError::NotFound {
        what: "membership",
        id: id.chars().take(64).collect(),
    };
    ids::validate("id", id).map_err(|_| not_found())?;
    let mut membership: Membership =
        store::find_membership(state.db.pool(), &team.project_id, &team.id, id)
            .await?
            .ok_or_else(not_found)?
            .into();
    if !mine.is_none_or(|m| m.roles.iter().any(|r| r == OWNER)) {
        membership.email = None;
    }
    Ok(membership)
}

/// A request to add someone to a team.
#[derive(Debug, Default, Clone)]
pub struct NewMembership {
    pub team_id: String,
    /// An existing user…
    pub user_id: Option<String>,
    /// …or an email. An owner's invitation to an address without a verified account
    /// names the address only; a server adds its user (created without a password
    /// when there is none).
    pub email: Option<String>,
    /// The name of a user created for `email`.
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// The app's page that accepts invitations: the emailed link goes there with
    /// `membershipId`, `secret` and `teamId`.
    pub url: Option<String>,
}

/// How long the invitation routes may be hit per team and hour.
const INVITE_LIMIT: Limit = Limit::per_hour(50);

/// Invitations mailed to one address per hour, from all teams of a project: the
/// same bound as every other email to one recipient.
const INVITE_RECIPIENT_LIMIT: Limit = Limit::per_hour(10);
const ACCEPT_ATTEMPTS_LIMIT: Limit = Limit::per_hour(10);
/// How long an invitation's link works after it was sent (or sent again): a week.
const INVITATION_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// Whom a membership is for.
enum Invitee {
    /// An existing user (or one a server created).
    User(User),
    /// An address without a verified account: its user is found or created when the
    /// invitation is accepted through the emailed link, which proves the mailbox.
    Email { email: String, name: Option<String> },
    /// An address without an account that a server adds: the user is created in
    /// the membership's transaction, so a failed membership leaves no user behind.
    New(User),
}

/// The invitee: the user named, or the one with the email. An owner inviting an
/// address gets an email-only invitation whatever account has it: no account is
/// made for an address nobody proved, whoever registered an address they do not
/// hold cannot accept in its owner's place, and the answer tells the owner nothing
/// of the address's account (its id, or whether there is one: any signed-in user
/// can make a team and invite). A server adds the user with the email, created when
/// missing, as it may create users.
async fn invitee(
    state: &AppState,
    project_id: &str,
    new: &NewMembership,
    by_server: bool,
) -> AppResult<Invitee> {
    let pool = state.db.pool();
    match (&new.user_id, &new.email) {
        (Some(user_id), None) => {
            ids::validate("userId", user_id)?;
            users_store::find_user(pool, project_id, user_id)
                .await?
                .map(|row| Invitee::User(row.to_user()))
                .ok_or_else(|| AppError::NotFound {
                    what: "user",
                    id: user_id.clone(),
                })
        }
        (None, Some(email)) => {
            let email = normalize_email("email", email)?;
            if let Some(name) = &new.name {
                check_user_name(name)?;
            }
            let existing = users_store::find_user_by_email(pool, project_id, &email)
                .await?
                .map(|row| row.to_user());
            match existing {
                Some(user) if by_server => return Ok(Invitee::User(user)),
                _ if !by_server => {
                    return Ok(Invitee::Email {
                        email,
                        name: new.name.clone(),
                    });
                }
                _ => {}
            }
            Ok(Invitee::New(passwordless_user(
                project_id,
                Some(&email),
                new.name.as_deref().unwrap_or_default(),
                false,
            )))
        }
        _ => Err(AppError::invalid(
            "userId",
            "give either `userId` or `email`",
        )),
    }
}

/// The team's pending or confirmed membership for the invitee: the user's own, or
/// an invitation by email waiting for the address. An owner's invitation never
/// links a user to an address (neither by taking over the address's invitation
/// nor by finding the address's user): an account registered with an address its
/// holder does not own must not inherit the invitation sent to the owner, and the
/// answer must not tell the inviter whose address it is.
async fn existing_membership(
    state: &AppState,
    team: &Team,
    invitee: &Invitee,
    by_server: bool,
) -> AppResult<Option<Membership>> {
    let pool = state.db.pool();
    let email = match invitee {
        Invitee::User(user) => {
            let own = store::membership_of(pool, &team.project_id, &team.id, &user.id).await?;
            if own.is_some() {
                return Ok(own.map(Membership::from));
            }
            // A server's adding takes over the address's invitation; an owner's
            // does not, or its answer would tell which user the invited address
            // belongs to.
            match &user.email {
                Some(email) if by_server => email,
                _ => return Ok(None),
            }
        }
        // The invitations to the address, or the membership of a member who
        // verified it (inviting a member is a conflict; the owner shares the team
        // with them). A pending invitation of the address's user by id is not
        // taken over: which user an address belongs to is not the inviter's to
        // learn.
        Invitee::Email { email, .. } => {
            let holder = users_store::find_user_by_email(pool, &team.project_id, email)
                .await?
                .map(|row| row.to_user())
                .filter(|user| user.email_verified);
            if let Some(holder) = holder {
                let own =
                    store::membership_of(pool, &team.project_id, &team.id, &holder.id).await?;
                if own.as_ref().is_some_and(|m| m.confirmed != 0) {
                    return Ok(own.map(Membership::from));
                }
            }
            email
        }
        Invitee::New(user) => user.email.as_deref().unwrap_or_default(),
    };
    Ok(
        store::membership_invited(pool, &team.project_id, &team.id, email)
            .await?
            .map(Membership::from),
    )
}

/// Adds a user to a team. A server (`teams.write`) adds them at once. An owner
/// invites: the membership waits until the user accepts, either signed in
/// (`updateMembershipStatus`) or through the emailed link (with `url`; inviting by
/// `email` always sends one), which also signs them in. Inviting again while the
/// invitation is pending re-sends it with a new secret; the old link stops working.
pub async fn create_membership(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    new: NewMembership,
    client: &ClientInfo,
) -> AppResult<Membership> {
    // A server adding an address without an account creates its user with the
    // membership; when someone signed up with it meanwhile, the second try finds
    // that user.
    match add_member(state, actor, new.clone(), client).await {
        Err(AppError::Conflict { what: "user", .. }) => add_member(state, actor, new, client).await,
        other => other,
    }
}

async fn add_member(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    new: NewMembership,
    client: &ClientInfo,
) -> AppResult<Membership> {
    let team = managed_team(state, actor, &new.team_id).await?;
    let roles = check_roles(&new.roles)?;
    let by_server = matches!(actor, Actor::Server(_));
    let policy = policy(state, &team.project_id).await?;
    let mail_to = invitation_page(&policy, &new, by_server)?;
    if mail_to.is_some() {
        count_invitation(state, actor, client, &team, new.email.as_deref()).await?;
    } else if let Actor::User(me) = actor {
        // Unmailed, an owner's invitation by user id still looks the id up.
        count_team_invitation(state, &team).await?;
        count_user_invitation(state, &me.user).await?;
    }
    let invitee = invitee(state, &team.project_id, &new, by_server).await?;
    let (user_id, address, invite_name) = match &invitee {
        Invitee::User(user) => (Some(user.id.clone()), user.email.clone(), None),
        Invitee::Email { email, name } => (None, Some(email.clone()), name.clone()),
        Invitee::New(user) => (Some(user.id.clone()), user.email.clone(), None),
    };
    // Names the membership in a conflict: the user, or the invited address.
    let who = user_id
        .clone()
        .or_else(|| address.clone())
        .unwrap_or_default();
    if mail_to.is_some() {
        let Some(email) = &address else {
            return Err(AppError::invalid(
                "userId",
                "this user has no email to send the invitation to",
            ));
        };
        if new.email.is_none() {
            hit_invited_address(state, &team, email).await?;
        }
    }
    // Inviting someone whose invitation is pending renews it, as Appwrite does: the
    // same membership with the new roles, and a new secret (a server confirms it).
    let pending = existing_membership(state, &team, &invitee, by_server).await?;
    if pending.as_ref().is_some_and(|m| m.confirmed) {
        return Err(AppError::Conflict {
            what: "membership",
            id: who,
        });
    }
    let renewed = pending.is_some();
    // A server adds a member at once: the user's teams are counted now (an
    // invitation is counted when it is accepted).
    if by_server && let Some(user_id) = &user_id {
        room_for_one_more_team(state.db.pool(), state, &team.project_id, user_id).await?;
    }
    // An invitation by email waits for the address until a user is known.
    let (email, invite_name) = match user_id {
        Some(_) => (None, None),
        None => (address.clone(), invite_name),
    };
    let now = now_millis();
    let membership = match pending {
        Some(pending) => Membership {
            user_id,
            email,
            invite_name,
            roles,
            confirmed: by_server,
            joined_at: by_server.then_some(now),
            invited_at: now,
            updated_at: now,
            ..pending
        },
        None => Membership {
            project_id: team.project_id.clone(),
            id: ids::generate(),
            team_id: team.id.clone(),
            user_id,
            email,
            invite_name,
            roles,
            confirmed: by_server,
            joined_at: by_server.then_some(now),
            invited_at: now,
            created_at: now,
            updated_at: now,
        },
    };
    let secret = mail_to.as_ref().map(|_| secrets::random_token());
    let action = if renewed { "update" } else { "create" };
    let mail = match (&mail_to, &secret, &address) {
        (Some(url), Some(secret), Some(email)) => {
            let invitation = Invitation {
                team: &team,
                membership: &membership,
                url,
                secret,
            };
            let content = invitation_mail(state, &policy, actor, invitation).await?;
            Some((email.as_str(), content))
        }
        _ => None,
    };
    let new_user = match invitee {
        Invitee::New(user) => Some(user),
        _ => None,
    };
    let saving = Saving {
        membership: &membership,
        action,
        secret: secret.as_deref(),
        who: &who,
        mail,
        new_user,
    };
    save_membership(state, saving).await?;
    Ok(membership)
}

/// The app's page an owner's invitation is mailed to, checked against the
/// project's allowed hosts; none when nothing is mailed (a server adds at once).
fn invitation_page(
    policy: &AuthSettings,
    new: &NewMembership,
    by_server: bool,
) -> AppResult<Option<url::Url>> {
    match &new.url {
        Some(url) if !by_server => Ok(Some(check_redirect_url(policy, "url", url)?)),
        _ if !by_server && new.email.is_some() => Err(AppError::invalid(
            "url",
            "give the page of your app that accepts invitations; the emailed link goes there",
        )),
        _ => Ok(None),
    }
}

/// Counts an invitation to be mailed against the team's, the sender's and, when
/// the address is given, the recipient's bounds: before the invitee is looked up
/// (or made), so a refusal writes nothing.
async fn count_invitation(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    client: &ClientInfo,
    team: &Team,
    email: Option<&str>,
) -> AppResult<()> {
    count_team_invitation(state, team).await?;
    if let Actor::User(me) = actor {
        count_user_invitation(state, &me.user).await?;
    }
    let sender = match actor {
        Actor::User(me) => Some(rate_limit::user_mail_sender(&me.user)),
        Actor::Server(_) => None,
    };
    count_mail_from(state, sender.as_deref(), client).await?;
    if let Some(email) = email {
        let email = normalize_email("email", email)?;
        hit_invited_address(state, team, &email).await?;
    }
    Ok(())
}

/// Counts an invitation to `team`.
async fn count_team_invitation(state: &AppState, team: &Team) -> AppResult<()> {
    state
        .rate_limiter
        .hit(
            &format!("invite:{}:{}", team.project_id, team.id),
            INVITE_LIMIT,
        )
        .await
}

/// Counts an invitation a user makes, in any of their teams, mailed or not: each
/// tells whether a user id exists (`NIMBUS_INVITES_PER_USER_PER_HOUR`).
async fn count_user_invitation(
    state: &AppState,
    user: &crate::auth::principal::User,
) -> AppResult<()> {
    let per_hour = state.config.invites_per_user_per_hour;
    if per_hour == 0 {
        return Ok(());
    }
    state
        .rate_limiter
        .hit(
            &format!("invite-by:{}:{}", user.project_id, user.id),
            Limit::per_hour(per_hour),
        )
        .await
}

/// Counts an invitation mailed to `email`, from any team of the project.
async fn hit_invited_address(state: &AppState, team: &Team, email: &str) -> AppResult<()> {
    state
        .rate_limiter
        .hit(
            &format!("invite-to:{}:{email}", team.project_id),
            INVITE_RECIPIENT_LIMIT,
        )
        .await
}

/// Writes a new membership, or renews a pending one, with the digest of the
/// invitation link's secret when one is mailed, and queues that `mail` (to whom,
/// what) in the same transaction: an invitation nobody was sent, or a link whose
/// secret matches nothing, never exists.
/// A membership to write, with what goes with it.
struct Saving<'a> {
    membership: &'a Membership,
    /// `create`, or `update` for a renewed invitation.
    action: &'a str,
    secret: Option<&'a str>,
    /// Names the membership in a conflict.
    who: &'a str,
    mail: Option<(&'a str, templates::MailContent)>,
    /// The member's user, when a server adds an address without one.
    new_user: Option<User>,
}

async fn save_membership(state: &AppState, saving: Saving<'_>) -> AppResult<()> {
    let Saving {
        membership,
        action,
        secret,
        who,
        mail,
        new_user,
    } = saving;
    let renewed = action == "update";
    let digest = secret.map(secrets::digest);
    let mut tx = state.db.pool().begin().await?;
    let mut messages = Vec::new();
    if let Some(user) = &new_user {
        insert_user_in(&mut tx, user).await?;
        messages.push(user_created(user));
    }
    if renewed {
        // The old link stops working: its secret is replaced (or cleared).
        let renewed = store::renew_invitation(&mut *tx, membership, digest.as_deref())
            .await
            .conflict_as("membership", who)?;
        if !renewed {
            // Accepted in the meantime.
            return Err(AppError::Conflict {
                what: "membership",
                id: who.to_string(),
            });
        }
    } else {
        store::insert_membership(&mut *tx, membership)
            .await
            .conflict_as("membership", who)?;
        if let Some(digest) = &digest {
            store::set_invite_secret(&mut *tx, &membership.project_id, &membership.id, digest)
                .await?;
        }
    }
    if let Some(user_id) = &membership.user_id {
        messages.extend(user_changed(&mut tx, &membership.project_id, user_id).await?);
    }
    messages.push(membership_event(membership, action));
    let mailed = mail.is_some();
    if let Some((to, content)) = mail {
        queue_mail(state, &mut *tx, &membership.project_id, to, content).await?;
    }
    commit_logged(state, tx, messages).await?;
    if mailed {
        state.jobs.wake();
    }
    Ok(())
}

/// An invitation to mail: where its link goes.
struct Invitation<'a> {
    team: &'a Team,
    membership: &'a Membership,
    url: &'a url::Url,
    secret: &'a str,
}

/// The mail of an invitation link. The link names the invitation, never an
/// account: whoever holds the mailbox becomes (or signs in as) the user with this
/// address.
async fn invitation_mail(
    state: &AppState,
    policy: &AuthSettings,
    actor: &Actor<'_, TeamsWrite>,
    invitation: Invitation<'_>,
) -> AppResult<templates::MailContent> {
    let Invitation {
        team,
        membership,
        url,
        secret,
    } = invitation;
    let link = link_with(
        policy,
        url.as_str(),
        &[
            ("membershipId", &membership.id),
            ("secret", secret),
            ("teamId", &team.id),
        ],
    )?;
    let inviter = match actor {
        Actor::User(me) if !me.user.name.is_empty() => me.user.name.clone(),
        Actor::User(me) => me
            .user
            .email
            .clone()
            .unwrap_or_else(|| "A team owner".into()),
        Actor::Server(_) => "A team owner".into(),
    };
    Ok(templates::team_invitation(
        &project_name(state, &team.project_id).await?,
        &team.name,
        &inviter,
        &link,
    ))
}

async fn load_membership(
    state: &AppState,
    project_id: &str,
    team_id: &str,
    id: &str,
) -> AppResult<Membership> {
    ids::validate("membershipId", id)?;
    store::find_membership(state.db.pool(), project_id, team_id, id)
        .await?
        .map(Membership::from)
        .ok_or_else(|| AppError::NotFound {
            what: "membership",
            id: id.into(),
        })
}

/// The invited user accepts an invitation, signed in as themselves: one made for
/// them, or one made for their address if they have verified it.
pub async fn accept_membership(
    state: &AppState,
    me: &ResolvedSession,
    team_id: &str,
    id: &str,
) -> AppResult<Membership> {
    let mut membership = load_membership(state, &me.user.project_id, team_id, id).await?;
    let mine = match &membership.user_id {
        Some(user_id) => *user_id == me.user.id,
        None => {
            me.user.email_verified && me.user.email.is_some() && membership.email == me.user.email
        }
    };
    if !mine {
        return Err(AppError::NotFound {
            what: "membership",
            id: id.into(),
        });
    }
    if !membership.confirmed {
        let now = now_millis();
        let mut tx = state.db.begin_write().await?;
        // Beside a deletion of the team ([`delete_team`]), one at a time.
        store::lock_team(&mut tx, &membership.project_id, &membership.team_id).await?;
        room_for_one_more_team(&mut *tx, state, &membership.project_id, &me.user.id).await?;
        let confirmed = store::confirm_membership(
            &mut *tx,
            &membership.project_id,
            &membership.id,
            &me.user.id,
            None,
            now,
        )
        .await
        .conflict_as("membership", &me.user.id)?;
        if !confirmed {
            // Accepted or renewed for someone else in the meantime.
            return Err(AppError::Conflict {
                what: "membership",
                id: id.into(),
            });
        }
        membership.user_id = Some(me.user.id.clone());
        membership.email = None;
        membership.invite_name = None;
        membership.confirmed = true;
        membership.joined_at = Some(now);
        membership.updated_at = now;
        let mut messages = user_changed(&mut tx, &membership.project_id, &me.user.id).await?;
        messages.push(membership_accepted(&membership));
        commit_logged(state, tx, messages).await?;
    }
    Ok(membership)
}

/// What an emailed invitation link carries back.
pub struct InvitationLink<'a> {
    /// The user, which older links named: it must then be the membership's.
    pub user_id: Option<&'a str>,
    pub secret: &'a str,
}

/// The invitee accepts through the emailed link, signed out or signed in as
/// themselves: the membership is confirmed, the email counts as verified (the link
/// reached it; an unverified account with it is claimed) and the user gets a
/// session. An invitation by email gets its user now: the one with the address, or
/// a new one.
pub async fn accept_invitation(
    state: &AppState,
    project_id: &str,
    team_id: &str,
    id: &str,
    link: InvitationLink<'_>,
    signed_in: Option<&ResolvedSession>,
    client: ClientInfo,
) -> AppResult<(Membership, Session, String)> {
    let InvitationLink { user_id, secret } = link;
    let invalid = || AppError::Invalid {
        code: codes::INVALID_TOKEN,
        field: "secret".into(),
        reason: "the invitation secret is wrong or the invitation was already accepted".into(),
    };
    ids::validate("membershipId", id)?;
    state
        .rate_limiter
        .hit_secret_guess(project_id, &client.ip)
        .await?;
    state
        .rate_limiter
        .hit(
            // Per client address: guesses from elsewhere do not lock the invitee out.
            &format!(
                "invite-accept:{project_id}:{id}:{}",
                crate::auth::rate_limit::client_key(&client.ip)
            ),
            ACCEPT_ATTEMPTS_LIMIT,
        )
        .await?;
    let mut membership = load_membership(state, project_id, team_id, id).await?;
    if user_id.is_some_and(|user_id| membership.user_id.as_deref() != Some(user_id)) {
        return Err(invalid());
    }
    // A link signs its holder in: it lasts as long as Appwrite's, not for ever.
    if now_millis().saturating_sub(membership.invited_at) > INVITATION_LIFETIME_MS {
        return Err(AppError::Invalid {
            code: codes::INVALID_TOKEN,
            field: "secret".into(),
            reason: "the invitation expired; ask the team for a new one".into(),
        });
    }
    let digest = store::invite_secret(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(invalid)?;
    if !secrets::matches(secret, &digest) {
        return Err(invalid());
    }
    let pool = state.db.pool();
    let existing = match (&membership.user_id, &membership.email) {
        (Some(user_id), _) => Some(
            users_store::find_user(pool, project_id, user_id)
                .await?
                .ok_or_else(invalid)?,
        ),
        (None, Some(email)) => users_store::find_user_by_email(pool, project_id, email).await?,
        (None, None) => return Err(invalid()),
    }
    .map(|row| row.to_user());
    // As Appwrite refuses it: the session the link opens would take the place of
    // the signed-in caller's (a link sent to someone signed in would sign them into
    // the sender's account), so only the invitee may use it while signed in.
    if let Some(me) = signed_in
        && existing.as_ref().map(|user| user.id.as_str()) != Some(me.user.id.as_str())
    {
        return Err(AppError::Invalid {
            code: codes::TEAM_INVITE_MISMATCH,
            field: "secret".into(),
            reason: "the invitation is for someone else; sign out to accept it".into(),
        });
    }
    if existing.as_ref().is_some_and(|user| user.blocked) {
        return Err(AppError::UserBlocked);
    }
    // The link proves the mailbox: an account whose email was never verified is
    // claimed ([`UserChanges::claim`]) as it joins.
    let claim = match &existing {
        Some(user) if !user.email_verified => {
            let claim = UserChanges {
                claim: true,
                ..Default::default()
            };
            Some(prepare_changes(state, project_id, &user.id, claim).await?)
        }
        _ => None,
    };
    let policy = policy(state, project_id).await?;
    let now = now_millis();
    // The user made for the address, the confirmation, the claim and the session
    // are one write: a failed or replayed acceptance leaves no account behind, and
    // a crash cannot use up the link without signing the invitee in.
    let mut tx = state.db.begin_write().await?;
    // Beside a deletion of the team ([`delete_team`]), one at a time.
    store::lock_team(&mut tx, project_id, &membership.team_id).await?;
    let mut messages = Vec::new();
    let user = match existing {
        Some(user) => user,
        None => {
            let email = membership.email.as_deref().unwrap_or_default();
            let name = membership.invite_name.as_deref().unwrap_or_default();
            let user = insert_invited_user(&mut tx, project_id, email, name).await?;
            messages.push(user_created(&user));
            user
        }
    };
    room_for_one_more_team(&mut *tx, state, project_id, &user.id).await?;
    // Whoever confirms first owns the secret: a replayed or re-sent link fails here.
    let confirmed =
        store::confirm_membership(&mut *tx, project_id, id, &user.id, Some(&digest), now)
            .await
            .conflict_as("membership", &user.id)?;
    if !confirmed {
        return Err(invalid());
    }
    membership.user_id = Some(user.id.clone());
    membership.email = None;
    membership.invite_name = None;
    membership.confirmed = true;
    membership.joined_at = Some(now);
    membership.updated_at = now;
    let user = match claim {
        Some(claim) => {
            let (user, claimed) = claim.write(&mut tx).await?;
            messages.extend(claimed);
            user
        }
        None => user,
    };
    messages.extend(user_changed(&mut tx, project_id, &user.id).await?);
    messages.push(membership_accepted(&membership));
    let (session, secret, opened) =
        insert_session_in(&mut tx, &policy, &user, "invite", &client).await?;
    messages.extend(opened);
    commit_logged(state, tx, messages).await?;
    session_opened(state, &user, &session).await;
    Ok((membership, session, secret))
}

pub async fn update_membership_roles(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    team_id: &str,
    id: &str,
    roles: Vec<String>,
) -> AppResult<Membership> {
    let team = managed_team(state, actor, team_id).await?;
    let mut membership = load_membership(state, &team.project_id, &team.id, id).await?;
    membership.roles = check_roles(&roles)?;
    membership.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    let owners_kept = OwnersKept::lock(&mut tx, actor, &membership).await?;
    store::update_membership_roles(&mut *tx, &membership).await?;
    owners_kept
        .check(&mut tx, "remove the `owner` role of")
        .await?;
    let mut messages = match &membership.user_id {
        Some(user_id) => user_changed(&mut tx, &membership.project_id, user_id).await?,
        None => Vec::new(),
    };
    messages.push(membership_event(&membership, "update"));
    commit_logged(state, tx, messages).await?;
    Ok(membership)
}

/// A user's change of a membership must leave its team a confirmed owner: else no
/// user could manage the team again (Appwrite refuses the same). Two owners
/// stepping down at once would each see the other still there, so the change
/// runs under the team's lock and counts after itself. A server may leave a team
/// without an owner.
struct OwnersKept<'a> {
    /// The team, when the change is a user's to an owner's membership.
    team: Option<(&'a str, &'a str)>,
}

impl<'a> OwnersKept<'a> {
    /// Before a user's change to `membership`: takes the team's lock, and
    /// whether the membership is an owner's is read under it (a change to any
    /// other membership leaves the owners as they are, and checks nothing: its
    /// cost is not the team's size).
    async fn lock<S: ScopeMarker>(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        actor: &Actor<'_, S>,
        membership: &'a Membership,
    ) -> AppResult<Self> {
        if !matches!(actor, Actor::User(_)) {
            return Ok(OwnersKept { team: None });
        }
        let (project_id, team_id) = (membership.project_id.as_str(), membership.team_id.as_str());
        store::lock_team(tx, project_id, team_id).await?;
        let owner = store::is_confirmed_owner(tx, project_id, &membership.id).await?;
        Ok(OwnersKept {
            team: owner.then_some((project_id, team_id)),
        })
    }

    /// After the change: refused (and the transaction dropped) when no owner is left.
    async fn check(self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, doing: &str) -> AppResult<()> {
        let Some((project_id, team_id)) = self.team else {
            return Ok(());
        };
        if !store::has_owner(tx, project_id, team_id).await? {
            return Err(AppError::NotAllowed(format!(
                "a team keeps at least one owner: make another member an owner before you \
                 {doing} this membership, or delete the team"
            )));
        }
        Ok(())
    }
}

/// Removes a membership: a server, an owner, or the member leaving.
pub async fn delete_membership(
    state: &AppState,
    actor: &Actor<'_, TeamsWrite>,
    team_id: &str,
    id: &str,
) -> AppResult<()> {
    let project_id = actor.project().to_string();
    let membership = match actor {
        Actor::User(me) => {
            // The member's own membership, else the team's owners decide; to anyone
            // else the team is missing, whether or not the membership exists.
            match load_membership(state, &project_id, team_id, id).await {
                Ok(membership) if membership.user_id.as_deref() == Some(me.user.id.as_str()) => {
                    membership
                }
                _ => {
                    let team = managed_team(state, actor, team_id).await?;
                    load_membership(state, &project_id, &team.id, id).await?
                }
            }
        }
        Actor::Server(_) => {
            let team = managed_team(state, actor, team_id).await?;
            load_membership(state, &project_id, &team.id, id).await?
        }
    };
    let mut tx = state.db.pool().begin().await?;
    let owners_kept = OwnersKept::lock(&mut tx, actor, &membership).await?;
    store::delete_membership(&mut *tx, &project_id, &membership.id).await?;
    owners_kept.check(&mut tx, "remove").await?;
    // Logged before the member's change, so the member may still read it.
    let mut messages = vec![membership_event(&membership, "delete")];
    if let Some(user_id) = &membership.user_id {
        messages.extend(user_changed(&mut tx, &project_id, user_id).await?);
    }
    commit_logged(state, tx, messages).await?;
    Ok(())
}
