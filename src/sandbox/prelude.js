// The guest API, evaluated in every fresh context before the deployment's code.
// It is compiled once per process; the host passes its native functions to `setup`
// and never exposes them as globals, so the guest reaches the host only through
// what this module builds. Builtins are captured here, before guest code runs, so
// a guest that overwrites `JSON` or `Map` only breaks its own execution.

const { parse, stringify } = JSON;
const PMap = Map;
const PWeakMap = WeakMap;
const PPromise = Promise;
const PArrayBuffer = ArrayBuffer;
const PUint8Array = Uint8Array;
const isView = ArrayBuffer.isView;
const freeze = Object.freeze;
const defineProperty = Object.defineProperty;
const entries = Object.entries;

let host;
let responseLimit = 0;
const pending = new PMap();
// The answers `res.*` made, by the handle each returned to the guest.
const answers = new PWeakMap();

function bytes(value) {
  if (value instanceof PArrayBuffer) return value;
  if (isView(value)) return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
  return undefined;
}

function show(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}` : String(value);
  if (typeof value === 'object' && value !== null) {
    try {
      const text = stringify(value);
      if (text !== undefined) return text;
    } catch (_) {
      // cyclic or throwing: fall back to its string form
    }
  }
  return String(value);
}

function writer(stream) {
  return (...args) => {
    host.log(stream, args.map(show).join(' '));
  };
}

// One pending host operation: the host answers through `settle` with the id.
function hostCall(start) {
  return new PPromise((resolve, reject) => {
    const id = start();
    pending.set(id, [resolve, reject]);
  });
}

export function settle(id, ok, value) {
  const entry = pending.get(id);
  if (entry === undefined) return;
  pending.delete(id);
  if (ok) entry[0](value);
  else entry[1](new Error(value));
}

class Headers {
  #map = new PMap();
  constructor(init) {
    const pairs = init instanceof Headers ? [...init] : Array.isArray(init) ? init : entries(init ?? {});
    for (const [name, value] of pairs) this.append(name, value);
  }
  append(name, value) {
    const key = String(name).toLowerCase();
    const old = this.#map.get(key);
    this.#map.set(key, old === undefined ? String(value) : `${old}, ${value}`);
  }
  set(name, value) { this.#map.set(String(name).toLowerCase(), String(value)); }
  get(name) { return this.#map.get(String(name).toLowerCase()) ?? null; }
  has(name) { return this.#map.has(String(name).toLowerCase()); }
  delete(name) { this.#map.delete(String(name).toLowerCase()); }
  forEach(f, self) { for (const [k, v] of this.#map) f.call(self, v, k, this); }
  keys() { return this.#map.keys(); }
  values() { return this.#map.values(); }
  entries() { return this.#map.entries(); }
  [Symbol.iterator]() { return this.#map.entries(); }
}

class FetchResponse {
  #body;
  constructor(answer) {
    this.status = answer.status;
    this.statusText = '';
    this.ok = answer.status >= 200 && answer.status < 300;
    this.url = answer.url;
    this.redirected = false;
    this.headers = new Headers(answer.headers);
    this.#body = answer.body;
  }
  async arrayBuffer() { return this.#body.slice(0); }
  async text() { return host.decode(this.#body); }
  async json() { return parse(host.decode(this.#body)); }
}

async function fetch(input, init = {}) {
  const url = String(typeof input === 'object' && input !== null && 'url' in input ? input.url : input);
  const method = String(init.method ?? 'GET').toUpperCase();
  const headers = [...new Headers(init.headers ?? {})];
  let body = init.body;
  if (body === undefined || body === null) body = '';
  else if (typeof body !== 'string') {
    const raw = bytes(body);
    if (raw === undefined) throw new TypeError('fetch: body must be a string, an ArrayBuffer or a typed array');
    body = raw;
  }
  const answer = await hostCall(() => host.fetch(method, url, stringify(headers), body));
  return new FetchResponse(answer);
}

// The host settles the call with the response already parsed, and writes the
// variables as JSON itself (as `JSON.stringify` would). Not an `async`
// function: its promise is the call's own, with no second one chained to it.
// What throws while the call starts (`String(query)`, a `toJSON`) rejects it.
function graphql(query, variables = {}) {
  return hostCall(() => host.graphql(String(query), variables ?? {}));
}

class TextEncoder {
  get encoding() { return 'utf-8'; }
  encode(text = '') { return new PUint8Array(host.encode(String(text))); }
}

class TextDecoder {
  get encoding() { return 'utf-8'; }
  decode(input) {
    if (input === undefined) return '';
    const raw = bytes(input);
    if (raw === undefined) throw new TypeError('TextDecoder: input must be an ArrayBuffer or a typed array');
    return host.decode(raw);
  }
}

// Timers fire only while the execution runs: the host drops them when the
// response is ready, and they count as pending work until then.
function setTimeout(callback, delay = 0, ...args) {
  if (typeof callback !== 'function') throw new TypeError('setTimeout: callback must be a function');
  const ms = Number(delay);
  const id = host.timer(ms > 0 ? ms : 0);
  pending.set(id, [() => callback(...args), () => {}]);
  return id;
}

function clearTimeout(id) {
  if (pending.delete(id)) host.cancel(id);
}

function define(target, name, value) {
  defineProperty(target, name, { value, writable: true, configurable: true, enumerable: false });
}

export function setup(natives, env, limits) {
  host = natives;
  responseLimit = limits.response;
  const frozenEnv = freeze(env);
  const out = writer(0);
  const err = writer(1);
  define(globalThis, 'console', freeze({
    log: out, info: out, debug: out, trace: err, warn: err, error: err,
    assert(condition, ...args) { if (!condition) err('Assertion failed:', ...args); },
  }));
  define(globalThis, 'process', freeze({ env: frozenEnv }));
  define(globalThis, 'fetch', fetch);
  define(globalThis, 'Headers', Headers);
  define(globalThis, 'TextEncoder', TextEncoder);
  define(globalThis, 'TextDecoder', TextDecoder);
  define(globalThis, 'setTimeout', setTimeout);
  define(globalThis, 'clearTimeout', clearTimeout);
  define(globalThis, 'queueMicrotask', (f) => { PPromise.resolve().then(f); });
  define(globalThis, 'nimbus', freeze({ graphql }));
  return { env: frozenEnv, log: out, error: err };
}

function parseQuery(text) {
  const query = {};
  if (text === '') return query;
  for (const part of text.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawKey = eq < 0 ? part : part.slice(0, eq);
    const rawValue = eq < 0 ? '' : part.slice(eq + 1);
    const decode = (s) => {
      const plain = s.replace(/\+/g, ' ');
      try { return decodeURIComponent(plain); } catch (_) { return plain; }
    };
    query[decode(rawKey)] = decode(rawValue);
  }
  return query;
}

// QuickJS gives an object that gains a property the shape of a live object
// with the same properties in the same order, and otherwise builds a new shape,
// property by property, each time a literal is made. In a context that serves
// more than one execution (a warm one), one object of every prefix of the
// literals made for each execution (the request, the handler's context) is kept
// from the second on, so that those literals find their shapes. A fresh context
// serves one execution: it would only pay for them.
const shapeKeepers = [];
function keepShapes(...names) {
  for (let n = 1; n <= names.length; n++) {
    const o = {};
    for (let i = 0; i < n; i++) {
      const [name, getter] = names[i].split(':');
      defineProperty(o, name, getter === 'get'
        ? { get() {}, enumerable: true, configurable: true }
        : { value: undefined, writable: true, enumerable: true, configurable: true });
    }
    shapeKeepers.push(o);
  }
}
let invocations = 0;
function keepShapesOnce() {
  if (++invocations !== 2) return;
  keepShapes('method', 'scheme', 'host', 'port', 'path', 'queryString', 'query', 'headers', 'url',
    'bodyText:get', 'bodyJson:get', 'bodyBinary:get');
  keepShapes('req', 'res', 'log', 'error', 'env');
}

// `bodyRaw`, Appwrite's older name for `bodyText`, is left out of the keys.
const BODY_RAW = { get() { return this.bodyText; }, configurable: true };

// `headers` is flat (name, value, name, value…), its names lower-cased and each
// given once (repeated headers joined by the host). Built by one object literal:
// its getters cost less than `Object.defineProperties` and its descriptors.
function makeRequest(method, scheme, hostName, port, path, queryString, list, body) {
  const headers = {};
  for (let i = 0; i < list.length; i += 2) {
    // `headers.__proto__ = …` would set no property.
    if (list[i] === '__proto__') defineProperty(headers, '__proto__', { value: list[i + 1], writable: true, enumerable: true, configurable: true });
    else headers[list[i]] = list[i + 1];
  }
  const defaultPort = scheme === 'https' ? 443 : 80;
  const shownPort = port === defaultPort || port === 0 ? '' : `:${port}`;
  const qs = queryString === '' ? '' : `?${queryString}`;
  const req = {
    method,
    scheme,
    host: hostName,
    port,
    path,
    queryString,
    query: parseQuery(queryString),
    headers,
    url: `${scheme}://${hostName}${shownPort}${path}${qs}`,
    get bodyText() { return host.decode(body); },
    get bodyJson() { return parse(host.decode(body)); },
    get bodyBinary() { return new PUint8Array(body.slice(0)); },
  };
  defineProperty(req, 'bodyRaw', BODY_RAW);
  return req;
}

function headerList(headers, defaults) {
  // `defaults` is a new array of new pairs at every call: kept as it is when
  // the guest gave no headers, the most common answer.
  if (headers === undefined || headers === null) return defaults;
  const list = [];
  const seen = new Set();
  for (const [name, value] of entries(headers ?? {})) {
    seen.add(String(name).toLowerCase());
    list.push([String(name), String(value)]);
  }
  for (const [name, value] of defaults) if (!seen.has(name)) list.push([name, value]);
  return list;
}

// What `res.*` returns: a handle on an answer kept apart, shown through getters
// (a header list as a copy), so that nothing the guest does to the handle alters
// what the host reads. Cheaper than freezing the answer and its lists.
class Result {
  get status() { return answers.get(this)?.[0]; }
  get headers() { return answers.get(this)?.[1].map((pair) => [pair[0], pair[1]]); }
  get body() {
    const body = answers.get(this)?.[2];
    return body instanceof PArrayBuffer ? body.slice(0) : body;
  }
}

function answer(body, status, headers, defaults) {
  let payload;
  if (typeof body === 'string') payload = body;
  else if (body === undefined || body === null) payload = '';
  else payload = bytes(body) ?? String(body);
  const size = typeof payload === 'string' ? payload.length : payload.byteLength;
  // UTF-8 needs at least one byte per UTF-16 unit, so this never refuses a body
  // that fits; the host checks the exact byte count.
  const tooLarge = size > responseLimit;
  const result = new Result();
  // What the host reads: [status, headers, body, tooLarge].
  answers.set(result, [status ?? 200, headerList(headers, defaults), tooLarge ? '' : payload, tooLarge]);
  return result;
}

const res = freeze({
  send: (body, status, headers) => answer(body, status, headers, []),
  text: (body, status, headers) => answer(String(body ?? ''), status, headers, [['content-type', 'text/plain; charset=utf-8']]),
  json: (value, status, headers) => answer(stringify(value) ?? 'null', status, headers, [['content-type', 'application/json']]),
  binary: (value, status, headers) => {
    const raw = bytes(value);
    if (raw === undefined) throw new TypeError('res.binary: expects an ArrayBuffer or a typed array');
    return answer(raw, status, headers, [['content-type', 'application/octet-stream']]);
  },
  empty: () => answer('', 204, {}, []),
  redirect: (url, status = 301, headers) => answer('', status, headers, [['location', String(url)]]),
});

function describe(value) {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  return typeof value;
}

// Settles to the answer the host reads, or to a string saying why there is none.
export async function invoke(namespace, context, method, scheme, hostName, port, path, queryString, headers, body) {
  const entry = namespace.default;
  if (typeof entry !== 'function') return 'the entrypoint has no default export that is a function';
  keepShapesOnce();
  const req = makeRequest(method, scheme, hostName, port, path, queryString, headers, body);
  const out = await entry({ req, res, log: context.log, error: context.error, env: context.env });
  const kept = typeof out === 'object' && out !== null ? answers.get(out) : undefined;
  if (kept === undefined) {
    return `the function returned ${describe(out)}, not the result of res.send, res.text, res.json, res.binary, res.empty or res.redirect`;
  }
  return kept;
}

export function hasDefaultFunction(namespace) {
  return typeof namespace.default === 'function';
}
