// Sign-in: as a console administrator (email, password and, once enrolled, a
// TOTP code), or with an admin API key pasted for this tab only.
import { html, useState } from "./lib.js";
import * as api from "./api.js";
import { ErrorBox, Field, useAction } from "./ui.js";

function PasswordForm({ onSignedIn }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  const [needsOtp, setNeedsOtp] = useState(false);
  const act = useAction(async () => {
    try {
      return await api.signInWithPassword(email, password, needsOtp ? otp : undefined);
    } catch (err) {
      if (err.code === "MFA_REQUIRED" || err.code === "INVALID_MFA_CODE") setNeedsOtp(true);
      throw err;
    }
  });
  const submit = async (e) => {
    e.preventDefault();
    const who = await act.run();
    if (who) onSignedIn(who);
  };
  return html`<form onSubmit=${submit} aria-labelledby="signin-password">
    <h2 id="signin-password">Administrator</h2>
    <${Field} label="Email" type="email" value=${email} onInput=${setEmail} autocomplete="username" required />
    <${Field}
      label="Password"
      type="password"
      value=${password}
      onInput=${setPassword}
      autocomplete="current-password"
      required
    />
    ${needsOtp &&
    html`<${Field}
      label="Authenticator code"
      value=${otp}
      onInput=${setOtp}
      inputmode="numeric"
      autocomplete="one-time-code"
      required
    />`}
    <button disabled=${act.pending}>Sign in</button>
    <${ErrorBox} error=${act.error} />
  </form>`;
}

function KeyForm({ onSignedIn }) {
  const [key, setKey] = useState("");
  const act = useAction(() => api.signInWithKey(key));
  const submit = async (e) => {
    e.preventDefault();
    const who = await act.run();
    if (who) onSignedIn(who);
  };
  return html`<form onSubmit=${submit} aria-labelledby="signin-key">
    <h2 id="signin-key">Admin API key</h2>
    <${Field}
      label="API key"
      type="password"
      value=${key}
      onInput=${setKey}
      autocomplete="off"
      hint="A key with the admin scope (nimbus key create --scopes admin). Kept for this tab only."
      required
    />
    <button disabled=${act.pending}>Use key</button>
    <${ErrorBox} error=${act.error} />
  </form>`;
}

export function SignIn({ onSignedIn, reason }) {
  return html`<main class="signin" id="main">
    <h1>Nimbus console</h1>
    ${reason && html`<${ErrorBox} error=${{ message: `Signed out: ${reason.message}`, code: reason.code }} />`}
    <div class="signin-forms">
      <${PasswordForm} onSignedIn=${onSignedIn} />
      <${KeyForm} onSignedIn=${onSignedIn} />
    </div>
  </main>`;
}
