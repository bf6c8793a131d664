// API keys of the current project: created with a scope picker (the scopes come
// from the API itself), the secret shown once with a copy button; listed; deleted.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { Check, CopyButton, ErrorBox, Field, Loading, formatDate, useAction, useAsync } from "./ui.js";

const LIST = `query ConsoleKeys {
  apiKeyScopes { name description }
  apiKeys(first: 100) { nodes { id name scopes expiresAt expired createdAt } }
}`;

function CreateKey({ scopes, onCreated }) {
  const [name, setName] = useState("");
  const [chosen, setChosen] = useState([]);
  const [expiresAt, setExpiresAt] = useState("");
  const [secret, setSecret] = useState(null);
  const act = useAction(() =>
    api.gql(
      `mutation ConsoleCreateKey($input: CreateApiKeyInput!) {
        createApiKey(input: $input) { secret apiKey { id } }
      }`,
      {
        input: {
          name,
          scopes: chosen,
          ...(expiresAt ? { expiresAt: new Date(expiresAt).toISOString() } : {}),
        },
      },
    ),
  );
  const submit = async (e) => {
    e.preventDefault();
    const data = await act.run();
    if (data) {
      setSecret(data.createApiKey.secret);
      setName("");
      setChosen([]);
      onCreated();
    }
  };
  const toggle = (scope, on) => setChosen(on ? [...chosen, scope] : chosen.filter((s) => s !== scope));
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-key">
    <h2 id="new-key">New API key</h2>
    <div class="row">
      <${Field} label="Name" value=${name} onInput=${setName} required />
      <${Field} label="Expires (optional)" type="datetime-local" value=${expiresAt} onInput=${setExpiresAt} />
    </div>
    <fieldset class="scopes">
      <legend>Scopes</legend>
      ${scopes.map(
        (s) => html`<div class="scope">
          <${Check} label=${s.name} checked=${chosen.includes(s.name)} onChange=${(on) => toggle(s.name, on)} />
          <small class="muted">${s.description}</small>
        </div>`,
      )}
    </fieldset>
    <button disabled=${act.pending || !chosen.length}>Create key</button>
    <${ErrorBox} error=${act.error} />
    ${secret &&
    html`<div class="secret" role="status">
      <p>The key's secret, shown only now:</p>
      <code class="block" data-testid="key-secret">${secret}</code>
      <div class="row">
        <${CopyButton} text=${secret} label="Copy secret" />
        <button type="button" class="secondary" onClick=${() => setSecret(null)}>Done</button>
      </div>
    </div>`}
  </form>`;
}

function KeyRow({ apiKey, onDeleted }) {
  const del = useAction(() =>
    api.gql(`mutation ConsoleDeleteKey($input: DeleteApiKeyInput!) { deleteApiKey(input: $input) { __typename } }`, {
      input: { id: apiKey.id },
    }),
  );
  const remove = async () => {
    if (confirm(`Delete the key ${apiKey.name}? Clients using it stop working.`) && (await del.run())) onDeleted();
  };
  return html`<tr>
    <td>${apiKey.name}<div class="muted"><code>${apiKey.id}</code></div></td>
    <td>${apiKey.scopes.map((s) => html`<span class="badge">${s}</span> `)}</td>
    <td>${apiKey.expired ? html`<span class="badge warn">expired</span>` : formatDate(apiKey.expiresAt)}</td>
    <td>${formatDate(apiKey.createdAt)}</td>
    <td>
      <button class="secondary" onClick=${remove} disabled=${del.pending} aria-label=${`Delete key ${apiKey.name}`}>
        Delete
      </button>
      <${ErrorBox} error=${del.error} />
    </td>
  </tr>`;
}

export function Keys({ project }) {
  const list = useAsync(() => api.gql(LIST), [project]);
  return html`<section aria-labelledby="keys-title">
    <h1 id="keys-title">API keys of ${project}</h1>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="keys" />`}
    ${list.data &&
    html`<${CreateKey} scopes=${list.data.apiKeyScopes} onCreated=${list.reload} />
      <div class="table-wrap">
        <table>
          <caption>Keys</caption>
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Scopes</th><th scope="col">Expires</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            ${list.data.apiKeys.nodes.map((k) => html`<${KeyRow} key=${k.id} apiKey=${k} onDeleted=${list.reload} />`)}
          </tbody>
        </table>
      </div>`}
  </section>`;
}
