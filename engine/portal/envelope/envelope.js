// sealrelay advanced encryption: the one constant script of every envelope.
// The message is AES-256-GCM ciphertext in #sealrelay-data; #sealrelay-header (the associated
// data) says how its key may be had: a recipient key slot (the password opens the private key
// made in the recipient's browser; ECDH P-256 + HKDF-SHA256 + AES-KW), and/or a key held by the
// relay, released at the portal after a one-time code or sign-in. Nothing here is sent anywhere
// except the portal's own address, and only when the recipient asks to open online.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const headerText = $("sealrelay-header").textContent;
  const header = JSON.parse(headerText);
  const aad = new TextEncoder().encode(headerText);
  const unb64 = (s) => Uint8Array.from(atob(s.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const status = $("status");
  const say = (text, bad) => { status.textContent = text; status.className = bad ? "problem" : "done"; };
  let opened = false;

  async function data(key) {
    if (header.data === "inline") return unb64($("sealrelay-data").textContent);
    say("Fetching the encrypted message from the portal...", false);
    const response = await fetch(header.portal + "/k/" + encodeURIComponent(header.held) + "/data", { credentials: "omit" });
    if (!response.ok) throw new Error("fetch");
    return new Uint8Array(await response.arrayBuffer());
  }

  async function open(key) {
    let plain;
    try {
      const sealed = await data(key);
      plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: unb64(header.iv), additionalData: aad }, key, sealed);
    } catch (err) {
      if (err && err.message === "fetch") return say("The portal did not give the message; try again later.", true);
      return say("This message was altered or damaged and cannot be opened.", true);
    }
    const message = JSON.parse(new TextDecoder().decode(plain));
    try {
      const sealedPhrase = unb64(header.phrase);
      const phrase = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: sealedPhrase.slice(0, 12), additionalData: new TextEncoder().encode("phrase") },
        key, sealedPhrase.slice(12));
      message.phrase = new TextDecoder().decode(phrase);
    } catch (err) {
      message.phrase = "";
    }
    show(message);
  }

  function show(message) {
    opened = true;
    $("unlock").classList.add("hidden");
    $("message").classList.remove("hidden");
    $("subject").textContent = message.subject;
    $("from").textContent = message.from;
    $("to").textContent = message.to.join(", ");
    $("date").textContent = message.date;
    if (message.phrase) {
      $("phrase").textContent = message.phrase;
      $("phrasebox").classList.remove("hidden");
    }
    $("text").textContent = message.text;
    if (message.html) {
      const frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.setAttribute("title", "The message as its sender formatted it");
      frame.srcdoc = message.html;
      $("html").appendChild(frame);
      $("htmlbox").classList.remove("hidden");
    }
    const list = $("files");
    for (const file of message.attachments) {
      const blob = new Blob([unb64(file.data)], { type: "application/octet-stream" });
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = file.name;
      link.textContent = file.name + " (" + blob.size + " bytes)";
      item.appendChild(link);
      list.appendChild(item);
    }
    $("filesbox").classList.toggle("hidden", message.attachments.length === 0);
    say("Decrypted in this browser.", false);
  }

  async function withPassword(password) {
    const slot = header.slots.find((s) => s.type === "recipient");
    const wrapped = slot.private;
    let privateKey;
    try {
      const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveKey"]);
      const unwrapKey = await crypto.subtle.deriveKey(
        { name: "PBKDF2", hash: "SHA-256", salt: unb64(wrapped.salt), iterations: wrapped.iterations },
        base, { name: "AES-GCM", length: 256 }, false, ["decrypt"]);
      const pkcs8 = await crypto.subtle.decrypt({ name: "AES-GCM", iv: unb64(wrapped.iv) }, unwrapKey, unb64(wrapped.sealed));
      privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
    } catch (err) {
      return say("That password is not right.", true);
    }
    try {
      const epk = await crypto.subtle.importKey("spki", unb64(slot.epk), { name: "ECDH", namedCurve: "P-256" }, false, []);
      const shared = await crypto.subtle.deriveBits({ name: "ECDH", public: epk }, privateKey, 256);
      const hkdf = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
      const kek = await crypto.subtle.deriveKey(
        { name: "HKDF", hash: "SHA-256", salt: unb64(slot.salt), info: new TextEncoder().encode("sealrelay envelope v1") },
        hkdf, { name: "AES-KW", length: 256 }, false, ["unwrapKey"]);
      const key = await crypto.subtle.unwrapKey("raw", unb64(slot.wrapped), kek, "AES-KW", "AES-GCM", false, ["decrypt"]);
      await open(key);
    } catch (err) {
      say("This message was altered or damaged and cannot be opened.", true);
    }
  }

  async function withKey(text) {
    let key;
    try {
      key = await crypto.subtle.importKey("raw", unb64(text.trim()), "AES-GCM", false, ["decrypt"]);
    } catch (err) {
      return say("That is not a message key.", true);
    }
    await open(key);
  }

  $("portal").textContent = header.portal;
  if (header.slots.some((s) => s.type === "recipient")) {
    $("passwordbox").classList.remove("hidden");
    $("passwordform").addEventListener("submit", (event) => {
      event.preventDefault();
      say("Opening...", false);
      withPassword($("password").value);
    });
  }
  if (header.held) {
    $("onlinebox").classList.remove("hidden");
    $("online").addEventListener("click", () => {
      window.open(header.portal + "/k/" + encodeURIComponent(header.held), "_blank");
      say("Sign in at the portal in the new tab; this message opens here once the key is released.", false);
    });
    $("keyform").addEventListener("submit", (event) => {
      event.preventDefault();
      withKey($("keytext").value);
    });
    window.addEventListener("message", (event) => {
      if (opened || event.origin !== new URL(header.portal).origin) return;
      const m = event.data;
      if (m && m.type === "sealrelay-key" && m.id === header.held && typeof m.key === "string") withKey(m.key);
    });
  }
})();
