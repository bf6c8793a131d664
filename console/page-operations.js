// What runs in the background of the current project: webhooks and their
// deliveries, functions and their executions (with logs), and the job queue,
// where a dead job can be retried or deleted.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { CopyButton, ErrorBox, Field, Loading, Select, formatDate, href, useAction, useAsync } from "./ui.js";

function Deliveries({ webhookId }) {
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleDeliveries($id: ID!) {
          webhookDeliveries(webhookId: $id, last: 20) { nodes { id attempt statusCode durationMs success error createdAt } }
        }`,
        { id: webhookId },
      ),
    [webhookId],
  );
  if (data.error) return html`<${ErrorBox} error=${data.error} />`;
  if (!data.data) return html`<${Loading} what="deliveries" />`;
  const nodes = [...data.data.webhookDeliveries.nodes].reverse();
  return html`<ul class="plain">
    ${nodes.map(
      (d) => html`<li>
        ${d.success ? "✓" : "✗"} ${formatDate(d.createdAt)} · attempt ${d.attempt} · ${d.statusCode ?? "no answer"} ·
        ${d.durationMs} ms ${d.error && html`· <span class="muted">${d.error}</span>`}
      </li>`,
    )}
    ${!nodes.length && html`<li class="muted">No deliveries yet.</li>`}
  </ul>`;
}

export function Webhooks() {
  const list = useAsync(() => api.gql("query ConsoleWebhooks { webhooks(first: 100) { nodes { id name url events enabled failures } } }"), []);
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState("databases.*.collections.*.documents.*.create");
  const [secret, setSecret] = useState(null);
  const [open, setOpen] = useState(null);
  const create = useAction(() =>
    api.gql(`mutation ConsoleCreateWebhook($input: CreateWebhookInput!) { createWebhook(input: $input) { secret webhook { id } } }`, {
      input: { name, url, events: events.split(",").map((e) => e.trim()).filter(Boolean) },
    }),
  );
  const remove = useAction((id) =>
    api.gql(`mutation ConsoleDeleteWebhook($input: DeleteWebhookInput!) { deleteWebhook(input: $input) { __typename } }`, { input: { id } }),
  );
  const submit = async (e) => {
    e.preventDefault();
    const data = await create.run();
    if (data) {
      setSecret(data.createWebhook.secret);
      setName("");
      list.reload();
    }
  };
  return html`<section aria-labelledby="webhooks-title">
    <h1 id="webhooks-title">Webhooks</h1>
    <${ErrorBox} error=${list.error || remove.error} />
    ${list.loading && !list.data && html`<${Loading} what="webhooks" />`}
    ${list.data &&
    html`<ul class="plain">
      ${list.data.webhooks.nodes.map(
        (w) => html`<li class="card">
          <div class="row spread">
            <div>
              <strong>${w.name}</strong> ${!w.enabled && html`<span class="badge warn">off</span>`}
              <div class="muted">${w.url} · ${w.events.join(", ")} · ${w.failures} failures in a row</div>
            </div>
            <div class="row">
              <button class="secondary" aria-expanded=${open === w.id} onClick=${() => setOpen(open === w.id ? null : w.id)}>Deliveries</button>
              <button class="secondary" onClick=${async () => confirm(`Delete ${w.name}?`) && (await remove.run(w.id)) && list.reload()}>
                Delete
              </button>
            </div>
          </div>
          ${open === w.id && html`<${Deliveries} webhookId=${w.id} />`}
        </li>`,
      )}
      ${!list.data.webhooks.nodes.length && html`<li class="muted">No webhooks yet.</li>`}
    </ul>`}
    <form class="card" onSubmit=${submit} aria-labelledby="new-webhook">
      <h2 id="new-webhook">New webhook</h2>
      <div class="row">
        <${Field} label="Name" value=${name} onInput=${setName} required />
        <${Field} label="URL" type="url" value=${url} onInput=${setUrl} required />
        <${Field} label="Events (comma-separated)" value=${events} onInput=${setEvents} required />
      </div>
      <button disabled=${create.pending}>Create webhook</button>
      <${ErrorBox} error=${create.error} />
      ${secret &&
      html`<div class="secret" role="status">
        <p>The signing secret, shown only now:</p>
        <code class="block">${secret}</code>
        <div class="row">
          <${CopyButton} text=${secret} label="Copy secret" />
          <button type="button" class="secondary" onClick=${() => setSecret(null)}>Done</button>
        </div>
      </div>`}
    </form>
  </section>`;
}

function Executions({ functionId }) {
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleExecutions($id: ID!) {
          executions(functionId: $id, last: 20) {
            nodes { id trigger status responseStatusCode duration logs errors failure createdAt }
          }
        }`,
        { id: functionId },
      ),
    [functionId],
  );
  const run = useAction(() =>
    api.gql(`mutation ConsoleExecute($input: CreateExecutionInput!) { createExecution(input: $input) { id } }`, {
      input: { functionId },
    }),
  );
  const nodes = data.data ? [...data.data.executions.nodes].reverse() : [];
  return html`<div>
    <button class="secondary" disabled=${run.pending} onClick=${async () => (await run.run()) && data.reload()}>Execute now</button>
    <${ErrorBox} error=${data.error || run.error} />
    ${data.loading && !data.data && html`<${Loading} what="executions" />`}
    <ul class="plain">
      ${nodes.map(
        (x) => html`<li>
          <details>
            <summary>
              ${formatDate(x.createdAt)} · ${x.trigger} · ${x.status} · ${x.responseStatusCode} · ${x.duration.toFixed(3)} s
            </summary>
            ${x.failure && html`<p class="muted">${x.failure}</p>`}
            <pre class="block">${x.logs || "(no logs)"}${x.errors ? `\n${x.errors}` : ""}</pre>
          </details>
        </li>`,
      )}
      ${data.data && !nodes.length && html`<li class="muted">No executions yet.</li>`}
    </ul>
  </div>`;
}

export function Functions() {
  const list = useAsync(
    () => api.gql("query ConsoleFunctions { functions(first: 100) { nodes { id name runtime enabled schedule events deploymentId } } }"),
    [],
  );
  const [open, setOpen] = useState(null);
  return html`<section aria-labelledby="functions-title">
    <h1 id="functions-title">Functions</h1>
    <p class="muted">Functions are created and deployed through the API (createFunction, createDeployment); here you watch them run.</p>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="functions" />`}
    ${list.data &&
    html`<ul class="plain">
      ${list.data.functions.nodes.map(
        (f) => html`<li class="card">
          <div class="row spread">
            <div>
              <strong>${f.name}</strong> <code>${f.id}</code> ${!f.enabled && html`<span class="badge warn">off</span>`}
              <div class="muted">
                ${f.runtime} · ${f.deploymentId ? `deployment ${f.deploymentId}` : "not deployed"}
                ${f.schedule && ` · schedule ${f.schedule}`} ${f.events.length ? ` · on ${f.events.join(", ")}` : ""}
              </div>
            </div>
            <button class="secondary" aria-expanded=${open === f.id} onClick=${() => setOpen(open === f.id ? null : f.id)}>Executions</button>
          </div>
          ${open === f.id && html`<${Executions} functionId=${f.id} />`}
        </li>`,
      )}
      ${!list.data.functions.nodes.length && html`<li class="muted">No functions yet.</li>`}
    </ul>`}
  </section>`;
}

export function Jobs() {
  const [status, setStatus] = useState("DEAD");
  const list = useAsync(
    () =>
      api.gql(
        `query ConsoleJobs($status: JobStatus) {
          jobs(last: 50, status: $status) { totalCount nodes { id kind status attempts maxAttempts runAt lastError payload } }
        }`,
        { status: status || null },
      ),
    [status],
  );
  const act = useAction((mutation, id) => api.gql(mutation, { input: { id } }));
  const retry = async (id) => {
    if (await act.run(`mutation ConsoleRetryJob($input: RetryJobInput!) { retryJob(input: $input) { id } }`, id)) list.reload();
  };
  const remove = async (id) => {
    if (await act.run(`mutation ConsoleDeleteJob($input: DeleteJobInput!) { deleteJob(input: $input) { __typename } }`, id)) list.reload();
  };
  const nodes = list.data ? [...list.data.jobs.nodes].reverse() : [];
  return html`<section aria-labelledby="jobs-title">
    <h1 id="jobs-title">Background jobs</h1>
    <p class="muted">Emails, webhook deliveries and asynchronous executions. <a href=${href("webhooks")}>Webhooks</a> · <a href=${href("functions")}>Functions</a></p>
    <div class="row">
      <${Select}
        label="Status"
        value=${status}
        onChange=${setStatus}
        options=${[["DEAD", "failed for good"], ["QUEUED", "queued"], ["RUNNING", "running"], ["DONE", "done"], ["", "all"]]}
      />
    </div>
    <${ErrorBox} error=${list.error || act.error} />
    ${list.loading && !list.data && html`<${Loading} what="jobs" />`}
    ${list.data &&
    html`<p class="muted">${list.data.jobs.totalCount} jobs</p>
      <ul class="plain">
        ${nodes.map(
          (j) => html`<li class="card">
            <div class="row spread">
              <div>
                <strong>${j.kind}</strong> <span class="badge">${j.status}</span>
                <div class="muted">attempt ${j.attempts} of ${j.maxAttempts} · next ${formatDate(j.runAt)}</div>
                ${j.lastError && html`<div class="muted">${j.lastError}</div>`}
              </div>
              <div class="row">
                ${j.status === "DEAD" && html`<button class="secondary" onClick=${() => retry(j.id)}>Retry</button>`}
                ${j.status !== "RUNNING" && html`<button class="secondary" onClick=${() => remove(j.id)}>Delete</button>`}
              </div>
            </div>
          </li>`,
        )}
        ${!nodes.length && html`<li class="muted">No jobs.</li>`}
      </ul>`}
  </section>`;
}
