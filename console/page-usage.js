// The project's usage over a range: requests and errors, bandwidth, documents and
// files, storage, users and sessions, executions and realtime connections, each
// chart drawn by uPlot (loaded only when this page opens) with its totals beside
// it and a table of the same points for readers who cannot see the canvas; and
// the requests by operation and the errors by code, as ranked tables.
import { html, useState, useEffect, useRef } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Loading, Select, formatBytes, useAsync } from "./ui.js";

const RANGES = [
  ["LAST_24_HOURS", "Last 24 hours"],
  ["LAST_7_DAYS", "Last 7 days"],
  ["LAST_30_DAYS", "Last 30 days"],
  ["LAST_90_DAYS", "Last 90 days"],
];
const INTERVALS = [
  ["HOUR", "Hourly"],
  ["DAY", "Daily"],
];

// How a series' total reads: counters add up, peaks keep the highest point,
// gauges (counted by snapshots) keep the latest one.
const KIND = { sum: "total", peak: "peak", gauge: "now" };

const CHARTS = [
  { id: "requests", title: "Requests and errors", unit: "count", series: [["REQUESTS", "Requests", "sum"], ["ERRORS", "Errors", "sum"]] },
  { id: "bandwidth", title: "Bandwidth", unit: "bytes", series: [["BANDWIDTH_IN", "In", "sum"], ["BANDWIDTH_OUT", "Out", "sum"]] },
  { id: "documents", title: "Documents and files", unit: "count", series: [["DOCUMENTS", "Documents", "gauge"], ["FILES", "Files", "gauge"]] },
  { id: "storage", title: "Storage", unit: "bytes", series: [["STORAGE_BYTES", "Stored", "gauge"]] },
  { id: "users", title: "Users and sessions", unit: "count", series: [["USERS", "Users", "gauge"], ["SESSIONS", "Sessions", "gauge"]] },
  { id: "executions", title: "Function executions", unit: "count", series: [["EXECUTIONS", "Executions", "sum"]] },
  { id: "realtime", title: "Realtime connections", unit: "count", series: [["REALTIME_CONNECTIONS", "Open at once", "peak"]] },
];
/** Metrics broken down by key, shown as tables ranked by their totals. */
const BREAKDOWNS = [
  { id: "operations", metric: "OPERATIONS", title: "Requests by operation", column: "Operation" },
  { id: "errors", metric: "ERRORS", title: "Errors by code", column: "Code" },
];
const METRICS = [...new Set([...CHARTS.flatMap((c) => c.series.map(([metric]) => metric)), ...BREAKDOWNS.map((b) => b.metric)])];

const QUERY = `query ConsoleUsage($range: UsageRange!, $interval: UsageInterval!, $metrics: [UsageMetric!]) {
  usage(range: $range, interval: $interval, metrics: $metrics) {
    from to interval
    series { metric key total points { time value } }
  }
}`;

function format(unit, value) {
  if (value == null) return "–";
  return unit === "bytes" ? formatBytes(value) : Number(value).toLocaleString();
}

function formatTime(seconds, interval) {
  const date = new Date(seconds * 1000);
  return interval === "DAY"
    ? date.toLocaleDateString(undefined, { timeZone: "UTC" })
    : date.toLocaleString(undefined, { timeZone: "UTC", dateStyle: "short", timeStyle: "short" });
}

// The canvas cannot read CSS variables, so the chart takes the page's colours
// (light or dark, as the system says) when it is drawn.
function colours() {
  const style = getComputedStyle(document.documentElement);
  const get = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    fg: get("--fg", "#222"),
    line: get("--line", "#ddd"),
    series: [get("--accent", "#3b5bdb"), get("--danger", "#c92a2a")],
  };
}

let uplot;
function loadUplot() {
  uplot = uplot || import("./vendor/uplot.js").then((m) => m.default);
  return uplot;
}

function Chart({ chart, times, rows, interval }) {
  const box = useRef(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let plot;
    let observer;
    let gone = false;
    const media = matchMedia("(prefers-color-scheme: dark)");
    const draw = (UPlot) => {
      if (gone || !box.current) return;
      if (plot) plot.destroy();
      const c = colours();
      const axis = { stroke: c.fg, grid: { stroke: c.line, width: 1 }, ticks: { stroke: c.line, width: 1 } };
      plot = new UPlot(
        {
          width: Math.max(box.current.clientWidth, 200),
          height: 200,
          scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(max, 1)] } },
          axes: [
            { ...axis },
            { ...axis, size: chart.unit === "bytes" ? 70 : 50, values: (_u, ticks) => ticks.map((t) => format(chart.unit, t)) },
          ],
          series: [
            { value: (_u, t) => (t == null ? "–" : formatTime(t, interval)) },
            ...rows.map((row, i) => ({
              label: row.label,
              stroke: c.series[i % c.series.length],
              width: 2,
              value: (_u, v) => format(chart.unit, v),
            })),
          ],
          legend: { live: true },
          tzDate: (ts) => uplotTz(UPlot, ts),
        },
        [times, ...rows.map((row) => row.values)],
        box.current,
      );
    };
    loadUplot().then((UPlot) => {
      // The page may have moved on while uPlot loaded.
      if (gone || !box.current) return;
      draw(UPlot);
      observer = new ResizeObserver(() => plot && box.current && plot.setSize({ width: Math.max(box.current.clientWidth, 200), height: 200 }));
      observer.observe(box.current);
      media.onchange = () => draw(UPlot);
    }, setError);
    return () => {
      gone = true;
      media.onchange = null;
      if (observer) observer.disconnect();
      if (plot) plot.destroy();
    };
  }, [times, rows, interval]);
  const titleId = `usage-${chart.id}-title`;
  return html`<section class="card usage-chart" aria-labelledby=${titleId} data-testid=${`usage-${chart.id}`}>
    <h2 id=${titleId}>${chart.title}</h2>
    <dl class="usage-totals">
      ${rows.map(
        (row) => html`<div>
          <dt>${row.label} <span class="muted">(${KIND[row.kind]})</span></dt>
          <dd data-testid=${`usage-total-${row.metric}`}>${format(chart.unit, row.total)}</dd>
        </div>`,
      )}
    </dl>
    <${ErrorBox} error=${error && { message: `The chart could not be drawn: ${error.message || error}`, code: "CHART_ERROR" }} />
    <div class="usage-plot" ref=${box} aria-hidden="true"></div>
    <details>
      <summary>${chart.title} as a table</summary>
      <div class="table-wrap">
        <table>
          <caption class="sr-only">${chart.title}, one row per ${interval === "DAY" ? "day" : "hour"} (UTC)</caption>
          <thead>
            <tr><th scope="col">Time (UTC)</th>${rows.map((row) => html`<th scope="col">${row.label}</th>`)}</tr>
          </thead>
          <tbody>
            ${times.map(
              (t, i) => html`<tr>
                <th scope="row">${formatTime(t, interval)}</th>
                ${rows.map((row) => html`<td>${format(chart.unit, row.values[i])}</td>`)}
              </tr>`,
            )}
          </tbody>
        </table>
      </div>
    </details>
  </section>`;
}

// Buckets are UTC, so the axes read in UTC too.
function uplotTz(UPlot, ts) {
  return UPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
}

/** The whole series of each charted metric (not its keys), on one time axis. */
function shape(usage) {
  const whole = new Map(usage.series.filter((s) => s.key == null).map((s) => [s.metric, s]));
  const first = usage.series.find((s) => s.key == null);
  const times = first ? first.points.map((p) => Math.floor(Date.parse(p.time) / 1000)) : [];
  const charts = CHARTS.map((chart) => ({
    chart,
    rows: chart.series.map(([metric, label, kind]) => {
      const s = whole.get(metric);
      return {
        metric,
        label,
        kind,
        total: s ? s.total : 0,
        values: s ? s.points.map((p) => p.value) : times.map(() => 0),
      };
    }),
  }));
  const empty = charts.every((c) => c.rows.every((r) => !r.total && r.values.every((v) => !v)));
  const breakdowns = BREAKDOWNS.map((b) => ({
    ...b,
    rows: usage.series
      .filter((s) => s.metric === b.metric && s.key != null && s.total > 0)
      .map((s) => ({ key: s.key, total: s.total }))
      .sort((x, y) => y.total - x.total || x.key.localeCompare(y.key)),
  }));
  return { times, charts, breakdowns, empty };
}

/** A metric's keys over the range, the largest first. */
function Breakdown({ breakdown }) {
  const titleId = `usage-${breakdown.id}-title`;
  return html`<section class="card" aria-labelledby=${titleId} data-testid=${`usage-${breakdown.id}`}>
    <h2 id=${titleId}>${breakdown.title}</h2>
    ${breakdown.rows.length
      ? html`<div class="table-wrap">
          <table>
            <thead>
              <tr><th scope="col">${breakdown.column}</th><th scope="col">Count</th></tr>
            </thead>
            <tbody>
              ${breakdown.rows.map(
                (row) => html`<tr>
                  <th scope="row"><code>${row.key}</code></th>
                  <td>${format("count", row.total)}</td>
                </tr>`,
              )}
            </tbody>
          </table>
        </div>`
      : html`<p class="muted">None in this range.</p>`}
  </section>`;
}

export function Usage({ project }) {
  const [range, setRange] = useState("LAST_24_HOURS");
  const [hourly, setHourly] = useState("HOUR");
  // Hourly buckets are not kept 90 days, and 90 × 24 points say little more.
  const interval = range === "LAST_90_DAYS" ? "DAY" : hourly;
  const usage = useAsync(
    () => api.gql(QUERY, { range, interval, metrics: METRICS }).then((data) => shape(data.usage)),
    [project, range, interval],
  );
  const data = usage.data;
  return html`<section aria-labelledby="usage-title">
    <h1 id="usage-title">Usage of ${project}</h1>
    <form class="row" onSubmit=${(e) => (e.preventDefault(), usage.reload())}>
      <${Select} label="Range" value=${range} onChange=${setRange} options=${RANGES} />
      ${range === "LAST_90_DAYS"
        ? html`<div class="field">
            <label for="usage-interval-fixed">Interval</label>
            <select id="usage-interval-fixed" disabled><option>Daily</option></select>
          </div>`
        : html`<${Select} label="Interval" value=${hourly} onChange=${setHourly} options=${INTERVALS} />`}
      <button class="secondary" disabled=${usage.loading}>Refresh</button>
    </form>
    <p class="muted">Counts arrive within seconds; documents, files, storage, users and sessions are counted every few minutes. Times are UTC.</p>
    <${ErrorBox} error=${usage.error} />
    ${usage.loading && !data && html`<${Loading} what="usage" />`}
    ${data &&
    data.empty &&
    html`<p class="card empty" role="status" data-testid="usage-empty">
      No usage recorded in this range yet. Requests made to this project show up here once counted.
    </p>`}
    ${data &&
    html`<div class="usage-grid">
      ${data.charts.map(
        ({ chart, rows }) =>
          html`<${Chart} key=${chart.id} chart=${chart} rows=${rows} times=${data.times} interval=${interval} />`,
      )}
      ${data.breakdowns.map((b) => html`<${Breakdown} key=${b.id} breakdown=${b} />`)}
    </div>`}
  </section>`;
}
