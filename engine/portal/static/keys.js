// sealrelay secure portal: make a key pair in this browser for offline envelopes.
// The private key is wrapped here under a key derived from the password (PBKDF2-SHA256,
// AES-256-GCM); only the public key and the wrapped private key are sent. The password and
// the private key never leave the browser.
"use strict";
(function () {
  const form = document.getElementById("keyform");
  if (!form) return;
  const status = document.getElementById("keystatus");
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));
  const say = (text, bad) => {
    status.textContent = text;
    status.className = bad ? "problem" : "done";
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = form.elements["keypassword"].value;
    if (password.length < 12) return say("Use at least 12 characters.", true);
    if (password !== form.elements["keyagain"].value) return say("The two passwords differ.", true);
    say("Making your key… this takes a moment.", false);
    try {
      const iterations = parseInt(form.dataset.iterations, 10);
      const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
      const spki = await crypto.subtle.exportKey("spki", pair.publicKey);
      const pkcs8 = await crypto.subtle.exportKey("pkcs8", pair.privateKey);
      const salt = crypto.getRandomValues(new Uint8Array(16));
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveKey"]);
      const wrapKey = await crypto.subtle.deriveKey(
        { name: "PBKDF2", hash: "SHA-256", salt: salt, iterations: iterations },
        base, { name: "AES-GCM", length: 256 }, false, ["encrypt"]);
      const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: iv }, wrapKey, pkcs8);
      const body = {
        public_key: b64(spki),
        private_key: { kdf: "pbkdf2-sha256", iterations: iterations, salt: b64(salt), iv: b64(iv), sealed: b64(sealed) },
      };
      const response = await fetch("/account/keys", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      if (!response.ok) return say("The key was not saved: " + (await response.text()), true);
      form.reset();
      say("Your key is saved. Secure messages sent to you from now on open offline with this password.", false);
    } catch (err) {
      say("Your browser could not make the key: " + err, true);
    }
  });
})();
