// "View as user": GraphiQL (the playground's vendored copy, loaded on demand)
// running every operation with a short-lived JWT minted for one user by
// `createUserJWT`, so what it shows is exactly what that user may see. The JWT
// lives only in this component's memory: GraphiQL gets an in-memory storage, so
// neither the token nor the headers are written to localStorage.
import { html, useState, useEffect, useRef } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, formatDate, href, useAction } from "./ui.js";

const PLAYGROUND_ASSETS = "/playground/assets/";
let graphiqlLoaded = null;

/** Loads React, ReactDOM and GraphiQL (UMD builds) once, in order. */
function loadGraphiql() {
  if (graphiqlLoaded) return graphiqlLoaded;
  const script = (file) =>
    new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = PLAYGROUND_ASSETS + file;
      el.onload = resolve;
      el.onerror = () => reject(new api.ApiError(`could not load ${file}`, "ASSET_UNAVAILABLE"));
      document.head.append(el);
    });
  const style = document.createElement("link");
  style.rel = "stylesheet";
  style.href = `${PLAYGROUND_ASSETS}graphiql.min.css`;
  document.head.append(style);
  graphiqlLoaded = script("react.production.min.js")
    .then(() => script("react-dom.production.min.js"))
    .then(() => script("graphiql.min.js"));
  graphiqlLoaded.catch(() => (graphiqlLoaded = null));
  return graphiqlLoaded;
}

/** A Storage that forgets everything with the page. */
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
    clear: () => items.clear(),
    get length() {
      return items.size;
    },
  };
}

function Graphiql({ jwt, project }) {
  const mount = useRef(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let root = null;
    let live = true;
    loadGraphiql().then(() => {
      if (!live) return;
      const fetcher = async (params) => {
        const response = await fetch("/v1/graphql", {
          method: "POST",
          credentials: "omit",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/graphql-response+json, application/json",
            Authorization: `Bearer ${jwt}`,
            "X-Nimbus-Project": project,
          },
          body: JSON.stringify(params),
        });
        return response.json();
      };
      root = window.ReactDOM.createRoot(mount.current);
      root.render(
        window.React.createElement(window.GraphiQL, {
          fetcher,
          storage: memoryStorage(),
          shouldPersistHeaders: false,
          defaultQuery: "# Every operation here runs as the user.\n{\n  account { id email labels }\n}\n",
        }),
      );
    }, setError);
    return () => {
      live = false;
      if (root) root.unmount();
    };
  }, [jwt, project]);
  return html`<div>
    <${ErrorBox} error=${error} />
    <div class="graphiql-host" ref=${mount}></div>
  </div>`;
}

export function ViewAsUser({ userId }) {
  const [minutes, setMinutes] = useState("15");
  const [token, setToken] = useState(null);
  const mint = useAction(async () => {
    const data = await api.gql(
      `mutation ConsoleViewAs($userId: ID!, $duration: Int) {
        createUserJWT(input: { userId: $userId, duration: $duration }) { jwt expiresAt }
      }`,
      // In seconds, as Appwrite's users.createJWT takes it.
      { userId, duration: Number.parseInt(minutes, 10) * 60 },
    );
    setToken(data.createUserJWT);
    return true;
  });
  return html`<section aria-labelledby="view-as-title">
    <p><a href=${href("users")}>Users</a> / <a href=${href("users", userId)}>${userId}</a> /</p>
    <h1 id="view-as-title">View as user ${userId}</h1>
    <form
      class="row"
      onSubmit=${(e) => {
        e.preventDefault();
        mint.run();
      }}
    >
      <${Field} label="Minutes (at most 60)" type="number" min="1" max="60" value=${minutes} onInput=${setMinutes} />
      <button disabled=${mint.pending}>${token ? "Mint a new token" : "Start"}</button>
    </form>
    <p class="muted">Each token is recorded in the user's activity log, with who minted it.</p>
    <${ErrorBox} error=${mint.error} />
    ${token &&
    html`<p role="status">Acting as ${userId} until ${formatDate(token.expiresAt)}.</p>
      <${Graphiql} key=${token.jwt} jwt=${token.jwt} project=${api.currentProject()} />`}
  </section>`;
}
