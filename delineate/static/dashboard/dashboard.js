// delineate dashboard: start jobs, watch them live, download or cancel them.
// Plain JS, no build step, no inline code (CSP script-src 'self' is enough).
"use strict";

(function () {
  const KEY_STORE = "delineate.apiKey"; // sessionStorage: this tab only
  const JOBS_STORE = "delineate.jobs"; // localStorage: job ids started in this browser
  const HISTORY_LIMIT = 20; // the newest jobs of this key (or of everyone, in open mode) from /v1/downloads
  const MAX_REMEMBERED = 50;
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const POLL_MS = 1000;
  const HEALTH_MS = 5000;
  const STATS_MS = 2000;

  const cards = new Map(); // jobId -> {el, status, watching}

  const $ = (selector, root) => (root || document).querySelector(selector);

  function apiKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    return headers;
  }

  async function api(method, path, body) {
    const options = { method: method, headers: authHeaders(body ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) options.body = JSON.stringify(body);
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    return { status: response.status, ok: response.ok, data: data };
  }

  function say(text) {
    $("#message").textContent = text || "";
  }

  // -- remembered jobs ---------------------------------------------------------------

  function remembered() {
    try {
      const ids = JSON.parse(localStorage.getItem(JOBS_STORE) || "[]");
      return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
    } catch (e) {
      return [];
    }
  }

  function remember(jobId) {
    const ids = [jobId].concat(remembered().filter((id) => id !== jobId)).slice(0, MAX_REMEMBERED);
    localStorage.setItem(JOBS_STORE, JSON.stringify(ids));
  }

  function forget(jobId) {
    localStorage.setItem(JOBS_STORE, JSON.stringify(remembered().filter((id) => id !== jobId)));
    const card = cards.get(jobId);
    if (card) {
      card.closed = true;
      if (card.stop) card.stop();
      card.el.remove();
      cards.delete(jobId);
    }
  }

  // -- one job card --------------------------------------------------------------------

  function card(jobId, append) {
    let entry = cards.get(jobId);
    if (entry) return entry;
    const el = $("#job-template").content.firstElementChild.cloneNode(true);
    el.dataset.jobId = jobId;
    $(".job-id", el).textContent = jobId;
    const link = $(".download", el);
    link.href = "/v1/download/" + encodeURIComponent(jobId);
    link.addEventListener("click", (event) => downloadClicked(event, jobId));
    $(".cancel", el).addEventListener("click", () => cancel(jobId));
    $(".forget", el).addEventListener("click", () => forget(jobId));
    const list = $("#jobs");
    if (append) list.appendChild(el);
    else list.insertBefore(el, list.firstChild);
    entry = { el: el, status: null, stop: null, closed: false };
    cards.set(jobId, entry);
    return entry;
  }

  function render(status) {
    const entry = cards.get(status.jobId);
    if (!entry) return;
    // Events can arrive out of order across stream and polling: keep the newest.
    if (entry.status && (entry.status.version || 0) > (status.version || 0)) return;
    entry.status = status;
    const el = entry.el;
    const state = status.status;
    el.dataset.status = state;
    const badge = $(".job-status", el);
    badge.textContent = state + (status.phase && !TERMINAL.has(state) ? " · " + status.phase : "");
    badge.className = "job-status badge " + state;
    const percent = Math.max(0, Math.min(100, Number(status.progress) || 0));
    $("progress", el).value = percent;
    $(".job-percent", el).textContent = percent + " %";
    let files = (status.completedFiles || 0) + "/" + (status.totalFiles || 0) + " files";
    if (status.missingFileIds && status.missingFileIds.length) files += ", missing " + status.missingFileIds.join(" ");
    if (status.size) files += ", " + (status.size / 1048576).toFixed(2) + " MB";
    $(".job-files", el).textContent = files;
    $(".download", el).hidden = state !== "completed";
    $(".cancel", el).hidden = TERMINAL.has(state);
    $(".forget", el).hidden = !TERMINAL.has(state);
    $(".job-error", el).textContent = state === "failed" || state === "cancelled" ? status.error || "" : "";
  }

  function markGone(jobId, message) {
    const entry = cards.get(jobId);
    if (!entry) return;
    entry.el.dataset.status = "gone";
    $(".job-status", entry.el).textContent = "unknown";
    $(".job-error", entry.el).textContent = message;
    $(".cancel", entry.el).hidden = true;
    $(".forget", entry.el).hidden = false;
  }

  // -- watching: SSE first, polling when the stream fails ---------------------------

  async function watch(jobId) {
    const entry = card(jobId, true);
    const first = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId));
    if (first.status === 404) return markGone(jobId, "expired or unknown");
    if (!first.ok) return markGone(jobId, (first.data && first.data.message) || "HTTP " + first.status);
    render(first.data);
    if (TERMINAL.has(first.data.status) || entry.closed) return;
    if (apiKey()) streamWithFetch(jobId);
    else streamWithEventSource(jobId);
  }

  function onEvent(jobId, data) {
    let status;
    try {
      status = JSON.parse(data);
    } catch (e) {
      return false;
    }
    render(status);
    return TERMINAL.has(status.status);
  }

  function streamWithEventSource(jobId) {
    const entry = cards.get(jobId);
    const source = new EventSource("/v1/download/stream/" + encodeURIComponent(jobId));
    let done = false;
    entry.stop = () => source.close();
    const handle = (event) => {
      if (onEvent(jobId, event.data)) {
        done = true;
        source.close();
      }
    };
    ["connected", "progress", "completed", "failed", "cancelled", "message"].forEach((name) =>
      source.addEventListener(name, handle)
    );
    source.onerror = () => {
      source.close();
      if (!done && !entry.closed) poll(jobId);
    };
  }

  // EventSource cannot send headers: with an API key, read the stream with fetch.
  async function streamWithFetch(jobId) {
    const entry = cards.get(jobId);
    const controller = new AbortController();
    entry.stop = () => controller.abort();
    let done = false;
    try {
      const response = await fetch("/v1/download/stream/" + encodeURIComponent(jobId), {
        headers: authHeaders({ Accept: "text/event-stream" }),
        signal: controller.signal,
      });
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (!done) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data && onEvent(jobId, data)) done = true;
        }
      }
      controller.abort();
    } catch (e) {
      // fall through to polling
    }
    if (!done && !entry.closed) poll(jobId);
  }

  function poll(jobId) {
    const entry = cards.get(jobId);
    let timer = null;
    entry.stop = () => clearTimeout(timer);
    const tick = async () => {
      if (entry.closed) return;
      try {
        const result = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId));
        if (result.status === 404) return markGone(jobId, "expired or unknown");
        if (result.ok) {
          render(result.data);
          if (TERMINAL.has(result.data.status)) return;
        }
      } catch (e) {
        // network hiccup: try again
      }
      timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
  }

  // -- actions ---------------------------------------------------------------------------

  function parseIds(text) {
    const parts = text.split(/[\s,;]+/).filter(Boolean);
    const ids = parts.map(Number);
    const bad = parts.filter((part, i) => !/^\d+$/.test(part) || !Number.isSafeInteger(ids[i]));
    return { ids: ids, bad: bad };
  }

  async function start(event) {
    event.preventDefault();
    const parsed = parseIds($("#file-ids").value);
    if (!parsed.ids.length || parsed.bad.length) {
      say(parsed.bad.length ? "Not a file id: " + parsed.bad.join(" ") : "Type one or more file ids.");
      return;
    }
    say("");
    const button = $("#start");
    button.disabled = true;
    try {
      const result = await api("POST", "/v1/download/initiate", { file_ids: parsed.ids });
      if (result.status !== 202 && result.status !== 200) {
        say((result.data && result.data.message) || "The server answered " + result.status + ".");
        return;
      }
      const jobId = result.data.jobId;
      remember(jobId);
      card(jobId, false);
      watch(jobId);
    } catch (e) {
      say("The server could not be reached.");
    } finally {
      button.disabled = false;
    }
  }

  async function cancel(jobId) {
    const result = await api("DELETE", "/v1/download/" + encodeURIComponent(jobId));
    if (result.status === 202 && result.data) render(result.data);
    else if (result.data && result.data.details && result.data.details.jobId) render(result.data.details);
    else say((result.data && result.data.message) || "Cancel answered " + result.status + ".");
  }

  // A link cannot carry X-API-Key: with a key, ask for the status (it holds a fresh
  // presigned downloadUrl) and go there instead.
  async function downloadClicked(event, jobId) {
    if (!apiKey()) return; // the plain link follows the 302 itself
    event.preventDefault();
    const result = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId));
    if (result.ok && result.data.downloadUrl) window.location.href = result.data.downloadUrl;
    else say((result.data && result.data.message) || "No download yet.");
  }

  // -- health and live numbers ----------------------------------------------------------

  function setBadge(id, value) {
    const el = document.getElementById(id);
    el.textContent = value;
    el.className = "badge " + (value === "ok" ? "ok" : value === "…" ? "" : "error");
  }

  async function refreshHealth() {
    try {
      const result = await api("GET", "/health");
      const checks = (result.data && result.data.checks) || {};
      setBadge("health-storage", checks.storage || "error");
      setBadge("health-redis", checks.redis || "error");
    } catch (e) {
      setBadge("health-storage", "unreachable");
      setBadge("health-redis", "unreachable");
    }
  }

  async function refreshStats() {
    const set = (id, value) => {
      document.getElementById(id).textContent = value === undefined || value === null ? "–" : String(value);
    };
    try {
      const result = await api("GET", "/v1/stats");
      if (!result.ok) throw new Error("HTTP " + result.status);
      const finished = result.data.jobsFinished || {};
      set("stat-queue", result.data.queueDepth);
      set("stat-running", result.data.jobsInProgress);
      set("stat-completed", finished.completed);
      set("stat-failed", finished.failed);
      set("stat-cancelled", finished.cancelled);
    } catch (e) {
      ["stat-queue", "stat-running", "stat-completed", "stat-failed", "stat-cancelled"].forEach((id) => set(id));
    }
  }

  // -- the server's history: jobs started elsewhere (another browser, a script) -----------

  async function loadHistory() {
    const page = await api("GET", "/v1/downloads?limit=" + HISTORY_LIMIT);
    if (!page.ok || !page.data || !Array.isArray(page.data.jobs)) return;
    page.data.jobs.forEach((status) => {
      if (cards.has(status.jobId)) return;
      card(status.jobId, true);
      render(status);
      if (!TERMINAL.has(status.status)) watch(status.jobId);
    });
  }

  // -- start -----------------------------------------------------------------------------

  function init() {
    $("#api-key").value = apiKey();
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("#api-key").value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
      say(key ? "Key saved for this tab." : "Key cleared.");
      refreshStats();
    });
    $("#start-form").addEventListener("submit", start);
    remembered().forEach((jobId) => watch(jobId));
    loadHistory();
    refreshHealth();
    refreshStats();
    setInterval(refreshHealth, HEALTH_MS);
    setInterval(refreshStats, STATS_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
