// The current project's sign-in settings: which methods are on, the password
// and session policy, the allowed origins (redirect hosts), and its OAuth2
// providers, each through the ordinary project mutations.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { Check, ErrorBox, Field, Loading, useAction, useAsync } from "./ui.js";

const AUTH_FIELDS =
  "redirectHosts passwordMinLength passwordHistory passwordDictionary personalDataCheck maxSessions sessionLength emailPassword anonymous magicUrl emailOtp presenceGuests avatarsPublic invalidateSessions";

const METHODS = [
  ["emailPassword", "Email and password"],
  ["anonymous", "Anonymous sessions"],
  ["magicUrl", "Magic URL"],
  ["emailOtp", "Email one-time code"],
];

const POLICY = [
  ["passwordDictionary", "Refuse common passwords"],
  ["personalDataCheck", "Refuse passwords containing the user's name or email"],
  ["presenceGuests", "Guests may announce presence"],
  ["avatarsPublic", "Avatars without a credential"],
  ["invalidateSessions", "A new password ends the user's other sessions"],
];

function AuthForm({ projectId, auth, onSaved }) {
  const [draft, setDraft] = useState({ ...auth, redirectHosts: auth.redirectHosts.join("\n") });
  const set = (key) => (value) => setDraft({ ...draft, [key]: value });
  const save = useAction(() => {
    const input = { projectId };
    for (const key of AUTH_FIELDS.split(" ")) input[key] = draft[key];
    input.redirectHosts = draft.redirectHosts.split(/\s+/).filter(Boolean);
    for (const key of ["passwordMinLength", "passwordHistory", "maxSessions", "sessionLength"]) {
      input[key] = Number.parseInt(draft[key], 10);
    }
    return api.gql(`mutation ConsoleUpdateAuth($input: UpdateProjectAuthInput!) { updateProjectAuth(input: $input) { id } }`, {
      input,
    });
  });
  const submit = async (e) => {
    e.preventDefault();
    if (await save.run()) onSaved();
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="auth-title">
    <h2 id="auth-title">Sign-in methods and policy</h2>
    <fieldset>
      <legend>Methods</legend>
      ${METHODS.map(([key, label]) => html`<${Check} label=${label} checked=${draft[key]} onChange=${set(key)} />`)}
    </fieldset>
    <fieldset>
      <legend>Policy</legend>
      <div class="row">
        <${Field} label="Minimum password length" type="number" min="1" value=${draft.passwordMinLength} onInput=${set("passwordMinLength")} />
        <${Field} label="Password history" type="number" min="0" value=${draft.passwordHistory} onInput=${set("passwordHistory")} />
        <${Field} label="Sessions per user" type="number" min="1" max="100" value=${draft.maxSessions} onInput=${set("maxSessions")} />
        <${Field} label="Session length (seconds)" type="number" min="60" value=${draft.sessionLength} onInput=${set("sessionLength")} />
      </div>
      ${POLICY.map(([key, label]) => html`<${Check} label=${label} checked=${draft[key]} onChange=${set(key)} />`)}
    </fieldset>
    <label for="redirect-hosts">Allowed origins (redirect hosts, one a line)</label>
    <textarea id="redirect-hosts" rows="3" value=${draft.redirectHosts} onInput=${(e) => set("redirectHosts")(e.target.value)}></textarea>
    <button disabled=${save.pending}>Save settings</button>
    <${ErrorBox} error=${save.error} />
  </form>`;
}

function Provider({ projectId, provider, onChanged }) {
  const toggle = useAction(() =>
    api.gql(
      `mutation ConsoleToggleProvider($input: UpdateProjectOAuth2ProviderInput!) { updateProjectOAuth2Provider(input: $input) { provider } }`,
      { input: { projectId, provider: provider.provider, enabled: !provider.enabled } },
    ),
  );
  const remove = useAction(() =>
    api.gql(
      `mutation ConsoleDeleteProvider($input: DeleteProjectOAuth2ProviderInput!) { deleteProjectOAuth2Provider(input: $input) { __typename } }`,
      { input: { projectId, provider: provider.provider } },
    ),
  );
  return html`<li class="card">
    <strong>${provider.provider}</strong> ${provider.enabled ? "on" : html`<span class="badge warn">off</span>`}
    <div class="muted">client ${provider.clientId} · callback <code>${provider.callbackPath}</code></div>
    <div class="row">
      <button class="secondary" onClick=${async () => (await toggle.run()) && onChanged()}>${provider.enabled ? "Turn off" : "Turn on"}</button>
      <button
        class="secondary"
        onClick=${async () => confirm(`Remove ${provider.provider}?`) && (await remove.run()) && onChanged()}
      >Remove</button>
    </div>
    <${ErrorBox} error=${toggle.error || remove.error} />
  </li>`;
}

function NewProvider({ projectId, onCreated }) {
  const [provider, setProvider] = useState("");
  const [clientId, setClientId] = useState("");
  const [clientSecret, setClientSecret] = useState("");
  const [issuer, setIssuer] = useState("");
  const create = useAction(() =>
    api.gql(
      `mutation ConsoleAddProvider($input: UpdateProjectOAuth2ProviderInput!) { updateProjectOAuth2Provider(input: $input) { provider } }`,
      { input: { projectId, provider, clientId, clientSecret, enabled: true, ...(issuer ? { issuer } : {}) } },
    ),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setProvider("");
      setClientSecret("");
      onCreated();
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-provider">
    <h3 id="new-provider">Add or change a provider</h3>
    <div class="row">
      <${Field} label="Provider" value=${provider} onInput=${setProvider} hint="github, google, … or a name of your own with an issuer" required />
      <${Field} label="Client id" value=${clientId} onInput=${setClientId} required />
      <${Field} label="Client secret" type="password" value=${clientSecret} onInput=${setClientSecret} autocomplete="off" />
      <${Field} label="Issuer (OpenID Connect, optional)" value=${issuer} onInput=${setIssuer} />
    </div>
    <button disabled=${create.pending}>Save provider</button>
    <${ErrorBox} error=${create.error} />
  </form>`;
}

export function Settings({ project }) {
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleSettings($id: ID!) {
          project(id: $id) { id name auth { ${AUTH_FIELDS} } }
          oauth2Providers(projectId: $id) { provider enabled clientId callbackPath }
        }`,
        { id: project },
      ),
    [project],
  );
  return html`<section aria-labelledby="settings-title">
    <h1 id="settings-title">Settings of ${project}</h1>
    <${ErrorBox} error=${data.error} />
    ${data.loading && !data.data && html`<${Loading} what="settings" />`}
    ${data.data &&
    html`<${AuthForm} key=${JSON.stringify(data.data.project.auth)} projectId=${project} auth=${data.data.project.auth} onSaved=${data.reload} />
      <h2>OAuth2 providers</h2>
      <ul class="plain cards">
        ${data.data.oauth2Providers.map((p) => html`<${Provider} key=${p.provider} projectId=${project} provider=${p} onChanged=${data.reload} />`)}
        ${!data.data.oauth2Providers.length && html`<li class="muted">None yet.</li>`}
      </ul>
      <${NewProvider} projectId=${project} onCreated=${data.reload} />`}
  </section>`;
}
