// The realtime inspector: a `realtime` subscription on the channels typed in
// (or any subscription document, e.g. a collection's typed one) over graphql-ws,
// the events as they arrive, newest first; and who is on a presence channel.
import { html, useState, useEffect, useRef } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, Select, formatDate } from "./ui.js";

const CHANNELS = `subscription ConsoleRealtime($channels: [String!]!) {
  realtime(channels: $channels) { cursor events channels timestamp payload }
}`;

const PRESENCE = `subscription ConsolePresence($channel: String!) {
  presenceChanged(channel: $channel) { type channel presenceId userId state at }
}`;

/** Most events kept on the page; older ones drop off. */
const KEEP = 200;

/** A subscription that the component owns: started on demand, ended with it. */
function useSubscription() {
  const stop = useRef(null);
  const [status, setStatus] = useState("stopped");
  const [error, setError] = useState(null);
  useEffect(() => () => stop.current && stop.current(), []);
  const start = (query, variables, onEvent) => {
    if (stop.current) stop.current();
    setError(null);
    setStatus("connecting");
    stop.current = api.subscribe(query, variables, {
      onOpen: () => setStatus("listening"),
      onEvent,
      onError: (err) => {
        setError(err);
        setStatus("stopped");
        stop.current = null;
      },
    });
  };
  const halt = () => {
    if (stop.current) stop.current();
    stop.current = null;
    setStatus("stopped");
  };
  return { status, error, start, halt };
}

function Event({ event }) {
  if (event.realtime) {
    const ev = event.realtime;
    return html`<li class="card event">
      <div><strong>${ev.events[0]}</strong> <span class="muted">${formatDate(ev.timestamp)}</span></div>
      <div class="muted">channels: ${ev.channels.join(", ")}</div>
      <details>
        <summary>Payload</summary>
        <pre class="block">${JSON.stringify(ev.payload, null, 2)}</pre>
      </details>
    </li>`;
  }
  return html`<li class="card event"><pre class="block">${JSON.stringify(event, null, 2)}</pre></li>`;
}

function Presence() {
  const [channel, setChannel] = useState("lobby");
  const [here, setHere] = useState(new Map());
  const sub = useSubscription();
  const start = (e) => {
    e.preventDefault();
    setHere(new Map());
    sub.start(PRESENCE, { channel }, (data) => {
      const ev = data.presenceChanged;
      setHere((old) => {
        const next = new Map(old);
        if (ev.type === "LEAVE") next.delete(ev.presenceId);
        else next.set(ev.presenceId, ev);
        return next;
      });
    });
  };
  return html`<section class="card" aria-labelledby="presence-title">
    <h2 id="presence-title">Presence</h2>
    <form class="row" onSubmit=${start}>
      <${Field} label="Presence channel" value=${channel} onInput=${setChannel} />
      <button>Watch</button>
      <button type="button" class="secondary" onClick=${sub.halt} disabled=${sub.status === "stopped"}>Stop</button>
    </form>
    <p role="status">Presence: ${sub.status} · ${here.size} here</p>
    <${ErrorBox} error=${sub.error} />
    <ul class="plain">
      ${[...here.values()].map(
        (p) => html`<li key=${p.presenceId}>
          <code>${p.userId || "guest"}</code> since ${formatDate(p.at)}
          ${p.state != null && html` · <code>${JSON.stringify(p.state)}</code>`}
        </li>`,
      )}
    </ul>
  </section>`;
}

export function Realtime() {
  const [mode, setMode] = useState("channels");
  const [channels, setChannels] = useState("databases.*.collections.*.documents");
  const [source, setSource] = useState("subscription {\n  realtime(channels: [\"files\"]) { events payload }\n}");
  const [events, setEvents] = useState([]);
  const sub = useSubscription();
  const start = (e) => {
    e.preventDefault();
    const push = (data) => setEvents((old) => [data, ...old].slice(0, KEEP));
    if (mode === "channels") {
      const list = channels.split(",").map((c) => c.trim()).filter(Boolean);
      sub.start(CHANNELS, { channels: list }, push);
    } else {
      sub.start(source, {}, push);
    }
  };
  return html`<section aria-labelledby="rt-title">
    <h1 id="rt-title">Realtime inspector</h1>
    <form onSubmit=${start}>
      <div class="row">
        <${Select}
          label="Listen to"
          value=${mode}
          onChange=${setMode}
          options=${[["channels", "Channels"], ["document", "A subscription document"]]}
        />
        ${mode === "channels" &&
        html`<${Field}
          label="Channels (comma-separated)"
          value=${channels}
          onInput=${setChannels}
          hint="e.g. databases.DB.collections.C.documents, files, users; * matches one segment"
        />`}
      </div>
      ${mode === "document" &&
      html`<label for="rt-document">Subscription (e.g. a collection's typed one)</label>
        <textarea id="rt-document" rows="5" value=${source} onInput=${(e) => setSource(e.target.value)}></textarea>`}
      <div class="row">
        <button>${sub.status === "stopped" ? "Subscribe" : "Resubscribe"}</button>
        <button type="button" class="secondary" onClick=${sub.halt} disabled=${sub.status === "stopped"}>Stop</button>
        <button type="button" class="secondary" onClick=${() => setEvents([])}>Clear</button>
      </div>
    </form>
    <p role="status" data-testid="realtime-status">Status: ${sub.status} · ${events.length} events</p>
    <${ErrorBox} error=${sub.error} />
    <ol class="plain events" aria-label="Events" aria-live="polite">
      ${events.map((ev, i) => html`<${Event} key=${(ev.realtime && ev.realtime.cursor) || i} event=${ev} />`)}
    </ol>
    <${Presence} />
  </section>`;
}
