// Users of the current project: search, create, and for one user: block,
// verification flags, labels, prefs, MFA reset, sessions (revoked all at once),
// activity.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { Check, ErrorBox, Field, Loading, TypedConfirm, formatDate, href, useAction, useAsync } from "./ui.js";

const USER_FIELDS = "id name email phone emailVerified phoneVerified blocked anonymous mfa labels prefs accessedAt createdAt";

function CreateUser({ onCreated }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const create = useAction(() =>
    api.gql(`mutation ConsoleCreateUser($input: CreateUserInput!) { createUser(input: $input) { id } }`, {
      input: { email: email || undefined, name: name || undefined, password: password || undefined },
    }),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setEmail("");
      setName("");
      setPassword("");
      onCreated();
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-user">
    <h2 id="new-user">New user</h2>
    <div class="row">
      <${Field} label="Email" type="email" value=${email} onInput=${setEmail} />
      <${Field} label="Name" value=${name} onInput=${setName} />
      <${Field} label="Password" type="password" value=${password} onInput=${setPassword} autocomplete="new-password" />
      <button disabled=${create.pending}>Create user</button>
    </div>
    <${ErrorBox} error=${create.error} />
  </form>`;
}

export function Users() {
  const [search, setSearch] = useState("");
  const [query, setQuery] = useState("");
  const [after, setAfter] = useState([]);
  const cursor = after[after.length - 1] || null;
  const list = useAsync(
    () =>
      api.gql(
        `query ConsoleUsers($search: String, $after: String) {
          users(first: 25, after: $after, search: $search) {
            totalCount pageInfo { hasNextPage endCursor } nodes { id name email blocked labels createdAt }
          }
        }`,
        { search: query || null, after: cursor },
      ),
    [query, cursor],
  );
  const submit = (e) => {
    e.preventDefault();
    setAfter([]);
    setQuery(search);
  };
  const users = list.data && list.data.users;
  return html`<section aria-labelledby="users-title">
    <h1 id="users-title">Users</h1>
    <${CreateUser} onCreated=${list.reload} />
    <form class="row" role="search" onSubmit=${submit}>
      <${Field} label="Search users" type="search" value=${search} onInput=${setSearch} />
      <button>Search</button>
    </form>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !users && html`<${Loading} what="users" />`}
    ${users &&
    html`<p class="muted">${users.totalCount} users</p>
      <div class="table-wrap">
        <table>
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Labels</th><th scope="col">Status</th><th scope="col">Created</th></tr>
          </thead>
          <tbody>
            ${users.nodes.map(
              (u) => html`<tr>
                <td><a href=${href("users", u.id)}>${u.name || u.id}</a></td>
                <td>${u.email || "—"}</td>
                <td>${u.labels.map((l) => html`<span class="badge">${l}</span> `)}</td>
                <td>${u.blocked ? html`<span class="badge warn">blocked</span>` : "active"}</td>
                <td>${formatDate(u.createdAt)}</td>
              </tr>`,
            )}
          </tbody>
        </table>
      </div>
      <div class="row">
        <button class="secondary" disabled=${!after.length} onClick=${() => setAfter(after.slice(0, -1))}>Previous</button>
        <button
          class="secondary"
          disabled=${!users.pageInfo.hasNextPage}
          onClick=${() => setAfter([...after, users.pageInfo.endCursor])}
        >Next</button>
      </div>`}
  </section>`;
}

function UserSettings({ user, onSaved }) {
  const [labels, setLabels] = useState(user.labels.join(", "));
  const [prefs, setPrefs] = useState(JSON.stringify(user.prefs, null, 2));
  const [blocked, setBlocked] = useState(user.blocked);
  const [emailVerified, setEmailVerified] = useState(user.emailVerified);
  const [phoneVerified, setPhoneVerified] = useState(user.phoneVerified);
  const [mfa, setMfa] = useState(user.mfa);
  const save = useAction(() => {
    let parsed;
    try {
      parsed = JSON.parse(prefs || "{}");
    } catch (err) {
      throw Object.assign(new Error(`prefs are not JSON: ${err.message}`), { code: "INVALID_JSON" });
    }
    return api.gql(`mutation ConsoleUpdateUser($input: UpdateUserInput!) { updateUser(input: $input) { id } }`, {
      input: {
        id: user.id,
        blocked,
        emailVerified,
        phoneVerified,
        mfa,
        labels: labels.split(",").map((l) => l.trim()).filter(Boolean),
        prefs: parsed,
      },
    });
  });
  const submit = async (e) => {
    e.preventDefault();
    if (await save.run()) onSaved();
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="user-settings">
    <h2 id="user-settings">Settings</h2>
    <div class="row">
      <${Check} label="Blocked" checked=${blocked} onChange=${setBlocked} />
      <${Check} label="Email verified" checked=${emailVerified} onChange=${setEmailVerified} />
      <${Check} label="Phone verified" checked=${phoneVerified} onChange=${setPhoneVerified} />
      <${Check} label="MFA required" checked=${mfa} onChange=${setMfa} />
    </div>
    <${Field} label="Labels (comma-separated)" value=${labels} onInput=${setLabels} />
    <label for="user-prefs">Prefs (JSON)</label>
    <textarea id="user-prefs" rows="4" value=${prefs} onInput=${(e) => setPrefs(e.target.value)}></textarea>
    <button disabled=${save.pending}>Save user</button>
    <${ErrorBox} error=${save.error} />
  </form>`;
}

export function UserPage({ userId }) {
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleUser($id: ID!) {
          user(id: $id) { ${USER_FIELDS} }
          userSessions(userId: $id) { id provider ip userAgent createdAt expiresAt }
          userLogs(userId: $id, last: 20) { nodes { event ip createdAt } }
        }`,
        { id: userId },
      ),
    [userId],
  );
  const revoke = useAction(() =>
    api.gql(`mutation ConsoleRevokeSessions($input: DeleteUserSessionsInput!) { deleteUserSessions(input: $input) { __typename } }`, {
      input: { userId },
    }),
  );
  const resetMfa = useAction(() =>
    api.gql(`mutation ConsoleResetMfa($input: DeleteUserMfaAuthenticatorInput!) { deleteUserMfaAuthenticator(input: $input) { id mfa } }`, {
      input: { userId },
    }),
  );
  const user = data.data && data.data.user;
  return html`<section aria-labelledby="user-title">
    <p><a href=${href("users")}>Users</a> /</p>
    <h1 id="user-title">${user ? user.name || user.email || user.id : userId}</h1>
    <${ErrorBox} error=${data.error} />
    ${data.loading && !data.data && html`<${Loading} what="the user" />`}
    ${data.data && !user && html`<${ErrorBox} error=${{ message: "No such user.", code: "USER_NOT_FOUND" }} />`}
    ${user &&
    html`<p class="muted"><code>${user.id}</code> · ${user.email || "no email"} · created ${formatDate(user.createdAt)}</p>
      <p><a class="button" href=${href("users", user.id, "view")}>View as this user</a></p>
      <${UserSettings} key=${JSON.stringify(user)} user=${user} onSaved=${data.reload} />
      <div class="card" aria-labelledby="user-mfa">
        <h2 id="user-mfa">Second factor</h2>
        <p data-testid="user-mfa-state">
          ${user.mfa ? "MFA is on: signing in needs the authenticator app or a recovery code." : "MFA is off."}
        </p>
        <p class="muted">For a user who lost their device: removes their authenticator app and recovery codes and turns MFA off. They set it up again from their account.</p>
        <button
          class="secondary"
          disabled=${resetMfa.pending}
          onClick=${async () => confirm(`Reset MFA of ${user.email || user.id}?`) && (await resetMfa.run()) && data.reload()}
        >Reset MFA</button>
        <${ErrorBox} error=${resetMfa.error} />
      </div>
      <div class="card">
        <h2>Sessions</h2>
        <ul class="plain">
          ${data.data.userSessions.map(
            (s) => html`<li>${s.provider} from ${s.ip} · ${s.userAgent} · until ${formatDate(s.expiresAt)}</li>`,
          )}
          ${!data.data.userSessions.length && html`<li class="muted">No sessions.</li>`}
        </ul>
        <button
          class="secondary"
          disabled=${revoke.pending || !data.data.userSessions.length}
          onClick=${async () => (await revoke.run()) && data.reload()}
        >Revoke all sessions</button>
        <${ErrorBox} error=${revoke.error} />
      </div>
      <div class="card">
        <h2>Activity</h2>
        <ul class="plain">
          ${data.data.userLogs.nodes.map((l) => html`<li>${formatDate(l.createdAt)} · ${l.event} · ${l.ip}</li>`)}
          ${!data.data.userLogs.nodes.length && html`<li class="muted">Nothing yet.</li>`}
        </ul>
      </div>
      <details class="card">
        <summary>Delete this user</summary>
        <${TypedConfirm}
          word=${user.id}
          label="Delete user"
          action=${() => api.gql(`mutation ConsoleDeleteUser($input: DeleteUserInput!) { deleteUser(input: $input) { __typename } }`, { input: { id: user.id } })}
          onDone=${() => (location.hash = href("users"))}
        />
      </details>`}
  </section>`;
}
