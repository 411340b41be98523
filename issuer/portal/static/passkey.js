// Passkeys in the Tessera admin portal. WebAuthn is a browser API, so registering a
// passkey and signing in with one need this script; every other page works without
// script, and so does signing in with the card. Served from the portal's own origin
// (CSP script-src 'self'); it only talks to the portal.
"use strict";

function toB64u(buffer) {
  let s = "";
  for (const b of new Uint8Array(buffer)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromB64u(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({ error: `${r.status}` }));
  if (!r.ok) throw new Error(answer.error || `${r.status}`);
  return answer;
}

function say(form, message) {
  const out = form.querySelector("[data-passkey-message]");
  if (out) out.textContent = message;
}

async function register(form) {
  const csrf = form.elements.csrf.value;
  const label = form.elements.label.value;
  const options = await post("/admin/passkeys/options", { csrf, label });
  const pk = options.publicKey;
  pk.challenge = fromB64u(pk.challenge);
  pk.user.id = fromB64u(pk.user.id);
  for (const c of pk.excludeCredentials || []) c.id = fromB64u(c.id);
  // credProtect (user verification required) is asked for, not enforced: an authenticator
  // that applies it does; one without the extension is not refused by the browser for
  // that. The portal requires user verification at every sign-in either way.
  if (pk.extensions) pk.extensions.enforceCredentialProtectionPolicy = false;
  const cred = await navigator.credentials.create({ publicKey: pk });
  const credential = {
    id: cred.id,
    rawId: toB64u(cred.rawId),
    type: cred.type,
    response: {
      attestationObject: toB64u(cred.response.attestationObject),
      clientDataJSON: toB64u(cred.response.clientDataJSON),
      transports: cred.response.getTransports ? cred.response.getTransports() : undefined,
    },
    extensions: cred.getClientExtensionResults(),
  };
  const done = await post("/admin/passkeys", { csrf, label, credential });
  window.location.assign(done.next);
}

async function signIn(form) {
  const csrf = form.elements.csrf.value;
  const officer = form.elements.officer.value;
  const started = await post("/admin/sign-in/passkey/options", { csrf, officer });
  const pk = started.options.publicKey;
  pk.challenge = fromB64u(pk.challenge);
  for (const c of pk.allowCredentials || []) c.id = fromB64u(c.id);
  const cred = await navigator.credentials.get({ publicKey: pk });
  const credential = {
    id: cred.id,
    rawId: toB64u(cred.rawId),
    type: cred.type,
    response: {
      authenticatorData: toB64u(cred.response.authenticatorData),
      clientDataJSON: toB64u(cred.response.clientDataJSON),
      signature: toB64u(cred.response.signature),
      userHandle: cred.response.userHandle ? toB64u(cred.response.userHandle) : null,
    },
    extensions: cred.getClientExtensionResults(),
  };
  const done = await post("/admin/sign-in/passkey", {
    csrf,
    ceremony: started.ceremony,
    credential,
  });
  window.location.assign(done.next);
}

for (const [selector, run] of [
  ["form[data-passkey-register]", register],
  ["form[data-passkey-sign-in]", signIn],
]) {
  for (const form of document.querySelectorAll(selector)) {
    form.hidden = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      say(form, "");
      run(form).catch((e) => say(form, e.message || String(e)));
    });
  }
}
