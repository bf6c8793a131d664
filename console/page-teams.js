// Teams of the current project, and one team's memberships: invitations by
// email (or a user id, which joins at once with an API key) with their roles.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, Loading, NameAndIdForm, TypedConfirm, formatDate, href, useAction, useAsync } from "./ui.js";

function splitRoles(text) {
  return text
    .split(",")
    .map((r) => r.trim())
    .filter(Boolean);
}

// Memberships shown on one page of a team; the API gives at most 100 at a time.
const MEMBERS_PER_PAGE = 50;

// Previous/Next over a list read a page at a time: `after` is the stack of cursors
// that led to the page in view.
function Pager({ after, setAfter, next }) {
  return html`<div class="row">
    <button class="secondary" disabled=${!after.length} onClick=${() => setAfter(after.slice(0, -1))}>Previous</button>
    <button class="secondary" disabled=${!next} onClick=${() => setAfter([...after, next])}>Next</button>
  </div>`;
}

export function Teams() {
  const [after, setAfter] = useState([]);
  const cursor = after[after.length - 1] || null;
  const list = useAsync(
    () =>
      api.gql(
        `query ConsoleTeams($after: String) {
          teams(first: 50, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { id name createdAt } }
        }`,
        { after: cursor },
      ),
    [cursor],
  );
  return html`<section aria-labelledby="teams-title">
    <h1 id="teams-title">Teams</h1>
    <${NameAndIdForm}
      noun="team"
      create=${(input) => api.gql(`mutation ConsoleCreateTeam($input: CreateTeamInput!) { createTeam(input: $input) { id } }`, { input })}
      onCreated=${list.reload}
    />
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="teams" />`}
    ${list.data &&
    html`<ul class="plain cards">
      ${list.data.teams.nodes.map(
        (t) => html`<li class="card">
          <a href=${href("teams", t.id)}><strong>${t.name}</strong></a> <code>${t.id}</code>
          <div class="muted">created ${formatDate(t.createdAt)}</div>
        </li>`,
      )}
      ${!list.data.teams.nodes.length && html`<li class="muted">No teams yet.</li>`}
    </ul>
    <${Pager} after=${after} setAfter=${setAfter} next=${list.data.teams.pageInfo.hasNextPage && list.data.teams.pageInfo.endCursor} />`}
  </section>`;
}

export function TeamPage({ teamId }) {
  const [after, setAfter] = useState([]);
  const cursor = after[after.length - 1] || null;
  // One more than a page tells whether another page follows.
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleTeam($id: ID!, $first: Int!, $after: ID) {
          team(id: $id) { id name }
          memberships(teamId: $id, first: $first, after: $after) { id userId email roles confirmed joinedAt }
        }`,
        { id: teamId, first: MEMBERS_PER_PAGE + 1, after: cursor },
      ),
    [teamId, cursor],
  );
  const members = data.data ? data.data.memberships.slice(0, MEMBERS_PER_PAGE) : [];
  const next = data.data && data.data.memberships.length > MEMBERS_PER_PAGE ? members[members.length - 1].id : null;
  const [who, setWho] = useState("");
  const [roles, setRoles] = useState("member");
  const invite = useAction(() =>
    api.gql(`mutation ConsoleInvite($input: CreateMembershipInput!) { createMembership(input: $input) { id } }`, {
      input: { teamId, roles: splitRoles(roles), ...(who.includes("@") ? { email: who } : { userId: who }) },
    }),
  );
  const [error, setError] = useState(null);
  const remove = async (m) => {
    if (!confirm(`Remove ${m.email || m.userId} from the team?`)) return;
    try {
      await api.gql(`mutation ConsoleRemoveMember($input: DeleteMembershipInput!) { deleteMembership(input: $input) { __typename } }`, {
        input: { teamId, membershipId: m.id },
      });
      data.reload();
    } catch (err) {
      setError(err);
    }
  };
  const submit = async (e) => {
    e.preventDefault();
    if (await invite.run()) {
      setWho("");
      data.reload();
    }
  };
  return html`<section aria-labelledby="team-title">
    <p><a href=${href("teams")}>Teams</a> /</p>
    <h1 id="team-title">Team ${data.data ? data.data.team.name : teamId}</h1>
    <${ErrorBox} error=${data.error || error} />
    ${data.loading && !data.data && html`<${Loading} what="the team" />`}
    ${data.data &&
    html`<div class="table-wrap">
        <table>
          <caption>Memberships</caption>
          <thead>
            <tr><th scope="col">Member</th><th scope="col">Roles</th><th scope="col">Status</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            ${members.map(
              (m) => html`<tr>
                <td>${m.userId ? html`<a href=${href("users", m.userId)}>${m.email || m.userId}</a>` : m.email}</td>
                <td>${m.roles.map((r) => html`<span class="badge">${r}</span> `)}</td>
                <td>${m.confirmed ? `joined ${formatDate(m.joinedAt)}` : "invited"}</td>
                <td><button class="link" onClick=${() => remove(m)}>Remove</button></td>
              </tr>`,
            )}
          </tbody>
        </table>
      </div>
      <${Pager} after=${after} setAfter=${setAfter} next=${next} />
      <form class="card" onSubmit=${submit} aria-labelledby="invite-title">
        <h2 id="invite-title">Invite</h2>
        <div class="row">
          <${Field} label="Email or user id" value=${who} onInput=${setWho} required />
          <${Field} label="Roles (comma-separated)" value=${roles} onInput=${setRoles} />
          <button disabled=${invite.pending}>Invite</button>
        </div>
        <${ErrorBox} error=${invite.error} />
      </form>
      <details class="card">
        <summary>Delete this team</summary>
        <${TypedConfirm}
          word=${teamId}
          label="Delete team"
          action=${() => api.gql(`mutation ConsoleDeleteTeam($input: DeleteTeamInput!) { deleteTeam(input: $input) { __typename } }`, { input: { id: teamId } })}
          onDone=${() => (location.hash = href("teams"))}
        />
      </details>`}
  </section>`;
}
