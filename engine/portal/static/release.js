// sealrelay secure portal: hand a released message key to the envelope that asked for it.
// The envelope (a file the recipient opened) opened this tab; once the portal releases the key
// to the signed-in owner, it goes back to that tab by postMessage and is shown for pasting too.
"use strict";
(async function () {
  const box = document.getElementById("release");
  if (!box) return;
  const status = document.getElementById("releasestatus");
  const response = await fetch("/k/" + encodeURIComponent(box.dataset.key) + "/key", { credentials: "same-origin" });
  const answer = await response.json();
  if (!response.ok) {
    status.textContent = answer.error || "The key could not be released.";
    status.className = "problem";
    return;
  }
  document.getElementById("keytext").value = answer.key;
  document.getElementById("keyshown").classList.remove("hidden");
  if (window.opener) {
    window.opener.postMessage({ type: "sealrelay-key", id: box.dataset.key, key: answer.key }, "*");
    status.textContent = "The key went to your message: go back to its tab, it is open now.";
  } else {
    status.textContent = "Copy the key below into the message file you opened.";
  }
  status.className = "done";
})();
