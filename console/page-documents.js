// The document grid of one collection: filter, sort, inline edit, a JSON view,
// and paging through Appwrite-style queries. Only the rows in view are rendered
// and only the pages in view are fetched, so a collection of 100,000 documents
// scrolls as smoothly as one of ten: a page follows the one before it with
// `cursorAfter` (keyset, cheap) and is fetched by `offset` only when the user
// jumps past pages not loaded yet.
import { html, useState, useEffect, useRef, useMemo } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, Loading, PermissionsEditor, Select, href, useAction, useAsync } from "./ui.js";

const ROW_HEIGHT = 36;
const PAGE_SIZE = 100;
/** Rows rendered above and below the visible ones, so fast scrolling shows no gaps. */
const OVERSCAN = 10;

const OPERATORS = [
  ["equal", "="],
  ["notEqual", "≠"],
  ["greaterThan", ">"],
  ["greaterThanEqual", "≥"],
  ["lessThan", "<"],
  ["lessThanEqual", "≤"],
  ["startsWith", "starts with"],
  ["contains", "contains"],
  ["search", "full-text search"],
  ["isNull", "is empty"],
  ["isNotNull", "is not empty"],
];

const DOCUMENTS = `query ConsoleDocuments($db: ID!, $coll: ID!, $queries: [String!]) {
  documents(databaseId: $db, collectionId: $coll, queries: $queries) { documents { id createdAt updatedAt permissions data } }
}`;
const DOCUMENTS_WITH_TOTAL = `query ConsoleDocumentsTotal($db: ID!, $coll: ID!, $queries: [String!]) {
  documents(databaseId: $db, collectionId: $coll, queries: $queries) { total documents { id createdAt updatedAt permissions data } }
}`;

/** A value typed in a cell, as the attribute's type stores it. */
function parseCell(attribute, text) {
  if (text === "") return null;
  if (attribute.array) return JSON.parse(text);
  switch (attribute.type) {
    case "INTEGER": {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new Error(`${attribute.key} needs a whole number`);
      return n;
    }
    case "FLOAT": {
      const n = Number(text);
      if (Number.isNaN(n)) throw new Error(`${attribute.key} needs a number`);
      return n;
    }
    case "BOOLEAN":
      return text === "true";
    default:
      return text;
  }
}

function showCell(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** One filter query of the filter bar, in the API's JSON form. */
function filterQuery(attribute, operator, value, type) {
  if (operator === "isNull" || operator === "isNotNull") return { method: operator, attribute };
  let typed = value;
  if (type === "INTEGER" || type === "FLOAT") typed = Number(value);
  if (type === "BOOLEAN") typed = value === "true";
  return { method: operator, attribute, values: [typed] };
}

function Cell({ doc, attribute, onSaved }) {
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState("");
  const [error, setError] = useState(null);
  const input = useRef(null);
  useEffect(() => {
    if (editing && input.current) input.current.focus();
  }, [editing]);
  const start = () => {
    setText(showCell(doc.data[attribute.key]));
    setError(null);
    setEditing(true);
  };
  const save = async () => {
    try {
      const value = parseCell(attribute, text);
      const data = await api.gql(
        `mutation ConsoleUpdateCell($input: UpdateDocumentInput!) {
          updateDocument(input: $input) { id createdAt updatedAt permissions data }
        }`,
        {
          input: {
            databaseId: doc.databaseId,
            collectionId: doc.collectionId,
            id: doc.id,
            data: { [attribute.key]: value },
            expectedUpdatedAt: doc.updatedAt,
          },
        },
      );
      setEditing(false);
      onSaved(data.updateDocument);
    } catch (err) {
      setError(err);
    }
  };
  if (editing) {
    return html`<div class="cell editing" role="cell">
      <input
        ref=${input}
        value=${text}
        aria-label=${`${attribute.key} of ${doc.id}`}
        onInput=${(e) => setText(e.target.value)}
        onKeyDown=${(e) => {
          if (e.key === "Enter") save();
          if (e.key === "Escape") setEditing(false);
        }}
        onBlur=${() => !error && setEditing(false)}
      />
      ${error && html`<span class="cell-error" role="alert">${error.message}${error.code ? ` (${error.code})` : ""}</span>`}
    </div>`;
  }
  return html`<div class="cell" role="cell">
    <button class="cell-button" title="Edit" aria-label=${`Edit ${attribute.key} of ${doc.id}`} onClick=${start}>
      ${showCell(doc.data[attribute.key])}
    </button>
  </div>`;
}

function JsonView({ doc, onSaved, onClose }) {
  const [text, setText] = useState(JSON.stringify(doc.data, null, 2));
  const [permissions, setPermissions] = useState(doc.permissions);
  const save = useAction(async () => {
    let data;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw Object.assign(new Error(`not JSON: ${err.message}`), { code: "INVALID_JSON" });
    }
    const result = await api.gql(
      `mutation ConsoleUpdateDocument($input: UpdateDocumentInput!) {
        updateDocument(input: $input) { id createdAt updatedAt permissions data }
      }`,
      {
        input: {
          databaseId: doc.databaseId,
          collectionId: doc.collectionId,
          id: doc.id,
          data,
          permissions,
          expectedUpdatedAt: doc.updatedAt,
        },
      },
    );
    onSaved(result.updateDocument);
    return result;
  });
  const remove = useAction(async () => {
    await api.gql(`mutation ConsoleDeleteDocument($input: DeleteDocumentInput!) { deleteDocument(input: $input) { __typename } }`, {
      input: { databaseId: doc.databaseId, collectionId: doc.collectionId, id: doc.id },
    });
    onSaved(null);
    onClose();
    return true;
  });
  return html`<aside class="card json-view" aria-labelledby="json-title">
    <div class="row spread">
      <h2 id="json-title">Document <code>${doc.id}</code></h2>
      <button class="secondary" onClick=${onClose}>Close</button>
    </div>
    <label for="json-data">Data (JSON)</label>
    <textarea id="json-data" rows="12" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
    <${PermissionsEditor} value=${permissions} onChange=${setPermissions} actions=${["read", "update", "delete", "write"]} />
    <div class="row">
      <button onClick=${() => save.run()} disabled=${save.pending}>Save document</button>
      <button class="danger" onClick=${() => confirm(`Delete ${doc.id}?`) && remove.run()} disabled=${remove.pending}>Delete</button>
    </div>
    <${ErrorBox} error=${save.error || remove.error} />
  </aside>`;
}

function NewDocument({ databaseId, collectionId, attributes, onCreated }) {
  const template = useMemo(() => {
    const data = {};
    for (const a of attributes) data[a.key] = a.array ? [] : a.type === "BOOLEAN" ? false : a.type === "INTEGER" || a.type === "FLOAT" ? 0 : "";
    return JSON.stringify(data, null, 2);
  }, [attributes]);
  const [id, setId] = useState("");
  const [text, setText] = useState(template);
  const create = useAction(async () => {
    let data;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw Object.assign(new Error(`not JSON: ${err.message}`), { code: "INVALID_JSON" });
    }
    return api.gql(`mutation ConsoleCreateDocument($input: CreateDocumentInput!) { createDocument(input: $input) { id } }`, {
      input: { databaseId, collectionId, data, ...(id ? { id } : {}) },
    });
  });
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setId("");
      onCreated();
    }
  };
  return html`<details class="card">
    <summary>New document</summary>
    <form onSubmit=${submit}>
      <${Field} label="Document id (optional)" value=${id} onInput=${setId} />
      <label for="new-doc-data">Data (JSON)</label>
      <textarea id="new-doc-data" rows="6" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
      <button disabled=${create.pending}>Create document</button>
      <${ErrorBox} error=${create.error} />
    </form>
  </details>`;
}

/** The list as the filter bar and the sort say, fetched a page at a time. */
function useDocumentPages(databaseId, collectionId, base) {
  const [pages, setPages] = useState(() => new Map());
  const [total, setTotal] = useState(null);
  const [error, setError] = useState(null);
  const inFlight = useRef(new Set());
  const generation = useRef(0);
  const pagesRef = useRef(pages);
  pagesRef.current = pages;

  const load = async (page, withTotal) => {
    if (inFlight.current.has(page) || pagesRef.current.has(page)) return;
    inFlight.current.add(page);
    const mine = generation.current;
    const before = pagesRef.current.get(page - 1);
    const queries = [...base, { method: "limit", values: [PAGE_SIZE] }];
    if (page > 0 && before && before.length === PAGE_SIZE) {
      queries.push({ method: "cursorAfter", values: [before[before.length - 1].id] });
    } else if (page > 0) {
      queries.push({ method: "offset", values: [page * PAGE_SIZE] });
    }
    try {
      const data = await api.gql(withTotal ? DOCUMENTS_WITH_TOTAL : DOCUMENTS, {
        db: databaseId,
        coll: collectionId,
        queries: queries.map((q) => JSON.stringify(q)),
      });
      if (mine !== generation.current) return;
      const docs = data.documents.documents.map((d) => ({ ...d, databaseId, collectionId }));
      setPages((old) => new Map(old).set(page, docs));
      if (withTotal) setTotal(data.documents.total);
    } catch (err) {
      if (mine === generation.current) setError(err);
    } finally {
      inFlight.current.delete(page);
    }
  };

  const key = JSON.stringify(base);
  useEffect(() => {
    generation.current++;
    inFlight.current = new Set();
    pagesRef.current = new Map();
    setPages(new Map());
    setTotal(null);
    setError(null);
    load(0, true);
  }, [databaseId, collectionId, key]);

  const replace = (updated, previousId) => {
    setPages((old) => {
      const next = new Map();
      for (const [n, docs] of old) {
        next.set(
          n,
          updated ? docs.map((d) => (d.id === previousId ? { ...updated, databaseId, collectionId } : d)) : docs.filter((d) => d.id !== previousId),
        );
      }
      return next;
    });
    if (!updated && total != null) setTotal(total - 1);
  };
  const reload = () => {
    generation.current++;
    inFlight.current = new Set();
    pagesRef.current = new Map();
    setPages(new Map());
    setError(null);
    load(0, true);
  };
  return { pages, total, error, load, replace, reload };
}

function Grid({ attributes, list, onOpen, selected }) {
  const scroller = useRef(null);
  const [view, setView] = useState({ top: 0, height: 480 });
  const count = list.total != null ? list.total : (list.pages.get(0) || []).length;
  const first = Math.max(0, Math.floor(view.top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(count, Math.ceil((view.top + view.height) / ROW_HEIGHT) + OVERSCAN);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const measure = () => setView({ top: el.scrollTop, height: el.clientHeight });
    measure();
    el.addEventListener("scroll", measure, { passive: true });
    addEventListener("resize", measure);
    return () => {
      el.removeEventListener("scroll", measure);
      removeEventListener("resize", measure);
    };
  }, []);

  // Fetch the pages the visible rows are on (and only those).
  useEffect(() => {
    if (count === 0) return;
    for (let page = Math.floor(first / PAGE_SIZE); page <= Math.floor(Math.max(last - 1, 0) / PAGE_SIZE); page++) {
      list.load(page, false);
    }
  }, [first, last, count, list.pages]);

  const columns = `minmax(9rem, 1fr) repeat(${attributes.length}, minmax(8rem, 1fr)) 6rem`;
  const rows = [];
  for (let i = first; i < last; i++) {
    const page = list.pages.get(Math.floor(i / PAGE_SIZE));
    const doc = page && page[i % PAGE_SIZE];
    rows.push(html`<div
      class=${`grid-row${doc && selected === doc.id ? " selected" : ""}`}
      role="row"
      aria-rowindex=${i + 2}
      style=${`top:${i * ROW_HEIGHT}px;grid-template-columns:${columns}`}
      key=${doc ? doc.id : `pending-${i}`}
    >
      ${doc
        ? html`<div class="cell id" role="cell"><code>${doc.id}</code></div>
            ${attributes.map((a) => html`<${Cell} key=${a.key} doc=${doc} attribute=${a} onSaved=${(d) => list.replace(d, doc.id)} />`)}
            <div class="cell" role="cell">
              <button class="link" onClick=${() => onOpen(doc)} aria-label=${`JSON of ${doc.id}`}>JSON</button>
            </div>`
        : html`<div class="cell muted" role="cell">…</div>`}
    </div>`);
  }
  return html`<div class="grid" role="table" aria-label="Documents" aria-rowcount=${count + 1}>
    <div class="grid-head" role="row" aria-rowindex="1" style=${`grid-template-columns:${columns}`}>
      <div class="cell" role="columnheader">id</div>
      ${attributes.map((a) => html`<div class="cell" role="columnheader">${a.key}</div>`)}
      <div class="cell" role="columnheader"><span class="sr-only">Actions</span></div>
    </div>
    <div class="grid-body" ref=${scroller} tabindex="0" aria-label="Document rows, scrollable">
      <div class="grid-space" style=${`height:${count * ROW_HEIGHT}px`}>${rows}</div>
    </div>
  </div>`;
}

/**
 * Offers an index on the attribute the list is sorted or filtered by when none
 * starts with it: without one, every page (and the count) reads the whole
 * collection, which a large one feels on every scroll.
 */
function IndexHint({ databaseId, collectionId, attributes, indexes, base, onCreated }) {
  const wanted = [];
  for (const q of base) {
    const key = q.attribute;
    if (!key || key.startsWith("$") || wanted.includes(key)) continue;
    const attribute = attributes.find((a) => a.key === key);
    if (!attribute || attribute.array) continue;
    if (!indexes.some((i) => i.attributes[0] === key)) wanted.push(key);
  }
  const add = useAction((key) =>
    api.gql(`mutation ConsoleGridIndex($input: CreateIndexInput!) { createIndex(input: $input) { id } }`, {
      input: { databaseId, collectionId, index: { key: `by_${key}`.slice(0, 36), type: "KEY", attributes: [key], orders: ["ASC"] } },
    }),
  );
  if (!wanted.length) return null;
  return html`<div class="card" role="note" data-testid="index-hint">
    ${wanted.map(
      (key) => html`<p>
        No index starts with <code>${key}</code>: each page sorted or filtered by it reads the whole collection.
        <button class="secondary" disabled=${add.pending} onClick=${async () => (await add.run(key)) && onCreated()}>Add an index on ${key}</button>
      </p>`,
    )}
    <${ErrorBox} error=${add.error} />
  </div>`;
}

export function Documents({ databaseId, collectionId }) {
  const meta = useAsync(
    () =>
      api.gql(
        `query ConsoleDocumentColumns($db: ID!, $id: ID!) {
          collection(databaseId: $db, id: $id) { id name attributes { key type array } indexes { attributes } }
        }`,
        { db: databaseId, id: collectionId },
      ),
    [databaseId, collectionId],
  );
  const attributes = meta.data ? meta.data.collection.attributes : [];
  const [draft, setDraft] = useState({ attribute: "$id", operator: "equal", value: "", sort: "", desc: false });
  const [base, setBase] = useState([]);
  const [open, setOpen] = useState(null);
  const list = useDocumentPages(databaseId, collectionId, base);

  const apply = (e) => {
    e.preventDefault();
    const queries = [];
    if (draft.value !== "" || draft.operator === "isNull" || draft.operator === "isNotNull") {
      const type = (attributes.find((a) => a.key === draft.attribute) || {}).type;
      queries.push(filterQuery(draft.attribute, draft.operator, draft.value, type));
    }
    if (draft.sort) queries.push({ method: draft.desc ? "orderDesc" : "orderAsc", attribute: draft.sort });
    setBase(queries);
  };
  const keys = ["$id", "$createdAt", "$updatedAt", ...attributes.map((a) => a.key)];
  return html`<section aria-labelledby="docs-title">
    <p>
      <a href=${href("databases")}>Databases</a> / <a href=${href("databases", databaseId)}>${databaseId}</a> /
      <a href=${href("databases", databaseId, collectionId)}>${collectionId}</a> /
    </p>
    <h1 id="docs-title">Documents of ${collectionId}</h1>
    <${ErrorBox} error=${meta.error} />
    ${meta.loading && !meta.data && html`<${Loading} what="the collection" />`}
    ${meta.data &&
    html`<form class="row filters" onSubmit=${apply} aria-label="Filter and sort">
        <${Select} label="Filter on" value=${draft.attribute} onChange=${(v) => setDraft({ ...draft, attribute: v })} options=${keys} />
        <${Select} label="Operator" value=${draft.operator} onChange=${(v) => setDraft({ ...draft, operator: v })} options=${OPERATORS} />
        <${Field} label="Value" value=${draft.value} onInput=${(v) => setDraft({ ...draft, value: v })} />
        <${Select}
          label="Sort by"
          value=${draft.sort}
          onChange=${(v) => setDraft({ ...draft, sort: v })}
          options=${[["", "(default)"], ...keys.map((k) => [k, k])]}
        />
        <${Select}
          label="Direction"
          value=${draft.desc ? "desc" : "asc"}
          onChange=${(v) => setDraft({ ...draft, desc: v === "desc" })}
          options=${[["asc", "ascending"], ["desc", "descending"]]}
        />
        <button>Apply</button>
        <button type="button" class="secondary" onClick=${() => (setDraft({ ...draft, value: "", sort: "" }), setBase([]))}>Clear</button>
      </form>
      <p class="muted" role="status" data-testid="documents-count">
        ${list.total == null ? "Counting…" : `${list.total} documents`}
      </p>
      <${ErrorBox} error=${list.error} />
      <${IndexHint}
        databaseId=${databaseId}
        collectionId=${collectionId}
        attributes=${attributes}
        indexes=${meta.data.collection.indexes}
        base=${base}
        onCreated=${meta.reload}
      />
      <${NewDocument} databaseId=${databaseId} collectionId=${collectionId} attributes=${attributes} onCreated=${list.reload} />
      <div class="documents">
        <${Grid} attributes=${attributes} list=${list} onOpen=${setOpen} selected=${open && open.id} />
        ${open &&
        html`<${JsonView}
          key=${open.id + open.updatedAt}
          doc=${open}
          onSaved=${(d) => {
            list.replace(d, open.id);
            if (d) setOpen({ ...d, databaseId, collectionId });
          }}
          onClose=${() => setOpen(null)}
        />`}
      </div>`}
  </section>`;
}
