// Databases, their collections, and one collection's attributes, indexes,
// relationships and permissions: each form maps to one mutation of the databases
// service.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import {
  Check,
  CopyButton,
  ErrorBox,
  Field,
  Loading,
  NameAndIdForm,
  PermissionsEditor,
  Select,
  TypedConfirm,
  formatDate,
  href,
  summarizePermissions,
  useAction,
  useAsync,
} from "./ui.js";

export function Databases() {
  const list = useAsync(() => api.gql("query ConsoleDatabases { databases { id name enabled createdAt } }"), []);
  return html`<section aria-labelledby="db-title">
    <h1 id="db-title">Databases</h1>
    <${NameAndIdForm}
      noun="database"
      create=${(input) => api.gql(`mutation ConsoleCreateDatabase($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }`, { input })}
      onCreated=${list.reload}
    />
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="databases" />`}
    ${list.data &&
    html`<ul class="plain cards">
      ${list.data.databases.map(
        (db) => html`<li class="card">
          <a href=${href("databases", db.id)}><strong>${db.name}</strong></a> <code>${db.id}</code>
          ${!db.enabled && html` <span class="badge warn">disabled</span>`}
          <div class="muted">created ${formatDate(db.createdAt)}</div>
        </li>`,
      )}
      ${!list.data.databases.length && html`<li class="muted">No databases yet.</li>`}
    </ul>`}
  </section>`;
}

export function DatabasePage({ databaseId }) {
  const list = useAsync(
    () =>
      api.gql(
        `query ConsoleCollections($db: ID!) {
          database(id: $db) { id name }
          collections(databaseId: $db) { id name graphqlName documentSecurity permissions attributes { key } }
        }`,
        { db: databaseId },
      ),
    [databaseId],
  );
  const [id, setId] = useState("");
  const [name, setName] = useState("");
  const [documentSecurity, setDocumentSecurity] = useState(false);
  const [permissions, setPermissions] = useState([]);
  const create = useAction(() =>
    api.gql(
      `mutation ConsoleCreateCollection($input: CreateCollectionInput!) { createCollection(input: $input) { id } }`,
      { input: { databaseId, name, documentSecurity, permissions, ...(id ? { id } : {}) } },
    ),
  );
  const submit = async (e) => {
    e.preventDefault();
    const data = await create.run();
    if (data) location.hash = href("databases", databaseId, data.createCollection.id);
  };
  return html`<section aria-labelledby="coll-title">
    <p><a href=${href("databases")}>Databases</a> /</p>
    <h1 id="coll-title">Database ${databaseId}</h1>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="collections" />`}
    ${list.data &&
    html`<ul class="plain cards">
      ${list.data.collections.map(
        (c) => html`<li class="card">
          <a href=${href("databases", databaseId, c.id)}><strong>${c.name}</strong></a> <code>${c.id}</code>
          <div class="muted">${c.attributes.length} attributes · GraphQL type ${c.graphqlName}</div>
          <div class="muted">${summarizePermissions(c.permissions).join(" ")}</div>
          <a href=${href("databases", databaseId, c.id, "documents")}>Documents</a>
        </li>`,
      )}
      ${!list.data.collections.length && html`<li class="muted">No collections yet.</li>`}
    </ul>`}
    <form class="card" onSubmit=${submit} aria-labelledby="new-coll">
      <h2 id="new-coll">New collection</h2>
      <div class="row">
        <${Field} label="Name" value=${name} onInput=${setName} required />
        <${Field} label="Id (optional)" value=${id} onInput=${setId} />
      </div>
      <${Check}
        label="Document security (each document's own permissions count too)"
        checked=${documentSecurity}
        onChange=${setDocumentSecurity}
      />
      <${PermissionsEditor} value=${permissions} onChange=${setPermissions} />
      <button disabled=${create.pending}>Create collection</button>
      <${ErrorBox} error=${create.error} />
    </form>
    <details class="card">
      <summary>Delete this database</summary>
      <${TypedConfirm}
        word=${databaseId}
        label="Delete database"
        action=${() =>
          api.gql(`mutation ConsoleDeleteDatabase($input: DeleteDatabaseInput!) { deleteDatabase(input: $input) { __typename } }`, {
            input: { id: databaseId },
          })}
        onDone=${() => (location.hash = href("databases"))}
      />
    </details>
  </section>`;
}

const TYPE_HELP = {
  STRING: "Text of at most Size characters.",
  INTEGER: "A whole number (64-bit), optionally within min…max.",
  FLOAT: "A number, optionally within min…max.",
  BOOLEAN: "true or false.",
  DATETIME: "A date and time (ISO 8601).",
  EMAIL: "Text that must be an email address.",
  URL: "Text that must be a URL.",
  IP: "An IPv4 or IPv6 address.",
  ENUM: "One of a fixed list of elements.",
  VARCHAR: "Text of at most Size characters (up to 16,381), as Appwrite's varchar.",
  TEXT: "Text of at most 65,535 characters.",
  MEDIUMTEXT: "Text of at most 16,777,215 characters.",
  LONGTEXT: "Text of at most 1,073,741,824 characters.",
  POINT: "A point [x, y]: longitude, latitude.",
  LINE: "A line [[x, y], [x, y], …] of two points or more.",
  POLYGON: "A polygon [[[x, y], …]]: closed rings, the first its outline.",
};

const SHAPES = ["POINT", "LINE", "POLYGON"];

/** The JSON value typed in a default/min/max box, as the attribute's type wants it. */
function typedValue(type, text) {
  if (text === "") return undefined;
  if (type === "INTEGER") return Number.parseInt(text, 10);
  if (type === "FLOAT") return Number.parseFloat(text);
  if (type === "BOOLEAN") return text === "true";
  if (SHAPES.includes(type)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function AttributeForm({ databaseId, collectionId, onCreated }) {
  const [key, setKey] = useState("");
  const [type, setType] = useState("STRING");
  const [size, setSize] = useState("255");
  const [min, setMin] = useState("");
  const [max, setMax] = useState("");
  const [elements, setElements] = useState("");
  const [required, setRequired] = useState(false);
  const [array, setArray] = useState(false);
  const [def, setDef] = useState("");
  const create = useAction(() => {
    const attribute = { key, type, required, array: array && !SHAPES.includes(type) };
    if (type === "STRING" || type === "VARCHAR") attribute.size = Number.parseInt(size, 10);
    if (type === "INTEGER" || type === "FLOAT") {
      if (min !== "") attribute.min = typedValue(type, min);
      if (max !== "") attribute.max = typedValue(type, max);
    }
    if (type === "ENUM") attribute.elements = elements.split(",").map((s) => s.trim()).filter(Boolean);
    if (def !== "" && !required) attribute.default = typedValue(type, def);
    return api.gql(
      `mutation ConsoleCreateAttribute($input: CreateAttributeInput!) { createAttribute(input: $input) { id } }`,
      { input: { databaseId, collectionId, attribute } },
    );
  });
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setKey("");
      setDef("");
      setRequired(false);
      setArray(false);
      onCreated();
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-attr">
    <h3 id="new-attr">New attribute</h3>
    <div class="row">
      <${Field} label="Key" value=${key} onInput=${setKey} required />
      <${Select} label="Type" value=${type} onChange=${setType} options=${Object.keys(TYPE_HELP)} />
      ${(type === "STRING" || type === "VARCHAR") && html`<${Field} label="Size" type="number" min="1" value=${size} onInput=${setSize} required />`}
      ${(type === "INTEGER" || type === "FLOAT") &&
      html`<${Field} label="Minimum" type="number" step="any" value=${min} onInput=${setMin} />
        <${Field} label="Maximum" type="number" step="any" value=${max} onInput=${setMax} />`}
      ${type === "ENUM" && html`<${Field} label="Elements (comma-separated)" value=${elements} onInput=${setElements} required />`}
      ${!required && html`<${Field} label="Default (optional)" value=${def} onInput=${setDef} />`}
    </div>
    <p class="muted">${TYPE_HELP[type]}</p>
    <div class="row">
      <${Check} label="Required" checked=${required} onChange=${setRequired} />
      ${!SHAPES.includes(type) && html`<${Check} label="Array" checked=${array} onChange=${setArray} />`}
      <button disabled=${create.pending}>Add attribute</button>
    </div>
    <${ErrorBox} error=${create.error} />
  </form>`;
}

function IndexForm({ databaseId, collectionId, attributes, onCreated }) {
  const [key, setKey] = useState("");
  const [type, setType] = useState("KEY");
  const [chosen, setChosen] = useState([]);
  const [order, setOrder] = useState("ASC");
  const create = useAction(() =>
    api.gql(`mutation ConsoleCreateIndex($input: CreateIndexInput!) { createIndex(input: $input) { id } }`, {
      input: {
        databaseId,
        collectionId,
        // Full-text and spatial indexes have no order.
        index: { key, type, attributes: chosen, orders: type === "KEY" || type === "UNIQUE" ? chosen.map(() => order) : [] },
      },
    }),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setKey("");
      setChosen([]);
      onCreated();
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-index">
    <h3 id="new-index">New index</h3>
    <div class="row">
      <${Field} label="Index key" value=${key} onInput=${setKey} required />
      <${Select} label="Index type" value=${type} onChange=${setType} options=${["KEY", "UNIQUE", "FULLTEXT", "SPATIAL"]} />
      <${Select} label="Order" value=${order} onChange=${setOrder} options=${["ASC", "DESC"]} />
    </div>
    <fieldset>
      <legend>Attributes, in order</legend>
      ${attributes.map(
        (a) => html`<${Check}
          label=${a.key}
          checked=${chosen.includes(a.key)}
          onChange=${(on) => setChosen(on ? [...chosen, a.key] : chosen.filter((k) => k !== a.key))}
        />`,
      )}
    </fieldset>
    <button disabled=${create.pending || !chosen.length}>Add index</button>
    <${ErrorBox} error=${create.error} />
  </form>`;
}

/**
 * What each relationship type gives each side, in the words of the two
 * collections: the form shows it beside the type picked.
 */
function relationshipHelp(type, here, there) {
  switch (type) {
    case "MANY_TO_ONE":
      return [
        `Each document of ${here} names at most one document of ${there} in the key.`,
        `Each document of ${there} can be named by any number of ${here}; the reverse key (optional) lists them there.`,
      ];
    case "ONE_TO_ONE":
      return [
        `Each document of ${here} names at most one document of ${there} in the key.`,
        `Each document of ${there} is named by at most one of ${here}; the reverse key (optional) names it there.`,
      ];
    case "ONE_TO_MANY":
      return [
        `Each document of ${here} lists any number of documents of ${there} in the key.`,
        `Each document of ${there} belongs to at most one of ${here}, named in the reverse key (required: the reference is stored there).`,
      ];
    default:
      return [
        `Each document of ${here} lists any number of documents of ${there} in the key.`,
        `Each document of ${there} lists any number of ${here} in the reverse key (optional); links go when either document does.`,
      ];
  }
}

const ON_DELETE_HELP = {
  RESTRICT: "refuse to delete a document while others refer to it",
  CASCADE: "delete the documents that refer to it too",
  SET_NULL: "clear the reference of the documents that refer to it",
};

function RelationshipForm({ databaseId, collectionId, onCreated }) {
  const others = useAsync(
    () => api.gql(`query ConsoleRelatable($db: ID!) { collections(databaseId: $db) { id name } }`, { db: databaseId }),
    [databaseId],
  );
  const [key, setKey] = useState("");
  const [type, setType] = useState("MANY_TO_ONE");
  const [related, setRelated] = useState("");
  const [twoWayKey, setTwoWayKey] = useState("");
  const [onDelete, setOnDelete] = useState("RESTRICT");
  const collections = others.data ? others.data.collections : [];
  const target = related || (collections[0] && collections[0].id) || "";
  const create = useAction(() =>
    api.gql(`mutation ConsoleCreateRelationship($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }`, {
      input: {
        databaseId,
        collectionId,
        key,
        relatedCollectionId: target,
        type,
        ...(twoWayKey ? { twoWayKey } : {}),
        ...(type === "MANY_TO_MANY" ? {} : { onDelete }),
      },
    }),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setKey("");
      setTwoWayKey("");
      onCreated();
    }
  };
  const [sideHere, sideThere] = relationshipHelp(type, collectionId, target || "the other collection");
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-rel">
    <h3 id="new-rel">New relationship</h3>
    <${ErrorBox} error=${others.error} />
    <div class="row">
      <${Field} label="Relationship key" value=${key} onInput=${setKey} required />
      <${Select}
        label="Relationship type"
        value=${type}
        onChange=${setType}
        options=${[
          ["MANY_TO_ONE", "many to one"],
          ["ONE_TO_ONE", "one to one"],
          ["ONE_TO_MANY", "one to many"],
          ["MANY_TO_MANY", "many to many"],
        ]}
      />
      <${Select} label="Related collection" value=${target} onChange=${setRelated} options=${collections.map((c) => [c.id, c.name])} />
      <${Field}
        label=${type === "ONE_TO_MANY" ? "Reverse key (required)" : "Reverse key (optional)"}
        value=${twoWayKey}
        onInput=${setTwoWayKey}
        required=${type === "ONE_TO_MANY"}
      />
      ${type !== "MANY_TO_MANY" &&
      html`<${Select}
        label="On delete"
        value=${onDelete}
        onChange=${setOnDelete}
        options=${Object.keys(ON_DELETE_HELP).map((k) => [k, k])}
      />`}
    </div>
    <ul class="muted" data-testid="relationship-help">
      <li>${sideHere}</li>
      <li>${sideThere}</li>
      ${type !== "MANY_TO_MANY" && html`<li>Deleting a document of ${type === "ONE_TO_MANY" ? collectionId : target}: ${ON_DELETE_HELP[onDelete]}.</li>`}
    </ul>
    <button disabled=${create.pending || !target}>Add relationship</button>
    <${ErrorBox} error=${create.error} />
  </form>`;
}

function CollectionPermissions({ collection, onSaved }) {
  const [permissions, setPermissions] = useState(collection.permissions);
  const [documentSecurity, setDocumentSecurity] = useState(collection.documentSecurity);
  const save = useAction(() =>
    api.gql(
      `mutation ConsoleUpdateCollection($input: UpdateCollectionInput!) { updateCollection(input: $input) { id } }`,
      { input: { databaseId: collection.databaseId, id: collection.id, permissions, documentSecurity } },
    ),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await save.run()) onSaved();
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="coll-perms">
    <h2 id="coll-perms">Permissions</h2>
    <${Check} label="Document security" checked=${documentSecurity} onChange=${setDocumentSecurity} />
    <${PermissionsEditor} value=${permissions} onChange=${setPermissions} />
    <button disabled=${save.pending}>Save permissions</button>
    <${ErrorBox} error=${save.error} />
  </form>`;
}

const TYPED_FIELDS = `query ConsoleTypedFields($type: String!) {
  __type(name: $type) { fields { name } }
  __schema {
    queryType { fields { name type { name ofType { name } } } }
    mutationType { fields { name } }
    subscriptionType { fields { name } }
  }
}`;

/** The collection's typed GraphQL operations, read from the live schema, and a codegen setup. */
function Codegen({ collection }) {
  const type = collection.graphqlName;
  const [open, setOpen] = useState(false);
  const data = useAsync(() => (open ? api.gql(TYPED_FIELDS, { type }) : null), [open, type]);
  let body = null;
  if (data.data) {
    const schema = data.data.__schema;
    const returns = (f, name) => f.type.name === name || (f.type.ofType && f.type.ofType.name === name);
    const single = schema.queryType.fields.find((f) => returns(f, type));
    const list = schema.queryType.fields.find((f) => returns(f, `${type}Connection`));
    const mine = (fields) => (fields || []).map((f) => f.name).filter((n) => n.includes(type) || (list && n.toLowerCase().includes(list.name.toLowerCase())));
    const fields = data.data.__type ? data.data.__type.fields.map((f) => f.name).filter((n) => !n.startsWith("__")) : [];
    const selection = fields.filter((f) => !["permissions"].includes(f)).join(" ");
    const query = list
      ? `query List${type}($after: String) {
  ${list.name}(first: 20, after: $after) {
    nodes { ${selection} }
    pageInfo { hasNextPage endCursor }
  }
}${single ? `

query Get${type}($id: ID!) {
  ${single.name}(id: $id) { ${selection} }
}` : ""}`
      : "# No typed fields found for this collection.";
    const project = api.currentProject();
    const codegen = `# codegen.yml (GraphQL Code Generator), typed from this project's live schema
schema:
  - ${location.origin}/v1/graphql/schema.graphql:
      headers:
        X-Nimbus-Project: ${project}
documents: src/**/*.graphql
generates:
  src/gql/:
    preset: client`;
    const names = (list) => (list.length ? list.map((n) => html`<code>${n}</code> `) : "none");
    body = html`<p>Queries: ${names([single, list].filter(Boolean).map((f) => f.name))}</p>
      <p>Mutations: ${names(mine(schema.mutationType && schema.mutationType.fields))}</p>
      <p>Subscriptions: ${names(mine(schema.subscriptionType && schema.subscriptionType.fields))}</p>
      <pre class="block">${query}</pre>
      <div class="row"><${CopyButton} text=${query} label="Copy operations" /></div>
      <pre class="block">${codegen}</pre>
      <div class="row"><${CopyButton} text=${codegen} label="Copy codegen.yml" /></div>`;
  }
  return html`<details class="card" onToggle=${(e) => setOpen(e.target.open)}>
    <summary>Typed GraphQL operations and codegen (type <code>${type}</code>)</summary>
    <${ErrorBox} error=${data.error} />
    ${open && data.loading && html`<${Loading} what="the schema" />`}
    ${body}
  </details>`;
}

export function CollectionPage({ databaseId, collectionId }) {
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleCollection($db: ID!, $id: ID!) {
          collection(databaseId: $db, id: $id) {
            id databaseId name graphqlName documentSecurity permissions
            attributes { key type required array default size min max elements }
            indexes { key type attributes orders }
            relationships { key relatedCollectionId type twoWayKey onDelete }
          }
        }`,
        { db: databaseId, id: collectionId },
      ),
    [databaseId, collectionId],
  );
  const drop = async (what, key) => {
    const mutation =
      what === "attribute"
        ? `mutation ConsoleDeleteAttribute($input: DeleteAttributeInput!) { deleteAttribute(input: $input) { id } }`
        : `mutation ConsoleDeleteIndex($input: DeleteIndexInput!) { deleteIndex(input: $input) { id } }`;
    if (!confirm(`Delete the ${what} ${key}?`)) return;
    try {
      await api.gql(mutation, { input: { databaseId, collectionId, key } });
    } catch (err) {
      alert(`${err.message} (${err.code})`);
    }
    data.reload();
  };
  const collection = data.data && data.data.collection;
  return html`<section aria-labelledby="collection-title">
    <p><a href=${href("databases")}>Databases</a> / <a href=${href("databases", databaseId)}>${databaseId}</a> /</p>
    <h1 id="collection-title">Collection ${collectionId}</h1>
    <${ErrorBox} error=${data.error} />
    ${data.loading && !collection && html`<${Loading} what="the collection" />`}
    ${collection &&
    html`<p><a class="button" href=${href("databases", databaseId, collectionId, "documents")}>Browse documents</a></p>
      <h2>Attributes</h2>
      <div class="table-wrap">
        <table>
          <thead>
            <tr><th scope="col">Key</th><th scope="col">Type</th><th scope="col">Details</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
          </thead>
          <tbody>
            ${collection.attributes.map(
              (a) => html`<tr>
                <td><code>${a.key}</code></td>
                <td>${a.type}${a.array ? "[]" : ""}</td>
                <td class="muted">
                  ${[
                    a.required && "required",
                    a.size != null && `size ${a.size}`,
                    a.min != null && `min ${a.min}`,
                    a.max != null && `max ${a.max}`,
                    a.elements && `one of ${a.elements.join(", ")}`,
                    a.default != null && `default ${JSON.stringify(a.default)}`,
                  ]
                    .filter(Boolean)
                    .join(" · ")}
                </td>
                <td><button class="link" onClick=${() => drop("attribute", a.key)} aria-label=${`Delete attribute ${a.key}`}>Delete</button></td>
              </tr>`,
            )}
          </tbody>
        </table>
      </div>
      <${AttributeForm} databaseId=${databaseId} collectionId=${collectionId} onCreated=${data.reload} />
      <h2>Indexes</h2>
      <ul class="plain">
        ${collection.indexes.map(
          (i) => html`<li>
            <code>${i.key}</code> ${i.type} on ${i.attributes.map((a, n) => `${a} ${i.orders[n] || ""}`).join(", ")}
            <button class="link" onClick=${() => drop("index", i.key)} aria-label=${`Delete index ${i.key}`}>Delete</button>
          </li>`,
        )}
        ${!collection.indexes.length && html`<li class="muted">No indexes.</li>`}
      </ul>
      <${IndexForm}
        databaseId=${databaseId}
        collectionId=${collectionId}
        attributes=${collection.attributes}
        onCreated=${data.reload}
      />
      <h2>Relationships</h2>
      <ul class="plain" aria-label="Relationships">
        ${collection.relationships.map(
          (r) => html`<li>
            <code>${r.key}</code> ${r.type} → ${r.relatedCollectionId}${r.twoWayKey ? html` (reverse <code>${r.twoWayKey}</code>)` : ""}, on
            delete ${r.onDelete}
            <button class="link" onClick=${() => drop("attribute", r.key)} aria-label=${`Delete relationship ${r.key}`}>Delete</button>
          </li>`,
        )}
        ${!collection.relationships.length && html`<li class="muted">No relationships.</li>`}
      </ul>
      <${RelationshipForm} databaseId=${databaseId} collectionId=${collectionId} onCreated=${data.reload} />
      <${CollectionPermissions} key=${collection.permissions.join()} collection=${collection} onSaved=${data.reload} />
      <${Codegen} collection=${collection} />
      <details class="card">
        <summary>Delete this collection</summary>
        <${TypedConfirm}
          word=${collectionId}
          label="Delete collection"
          action=${() =>
            api.gql(
              `mutation ConsoleDeleteCollection($input: DeleteCollectionInput!) { deleteCollection(input: $input) { __typename } }`,
              { input: { databaseId, id: collectionId } },
            )}
          onDone=${() => (location.hash = href("databases", databaseId))}
        />
      </details>`}
  </section>`;
}
