// Countersign console: live updates only. A page section marked
// data-live="/console/events" is re-read from the server whenever the
// control plane reports a change to any review or grant; the events carry no
// data, so the page shows only what a normal page load would. Without
// JavaScript every page still works; it just does not refresh itself.
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  let pending = false;
  let busy = false;

  // Someone typing a comment must not lose it to a refresh.
  function editing() {
    const active = document.activeElement;
    if (active && live.contains(active) && active.matches("textarea, input, select")) return true;
    return Array.from(live.querySelectorAll("textarea")).some((t) => t.value !== "");
  }

  async function refresh() {
    if (busy) { pending = true; return; }
    if (editing()) { pending = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const next = doc.getElementById(live.id);
      if (next) {
        live.replaceChildren(...Array.from(next.childNodes).map((n) => document.importNode(n, true)));
        const status = doc.getElementById("status");
        const shown = document.getElementById("status");
        if (status && shown) shown.replaceWith(document.importNode(status, true));
        live.dispatchEvent(new CustomEvent("countersign:refreshed", { bubbles: true }));
      }
    } catch (e) {
      // A failed refresh leaves the page as it was; the next change retries.
    } finally {
      busy = false;
      if (pending) { pending = false; setTimeout(refresh, 250); }
    }
  }

  const source = new EventSource(live.dataset.live);
  source.addEventListener("change", refresh);
  document.addEventListener("focusout", () => { if (pending) setTimeout(refresh, 250); });
})();
