// delineate console: start jobs and follow them, see health, figures, errors and traces.
// Plain JS, no build step, no inline code (CSP script-src 'self' is enough). The browser SDKs
// (Sentry, OpenTelemetry) are loaded by the page only when the server configured them
// (DASHBOARD_SENTRY_DSN, DASHBOARD_OTLP_ENDPOINT); uPlot draws the charts.
"use strict";

(function () {
  const KEY_STORE = "delineate.apiKey"; // sessionStorage: this tab only
  const JOBS_STORE = "delineate.jobs"; // localStorage: jobs started in this browser
  const FORGOTTEN_STORE = "delineate.forgotten"; // localStorage: history cards the user forgot
  const HISTORY_LIMIT = 20; // the newest jobs of this key (or of everyone, in open mode) from /v1/downloads
  const MAX_REMEMBERED = 50;
  const MAX_FORGOTTEN = 200;
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const POLL_MS = 2000; // only when a stream cannot be held
  const HEALTH_MS = 10000; // /health is not rate limited
  const TIMELINE_MS = 10000; // the charts and live numbers: 6 requests a minute
  const SLOW_MS = 30000; // totals and the error log: 2 + 2 requests a minute
  const MAX_BROWSER_ERRORS = 50;

  const settings = readSettings();
  const cards = new Map(); // jobId -> {el, status, stop, closed}
  const browserErrors = []; // errors this page captured, newest first
  const startedHere = new Set(); // jobs this page view started
  const failuresReported = new Set(); // jobs whose failure this page view reported
  let serverErrors = [];
  let sentry = null; // window.DelineateSentry, once initialised
  let otel = null; // what DelineateOtel.start returned
  let feedbackAttached = false;

  const $ = (selector, root) => (root || document).querySelector(selector);

  function readSettings() {
    const meta = document.querySelector('meta[name="delineate-console"]');
    try {
      return Object.assign({ sentryDsn: "", otlpEndpoint: "", traceUrl: "", styleNonce: "" }, JSON.parse(meta.content));
    } catch (e) {
      return { sentryDsn: "", otlpEndpoint: "", traceUrl: "", styleNonce: "" };
    }
  }

  function apiKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function say(text) {
    $("#message").textContent = text || "";
  }

  // -- telemetry: Sentry and OpenTelemetry, each only when configured -------------------

  // Never let a key or a presigned URL's signature leave the page in an event.
  const SECRET_PARAMS = /([?&](?:X-Amz-[A-Za-z-]+|Signature|AWSAccessKeyId|api_key)=)[^&#\s"']*/gi;

  function scrubText(text) {
    let out = String(text).replace(SECRET_PARAMS, "$1[Filtered]");
    const key = apiKey();
    if (key && key.length >= 4) out = out.split(key).join("[Filtered]");
    return out;
  }

  function scrubValue(value, depth) {
    if (typeof value === "string") return scrubText(value);
    if (!value || typeof value !== "object" || depth > 12) return value;
    if (Array.isArray(value)) return value.map((v) => scrubValue(v, depth + 1));
    const out = {};
    for (const name of Object.keys(value)) {
      out[name] = /^(authorization|x-api-key|cookie)$/i.test(name) ? "[Filtered]" : scrubValue(value[name], depth + 1);
    }
    return out;
  }

  function startSentry() {
    if (!settings.sentryDsn || !window.DelineateSentry) return;
    const S = window.DelineateSentry;
    S.init({
      dsn: settings.sentryDsn,
      integrations: [
        S.browserTracingIntegration(), // the page-load transaction
        S.feedbackIntegration({
          autoInject: false, // the page shows its own control after an error
          styleNonce: settings.styleNonce, // CSP: style-src 'self' 'nonce-…'
          enableScreenshot: false,
          showBranding: false,
          colorScheme: "system",
        }),
      ],
      tracesSampleRate: 1.0,
      traceLifecycle: "static", // a page-load transaction, as Sentry shows it, rather than streamed spans
      tracePropagationTargets: [], // the traceparent is OpenTelemetry's; no sentry-trace header
      sendDefaultPii: false,
      beforeSend: (event) => scrubValue(event, 0),
      beforeSendTransaction: (event) => scrubValue(event, 0),
      beforeBreadcrumb: (crumb) => scrubValue(crumb, 0),
    });
    S.setTag("service", "delineate-dashboard");
    sentry = S;
    setBadge("telemetry-sentry", "on");
  }

  function startTraces() {
    if (!settings.otlpEndpoint || !window.DelineateOtel) return;
    const sentryOrigin = settings.sentryDsn ? originOf(settings.sentryDsn) : null;
    otel = window.DelineateOtel.start({
      endpoint: settings.otlpEndpoint,
      serviceName: "delineate-dashboard",
      ignoreUrls: sentryOrigin ? [new RegExp("^" + sentryOrigin.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))] : [],
    });
    setBadge("telemetry-traces", "on");
  }

  function originOf(url) {
    try {
      return new URL(url).origin;
    } catch (e) {
      return null;
    }
  }

  // A user action (start, cancel, download, retry) is one span; the calls made for it are
  // its children, and the API, the task and its S3 calls continue the same trace.
  async function action(name, attributes, run) {
    if (!otel) return run(null);
    const span = otel.tracer.startSpan(name, { attributes: attributes || {} });
    try {
      return await run(span);
    } catch (error) {
      span.recordException(error);
      span.setStatus({ code: otel.SpanStatusCode.ERROR, message: String(error) });
      throw error;
    } finally {
      span.end();
    }
  }

  function traceLink(traceId) {
    if (!traceId || !settings.traceUrl) return null;
    return settings.traceUrl.split("{traceId}").join(encodeURIComponent(traceId));
  }

  // -- calls -----------------------------------------------------------------------------

  // Every call goes through here: inside its action's span (or a span of its own), with
  // the API key when there is one; a failure the caller did not expect is reported.
  async function api(method, path, options) {
    const opts = options || {};
    const route = opts.route || method + " " + path;
    const headers = Object.assign({}, opts.headers || {});
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    const init = { method: method, headers: headers, signal: opts.signal };
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    const own = otel && !opts.span ? otel.tracer.startSpan(route, { kind: otel.SpanKind.INTERNAL }) : null;
    const span = opts.span || own;
    const traceId = span ? otel.traceId(span) : null;
    let response;
    try {
      response = await (span ? otel.within(span, () => fetch(path, init)) : fetch(path, init));
    } catch (error) {
      if (own) own.end();
      if (error && error.name === "AbortError") throw error;
      report({ kind: "network", route: route, status: 0, message: "The server could not be reached (" + error + ")", traceId });
      throw error;
    }
    let data = null;
    if (!opts.stream) {
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
    }
    if (own) own.end();
    const expected = opts.expect || [];
    if (!response.ok && !expected.includes(response.status)) {
      report({
        kind: "api",
        route: route,
        status: response.status,
        requestId: response.headers.get("X-Request-ID"),
        traceId: traceId || response.headers.get("X-Trace-Id"),
        message: (data && data.message) || "HTTP " + response.status,
      });
    }
    return { status: response.status, ok: response.ok, data: data, response: response, traceId: traceId };
  }

  // -- errors this page captures, sent to Sentry and shown in the log ------------------------

  function report(problem) {
    let eventId = null;
    if (sentry) {
      sentry.withScope((scope) => {
        scope.setTag("route", problem.route);
        scope.setTag("status", String(problem.status));
        if (problem.requestId) scope.setTag("request_id", problem.requestId);
        if (problem.traceId) scope.setTag("trace_id", problem.traceId);
        if (problem.jobId) scope.setTag("job_id", problem.jobId);
        const error = new Error(problem.route + ": " + problem.message);
        error.name = problem.kind === "business" ? "JobError" : problem.kind === "network" ? "NetworkError" : "ApiError";
        eventId = problem.kind === "business" ? sentry.captureMessage(error.message, "error") : sentry.captureException(error);
      });
    }
    browserErrors.unshift({
      time: new Date().toISOString(),
      source: "browser",
      status: problem.status || undefined,
      route: problem.route,
      jobId: problem.jobId,
      message: problem.message,
      requestId: problem.requestId || undefined,
      traceId: problem.traceId || undefined,
      sentryEventId: eventId || undefined,
    });
    browserErrors.length = Math.min(browserErrors.length, MAX_BROWSER_ERRORS);
    renderErrors();
    offerFeedback();
  }

  // After an error, a control to tell what happened (Sentry's feedback form).
  function offerFeedback() {
    if (!sentry || feedbackAttached) return;
    const feedback = sentry.getFeedback && sentry.getFeedback();
    if (!feedback) return;
    const button = $("#report-problem");
    feedback.attachTo(button, { formTitle: "Report a problem", messagePlaceholder: "What were you doing?" });
    button.hidden = false;
    feedbackAttached = true;
  }

  function reportUncaught() {
    // Sentry captures these itself; the page also lists them and offers feedback.
    addEventListener("error", (event) => noteUncaught(event.message));
    addEventListener("unhandledrejection", (event) => noteUncaught(String(event.reason)));
  }

  function noteUncaught(message) {
    if (message && message.indexOf("AbortError") >= 0) return;
    browserErrors.unshift({ time: new Date().toISOString(), source: "browser", message: "Uncaught: " + message });
    browserErrors.length = Math.min(browserErrors.length, MAX_BROWSER_ERRORS);
    renderErrors();
    offerFeedback();
  }

  // -- remembered jobs: {jobId, traceId, fileIds} started in this browser --------------------

  function readList(store, name) {
    try {
      const value = JSON.parse(store.getItem(name) || "[]");
      return Array.isArray(value) ? value : [];
    } catch (e) {
      return [];
    }
  }

  function remembered() {
    return readList(localStorage, JOBS_STORE)
      .map((item) => (typeof item === "string" ? { jobId: item } : item)) // the old format: ids only
      .filter((item) => item && typeof item.jobId === "string");
  }

  function rememberedJob(jobId) {
    return remembered().find((item) => item.jobId === jobId) || null;
  }

  function remember(item) {
    const items = [item].concat(remembered().filter((old) => old.jobId !== item.jobId)).slice(0, MAX_REMEMBERED);
    localStorage.setItem(JOBS_STORE, JSON.stringify(items));
  }

  function forgotten() {
    return new Set(readList(localStorage, FORGOTTEN_STORE).filter((id) => typeof id === "string"));
  }

  function forget(jobId) {
    localStorage.setItem(JOBS_STORE, JSON.stringify(remembered().filter((item) => item.jobId !== jobId)));
    // A card from the server's history would come back with the next page load: remember that it was forgotten.
    const ids = [jobId].concat([...forgotten()].filter((id) => id !== jobId)).slice(0, MAX_FORGOTTEN);
    localStorage.setItem(FORGOTTEN_STORE, JSON.stringify(ids));
    const entry = cards.get(jobId);
    if (entry) {
      entry.closed = true;
      if (entry.stop) entry.stop();
      entry.el.remove();
      cards.delete(jobId);
    }
  }

  // -- one job card ----------------------------------------------------------------------

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
    $(".retry", el).addEventListener("click", () => retry(jobId));
    $(".forget", el).addEventListener("click", () => forget(jobId));
    const list = $("#jobs");
    if (append) list.appendChild(el);
    else list.insertBefore(el, list.firstChild);
    entry = { el: el, status: null, stop: null, closed: false };
    cards.set(jobId, entry);
    const known = rememberedJob(jobId);
    if (known && known.traceId) showTrace(jobId, known.traceId);
    return entry;
  }

  function showTrace(jobId, traceId) {
    const entry = cards.get(jobId);
    if (!entry || !traceId) return;
    const box = $(".job-trace", entry.el);
    const link = $(".trace-link", entry.el);
    const href = traceLink(traceId);
    link.hidden = !href;
    $(".trace-id", entry.el).hidden = !!href;
    if (href) {
      link.href = href;
      link.textContent = traceId;
    } else {
      $(".trace-id", entry.el).textContent = traceId;
    }
    entry.el.dataset.traceId = traceId;
    box.hidden = false;
  }

  function render(status) {
    const entry = cards.get(status.jobId);
    if (!entry) return;
    // Events can arrive out of order across stream and polling: keep the newest.
    if (entry.status && (entry.status.version || 0) > (status.version || 0)) return;
    const before = entry.status ? entry.status.status : null;
    entry.status = status;
    const el = entry.el;
    const state = status.status;
    el.dataset.status = state;
    const badge = $(".job-status", el);
    const revoked = Boolean(status.revokedAt); // completed, then its result withdrawn (DELETE)
    badge.textContent = (revoked ? "revoked" : state) + (status.phase && !TERMINAL.has(state) ? " · " + status.phase : "");
    badge.className = "job-status badge " + state;
    const percent = Math.max(0, Math.min(100, Number(status.progress) || 0));
    $("progress", el).value = percent;
    $(".job-percent", el).textContent = percent + " %";
    let files = (status.completedFiles || 0) + "/" + (status.totalFiles || 0) + " files";
    if (status.missingFileIds && status.missingFileIds.length) files += ", missing " + status.missingFileIds.join(" ");
    if (status.size) files += ", " + (status.size / 1048576).toFixed(2) + " MB";
    $(".job-files", el).textContent = files;
    $(".download", el).hidden = state !== "completed" || revoked;
    $(".cancel", el).hidden = TERMINAL.has(state);
    const known = rememberedJob(status.jobId);
    $(".retry", el).hidden = !(state === "failed" || state === "cancelled") || !(known && known.fileIds);
    $(".forget", el).hidden = !TERMINAL.has(state);
    $(".job-error", el).textContent = state === "failed" || state === "cancelled" ? status.error || "" : "";
    // A job seen to fail while this page followed it (or started it) is a business error of its own.
    const followed = (before !== null && before !== "failed") || startedHere.has(status.jobId);
    if (state === "failed" && followed && !failuresReported.has(status.jobId)) {
      failuresReported.add(status.jobId);
      report({
        kind: "business",
        route: "job",
        status: 0,
        jobId: status.jobId,
        traceId: el.dataset.traceId,
        message: "Job " + status.jobId + " failed: " + (status.error || "no reason given"),
      });
    }
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

  // -- following a job: a stream first, polling when the stream fails -------------------------

  async function watch(jobId, span) {
    const entry = card(jobId, true);
    let first;
    try {
      first = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId), {
        route: "GET /v1/download/status/{jobId}",
        expect: [404],
        span: span,
      });
    } catch (e) {
      return markGone(jobId, "The server could not be reached.");
    }
    if (first.status === 404) return markGone(jobId, "expired or unknown");
    if (!first.ok) return markGone(jobId, (first.data && first.data.message) || "HTTP " + first.status);
    render(first.data);
    if (TERMINAL.has(first.data.status) || entry.closed) return;
    // EventSource can send neither a key nor a traceparent: with either, read the stream with fetch.
    if (apiKey() || otel) streamWithFetch(jobId);
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

  async function streamWithFetch(jobId) {
    const entry = cards.get(jobId);
    const controller = new AbortController();
    entry.stop = () => controller.abort();
    let done = false;
    try {
      const result = await api("GET", "/v1/download/stream/" + encodeURIComponent(jobId), {
        route: "GET /v1/download/stream/{jobId}",
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
        stream: true,
        expect: [404, 503],
      });
      const response = result.response;
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
        const result = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId), {
          route: "GET /v1/download/status/{jobId}",
          expect: [404, 429, 503],
        });
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

  function idempotencyKey() {
    return crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);
  }

  // Start a job for ids (a new one each time: a new Idempotency-Key), inside ``span``.
  async function initiate(ids, span) {
    const result = await api("POST", "/v1/download/initiate", {
      route: "POST /v1/download/initiate",
      body: { file_ids: ids },
      headers: { "Idempotency-Key": idempotencyKey() },
      expect: [400, 409, 413, 429],
      span: span,
    });
    if (result.status !== 202 && result.status !== 200) {
      say((result.data && result.data.message) || "The server answered " + result.status + ".");
      return null;
    }
    const jobId = result.data.jobId;
    if (span) span.setAttribute("delineate.job_id", jobId);
    startedHere.add(jobId);
    remember({ jobId: jobId, traceId: result.traceId || result.response.headers.get("X-Trace-Id"), fileIds: ids });
    card(jobId, false);
    await watch(jobId, span);
    return jobId;
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
      await action("start", { "delineate.file_ids": parsed.ids.length }, (span) => initiate(parsed.ids, span));
    } catch (e) {
      say("The server could not be reached.");
    } finally {
      button.disabled = false;
    }
  }

  async function retry(jobId) {
    const known = rememberedJob(jobId);
    if (!known || !known.fileIds) return;
    try {
      await action("retry", { "delineate.retry_of": jobId }, (span) => initiate(known.fileIds, span));
    } catch (e) {
      say("The server could not be reached.");
    }
  }

  async function cancel(jobId) {
    try {
      await action("cancel", { "delineate.job_id": jobId }, async (span) => {
        const result = await api("DELETE", "/v1/download/" + encodeURIComponent(jobId), {
          route: "DELETE /v1/download/{jobId}",
          expect: [404, 409],
          span: span,
        });
        if (result.status === 202 && result.data) render(result.data);
        else if (result.data && result.data.details && result.data.details.jobId) render(result.data.details);
        else say((result.data && result.data.message) || "Cancel answered " + result.status + ".");
      });
    } catch (e) {
      say("The server could not be reached.");
    }
  }

  // Ask for a fresh link (the status holds a newly presigned downloadUrl) and go there. A
  // link the server will not hand out for a job it called completed is a business error.
  async function downloadClicked(event, jobId) {
    event.preventDefault();
    try {
      await action("download", { "delineate.job_id": jobId }, async (span) => {
        const result = await api("GET", "/v1/download/status/" + encodeURIComponent(jobId), {
          route: "GET /v1/download/status/{jobId}",
          expect: [404],
          span: span,
        });
        const status = result.data || {};
        if (result.ok && status.status === "completed" && status.downloadUrl) {
          window.location.href = status.downloadUrl;
          return;
        }
        if (result.ok && status.status === "completed" && status.parts && !status.revokedAt) {
          // A result in parts has no one link: each part is its own download (?part=N).
          const links = status.parts.map((p) => "/v1/download/" + jobId + "?part=" + p.index);
          say("This result is in " + status.parts.length + " parts; download each: " + links.join(" "));
          return;
        }
        if (result.ok && status.revokedAt) {
          render(status);
          say("This job's result was revoked at " + status.revokedAt + "; there is nothing to download.");
          return;
        }
        const reason = result.ok ? "no link in a " + status.status + " status" : "HTTP " + result.status;
        say("The download could not be verified: " + reason + ".");
        report({
          kind: "business",
          route: "download",
          status: result.status,
          jobId: jobId,
          requestId: result.response.headers.get("X-Request-ID"),
          traceId: result.traceId,
          message: "The download of job " + jobId + " did not verify: " + reason,
        });
      });
    } catch (e) {
      say("The server could not be reached.");
    }
  }

  // -- health, live numbers, charts, error log ---------------------------------------------------

  function setBadge(id, value) {
    const el = document.getElementById(id);
    el.textContent = value;
    el.className = "badge " + (value === "ok" || value === "on" ? "ok" : value === "…" || value === "off" ? "" : "error");
  }

  async function refreshHealth() {
    try {
      const result = await api("GET", "/health", { expect: [503] });
      const checks = (result.data && result.data.checks) || {};
      setBadge("health-storage", checks.storage || "error");
      setBadge("health-redis", checks.redis || "error");
    } catch (e) {
      setBadge("health-storage", "unreachable");
      setBadge("health-redis", "unreachable");
    }
  }

  function setNumber(id, value) {
    document.getElementById(id).textContent = value === undefined || value === null ? "–" : String(value);
  }

  async function refreshTotals() {
    try {
      const result = await api("GET", "/v1/stats", { expect: [401, 429, 503] });
      if (!result.ok) throw new Error("HTTP " + result.status);
      const finished = result.data.jobsFinished || {};
      setNumber("stat-completed", finished.completed);
      setNumber("stat-failed", finished.failed);
      setNumber("stat-cancelled", finished.cancelled);
    } catch (e) {
      ["stat-completed", "stat-failed", "stat-cancelled"].forEach((id) => setNumber(id));
    }
  }

  const charts = {};

  // Three charts side by side where they fit (a figure's border and padding are ~18 px).
  function chartWidth() {
    const box = $(".charts");
    const width = box ? box.clientWidth : 900;
    return Math.floor(Math.max(280, width >= 900 ? (width - 32) / 3 - 18 : width - 18));
  }

  function drawChart(id, series, data) {
    if (!window.uPlot) return;
    const el = document.getElementById(id);
    if (!charts[id]) {
      charts[id] = new window.uPlot(
        {
          width: chartWidth(),
          height: 180,
          series: [{}].concat(series),
          axes: [{}, { size: 50 }],
          scales: { x: { time: true } },
          legend: { live: false },
        },
        data,
        el
      );
    } else {
      charts[id].setData(data);
    }
    el.dataset.points = String(data[0].length);
    el.dataset.filled = String(data.slice(1).some((values) => values.some((v) => v !== null && v > 0)));
  }

  async function refreshTimeline() {
    const minutes = $("#window").value;
    let result;
    try {
      result = await api("GET", "/v1/stats/timeline?minutes=" + encodeURIComponent(minutes), {
        route: "GET /v1/stats/timeline",
        expect: [401, 429, 503],
      });
    } catch (e) {
      return;
    }
    if (!result.ok || !result.data || !Array.isArray(result.data.buckets)) return;
    const buckets = result.data.buckets;
    const step = result.data.stepSeconds || 10;
    const x = buckets.map((b) => Date.parse(b.t) / 1000);
    const perSecond = (name) => buckets.map((b) => Math.round((b[name] / step) * 100) / 100);
    drawChart(
      "chart-requests",
      [
        { label: "requests/s", stroke: "#3465a4" },
        { label: "4xx/s", stroke: "#c4a000" },
        { label: "5xx/s", stroke: "#cc0000" },
      ],
      [x, perSecond("requests"), perSecond("errors4xx"), perSecond("errors5xx")]
    );
    drawChart(
      "chart-latency",
      [
        { label: "p50", stroke: "#4e9a06" },
        { label: "p95", stroke: "#c4a000" },
        { label: "p99", stroke: "#cc0000" },
      ],
      [x, buckets.map((b) => b.p50Ms), buckets.map((b) => b.p95Ms), buckets.map((b) => b.p99Ms)]
    );
    drawChart(
      "chart-jobs",
      [
        { label: "completed", stroke: "#4e9a06" },
        { label: "failed", stroke: "#cc0000" },
        { label: "cancelled", stroke: "#888" },
        { label: "queue", stroke: "#3465a4" },
        { label: "in progress", stroke: "#75507b" },
      ],
      [
        x,
        buckets.map((b) => b.jobsCompleted),
        buckets.map((b) => b.jobsFailed),
        buckets.map((b) => b.jobsCancelled),
        buckets.map((b) => b.queueDepth),
        buckets.map((b) => b.inProgress),
      ]
    );
    // The live numbers: the newest sample of the queue and of the jobs in progress.
    for (let i = buckets.length - 1; i >= 0; i--) {
      if (buckets[i].queueDepth !== null) {
        setNumber("stat-queue", buckets[i].queueDepth);
        setNumber("stat-running", buckets[i].inProgress);
        break;
      }
    }
  }

  async function refreshErrors() {
    try {
      const result = await api("GET", "/v1/errors?limit=50", { route: "GET /v1/errors", expect: [401, 429, 503] });
      if (result.ok && result.data && Array.isArray(result.data.errors)) serverErrors = result.data.errors;
    } catch (e) {
      // shown again at the next refresh
    }
    renderErrors();
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (text instanceof Node) td.appendChild(text);
    else td.textContent = text === undefined || text === null ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function renderErrors() {
    const rows = serverErrors.concat(browserErrors).sort((a, b) => String(b.time).localeCompare(String(a.time)));
    const body = $("#errors tbody");
    body.textContent = "";
    rows.slice(0, 100).forEach((entry) => {
      const row = document.createElement("tr");
      row.dataset.source = entry.source;
      if (entry.requestId) row.dataset.requestId = entry.requestId;
      cell(row, new Date(entry.time).toLocaleTimeString());
      cell(row, entry.source, "source");
      const what = [entry.status, entry.route, entry.jobId ? "job " + entry.jobId : null].filter(Boolean).join(" ");
      cell(row, what);
      cell(row, entry.message, "message");
      cell(row, entry.requestId, "mono");
      const href = traceLink(entry.traceId);
      if (href) {
        const a = document.createElement("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.textContent = entry.traceId.slice(0, 12) + "…";
        a.className = "trace-link";
        cell(row, a, "mono");
      } else {
        cell(row, entry.traceId, "mono");
      }
      cell(row, entry.sentryEventId, "mono");
      body.appendChild(row);
    });
    $("#errors-empty").hidden = rows.length > 0;
  }

  // -- the server's history: jobs started elsewhere (another browser, a script) -----------

  async function loadHistory() {
    let page;
    try {
      page = await api("GET", "/v1/downloads?limit=" + HISTORY_LIMIT, { route: "GET /v1/downloads", expect: [401, 429] });
    } catch (e) {
      return;
    }
    if (!page.ok || !page.data || !Array.isArray(page.data.jobs)) return;
    const skip = forgotten();
    page.data.jobs.forEach((status) => {
      if (cards.has(status.jobId) || skip.has(status.jobId)) return;
      card(status.jobId, true);
      render(status);
      if (!TERMINAL.has(status.status)) watch(status.jobId);
    });
  }

  // -- start -----------------------------------------------------------------------------

  function every(ms, run) {
    // Only while the tab is visible: a tab in the background costs nothing.
    setInterval(() => {
      if (!document.hidden) run();
    }, ms);
  }

  function init() {
    startSentry();
    startTraces();
    reportUncaught();
    $("#api-key").value = apiKey();
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("#api-key").value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
      say(key ? "Key saved for this tab." : "Key cleared.");
      refreshTotals();
      refreshErrors();
      refreshTimeline();
    });
    $("#start-form").addEventListener("submit", start);
    $("#window").addEventListener("change", refreshTimeline);
    remembered().forEach((item) => watch(item.jobId));
    loadHistory();
    refreshHealth();
    refreshTotals();
    refreshTimeline();
    refreshErrors();
    every(HEALTH_MS, refreshHealth);
    every(TIMELINE_MS, refreshTimeline);
    every(SLOW_MS, refreshTotals);
    every(SLOW_MS, refreshErrors);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
