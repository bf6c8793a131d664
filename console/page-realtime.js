// The realtime inspector: a `realtime` subscription over graphql-ws on the
// channels typed in, and the events as they arrive, newest first.
import { html, useState, useEffect, useRef } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, formatDate } from "./ui.js";

const SUBSCRIPTION = `subscription ConsoleRealtime($channels: [String!]!) {
  realtime(channels: $channels) { cursor events channels timestamp payload }
}`;

/** Most events kept on the page; older ones drop off. */
const KEEP = 200;

export function Realtime() {
  const [channels, setChannels] = useState("databases.*.collections.*.documents");
  const [status, setStatus] = useState("stopped");
  const [events, setEvents] = useState([]);
  const [error, setError] = useState(null);
  const stop = useRef(null);
  useEffect(() => () => stop.current && stop.current(), []);
  const start = (e) => {
    e.preventDefault();
    if (stop.current) stop.current();
    setError(null);
    setStatus("connecting");
    const list = channels.split(",").map((c) => c.trim()).filter(Boolean);
    stop.current = api.subscribe(SUBSCRIPTION, { channels: list }, {
      onOpen: () => setStatus("listening"),
      onEvent: (data) => setEvents((old) => [data.realtime, ...old].slice(0, KEEP)),
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
  return html`<section aria-labelledby="rt-title">
    <h1 id="rt-title">Realtime inspector</h1>
    <form class="row" onSubmit=${start}>
      <${Field}
        label="Channels (comma-separated)"
        value=${channels}
        onInput=${setChannels}
        hint="e.g. databases.DB.collections.C.documents, files, users; * matches one segment"
      />
      <button>${status === "stopped" ? "Subscribe" : "Resubscribe"}</button>
      <button type="button" class="secondary" onClick=${halt} disabled=${status === "stopped"}>Stop</button>
      <button type="button" class="secondary" onClick=${() => setEvents([])}>Clear</button>
    </form>
    <p role="status" data-testid="realtime-status">Status: ${status} · ${events.length} events</p>
    <${ErrorBox} error=${error} />
    <ol class="plain events" aria-label="Events" aria-live="polite">
      ${events.map(
        (ev, i) => html`<li class="card event" key=${ev.cursor || i}>
          <div><strong>${ev.events[0]}</strong> <span class="muted">${formatDate(ev.timestamp)}</span></div>
          <div class="muted">channels: ${ev.channels.join(", ")}</div>
          <details>
            <summary>Payload</summary>
            <pre class="block">${JSON.stringify(ev.payload, null, 2)}</pre>
          </details>
        </li>`,
      )}
    </ol>
  </section>`;
}
