// Talking to the server: GraphQL over HTTP, graphql-ws subscriptions, file bytes
// through fetch, and console sign-in. Every request goes to this page's origin and
// carries the credential explicitly: an admin API key (X-Nimbus-Key, kept in
// sessionStorage only) or the console session's CSRF token (X-Nimbus-CSRF) beside
// its HttpOnly cookie. A cookie alone is never relied on.

const KEY_STORAGE = "nimbus.console.key";
const PROJECT_STORAGE = "nimbus.console.project";

const credential = {
  key: sessionStorage.getItem(KEY_STORAGE),
  csrf: null,
  email: null,
};

let project = localStorage.getItem(PROJECT_STORAGE) || "default";

/** An error from the server (or the network), with its stable code. */
export class ApiError extends Error {
  constructor(message, code, details) {
    super(message);
    this.code = code || "ERROR";
    this.details = details || [];
  }
}

export function currentProject() {
  return project;
}

export function setProject(id) {
  project = id;
  localStorage.setItem(PROJECT_STORAGE, id);
}

/** Who is signed in: `{ kind: "key" }`, `{ kind: "session", email }` or null. */
export function signedIn() {
  if (credential.key) return { kind: "key" };
  if (credential.csrf) return { kind: "session", email: credential.email };
  return null;
}

/** The headers that make a request the signed-in administrator's, in `projectId`. */
export function authHeaders(projectId = project) {
  const headers = { "X-Nimbus-Project": projectId };
  if (credential.key) headers["X-Nimbus-Key"] = credential.key;
  else if (credential.csrf) headers["X-Nimbus-CSRF"] = credential.csrf;
  return headers;
}

/** The `connection_init` payload of a WebSocket in `projectId`. */
function connectionInit(projectId) {
  const payload = { "X-Nimbus-Project": projectId };
  if (credential.key) payload["X-Nimbus-Key"] = credential.key;
  else if (credential.csrf) payload.csrf = credential.csrf;
  return payload;
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function send(url, init) {
  try {
    return await fetch(url, { credentials: "same-origin", ...init });
  } catch (err) {
    throw new ApiError(`the server could not be reached (${err.message})`, "NETWORK_ERROR");
  }
}

/** Codes that mean the credential this tab holds no longer works. */
const LOST = ["INVALID_API_KEY", "API_KEY_EXPIRED", "SESSION_EXPIRED"];

/** Forgets the credential and tells the application, which goes back to sign-in. */
async function credentialLost(error) {
  if (credential.key) {
    credential.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
  } else if (credential.csrf) {
    // A request that comes back anonymous may mean the session ended: ask.
    try {
      await consoleApi("GET", "session");
      return;
    } catch {
      credential.csrf = null;
      credential.email = null;
    }
  } else {
    return;
  }
  dispatchEvent(new CustomEvent("nimbus:signed-out", { detail: error }));
}

/** Runs a GraphQL operation; its data, or an ApiError with the first error's code. */
export async function gql(query, variables = {}, { projectId, probe = false } = {}) {
  const response = await send("/v1/graphql", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json, application/json",
      ...authHeaders(projectId || project),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await readJson(response);
  if (!body) {
    throw new ApiError(`the server answered HTTP ${response.status}`, `HTTP_${response.status}`);
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const error = new ApiError(first.message, first.extensions && first.extensions.code, body.errors);
    const lost = LOST.includes(error.code) || (error.code === "UNAUTHENTICATED" && credential.csrf);
    if (lost && !probe) await credentialLost(error);
    throw error;
  }
  return body.data;
}

/** A JSON call to the console's sign-in API; its body, or an ApiError. */
async function consoleApi(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && credential.csrf) headers["X-Nimbus-CSRF"] = credential.csrf;
  const response = await send(`/console/api/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const parsed = await readJson(response);
  if (!response.ok) {
    const error = parsed && parsed.error;
    const retry = response.headers.get("Retry-After");
    let message = (error && error.message) || `the server answered HTTP ${response.status}`;
    if (retry) message += ` (try again in ${retry} s)`;
    throw new ApiError(message, (error && error.code) || `HTTP_${response.status}`);
  }
  return parsed;
}

function takeSession(session) {
  credential.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  credential.csrf = session.csrf;
  credential.email = session.email;
  return session;
}

/** Restores the sign-in this tab had: its API key, or a live console session. */
export async function restore() {
  if (credential.key) return signedIn();
  try {
    takeSession(await consoleApi("GET", "session"));
    return signedIn();
  } catch {
    return null;
  }
}

/** Signs in with an admin API key: kept only if it holds the `admin` scope. */
export async function signInWithKey(key) {
  const previous = credential.key;
  credential.key = key.trim();
  try {
    await gql("query ConsoleSignIn { projects(first: 1) { totalCount } }", {}, { probe: true });
  } catch (err) {
    credential.key = previous;
    throw err;
  }
  sessionStorage.setItem(KEY_STORAGE, credential.key);
  return signedIn();
}

/** Signs in as a console administrator; `MFA_REQUIRED` asks for `otp`. */
export async function signInWithPassword(email, password, otp) {
  const body = { email, password };
  if (otp) body.otp = otp;
  takeSession(await consoleApi("POST", "session", body));
  return signedIn();
}

/** The console session as the server has it now: `{ email, csrf, expiresAt, totp }`. */
export function consoleSession() {
  return consoleApi("GET", "session");
}

/** Starts TOTP enrolment for the signed-in administrator: `{ secret, uri }`. */
export function startTotp() {
  return consoleApi("POST", "totp", {});
}

/** Activates the TOTP enrolment with a first code from the authenticator. */
export function verifyTotp(otp) {
  return consoleApi("POST", "totp/verify", { otp });
}

/** Removes TOTP, proven with a current code. */
export function removeTotp(otp) {
  return consoleApi("DELETE", "totp", { otp });
}

export async function signOut() {
  if (credential.key) {
    credential.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    return;
  }
  try {
    await consoleApi("DELETE", "session");
  } finally {
    credential.csrf = null;
    credential.email = null;
  }
}

/** The bytes at a same-origin URL (a file preview), as an object URL. */
export async function objectUrl(url, projectId = project) {
  const response = await send(url, { headers: authHeaders(projectId) });
  if (!response.ok) {
    const body = await readJson(response);
    const error = body && ((body.errors && body.errors[0]) || body.error);
    throw new ApiError(
      (error && error.message) || `HTTP ${response.status}`,
      (error && ((error.extensions && error.extensions.code) || error.code)) || `HTTP_${response.status}`,
    );
  }
  return URL.createObjectURL(await response.blob());
}

/** How often a chunk is tried again after the connection or the server failed it. */
const UPLOAD_ATTEMPTS = 5;

/** Where an upload stands on the server: the byte its next chunk starts at. */
async function uploadOffset(bucketId, fileId, size) {
  let data;
  try {
    data = await gql(
      `query ConsoleUploadState($bucket: ID!, $file: ID!) {
        fileUpload(bucketId: $bucket, fileId: $file) { status size chunkSize chunksUploaded }
      }`,
      { bucket: bucketId, file: fileId },
    );
  } catch (error) {
    // The chunk whose answer was lost was the last one.
    if (error.code === "UPLOAD_COMPLETE") return size;
    throw error;
  }
  const f = data.fileUpload;
  return f.status === "READY" ? f.size : f.chunksUploaded * f.chunkSize;
}

/** A chunk failure worth trying again: the request never got an answer, or the
 * server could not take it just then. */
function transient(error) {
  return error.code === "NETWORK_ERROR" || error.code === "UPLOAD_CHUNK_OUT_OF_ORDER" || /^HTTP_(408|429|5\d\d)$/.test(error.code);
}

/**
 * Uploads `file` to a bucket in chunks (resumable upload), reporting progress
 * 0..1 and, while it waits to resume, `onProgress(fraction, { resuming: true })`.
 * A chunk whose request fails (the connection dropped, the server restarted) is
 * not sent blindly again: the server is asked where the upload stands, and the
 * upload goes on from there. The upload's id is kept for the tab, so choosing the
 * same file again (after a reload) resumes it instead of starting over.
 */
export async function uploadFile(bucketId, file, onProgress) {
  const remembered = `nimbus.upload:${project}:${bucketId}:${file.name}:${file.size}:${file.lastModified}`;
  let upload = null;
  let offset = 0;
  const earlier = sessionStorage.getItem(remembered);
  if (earlier) {
    try {
      upload = JSON.parse(earlier);
      offset = await uploadOffset(bucketId, upload.id, file.size);
    } catch {
      // Gone (deleted, expired) or unreadable: start again.
      upload = null;
      offset = 0;
      sessionStorage.removeItem(remembered);
    }
  }
  if (!upload) {
    const data = await gql(
      `mutation ConsoleUpload($input: CreateFileUploadInput!) {
        createFileUpload(input: $input) { id chunkSize uploadUrl }
      }`,
      { input: { bucketId, name: file.name, size: file.size } },
    );
    upload = data.createFileUpload;
    sessionStorage.setItem(remembered, JSON.stringify(upload));
  }
  const url = upload.uploadUrl || `/v1/storage/buckets/${bucketId}/files/${upload.id}/upload`;
  let failures = 0;
  onProgress(offset / file.size);
  // (An empty file is refused by createFileUpload already.)
  while (offset < file.size) {
    const end = Math.min(offset + upload.chunkSize, file.size);
    let body;
    try {
      const response = await send(url, {
        method: "PUT",
        headers: {
          ...authHeaders(),
          "Content-Type": "application/octet-stream",
          "Content-Range": `bytes ${offset}-${end - 1}/${file.size}`,
        },
        body: file.slice(offset, end),
      });
      body = await readJson(response);
      if (!response.ok) {
        const error = body && ((body.errors && body.errors[0]) || body.error);
        throw new ApiError(
          (error && error.message) || `HTTP ${response.status}`,
          (error && ((error.extensions && error.extensions.code) || error.code)) || `HTTP_${response.status}`,
        );
      }
    } catch (error) {
      if (!transient(error) || ++failures >= UPLOAD_ATTEMPTS) throw error;
      onProgress(offset / file.size, { resuming: true });
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** failures));
      offset = await uploadOffset(bucketId, upload.id, file.size);
      onProgress(offset / file.size);
      continue;
    }
    failures = 0;
    offset = body.status === "READY" ? file.size : body.nextOffset;
    onProgress(offset / file.size);
    if (body.status === "READY") break;
  }
  sessionStorage.removeItem(remembered);
  return upload.id;
}

/**
 * Subscribes over graphql-transport-ws. `onEvent(data)` gets each result,
 * `onError(ApiError)` a failure; the function returned closes the socket.
 */
export function subscribe(query, variables, { onEvent, onError, onOpen }, projectId = project) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/graphql/ws`, "graphql-transport-ws");
  let closed = false;
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "connection_init", payload: connectionInit(projectId) }));
  };
  socket.onmessage = (message) => {
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "connection_ack":
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
        if (onOpen) onOpen();
        break;
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "next":
        if (frame.payload.errors && frame.payload.errors.length) {
          const first = frame.payload.errors[0];
          onError(new ApiError(first.message, first.extensions && first.extensions.code));
        } else {
          onEvent(frame.payload.data);
        }
        break;
      case "error": {
        const first = (frame.payload && frame.payload[0]) || {};
        onError(new ApiError(first.message || "subscription refused", first.extensions && first.extensions.code));
        break;
      }
      case "complete":
        onError(new ApiError("the server ended the subscription", "COMPLETE"));
        break;
    }
  };
  socket.onclose = (event) => {
    if (!closed) {
      closed = true;
      onError(new ApiError(event.reason || `the connection closed (code ${event.code})`, "CONNECTION_CLOSED"));
    }
  };
  return () => {
    closed = true;
    socket.close(1000);
  };
}
