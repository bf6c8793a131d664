// Pieces every page shares: loading and error states, form fields, a copy
// button, a typed confirmation, and the permissions editor with its summary.
import { html, useState, useEffect, useCallback, useRef } from "./lib.js";

/** A link inside the console (its hash route). */
export function href(...parts) {
  return `#/${parts.map(encodeURIComponent).join("/")}`;
}

/** An API error as the user sees it: the message and its stable code. */
export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.message || String(error)}</strong>
    ${error.code && html` <code class="code">${error.code}</code>`}
  </div>`;
}

/** Runs `load` now and whenever `deps` change; `reload()` runs it again. */
export function useAsync(load, deps) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const generation = useRef(0);
  const run = useCallback(() => {
    const mine = ++generation.current;
    setState((s) => ({ ...s, loading: true, error: null }));
    Promise.resolve()
      .then(load)
      .then(
        (data) => mine === generation.current && setState({ loading: false, data, error: null }),
        (error) => mine === generation.current && setState({ loading: false, data: null, error }),
      );
  }, deps);
  useEffect(run, [run]);
  return { ...state, reload: run };
}

/** Wraps an action for a button or form: its pending flag, error and runner. */
export function useAction(action) {
  const [state, setState] = useState({ pending: false, error: null });
  const run = async (...args) => {
    setState({ pending: true, error: null });
    try {
      const result = await action(...args);
      setState({ pending: false, error: null });
      return result;
    } catch (error) {
      setState({ pending: false, error });
      return undefined;
    }
  };
  return { ...state, run, clear: () => setState({ pending: false, error: null }) };
}

export function Loading({ what }) {
  return html`<p class="muted" role="status">Loading ${what || ""}…</p>`;
}

let fieldIds = 0;

/** A labelled input; extra props go to the `<input>`. */
export function Field({ label, hint, value, onInput, type = "text", ...rest }) {
  const id = useRef(`f${++fieldIds}`).current;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <input
      id=${id}
      type=${type}
      value=${value}
      onInput=${(e) => onInput(type === "checkbox" ? e.target.checked : e.target.value)}
      aria-describedby=${hint ? `${id}-hint` : undefined}
      ...${rest}
    />
    ${hint && html`<small id=${`${id}-hint`} class="muted">${hint}</small>`}
  </div>`;
}

/** The form that creates a thing of `noun` from a name and an optional id
 * (databases, teams): `create` gets `{ name, id? }`; `onCreated` runs after. */
export function NameAndIdForm({ noun, create, onCreated }) {
  const [id, setId] = useState("");
  const [name, setName] = useState("");
  const action = useAction(() => create({ name, ...(id ? { id } : {}) }));
  const submit = async (e) => {
    e.preventDefault();
    if (await action.run()) {
      setId("");
      setName("");
      onCreated();
    }
  };
  const heading = `new-${noun}`;
  return html`<form class="card" onSubmit=${submit} aria-labelledby=${heading}>
    <h2 id=${heading}>New ${noun}</h2>
    <div class="row">
      <${Field} label="Name" value=${name} onInput=${setName} required />
      <${Field} label="Id (optional)" value=${id} onInput=${setId} />
      <button disabled=${action.pending}>Create ${noun}</button>
    </div>
    <${ErrorBox} error=${action.error} />
  </form>`;
}

export function Check({ label, checked, onChange }) {
  return html`<label class="check">
    <input type="checkbox" checked=${checked} onChange=${(e) => onChange(e.target.checked)} />
    ${label}
  </label>`;
}

export function Select({ label, value, onChange, options }) {
  const id = useRef(`f${++fieldIds}`).current;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <select id=${id} value=${value} onChange=${(e) => onChange(e.target.value)}>
      ${options.map((o) => {
        const [v, text] = Array.isArray(o) ? o : [o, o];
        return html`<option value=${v} selected=${v === value}>${text}</option>`;
      })}
    </select>
  </div>`;
}

export function CopyButton({ text, label = "Copy" }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone(true);
      setTimeout(() => setDone(false), 2000);
    } catch {
      setDone(false);
    }
  };
  return html`<button type="button" class="secondary" onClick=${copy}>
    ${done ? "Copied" : label}
  </button>`;
}

/** A destructive action that runs only once `word` has been typed. */
export function TypedConfirm({ word, action, onDone, label = "Delete" }) {
  const [typed, setTyped] = useState("");
  const act = useAction(action);
  const go = async (e) => {
    e.preventDefault();
    if ((await act.run()) !== undefined) onDone && onDone();
  };
  return html`<form class="danger-zone" onSubmit=${go}>
    <${Field}
      label=${`Type ${word} to confirm`}
      value=${typed}
      onInput=${setTyped}
      autocomplete="off"
    />
    <button class="danger" disabled=${typed !== word || act.pending}>${label}</button>
    <${ErrorBox} error=${act.error} />
  </form>`;
}

// Permissions, written as the API takes them: `read("users")`.

export const ACTIONS = ["read", "create", "update", "delete", "write"];

const ROLE_KINDS = [
  ["any", "Anyone"],
  ["guests", "Guests (not signed in)"],
  ["users", "Signed-in users"],
  ["users/verified", "Verified users"],
  ["user", "One user…"],
  ["team", "A team…"],
  ["member", "One team membership…"],
  ["label", "Users with a label…"],
];

export function parsePermission(text) {
  const match = /^(\w+)\("([^"]*)"\)$/.exec(text.trim());
  return match ? { action: match[1], role: match[2] } : null;
}

export function formatPermission(action, role) {
  return `${action}("${role}")`;
}

/** "Signed-in users", "user abc (verified)", … for a role string. */
export function describeRole(role) {
  const fixed = { any: "anyone", guests: "guests", users: "signed-in users", "users/verified": "verified users" };
  if (fixed[role]) return fixed[role];
  const [kind, rest] = role.split(/:(.*)/s);
  if (kind === "user") {
    const [id, verified] = rest.split("/");
    return `user ${id}${verified ? " (once verified)" : ""}`;
  }
  if (kind === "team") {
    const [id, teamRole] = rest.split("/");
    return teamRole ? `members of team ${id} with role ${teamRole}` : `members of team ${id}`;
  }
  if (kind === "member") return `membership ${rest}`;
  if (kind === "label") return `users labelled ${rest}`;
  return role;
}

function joinWords(words) {
  if (words.length < 2) return words.join("");
  return `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
}

/** A sentence per role: "Signed-in users can read and create." */
export function summarizePermissions(permissions) {
  const byRole = new Map();
  for (const text of permissions) {
    const p = parsePermission(text);
    if (!p) continue;
    const actions = p.action === "write" ? ["create", "update", "delete"] : [p.action];
    const set = byRole.get(p.role) || new Set();
    actions.forEach((a) => set.add(a));
    byRole.set(p.role, set);
  }
  if (!byRole.size) return ["Nobody but API keys can do anything here."];
  return [...byRole].map(([role, set]) => {
    const who = describeRole(role);
    const ordered = ["read", "create", "update", "delete"].filter((a) => set.has(a));
    return `${who[0].toUpperCase()}${who.slice(1)} can ${joinWords(ordered)}.`;
  });
}

/** Edits a list of permission strings; `actions` limits the choice of verbs. */
export function PermissionsEditor({ value, onChange, actions = ACTIONS }) {
  const [action, setAction] = useState(actions[0]);
  const [kind, setKind] = useState("any");
  const [id, setId] = useState("");
  const [sub, setSub] = useState("");
  const needsId = ["user", "team", "member", "label"].includes(kind);
  const role = needsId
    ? `${kind}:${id}${(kind === "team" || kind === "user") && sub ? `/${sub}` : ""}`
    : kind;
  const add = (e) => {
    e.preventDefault();
    if (needsId && !id.trim()) return;
    const text = formatPermission(action, role);
    if (!value.includes(text)) onChange([...value, text]);
  };
  return html`<fieldset class="permissions">
    <legend>Permissions</legend>
    <ul class="plain">
      ${value.map(
        (text) => html`<li>
          <code>${text}</code>
          <button
            type="button"
            class="link"
            aria-label=${`Remove ${text}`}
            onClick=${() => onChange(value.filter((v) => v !== text))}
          >Remove</button>
        </li>`,
      )}
    </ul>
    <div class="row">
      <${Select} label="Action" value=${action} onChange=${setAction} options=${actions} />
      <${Select} label="Role" value=${kind} onChange=${setKind} options=${ROLE_KINDS} />
      ${needsId &&
      html`<${Field}
        label=${kind === "label" ? "Label" : `${kind[0].toUpperCase()}${kind.slice(1)} id`}
        value=${id}
        onInput=${setId}
      />`}
      ${kind === "team" && html`<${Field} label="Team role (optional)" value=${sub} onInput=${setSub} />`}
      ${kind === "user" &&
      html`<${Select}
        label="Verified"
        value=${sub}
        onChange=${setSub}
        options=${[["", "any"], ["verified", "verified only"]]}
      />`}
      <button type="button" class="secondary" onClick=${add}>Add permission</button>
    </div>
    <div class="summary" aria-live="polite">
      ${summarizePermissions(value).map((line) => html`<p>${line}</p>`)}
    </div>
  </fieldset>`;
}

export function formatDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
