// The console's shell: sign-in gate, navigation, project switcher and a hash
// router (`#/databases/blog/posts`), so that every page has a link of its own
// and moving between pages never reloads the application.
import { html, render, useState, useEffect, useRef, useErrorBoundary } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, href } from "./ui.js";
import { SignIn } from "./page-signin.js";
import { Projects } from "./page-projects.js";
import { Keys } from "./page-keys.js";
import { Databases, DatabasePage, CollectionPage } from "./page-databases.js";
import { Documents } from "./page-documents.js";
import { Users, UserPage } from "./page-users.js";
import { Storage, BucketPage } from "./page-storage.js";
import { Realtime } from "./page-realtime.js";
import { Account } from "./page-account.js";
import { Settings } from "./page-settings.js";
import { Teams, TeamPage } from "./page-teams.js";
import { ViewAsUser } from "./page-view-as.js";
import { Webhooks, Functions, Jobs } from "./page-operations.js";
import { Usage } from "./page-usage.js";

const NAV = [
  ["projects", "Projects"],
  ["settings", "Settings"],
  ["keys", "API keys"],
  ["databases", "Databases"],
  ["users", "Users"],
  ["teams", "Teams"],
  ["storage", "Storage"],
  ["realtime", "Realtime"],
  ["functions", "Functions"],
  ["webhooks", "Webhooks"],
  ["jobs", "Jobs"],
  ["usage", "Usage"],
];

function currentRoute() {
  const parts = location.hash
    .replace(/^#\/?/, "")
    .split("/")
    .filter(Boolean)
    .map(decodeURIComponent);
  return parts.length ? parts : ["projects"];
}

function Page({ route, project }) {
  const [section, a, b, c] = route;
  switch (section) {
    case "projects":
      return html`<${Projects} project=${project} />`;
    case "settings":
      return html`<${Settings} project=${project} />`;
    case "keys":
      return html`<${Keys} project=${project} />`;
    case "databases":
      if (a && b && c === "documents") return html`<${Documents} databaseId=${a} collectionId=${b} />`;
      if (a && b) return html`<${CollectionPage} databaseId=${a} collectionId=${b} />`;
      if (a) return html`<${DatabasePage} databaseId=${a} />`;
      return html`<${Databases} />`;
    case "users":
      if (a && b === "view") return html`<${ViewAsUser} userId=${a} />`;
      return a ? html`<${UserPage} userId=${a} />` : html`<${Users} />`;
    case "teams":
      return a ? html`<${TeamPage} teamId=${a} />` : html`<${Teams} />`;
    case "storage":
      return a ? html`<${BucketPage} bucketId=${a} />` : html`<${Storage} />`;
    case "realtime":
      return html`<${Realtime} />`;
    case "functions":
      return html`<${Functions} />`;
    case "webhooks":
      return html`<${Webhooks} />`;
    case "jobs":
      return html`<${Jobs} />`;
    case "usage":
      return html`<${Usage} project=${project} />`;
    case "account":
      return html`<${Account} />`;
    default:
      return html`<${ErrorBox} error=${{ message: "There is no such page.", code: "NOT_FOUND" }} />`;
  }
}

/** A page that throws while rendering shows the error instead of vanishing. */
function Boundary({ children }) {
  const [error, reset] = useErrorBoundary();
  if (!error) return children;
  return html`<div>
    <${ErrorBox} error=${{ message: `This page failed: ${error.message || error}`, code: "PAGE_ERROR" }} />
    <button class="secondary" onClick=${reset}>Try again</button>
  </div>`;
}

function ProjectSwitcher({ project, onSwitch, version }) {
  const [projects, setProjects] = useState([project]);
  const [error, setError] = useState(null);
  useEffect(() => {
    api
      .gql("query ConsoleProjectList { projects(first: 100) { nodes { id name } } }")
      .then((data) => setProjects(data.projects.nodes.map((p) => p.id)), setError);
  }, [version]);
  const ids = projects.includes(project) ? projects : [project, ...projects];
  return html`<div class="switcher">
    <label for="project-switcher">Project</label>
    <select id="project-switcher" value=${project} onChange=${(e) => onSwitch(e.target.value)}>
      ${ids.map((id) => html`<option value=${id} selected=${id === project}>${id}</option>`)}
    </select>
    ${error && html`<span class="code" title=${error.message}>${error.code}</span>`}
  </div>`;
}

function Shell({ who, onSignOut }) {
  const [route, setRoute] = useState(currentRoute());
  const [project, setProject] = useState(api.currentProject());
  const [projectsVersion, setProjectsVersion] = useState(0);
  const main = useRef(null);
  useEffect(() => {
    const onHash = () => {
      setRoute(currentRoute());
      // Moving to another page moves keyboard focus to it, as a page load would.
      if (main.current) main.current.focus();
    };
    const onProjects = () => setProjectsVersion((v) => v + 1);
    const onSwitch = (e) => switchTo(e.detail);
    addEventListener("hashchange", onHash);
    addEventListener("nimbus:projects-changed", onProjects);
    addEventListener("nimbus:switch-project", onSwitch);
    return () => {
      removeEventListener("hashchange", onHash);
      removeEventListener("nimbus:projects-changed", onProjects);
      removeEventListener("nimbus:switch-project", onSwitch);
    };
  }, []);
  const switchTo = (id) => {
    api.setProject(id);
    setProject(id);
    setProjectsVersion((v) => v + 1);
    // Pages below a project (a database, a bucket) do not exist in another one.
    const [section] = currentRoute();
    if (location.hash !== `#/${section}`) location.hash = `#/${section}`;
  };
  return html`<div class="shell">
    <a class="skip" href="#main" onClick=${(e) => (e.preventDefault(), main.current.focus())}>Skip to content</a>
    <header class="top">
      <span class="brand">Nimbus console</span>
      <${ProjectSwitcher} project=${project} onSwitch=${switchTo} version=${projectsVersion} />
      ${who.kind === "key"
        ? html`<span class="who muted">Signed in with an API key</span>`
        : html`<a class="who" href=${href("account")}>${who.email}</a>`}
      <button class="secondary" onClick=${onSignOut}>Sign out</button>
    </header>
    <nav aria-label="Sections">
      <ul>
        ${NAV.map(
          ([id, label]) => html`<li>
            <a href=${href(id)} aria-current=${route[0] === id ? "page" : undefined}>${label}</a>
          </li>`,
        )}
      </ul>
    </nav>
    <main id="main" tabindex="-1" ref=${main}>
      <${Boundary} key=${`${project}/${route.join("/")}`}>
        <${Page} route=${route} project=${project} />
      </${Boundary}>
    </main>
  </div>`;
}

function App() {
  const [who, setWho] = useState(undefined);
  const [lost, setLost] = useState(null);
  useEffect(() => {
    api.restore().then(setWho, () => setWho(null));
    const onLost = (e) => {
      setLost(e.detail);
      setWho(null);
    };
    addEventListener("nimbus:signed-out", onLost);
    return () => removeEventListener("nimbus:signed-out", onLost);
  }, []);
  if (who === undefined) return html`<p class="muted" role="status">Loading…</p>`;
  if (!who) {
    return html`<${SignIn}
      reason=${lost}
      onSignedIn=${(w) => {
        setLost(null);
        setWho(w);
      }}
    />`;
  }
  const signOut = async () => {
    try {
      await api.signOut();
    } finally {
      setWho(null);
    }
  };
  return html`<${Shell} who=${who} onSignOut=${signOut} />`;
}

// Whatever a page throws while rendering is shown, never a blank page.
addEventListener("error", (event) => showFatal(event.error || event.message));
addEventListener("unhandledrejection", (event) => showFatal(event.reason));

function showFatal(error) {
  const box = document.getElementById("fatal");
  if (!box) return;
  box.hidden = false;
  box.textContent = `Something went wrong: ${(error && error.message) || error}`;
}

render(html`<${App} />`, document.getElementById("app"));
