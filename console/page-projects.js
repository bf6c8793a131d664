// Projects: every project of the server, created, switched to, renamed and
// deleted (after typing its id) with the ordinary project mutations.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, Loading, TypedConfirm, formatDate, useAction, useAsync } from "./ui.js";

const LIST = `query ConsoleProjects {
  projects(first: 100) { totalCount nodes { id name description createdAt } }
}`;

function announceProjects() {
  dispatchEvent(new CustomEvent("nimbus:projects-changed"));
}

function switchTo(id) {
  dispatchEvent(new CustomEvent("nimbus:switch-project", { detail: id }));
}

function CreateProject({ onCreated }) {
  const [id, setId] = useState("");
  const [name, setName] = useState("");
  const act = useAction(() =>
    api.gql(
      `mutation ConsoleCreateProject($input: CreateProjectInput!) { createProject(input: $input) { id } }`,
      { input: { name, ...(id ? { id } : {}) } },
    ),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await act.run()) {
      setId("");
      setName("");
      announceProjects();
      onCreated();
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-project">
    <h2 id="new-project">New project</h2>
    <div class="row">
      <${Field} label="Name" value=${name} onInput=${setName} required />
      <${Field} label="Id (optional)" value=${id} onInput=${setId} hint="Generated when empty." />
      <button disabled=${act.pending}>Create project</button>
    </div>
    <${ErrorBox} error=${act.error} />
  </form>`;
}

function ProjectRow({ project, current, onChanged }) {
  const [editing, setEditing] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const [name, setName] = useState(project.name);
  const rename = useAction(() =>
    api.gql(
      `mutation ConsoleRenameProject($input: UpdateProjectInput!) { updateProject(input: $input) { id name } }`,
      { input: { id: project.id, name } },
    ),
  );
  const save = async (e) => {
    e.preventDefault();
    if (await rename.run()) {
      setEditing(false);
      onChanged();
    }
  };
  return html`<li class="card project">
    <div class="row spread">
      <div>
        <strong>${project.name}</strong> <code>${project.id}</code>
        ${current && html` <span class="badge">current</span>`}
        <div class="muted">created ${formatDate(project.createdAt)}</div>
      </div>
      <div class="row">
        ${!current && html`<button class="secondary" onClick=${() => switchTo(project.id)}>Switch to</button>`}
        <button class="secondary" aria-expanded=${editing} onClick=${() => setEditing(!editing)}>Rename</button>
        <button class="secondary" aria-expanded=${deleting} onClick=${() => setDeleting(!deleting)}>Delete…</button>
      </div>
    </div>
    ${editing &&
    html`<form class="row" onSubmit=${save}>
      <${Field} label=${`New name of ${project.id}`} value=${name} onInput=${setName} required />
      <button disabled=${rename.pending}>Save</button>
      <${ErrorBox} error=${rename.error} />
    </form>`}
    ${deleting &&
    html`<${TypedConfirm}
      word=${project.id}
      label="Delete project"
      action=${() =>
        api.gql(
          `mutation ConsoleDeleteProject($input: DeleteProjectInput!) { deleteProject(input: $input) { __typename } }`,
          { input: { id: project.id } },
        )}
      onDone=${() => {
        announceProjects();
        if (current) switchTo("default");
        onChanged();
      }}
    />`}
  </li>`;
}

export function Projects({ project }) {
  const list = useAsync(() => api.gql(LIST), []);
  return html`<section aria-labelledby="projects-title">
    <h1 id="projects-title">Projects</h1>
    <${CreateProject} onCreated=${list.reload} />
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="projects" />`}
    ${list.data &&
    html`<p class="muted">${list.data.projects.totalCount} projects</p>
      <ul class="plain">
        ${list.data.projects.nodes.map(
          (p) => html`<${ProjectRow} key=${p.id} project=${p} current=${p.id === project} onChanged=${list.reload} />`,
        )}
      </ul>`}
  </section>`;
}
