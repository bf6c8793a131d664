// First load of a page, cold cache, to interactive, in headless Chromium (the
// console tests' playwright-core and Debian's chromium). Each run opens a fresh
// browser context (empty HTTP cache, no storage), so every asset comes over the
// network; the browser process itself stays up between runs.
//
//   node first-load.mjs console URL KEY RUNS            signed in with an admin key
//   node first-load.mjs cookie URL EMAIL:PASSWORD RUNS  with an administrator's cookie session
//   node first-load.mjs static URL - RUNS               the reference page (reference.html)
//
// Interactive, for the console: the projects page is rendered with its data (the
// heading "Projects" and the row of the project `default`, which come from the
// `projects` query) and its "Name" input takes the focus. For the reference: its
// heading is there and its input takes the focus. The time is the page's own
// `performance.now()` when a MutationObserver, installed before any of the page's
// scripts, first sees that, i.e. milliseconds since the navigation started.
// Prints one JSON line per run and a summary line with p50/p95.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "../../console/tests/package.json"));
const { chromium } = require("playwright-core");

const [mode, base, credential, runsText] = process.argv.slice(2);
const runs = Number(runsText || 20);
const origin = new URL(base).origin;

// Runs in the page before its scripts (CDP's addScriptToEvaluateOnNewDocument, which
// the page's CSP does not govern).
function watch(kind) {
  const ready = () => {
    const heading = [...document.querySelectorAll("h1")].some((h) => h.textContent.trim() === "Projects" || h.textContent.trim() === "Reference");
    if (!heading) return false;
    if (kind === "console" && ![...document.querySelectorAll("main code")].some((c) => c.textContent === "default")) return false;
    const label = [...document.querySelectorAll("label")].find((l) => l.textContent.trim() === "Name");
    const input = label && document.getElementById(label.htmlFor);
    if (!input) return false;
    input.focus();
    return document.activeElement === input;
  };
  const observer = new MutationObserver(() => {
    if (window.__interactive === undefined && ready()) {
      window.__interactive = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, { childList: true, subtree: true, attributes: true, characterData: true });
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const rank = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, rank)];
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const times = [];
try {
  // One run first, not counted: the browser process warms up (its first page pays
  // for starting a renderer and compiling its own code).
  for (let run = -1; run < runs; run++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    try {
      await context.addInitScript(watch, mode === "static" ? "static" : "console");
      if (mode === "console") {
        await context.addInitScript((key) => sessionStorage.setItem("nimbus.console.key", key), credential);
      } else if (mode === "cookie") {
        const [email, password] = [credential.slice(0, credential.indexOf(":")), credential.slice(credential.indexOf(":") + 1)];
        const signed = await context.request.post(`${origin}/console/api/session`, { data: { email, password } });
        if (!signed.ok()) throw new Error(`console sign-in answered ${signed.status()}: ${await signed.text()}`);
      }
      const page = await context.newPage();
      let requests = 0;
      let bytes = 0;
      const foreign = [];
      page.on("request", (r) => {
        requests++;
        if (!r.url().startsWith(`${origin}/`)) foreign.push(r.url());
      });
      page.on("response", async (r) => {
        const body = await r.body().catch(() => null);
        if (body) bytes += body.length;
      });
      await page.goto(base, { waitUntil: "commit" });
      await page.waitForFunction(() => window.__interactive !== undefined, null, { timeout: 30_000, polling: 50 });
      const timing = await page.evaluate(() => {
        const nav = performance.getEntriesByType("navigation")[0];
        return { interactive: window.__interactive, domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd };
      });
      if (foreign.length) throw new Error(`requests left the origin: ${foreign.join(" ")}`);
      if (run >= 0) {
        times.push(timing.interactive);
        console.log(JSON.stringify({ mode, run, ...Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, Math.round(v * 10) / 10])), requests, bytes }));
      }
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
}
times.sort((a, b) => a - b);
console.log(
  `RESULT mode=${mode} runs=${times.length} p50_ms=${percentile(times, 50).toFixed(1)} p95_ms=${percentile(times, 95).toFixed(1)} min_ms=${times[0].toFixed(1)} max_ms=${times[times.length - 1].toFixed(1)}`,
);
