//! SQL of teams and memberships.

use sqlx::{Any, AnyPool, Executor, FromRow};

use crate::db::{Dialect, Page};

use super::{Membership, Team};

#[derive(Debug, FromRow)]
pub struct TeamRow {
    pub project_id: String,
    pub id: String,
    pub name: String,
    /// JSON bytes, as a user's preferences are kept.
    pub prefs: Option<Vec<u8>>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<TeamRow> for Team {
    fn from(row: TeamRow) -> Self {
        Team {
            project_id: row.project_id,
            id: row.id,
            name: row.name,
            prefs: row.prefs.and_then(|bytes| String::from_utf8(bytes).ok()),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, FromRow)]
pub struct MembershipRow {
    pub project_id: String,
    pub id: String,
    pub team_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub invite_name: Option<String>,
    pub roles: String,
    pub confirmed: i16,
    pub joined_at: Option<i64>,
    pub invited_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<MembershipRow> for Membership {
    fn from(row: MembershipRow) -> Self {
        Membership {
            project_id: row.project_id,
            id: row.id,
            team_id: row.team_id,
            user_id: row.user_id,
            email: row.email,
            invite_name: row.invite_name,
            // Written only by this module from a Vec<String>.
            roles: serde_json::from_str(&row.roles).unwrap_or_default(),
            confirmed: row.confirmed != 0,
            joined_at: row.joined_at,
            invited_at: row.invited_at.unwrap_or(row.created_at),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const TEAM_COLUMNS: &str = "project_id, id, name, prefs, created_at, updated_at";
const MEMBERSHIP_COLUMNS: &str = "project_id, id, team_id, user_id, email, invite_name, roles, \
     confirmed, joined_at, invited_at, created_at, updated_at";

pub async fn insert_team<'e>(
    db: impl Executor<'e, Database = Any>,
    team: &Team,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO teams ({TEAM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(&team.project_id)
    .bind(&team.id)
    .bind(&team.name)
    .bind(team.prefs.as_deref().map(str::as_bytes))
    .bind(team.created_at)
    .bind(team.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_team(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<TeamRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// ` FROM … WHERE <project> = ? [AND <member> = ?]` of a list of teams. A
/// member's teams are read from its memberships first (the
/// `memberships_of_user` index), each team looked up by key, with the join order
/// fixed: walking every team of the project with a membership probe each would
/// cost what the project holds, not what the member belongs to (ADR 0017).
fn teams_from(dialect: Dialect, member: bool) -> String {
    if member {
        format!(
            " FROM memberships m {} teams t ON t.project_id = m.project_id AND t.id = m.team_id \
             WHERE m.project_id = ? AND m.user_id = ? AND m.confirmed = 1",
            dialect.ordered_join()
        )
    } else {
        " FROM teams t WHERE t.project_id = ?".into()
    }
}

/// The condition of a search of teams by the start of their name or id.
fn searched(dialect: Dialect, search: Option<&str>) -> (String, Vec<String>) {
    search.map_or_else(Default::default, |search| {
        dialect.starts_with_any(&["t.name", "t.id"], search)
    })
}

/// Teams by id; only those `member` belongs to (confirmed) when given, and those
/// whose name or id starts with `search` (any case).
pub async fn list_teams(
    pool: &AnyPool,
    dialect: Dialect,
    project_id: &str,
    member: Option<&str>,
    search: Option<&str>,
    page: &Page,
) -> Result<Vec<TeamRow>, sqlx::Error> {
    let (keyset, page_binds) = page.keyset_sql("t.id");
    let (filter, binds) = searched(dialect, search);
    let sql = format!(
        "SELECT t.project_id, t.id, t.name, t.prefs, t.created_at, t.updated_at{}{filter}{keyset}",
        teams_from(dialect, member.is_some())
    );
    let mut query = sqlx::query_as(&sql).bind(project_id);
    if let Some(member) = member {
        query = query.bind(member);
    }
    binds
        .iter()
        .chain(page_binds.iter())
        .fold(query, |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

pub async fn count_teams(
    pool: &AnyPool,
    dialect: Dialect,
    project_id: &str,
    member: Option<&str>,
    search: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let (filter, binds) = searched(dialect, search);
    let sql = format!(
        "SELECT COUNT(*){}{filter}",
        teams_from(dialect, member.is_some())
    );
    let mut query = sqlx::query_scalar(&sql).bind(project_id);
    if let Some(member) = member {
        query = query.bind(member);
    }
    let query = binds.iter().fold(query, |q, b| q.bind(b));
    query.fetch_one(pool).await
}

pub async fn rename_team<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
    name: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE teams SET name = ?, updated_at = ? WHERE project_id = ? AND id = ?")
        .bind(name)
        .bind(at)
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

pub async fn set_team_prefs<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
    prefs: Option<&str>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE teams SET prefs = ?, updated_at = ? WHERE project_id = ? AND id = ?")
        .bind(prefs.map(str::as_bytes))
        .bind(at)
        .bind(project_id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Holds the team's row until the transaction ends: changes to who owns a team
/// are made one at a time, each seeing the one before (the first statement of the
/// transaction, so what it reads afterwards is read after the lock).
pub async fn lock_team(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE teams SET updated_at = updated_at WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

/// A team's confirmed members, counted from `memberships_confirmed`.
pub(crate) const CONFIRMED_MEMBERS: &str =
    "SELECT COUNT(*) FROM memberships WHERE project_id = ? AND team_id = ? AND confirmed = 1";

/// How many confirmed members the team has.
pub async fn count_confirmed_members<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    team_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(CONFIRMED_MEMBERS)
        .bind(project_id)
        .bind(team_id)
        .fetch_one(db)
        .await
}

/// Whether a confirmed member of the team is an owner. Roles are stored as a
/// JSON list: the `LIKE` keeps all but the owners' rows in the database, and
/// each row it keeps is read exactly.
pub async fn has_owner(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    team_id: &str,
) -> Result<bool, sqlx::Error> {
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT roles FROM memberships WHERE project_id = ? AND team_id = ? AND confirmed = 1 \
         AND roles LIKE '%\"owner\"%'",
    )
    .bind(project_id)
    .bind(team_id)
    .fetch_all(conn)
    .await?;
    Ok(owners.iter().any(|json| {
        serde_json::from_str::<Vec<String>>(json).is_ok_and(|r| r.iter().any(|r| r == super::OWNER))
    }))
}

/// Whether membership `id`, as stored now, is a confirmed owner's.
pub async fn is_confirmed_owner(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(String, i16)> =
        sqlx::query_as("SELECT roles, confirmed FROM memberships WHERE project_id = ? AND id = ?")
            .bind(project_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.is_some_and(|(roles, confirmed)| {
        confirmed == 1
            && serde_json::from_str::<Vec<String>>(&roles)
                .is_ok_and(|r| r.iter().any(|r| r == super::OWNER))
    }))
}

/// Deletes the team and, by cascade, its memberships.
pub async fn delete_team<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM teams WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

pub async fn insert_membership<'e>(
    db: impl Executor<'e, Database = Any>,
    membership: &Membership,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO memberships ({MEMBERSHIP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&membership.project_id)
    .bind(&membership.id)
    .bind(&membership.team_id)
    .bind(&membership.user_id)
    .bind(&membership.email)
    .bind(&membership.invite_name)
    .bind(serde_json::to_string(&membership.roles).unwrap_or_else(|_| "[]".into()))
    .bind(i16::from(membership.confirmed))
    .bind(membership.joined_at)
    .bind(membership.invited_at)
    .bind(membership.created_at)
    .bind(membership.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_membership(
    pool: &AnyPool,
    project_id: &str,
    team_id: &str,
    id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND team_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(team_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The membership of `user_id` in `team_id`, confirmed or not.
pub async fn membership_of(
    pool: &AnyPool,
    project_id: &str,
    team_id: &str,
    user_id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND team_id = ? AND user_id = ?"
    ))
    .bind(project_id)
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// The invitation of `email` (an address with no user yet) to `team_id`.
pub async fn membership_invited(
    pool: &AnyPool,
    project_id: &str,
    team_id: &str,
    email: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND team_id = ? AND email = ?"
    ))
    .bind(project_id)
    .bind(team_id)
    .bind(email)
    .fetch_optional(pool)
    .await
}

pub async fn list_memberships<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    team_id: &str,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND team_id = ? ORDER BY created_at, id"
    ))
    .bind(project_id)
    .bind(team_id)
    .fetch_all(pool)
    .await
}

/// A page of a team's memberships, oldest first: at most `limit`, after the
/// membership created at `after`'s time with `after`'s id when given. One range of
/// the `(project_id, team_id, created_at, id)` index, however large the team.
pub async fn page_memberships(
    pool: &AnyPool,
    project_id: &str,
    team_id: &str,
    after: Option<(i64, &str)>,
    limit: usize,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let from = if after.is_some() {
        " AND (created_at > ? OR (created_at = ? AND id > ?))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND team_id = ?{from} \
         ORDER BY created_at, id LIMIT {limit}"
    );
    let mut query = sqlx::query_as(&sql).bind(project_id).bind(team_id);
    if let Some((created_at, id)) = after {
        query = query.bind(created_at).bind(created_at).bind(id);
    }
    query.fetch_all(pool).await
}

/// How many teams a user is a confirmed member of, counted up to `up_to`.
pub async fn count_confirmed_of_user<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
    up_to: usize,
) -> Result<usize, sqlx::Error> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT 1 FROM memberships \
         WHERE project_id = ? AND user_id = ? AND confirmed = 1 LIMIT ?) AS teams",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(up_to as i64)
    .fetch_one(db)
    .await?;
    Ok(count.max(0) as usize)
}

/// A user's memberships: all of them, or only the confirmed ones (what their roles are
/// made of).
pub async fn memberships_of_user<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
    confirmed_only: bool,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let filter = if confirmed_only {
        " AND confirmed = 1"
    } else {
        ""
    };
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND user_id = ?{filter} \
         ORDER BY created_at, id"
    ))
    .bind(project_id)
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Every membership of a user, held on MariaDB until the transaction ends (no
/// membership of theirs is added meanwhile): read before the user is deleted,
/// and their memberships with them.
pub async fn memberships_of_user_held(
    conn: &mut sqlx::AnyConnection,
    dialect: crate::db::Dialect,
    project_id: &str,
    user_id: &str,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let hold = match dialect {
        crate::db::Dialect::MySql => " FOR UPDATE",
        crate::db::Dialect::Sqlite => "",
    };
    sqlx::query_as(&format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE project_id = ? AND user_id = ?{hold}"
    ))
    .bind(project_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}

pub async fn update_membership_roles<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    membership: &Membership,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE memberships SET roles = ?, updated_at = ? WHERE project_id = ? AND id = ?")
        .bind(serde_json::to_string(&membership.roles).unwrap_or_else(|_| "[]".into()))
        .bind(membership.updated_at)
        .bind(&membership.project_id)
        .bind(&membership.id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Confirms a pending membership as `user_id`'s (an invitation by email gets its
/// user now) and forgets its invitation secret. With `secret_hash`, only while that
/// is still its secret, so a re-sent invitation's old link fails. False when it was
/// confirmed already (by a concurrent request, say) or its secret changed.
pub async fn confirm_membership<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    id: &str,
    user_id: &str,
    secret_hash: Option<&str>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let secret_filter = if secret_hash.is_some() {
        " AND invite_secret_hash = ?"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE memberships SET confirmed = 1, user_id = ?, email = NULL, invite_name = NULL, \
         invite_secret_hash = NULL, joined_at = ?, updated_at = ? \
         WHERE project_id = ? AND id = ? AND confirmed = 0{secret_filter}"
    );
    let mut query = sqlx::query(&sql)
        .bind(user_id)
        .bind(at)
        .bind(at)
        .bind(project_id)
        .bind(id);
    if let Some(secret_hash) = secret_hash {
        query = query.bind(secret_hash);
    }
    query.execute(db).await.map(|r| r.rows_affected() == 1)
}

pub async fn set_invite_secret<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    id: &str,
    secret_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET invite_secret_hash = ? WHERE project_id = ? AND id = ?")
        .bind(secret_hash)
        .bind(project_id)
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Renews a pending membership: its roles, confirmation, invitee (an invitation by
/// email gets its user once the address has one) and invitation secret (`None`
/// clears it, so an earlier link stops working); false when it is no longer pending.
pub async fn renew_invitation<'e>(
    db: impl Executor<'e, Database = Any>,
    membership: &Membership,
    secret_hash: Option<&str>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET user_id = ?, email = ?, invite_name = ?, roles = ?, confirmed = ?, \
         joined_at = ?, invite_secret_hash = ?, invited_at = ?, updated_at = ? \
         WHERE project_id = ? AND id = ? AND confirmed = 0",
    )
    .bind(&membership.user_id)
    .bind(&membership.email)
    .bind(&membership.invite_name)
    .bind(serde_json::to_string(&membership.roles).unwrap_or_else(|_| "[]".into()))
    .bind(i16::from(membership.confirmed))
    .bind(membership.joined_at)
    .bind(secret_hash)
    .bind(membership.invited_at)
    .bind(membership.updated_at)
    .bind(&membership.project_id)
    .bind(&membership.id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// The digest of a pending membership's invitation secret, if it was sent one.
pub async fn invite_secret(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT invite_secret_hash FROM memberships WHERE project_id = ? AND id = ? AND confirmed = 0",
    )
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

pub async fn delete_membership<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM memberships WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}
