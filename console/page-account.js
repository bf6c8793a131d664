// The signed-in administrator's own security: the session and TOTP enrolment
// (a secret to add to an authenticator app, activated by a first code).
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { CopyButton, ErrorBox, Field, Loading, formatDate, useAction, useAsync } from "./ui.js";

export function Account() {
  const session = useAsync(() => api.consoleSession(), []);
  const [enrolment, setEnrolment] = useState(null);
  const [otp, setOtp] = useState("");
  const start = useAction(async () => setEnrolment(await api.startTotp()) || true);
  const verify = useAction(() => api.verifyTotp(otp).then(() => true));
  const remove = useAction(() => api.removeTotp(otp).then(() => true));
  const done = async (act) => {
    if (await act.run()) {
      setOtp("");
      setEnrolment(null);
      session.reload();
    }
  };
  const s = session.data;
  return html`<section aria-labelledby="account-title">
    <h1 id="account-title">Your account</h1>
    <${ErrorBox} error=${session.error} />
    ${session.loading && !s && html`<${Loading} what="the session" />`}
    ${s &&
    html`<div class="card">
        <p>Signed in as <strong>${s.email}</strong> until ${formatDate(s.expiresAt)}.</p>
        <p>Two-factor authentication: ${s.totp ? "on" : "off"}</p>
      </div>
      ${!s.totp &&
      !enrolment &&
      html`<button onClick=${() => start.run()} disabled=${start.pending}>Set up an authenticator</button>
        <${ErrorBox} error=${start.error} />`}
      ${enrolment &&
      html`<form class="card" onSubmit=${(e) => (e.preventDefault(), done(verify))}>
        <p>Add this secret to your authenticator app, then enter the code it shows.</p>
        <code class="block">${enrolment.secret}</code>
        <div class="row"><${CopyButton} text=${enrolment.uri} label="Copy otpauth:// link" /></div>
        <${Field} label="Code" value=${otp} onInput=${setOtp} inputmode="numeric" autocomplete="one-time-code" required />
        <button disabled=${verify.pending}>Turn on</button>
        <${ErrorBox} error=${verify.error} />
      </form>`}
      ${s.totp &&
      html`<form class="card" onSubmit=${(e) => (e.preventDefault(), done(remove))}>
        <${Field} label="Current code" value=${otp} onInput=${setOtp} inputmode="numeric" autocomplete="one-time-code" required />
        <button class="danger" disabled=${remove.pending}>Turn off two-factor authentication</button>
        <${ErrorBox} error=${remove.error} />
      </form>`}`}
  </section>`;
}
