// Creates the `blog` database with its `authors` and `posts` collections.
// Idempotent: whatever already exists is left as it is.
//
//   NIMBUS_ADMIN_KEY=nk_… npx tsx scripts/setup.ts
//
// Structure is managed with the untyped admin mutations (`createDatabase`,
// `createCollection`); the typed API they produce is what `src/` uses.

const url = process.env.NIMBUS_URL ?? "http://127.0.0.1:8080";
const project = process.env.NIMBUS_PROJECT ?? "default";
const key = process.env.NIMBUS_ADMIN_KEY;
if (!key) {
  console.error("setup: NIMBUS_ADMIN_KEY is required (an API key with scope `admin` or `databases.write`)");
  process.exit(1);
}

interface GraphQLError {
  message: string;
  extensions?: { code?: string };
}

/** Sends one operation with the admin key. */
async function send<T>(query: string, variables: Record<string, unknown>): Promise<{ status: number; data: T | null | undefined; errors: GraphQLError[] }> {
  const response = await fetch(`${url}/v1/graphql`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json",
      "X-Nimbus-Project": project,
      "X-Nimbus-Key": key!,
    },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  let body: { data?: T | null; errors?: GraphQLError[] };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    throw new Error(`setup: HTTP ${response.status} from ${url}/v1/graphql: ${text.slice(0, 500)}`);
  }
  return { status: response.status, data: body.data, errors: body.errors ?? [] };
}

/** Runs a query; throws on any error. */
async function query<T>(text: string, variables: Record<string, unknown>): Promise<T> {
  const { status, data, errors } = await send<T>(text, variables);
  if (errors.length || data == null) throw new Error(`setup: HTTP ${status}: ${JSON.stringify(errors)}`);
  return data;
}

/** Runs a create mutation; returns the error code when what it creates already exists. */
async function create(text: string, variables: Record<string, unknown>): Promise<string | undefined> {
  const { status, errors } = await send(text, variables);
  if (errors.length === 0 && status < 300) return undefined;
  const code = errors[0]?.extensions?.code;
  if (errors.length === 1 && code?.endsWith("_ALREADY_EXISTS")) return code;
  throw new Error(`setup: HTTP ${status}: ${JSON.stringify(errors)}`);
}

const CREATE_DATABASE = `mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }`;
const CREATE_RELATIONSHIP = `mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }`;
const CREATE_COLLECTION = `mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id graphqlName } }`;

const permissions = ['read("any")', 'create("users")', 'update("users")', 'delete("users")'];

const steps: Array<[string, string, Record<string, unknown>]> = [
  ["database blog", CREATE_DATABASE, { id: "blog", name: "Blog" }],
  [
    "collection authors",
    CREATE_COLLECTION,
    {
      databaseId: "blog",
      id: "authors",
      name: "authors",
      documentSecurity: false,
      permissions,
      attributes: [
        { key: "name", type: "STRING", size: 100, required: true },
        { key: "email", type: "EMAIL" },
      ],
    },
  ],
  [
    "collection posts",
    CREATE_COLLECTION,
    {
      databaseId: "blog",
      id: "posts",
      name: "posts",
      documentSecurity: false,
      permissions,
      attributes: [
        { key: "title", type: "STRING", size: 200, required: true },
        { key: "body", type: "STRING", size: 5000 },
        { key: "views", type: "INTEGER", min: 0, max: 1000000, default: 0 },
        { key: "published", type: "BOOLEAN", default: false },
      ],
      indexes: [
        { key: "by_views", type: "KEY", attributes: ["views"] },
        { key: "by_published_views", type: "KEY", attributes: ["published", "views"], orders: ["ASC", "DESC"] },
      ],
    },
  ],
  [
    "relationship posts.author → authors",
    CREATE_RELATIONSHIP,
    {
      databaseId: "blog",
      collectionId: "posts",
      key: "author",
      relatedCollectionId: "authors",
      type: "MANY_TO_ONE",
      twoWayKey: "posts",
      onDelete: "SET_NULL",
    },
  ],
];

const LIST_COLLECTIONS = `query($databaseId: ID!) { collections(databaseId: $databaseId) { id } }`;

for (const [what, mutation, input] of steps) {
  if (mutation === CREATE_RELATIONSHIP) {
    // A relationship that exists is kept: its key is taken on a second run.
    const { collection } = await query<{ collection: { relationships: Array<{ key: string }> } }>(
      `query($databaseId: ID!, $id: ID!) { collection(databaseId: $databaseId, id: $id) { relationships { key } } }`,
      { databaseId: input.databaseId, id: input.collectionId },
    );
    if (collection.relationships.some((r) => r.key === input.key)) {
      if (process.env.NIMBUS_VERBOSE) console.log(`setup: ${what}: exists, kept`);
      continue;
    }
  }
  if (mutation === CREATE_COLLECTION) {
    // An existing collection is kept as it is.
    const { collections } = await query<{ collections: Array<{ id: string }> }>(LIST_COLLECTIONS, {
      databaseId: input.databaseId,
    });
    if (collections.some((c) => c.id === input.id)) {
      if (process.env.NIMBUS_VERBOSE) console.log(`setup: ${what}: exists, kept`);
      continue;
    }
  }
  const existing = await create(mutation, { input });
  if (existing && process.env.NIMBUS_VERBOSE) console.log(`setup: ${what}: ${existing}, kept`);
}
