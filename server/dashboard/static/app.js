// greenjobs dashboard: plain JavaScript, no framework, no build step.
//
// Everything a job holds (args, kwargs, results, errors, progress messages, handler names) is
// untrusted.  The DOM is built with createElement and textContent only; no HTML string ever
// holds job data, and the page's Content-Security-Policy forbids inline script besides.
//
// Live updates: one EventSource on /events feeds the overview's rates, the job lists and the
// header; the job detail page opens its own /events?job=<id>.  Events are applied in batches
// (at most every 150 ms), so a burst of thousands of jobs costs a few DOM updates, not thousands.
// History on load: the stream first replays the newest events the server holds (?recent=, for the
// overview's feed only), and GET /throughput gives the last minute's rates and the last 15 minutes.
"use strict";

(() => {
  const STATES = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
  const ACTIVE = new Set(["scheduled", "queued", "running"]);
  const EVENTS = ["submitted", "started", "progress", "retrying", "succeeded", "failed", "cancelled"];
  const RATE_WINDOW = 10;        // seconds the overview's rates are averaged over
  const SPARK_SECONDS = 60;      // seconds the overview's chart shows
  const HISTORY_MS = 10000;      // /throughput (the cluster's last 15 minutes) is re-read this often
  const RECENT = 100;            // events the page-wide stream replays on load (the overview's recent feed)
  const FEED = 12;               // events the overview's feed shows
  const REFRESH_MS = 2000;       // /health and /metrics polling on the overview
  const FLUSH_MS = 150;          // events are applied to the page at most this often
  const PAGE_SIZES = [25, 50, 100, 200];

  // ---------------------------------------------------------------- DOM helpers (elements and text nodes only)

  /** h("a", {href: "#/x", class: "c"}, "text", child) — attributes via setAttribute, text via text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key in el && typeof value !== "string") el[key] = value;    // checked, disabled, value, max
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    put(el, children);
    return el;
  }

  /** Append children (a node, a string, or nested arrays of them) to el as nodes and text nodes. */
  function put(el, children) {
    for (const child of [children].flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const jobHref = (id) => "#/jobs/" + encodeURIComponent(id);

  function stateBadge(state) {
    const known = STATES.includes(state) ? state : "unknown";
    return h("span", {class: "badge state-" + known, "data-state": String(state)}, String(state));
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function timeCell(iso) {
    return h("time", {datetime: iso || null, title: iso || null}, fmtTime(iso));
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
    if (seconds < 120) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
    const m = Math.floor(seconds / 60);
    return m < 120 ? `${m} min ${Math.round(seconds % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function fmtRate(value) {
    if (value >= 100) return value.toFixed(0);
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  function fmtNumber(n) {
    return (n === null || n === undefined) ? "—" : Number(n).toLocaleString();
  }

  /** Pretty JSON as coloured spans, every value a text node: safe for any untrusted value. */
  function jsonView(value) {
    const pre = h("pre", {class: "json"});
    const walk = (v, indent) => {
      const pad = "  ".repeat(indent);
      if (v === null) return h("span", {class: "j-null"}, "null");
      if (typeof v === "string") return h("span", {class: "j-str"}, JSON.stringify(v));
      if (typeof v === "number") return h("span", {class: "j-num"}, String(v));
      if (typeof v === "boolean") return h("span", {class: "j-bool"}, String(v));
      const isArray = Array.isArray(v);
      const keys = isArray ? v.map((_, i) => i) : Object.keys(v);
      if (!keys.length) return document.createTextNode(isArray ? "[]" : "{}");
      const frag = document.createDocumentFragment();
      frag.append(isArray ? "[\n" : "{\n");
      keys.forEach((key, i) => {
        frag.append(pad + "  ");
        if (!isArray) put(frag, [h("span", {class: "j-key"}, JSON.stringify(String(key))), ": "]);
        frag.append(walk(v[key], indent + 1));
        frag.append(i < keys.length - 1 ? ",\n" : "\n");
      });
      frag.append(pad + (isArray ? "]" : "}"));
      return frag;
    };
    pre.append(walk(value, 0));
    return pre;
  }

  function progressBar(progress, compact) {
    const fraction = progress && typeof progress.fraction === "number" ? progress.fraction : null;
    const bar = h("progress", {class: compact ? "bar compact" : "bar", max: 1});
    if (fraction !== null) bar.value = Math.max(0, Math.min(1, fraction));
    const label = fraction === null ? "" : Math.round(fraction * 100) + "%";
    bar.setAttribute("aria-label", label || "no progress reported");
    return {bar, fraction, label};
  }

  // ---------------------------------------------------------------- flash messages

  let flashTimer = null;

  function flash(message, kind = "info") {
    const box = document.getElementById("flash");
    clear(box).append(h("span", null, message));
    box.dataset.kind = kind;
    box.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 8000 : 4000);
  }

  // ---------------------------------------------------------------- HTTP API and session

  class ApiError extends Error {
    constructor(status, problem) {
      const detail = problem && typeof problem === "object" ? (problem.detail || problem.title) : null;
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  const session = {auth: "off", authenticated: false, roles: [], permissions: null, csrf: null};

  const can = (permission) => session.auth !== "on" ||
    (session.authenticated && (session.permissions || []).includes(permission));

  async function request(method, path, body, accept = "application/json") {
    const headers = {"Accept": accept};
    const init = {method, headers, credentials: "same-origin", cache: "no-store"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    // Pyramid checks the CSRF token on every unsafe request signed in with the session cookie.
    if (method !== "GET" && method !== "HEAD" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
    const response = await fetch(path, init);
    const text = await response.text();
    let data = text;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    }
    if (!response.ok) {
      if (response.status === 401 && session.auth === "on" && path !== "/session") {
        showSignIn("Your session has ended; sign in again.");
      }
      throw new ApiError(response.status, data);
    }
    return data;
  }

  const api = {
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
    del: (path) => request("DELETE", path),
    text: (path) => request("GET", path, undefined, "text/plain"),
  };

  function applySession(state) {
    session.auth = state.auth === "on" ? "on" : "off";
    session.authenticated = !!state.authenticated;
    session.roles = Array.isArray(state.roles) ? state.roles : [];
    session.permissions = Array.isArray(state.permissions) ? state.permissions : null;
    if (session.permissions === null) {       // older servers: derive from the roles
      const grants = {read: ["read"], submit: ["submit"], admin: ["read", "submit", "admin"]};
      session.permissions = [...new Set(session.roles.flatMap((r) => grants[r] || []))];
    }
    session.csrf = state.csrf_token || null;
    const who = document.getElementById("who");
    const signout = document.getElementById("signout");
    if (session.auth === "on" && session.authenticated) {
      who.textContent = "signed in · " + session.roles.join(", ");
      signout.hidden = state.via === "bearer";
    } else {
      who.textContent = session.auth === "off" ? "access control off" : "";
      signout.hidden = true;
    }
  }

  async function loadSession() {
    try {
      applySession(await api.get("/session"));
    } catch (error) {
      // A server without access control (no /session route) permits everything.
      if (error.status === 404) {
        console.info("greenjobs: no /session on this server; treating access control as off");
        applySession({auth: "off"});
      } else {
        throw error;
      }
    }
  }

  function showSignIn(message) {
    live.close();
    if (current) { current.stop(); current = null; }
    document.getElementById("view").hidden = true;
    document.body.classList.add("signed-out");
    const error = document.getElementById("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    document.getElementById("signin").hidden = false;
    document.getElementById("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = document.getElementById("token");
    const error = document.getElementById("signin-error");
    try {
      applySession(await api.post("/session", {token: input.value}));
      input.value = "";
      document.getElementById("signin").hidden = true;
      document.getElementById("view").hidden = false;
      document.body.classList.remove("signed-out");
      start();
    } catch (e) {
      error.textContent = e.status === 401 ? "That token is not valid." : e.message;
      error.hidden = false;
      input.select();
    }
  }

  async function signOut() {
    // Stop the page first, so no stream or poll of it is refused (401) once the session is gone.
    live.close();
    if (current) { current.stop(); current = null; }
    try { applySession(await api.del("/session")); } catch (e) { flash(e.message, "error"); }
    await loadSession().catch(() => {});
    if (session.auth === "on" && !session.authenticated) showSignIn();
    else start();           // the sign-out was refused: carry on
  }

  // ---------------------------------------------------------------- live events

  /** Events per second by name, in one-second buckets, from what the unfiltered stream delivers. */
  const rates = {
    buckets: new Map(),
    since: Date.now() / 1000,      // the oldest second the buckets speak for
    opened: Math.floor(Date.now() / 1000),   // from this second on the live stream counts; before it, /throughput
    record(name) {
      const second = Math.floor(Date.now() / 1000);
      let bucket = this.buckets.get(second);
      if (!bucket) {
        bucket = {};
        this.buckets.set(second, bucket);
        for (const key of this.buckets.keys()) if (key < second - SPARK_SECONDS - 2) this.buckets.delete(key);
      }
      bucket[name] = (bucket[name] || 0) + 1;
    },
    rate(name) {
      const now = Date.now() / 1000;
      let n = 0;
      for (const [second, bucket] of this.buckets) if (second > now - RATE_WINDOW) n += bucket[name] || 0;
      return n / Math.max(1, Math.min(RATE_WINDOW, now - this.since));
    },
    /** Counts of the last SPARK_SECONDS whole seconds (the current, partial one is left out). */
    series(name) {
      const now = Math.floor(Date.now() / 1000);
      const out = [];
      for (let s = now - SPARK_SECONDS; s < now; s++) out.push((this.buckets.get(s) || {})[name] || 0);
      return out;
    },
    reset() { this.buckets.clear(); this.since = Date.now() / 1000; this.opened = Math.floor(this.since); },
    /** The seconds before the stream opened, from GET /throughput's per-second series (every alive server's). */
    seed(seconds) {
      if (!seconds || typeof seconds.start !== "number" || !Array.isArray(seconds.submitted)) return;
      const step = seconds.step || 1;
      for (let i = 0; i < seconds.submitted.length; i++) {
        const second = seconds.start + i * step;
        if (second >= this.opened) break;
        const bucket = {};
        for (const name of ["submitted", "succeeded", "failed"]) {
          const n = Number((seconds[name] || [])[i]) || 0;
          if (n) bucket[name] = n;
        }
        this.buckets.set(second, bucket);
      }
      this.since = Math.min(this.since, seconds.start);
    },
  };

  /** One EventSource with batching, reconnection after a hard failure, and reset handling. */
  class Stream {
    constructor(url, {onEvents, onReset, onStatus, onReceive, onReplay}) {
      this.url = url;
      this.onReceive = onReceive || null;
      this.onReplay = onReplay || null;     // with ?recent=: the history before the "replayed" event, once per open
      this.onEvents = onEvents;
      this.onReset = onReset;
      this.onStatus = onStatus || (() => {});
      this.pending = [];
      this.timer = null;
      this.retry = null;
      this.closed = false;
      this.open();
    }

    open() {
      if (this.closed) return;
      const source = this.source = new EventSource(this.url, {withCredentials: true});
      let history = this.onReplay ? [] : null;      // events before the "replayed" marker are history
      const receive = (message) => {
        let data;
        try { data = JSON.parse(message.data); } catch (_) { return; }
        if (!data || typeof data !== "object") return;
        if (history) { history.push(data); return; }
        if (this.onReceive) this.onReceive(data);
        this.pending.push(data);
        if (this.timer === null) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      };
      for (const name of EVENTS) source.addEventListener(name, receive);
      source.addEventListener("replayed", () => {
        const replayed = history || [];
        history = null;
        if (this.onReplay) this.onReplay(replayed);
      });
      // The server lost events we missed (replay window passed): whatever we show may be stale.
      source.addEventListener("reset", () => this.onReset && this.onReset());
      source.addEventListener("dropped", () => this.onStatus("connecting"));
      source.onopen = () => this.onStatus("on");
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          // A refused stream (401, 503) is not retried by the browser: try again ourselves.
          this.onStatus("off");
          clearTimeout(this.retry);
          this.retry = setTimeout(() => { this.onReset && this.onReset(); this.open(); }, 3000);
        } else {
          this.onStatus("connecting");
        }
      };
    }

    flush() {
      this.timer = null;
      const batch = this.pending;
      this.pending = [];
      if (batch.length && !this.closed) this.onEvents(batch);
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      clearTimeout(this.retry);
      if (this.source) this.source.close();
    }
  }

  /** The page-wide stream: every event, for rates, the job lists and the recent-events feed. */
  const live = {
    stream: null,
    history: null,          // the replayed events, oldest first (null until they came)
    open() {
      if (this.stream) return;
      rates.reset();
      this.history = null;
      this.stream = new Stream("/events?recent=" + RECENT, {
        onReplay: (events) => {
          this.history = events;
          if (current && current.onReplay) current.onReplay(events);
        },
        onEvents: (batch) => { if (current && current.onEvents) current.onEvents(batch); },
        onReset: () => { if (current && current.refresh) current.refresh(); },
        onStatus: (state) => setLive(state),
        // Rates are counted on arrival, not on flush, so a batch never smears them over time; the history
        // goes on with every live event, so an overview opened later starts from what happened since.
        onReceive: (data) => {
          rates.record(data.event);
          if (this.history) {
            this.history.push(data);
            if (this.history.length > RECENT) this.history.splice(0, this.history.length - RECENT);
          }
        },
      });
    },
    close() {
      if (this.stream) this.stream.close();
      this.stream = null;
      setLive("off");
    },
  };

  function setLive(state) {
    const el = document.getElementById("live");
    el.dataset.state = state;
    el.textContent = {on: "live", connecting: "reconnecting…", off: "offline"}[state] || state;
  }

  // ---------------------------------------------------------------- shared page pieces

  let handlersCache = null;

  async function handlerNames() {
    if (handlersCache === null) {
      try {
        const data = await api.get("/handlers");
        handlersCache = (data.handlers || []).map((x) => String(x.name)).sort();
      } catch (_) {
        handlersCache = [];
      }
    }
    return handlersCache;
  }

  function select(name, label, options, value, onchange) {
    const el = h("select", {name, id: "filter-" + name, onchange});
    for (const [optValue, optLabel] of options) {
      el.append(h("option", {value: optValue, selected: optValue === value}, optLabel));
    }
    return h("label", {class: "field"}, h("span", null, label), el);
  }

  function hashWith(base, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
    const text = query.toString();
    return base + (text ? "?" + text : "");
  }

  function pageHeader(title, subtitle, ...extra) {
    return h("div", {class: "page-head"},
      h("div", null, h("h1", null, title), subtitle ? h("p", {class: "muted"}, subtitle) : null),
      h("div", {class: "page-actions"}, extra));
  }

  function card(title, body, cls) {
    return h("section", {class: "card " + (cls || "")}, title ? h("h2", null, title) : null, body);
  }

  function stat(label, value, id, hint) {
    return h("div", {class: "stat"},
      h("div", {class: "stat-value", id: id || null}, value),
      h("div", {class: "stat-label"}, label, hint ? h("span", {class: "muted"}, " " + hint) : null));
  }

  // Cursor paging: the API pages forward only ("next" = the last id shown), so the way back is a stack.
  const pageStacks = new Map();

  function pager(key, params, next, base) {
    const stack = pageStacks.get(key) || [];
    const newer = h("a", {class: "button", href: "#", "aria-disabled": params.after ? null : "true"}, "← Newer");
    newer.addEventListener("click", (e) => {
      e.preventDefault();
      if (!params.after) return;
      const previous = stack.pop() || null;
      pageStacks.set(key, stack);
      location.hash = hashWith(base, {...params, after: previous});
    });
    const older = h("a", {class: "button", href: "#", "aria-disabled": next ? null : "true"}, "Older →");
    older.addEventListener("click", (e) => {
      e.preventDefault();
      if (!older.dataset.next) return;
      stack.push(params.after || null);
      pageStacks.set(key, stack);
      location.hash = hashWith(base, {...params, after: older.dataset.next});
    });
    if (next) older.dataset.next = next;
    const where = h("span", {class: "muted"}, params.after ? `page ${stack.length + 1}` : "newest first");
    return {el: h("div", {class: "pager"}, newer, where, older), older};
  }

  function setNext(older, next) {
    if (next) { older.dataset.next = next; older.removeAttribute("aria-disabled"); }
  }

  // ---------------------------------------------------------------- overview

  class OverviewPage {
    constructor(root) {
      this.root = root;
      this.timer = null;
      this.tick = null;
      this.lastRefresh = 0;
      this.recent = [];
    }

    start() {
      const rateStat = (name, label) => stat(label, "0.00", "rate-" + name, "/s");
      this.rates = h("div", {class: "stats"},
        rateStat("submitted", "submitted"), rateStat("succeeded", "succeeded"), rateStat("failed", "failed"));
      this.chart = h("canvas", {class: "spark", width: 600, height: 90, "aria-label": "events per second, last minute"});
      this.history = h("canvas", {class: "spark", id: "history-chart", width: 600, height: 90,
                                  "aria-label": "jobs per 10 s, last 15 minutes"});
      this.historyNote = h("span", {class: "muted", id: "history-note"}, "loading…");
      this.pool = h("div", {class: "stats"});
      this.poolMeter = h("div", {class: "meter-wrap"});
      this.cpu = h("div", {class: "stats"});
      this.server = h("dl", {class: "facts"});
      this.queues = h("div", {class: "table-wrap"});
      this.servers = h("div", {class: "table-wrap"});
      this.feed = h("ol", {class: "feed"});
      put(clear(this.root), [
        pageHeader("Overview", "Live from /events; pool, workers and queues refreshed every 2 s."),
        h("div", {class: "grid"},
          card(`Throughput · last ${RATE_WINDOW} s`, [this.rates, this.chart,
            chartLegend(h("span", {class: "muted"}, `events per second, last ${SPARK_SECONDS} s`))], "wide"),
          card("I/O pool", [this.poolMeter, this.pool]),
          card("Throughput · last 15 minutes", [this.history,
            chartLegend(this.historyNote)], "wide"),
          card("CPU workers", this.cpu),
          card("Queue depths", this.queues, "wide"),
          card("Server", this.server),
          card("Cluster", this.servers, "wide"),
          card("Recent events", this.feed, "wide")),
      ]);
      this.renderRates();
      this.renderFeed();
      if (live.history) this.onReplay(live.history);
      this.refresh();
      this.loadHistory();
      this.timer = setInterval(() => this.refresh(), REFRESH_MS);
      this.tick = setInterval(() => this.renderRates(), 1000);
      this.historyTimer = setInterval(() => this.loadHistory(), HISTORY_MS);
    }

    stop() {
      this.stopped = true;
      clearInterval(this.timer);
      clearInterval(this.tick);
      clearInterval(this.historyTimer);
    }

    onEvents(batch) {
      this.renderRates();
      this.addToFeed(batch);
      if (Date.now() - this.lastRefresh > 500) this.refresh();    // live, but at most twice a second
    }

    /** Events, newest first in the feed (progress is too chatty for it: the job pages show it), each once. */
    addToFeed(events) {
      const seen = new Set(this.recent.map((e) => e.id));
      const fresh = events.filter((e) => e.event !== "progress" && !(e.id && seen.has(e.id)));
      if (!fresh.length && this.recent.length) return;
      this.recent = [...fresh.reverse(), ...this.recent.filter((e) => !e.fromLedger)]
        .sort((a, b) => (b.id || 0) - (a.id || 0)).slice(0, FEED);
      this.renderFeed();
    }

    /** The history the stream replayed on load; with none (a restarted server), the ledger's newest jobs. */
    async onReplay(events) {
      this.addToFeed(events);
      if (this.recent.length || this.ledgerTried) return;
      this.ledgerTried = true;
      let data;
      try { data = await api.get("/jobs?limit=" + FEED); } catch (_) { return; }
      if (this.stopped || this.recent.length) return;
      this.recent = (data.jobs || []).map((job) => ({
        event: job.state, job: job.id, handler: job.handler, fromLedger: true,
        at: job.finished_at || job.started_at || job.created_at}));
      this.renderFeed();
    }

    /** GET /throughput: the last minute's rates before the page opened, and the 15-minute chart. */
    async loadHistory() {
      let data;
      try {
        data = await api.get("/throughput");
      } catch (error) {
        this.historyNote.textContent = "history needs /throughput: " + error.message;
        return;
      }
      if (this.stopped) return;
      rates.seed(data.seconds);
      this.renderRates();
      const buckets = data.buckets || {};
      const series = {submitted: buckets.submitted || [], succeeded: buckets.succeeded || [], failed: buckets.failed || []};
      const total = (name) => series[name].reduce((n, v) => n + (Number(v) || 0), 0);
      this.historyNote.textContent = `jobs per ${buckets.step || 10} s, every alive server's (${fmtNumber(data.servers)})` +
        ` · ${fmtNumber(total("submitted"))} submitted, ${fmtNumber(total("succeeded"))} succeeded,` +
        ` ${fmtNumber(total("failed"))} failed`;
      this.history.dataset.submitted = String(total("submitted"));
      this.history.dataset.succeeded = String(total("succeeded"));
      this.history.dataset.failed = String(total("failed"));
      drawLines(this.history, series, `/${buckets.step || 10} s`);
    }

    renderRates() {
      for (const name of ["submitted", "succeeded", "failed"]) {
        const el = document.getElementById("rate-" + name);
        if (el) el.textContent = fmtRate(rates.rate(name));
      }
      this.drawChart();
    }

    drawChart() {
      drawLines(this.chart, {submitted: rates.series("submitted"), succeeded: rates.series("succeeded"),
                             failed: rates.series("failed")}, "/s");
    }

    renderFeed() {
      clear(this.feed);
      if (!this.recent.length) {
        this.feed.append(h("li", {class: "muted"}, live.history ? "No events yet." : "Loading…"));
        return;
      }
      if (this.recent[0].fromLedger) {
        this.feed.append(h("li", {class: "muted"}, "The server holds no events yet; the newest jobs in the ledger:"));
      }
      for (const e of this.recent) {
        this.feed.append(h("li", {class: e.fromLedger ? "from-ledger" : null},
          h("time", {title: e.at || null}, fmtTime(e.at)),
          h("span", {class: "badge event-" + (EVENTS.includes(e.event) ? e.event : "other")}, String(e.event)),
          h("a", {href: jobHref(e.job), class: "mono"}, String(e.job).slice(0, 12)),
          h("span", {class: "handler"}, String(e.handler))));
      }
    }

    async refresh() {
      if (this.stopped) return;
      this.lastRefresh = Date.now();
      let health;
      try {
        health = await api.get("/health");
      } catch (error) {
        health = error.problem && typeof error.problem === "object" && error.problem.pool ? error.problem : null;
        if (!health) { this.renderServer(null, error); return; }
      }
      this.renderPool(health.pool || {});
      this.renderCpu(health.cpu || {});
      this.renderServer(health);
      try {
        this.renderQueues(parseGauge(await api.text("/metrics"), "greenjobs_jobs"), health);
      } catch (error) {
        clear(this.queues).append(h("p", {class: "muted"}, "Queue depths need /metrics: " + error.message));
      }
      try {
        this.renderServers((await api.get("/servers")).servers || []);
      } catch (error) {
        clear(this.servers).append(h("p", {class: "muted"}, "The cluster needs /servers: " + error.message));
      }
    }

    /** Every server sharing the ledger, from its servers table: alive or lost, its load, which one is this. */
    renderServers(servers) {
      const body = h("tbody");
      for (const s of servers) {
        const size = s.pool_size || 0;
        body.append(h("tr", {class: s.alive ? null : "lost"},
          h("td", {class: "mono"}, `${s.host}:${s.pid}` + (s.me ? " (this one)" : "")),
          h("td", null, String(s.role)),
          h("td", null, h("span", {class: "badge " + (s.alive ? "ok" : "bad")}, s.alive ? "alive" : "lost")),
          h("td", {class: "num"}, `${fmtNumber(s.pool_busy)} / ${fmtNumber(size)}`),
          h("td", {class: "num"}, fmtNumber(s.cpu_workers)),
          h("td", {class: "num", title: fmtTime(s.heartbeat_at * 1000)}, `${Number(s.heartbeat_age).toFixed(1)} s ago`),
          h("td", {title: fmtTime(s.started_at * 1000)}, fmtTime(s.started_at * 1000)),
          h("td", null, String(s.version))));
      }
      if (!servers.length) body.append(h("tr", null, h("td", {colspan: 8, class: "muted"}, "No heartbeat yet.")));
      put(clear(this.servers), [h("table", {class: "table", id: "servers"},
        h("thead", null, h("tr", null, ...["server", "role", "state", "io busy / size", "cpu workers", "heartbeat",
          "started", "version"].map((t) => h("th", null, t)))),
        body)]);
    }

    renderPool(pool) {
      const size = pool.size || 0;
      const busy = pool.busy || 0;
      const meter = h("meter", {class: "meter", min: 0, max: Math.max(1, size), value: busy, id: "pool-meter"});
      put(clear(this.poolMeter), [meter,
        h("span", {class: "muted"}, size ? `${Math.round((busy / size) * 100)}% busy` : "no pool")]);
      put(clear(this.pool), [
        stat("busy", fmtNumber(busy), "pool-busy"), stat("size", fmtNumber(size), "pool-size"),
        stat("pending", fmtNumber(pool.pending), "pool-pending"), stat("completed", fmtNumber(pool.completed))]);
    }

    renderCpu(cpu) {
      const connected = cpu.broker_connected;
      put(clear(this.cpu), [
        stat("workers alive", cpu.workers === null || cpu.workers === undefined ? "external" : fmtNumber(cpu.workers),
             "cpu-workers"),
        stat("running", fmtNumber(cpu.running), "cpu-running"),
        stat("to publish", fmtNumber(cpu.to_publish)),
        stat("restarts", fmtNumber(cpu.worker_restarts)),
        h("div", {class: "stat"},
          h("div", {class: "stat-value"},
            h("span", {class: "badge " + (connected ? "ok" : "bad"), id: "broker"},
              connected ? "connected" : "disconnected")),
          h("div", {class: "stat-label"}, "broker"))]);
    }

    renderServer(health, error) {
      clear(this.server);
      if (!health) {
        put(this.server, [h("dt", null, "status"), h("dd", null, h("span", {class: "badge bad"}, error.message))]);
        return;
      }
      const store = health.store || {};
      const row = (k, v) => [h("dt", null, k), h("dd", null, v)];
      put(this.server, [
        row("status", h("span", {class: "badge " + (health.status === "ok" ? "ok" : "bad")}, String(health.status))),
        row("accepting jobs", health.accepting ? "yes" : "no"),
        row("store", store.ok ? "ok" : "failing" + (store.error ? ": " + store.error : "")),
        row("parked long-polls", fmtNumber(health.waiters)),
      ]);
    }

    renderQueues(rows, health) {
      const byHandler = new Map();
      for (const {labels, value} of rows) {
        const entry = byHandler.get(labels.handler) || {scheduled: 0, queued: 0, running: 0};
        if (labels.state in entry) entry[labels.state] += value;
        byHandler.set(labels.handler, entry);
      }
      const total = {scheduled: 0, queued: 0, running: 0};
      const body = h("tbody");
      for (const [handler, counts] of [...byHandler].sort((a, b) => a[0].localeCompare(b[0]))) {
        for (const key of Object.keys(total)) total[key] += counts[key];
        const link = (state) => h("a", {href: hashWith("#/jobs", {state, handler})}, fmtNumber(counts[state]));
        body.append(h("tr", null, h("td", {class: "handler"}, handler),
          h("td", {class: "num"}, link("scheduled")), h("td", {class: "num"}, link("queued")),
          h("td", {class: "num"}, link("running"))));
      }
      if (!byHandler.size) body.append(h("tr", null, h("td", {colspan: 4, class: "muted"}, "No active jobs.")));
      const pending = (health.pool || {}).pending;
      put(clear(this.queues), [h("table", {class: "table", id: "queues"},
        h("thead", null, h("tr", null, h("th", null, "handler"), h("th", {class: "num"}, "scheduled"),
          h("th", {class: "num"}, "queued"), h("th", {class: "num"}, "running"))),
        body,
        h("tfoot", null, h("tr", null, h("th", null, "total"), h("th", {class: "num"}, fmtNumber(total.scheduled)),
          h("th", {class: "num"}, fmtNumber(total.queued)), h("th", {class: "num"}, fmtNumber(total.running))))),
        h("p", {class: "muted small"},
          `I/O jobs waiting for a pool slot: ${fmtNumber(pending)} · cpu jobs waiting to be published: ` +
          fmtNumber(((health.cpu || {}).to_publish)))]);
    }
  }

  /** The key under a throughput chart, then ``note``. */
  function chartLegend(note) {
    return h("div", {class: "legend"}, ["submitted", "succeeded", "failed"].map((name) =>
      h("span", {class: "key key-" + name}, name)), note);
  }

  /** Line chart of {submitted, succeeded, failed} series on ``canvas``, scaled to its top value (labelled ``unit``). */
  function drawLines(canvas, series, unit) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 90;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const top = Math.max(1, ...Object.values(series).flat().map((v) => Number(v) || 0));
    const style = getComputedStyle(document.documentElement);
    ctx.strokeStyle = style.getPropertyValue("--grid").trim() || "#ddd";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const y of [0.25, 0.5, 0.75]) { ctx.moveTo(0, height * y); ctx.lineTo(width, height * y); }
    ctx.stroke();
    ctx.fillStyle = style.getPropertyValue("--muted").trim() || "#888";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(`${fmtNumber(top)}${unit}`, 4, 12);
    for (const name of ["submitted", "succeeded", "failed"]) {
      const values = series[name] || [];
      if (values.length < 2) continue;
      ctx.strokeStyle = style.getPropertyValue("--c-" + name).trim() || "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      values.forEach((v, i) => {
        const x = (i / (values.length - 1)) * width;
        const y = height - 2 - ((Number(v) || 0) / top) * (height - 18);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  }

  /** The samples of one metric family from Prometheus text: [{labels: {...}, value}]. */
  function parseGauge(text, name) {
    const out = [];
    for (const line of String(text).split("\n")) {
      if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
      const brace = line.indexOf("{");
      const labels = {};
      let rest = line;
      if (brace === name.length) {
        const end = line.lastIndexOf("}");
        const labelText = line.slice(brace + 1, end);
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
        let m;
        while ((m = re.exec(labelText)) !== null) {
          labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
        }
        rest = line.slice(end + 1);
      } else {
        rest = line.slice(name.length);
      }
      const value = parseFloat(rest.trim().split(/\s+/)[0]);
      if (!isNaN(value)) out.push({labels, value});
    }
    return out;
  }

  // ---------------------------------------------------------------- job list (and the failed view)

  class JobsPage {
    constructor(root, params, failed) {
      this.root = root;
      this.failed = !!failed;
      this.base = failed ? "#/failed" : "#/jobs";
      this.params = {
        state: failed ? "failed" : (STATES.includes(params.get("state")) ? params.get("state") : ""),
        handler: params.get("handler") || "",
        limit: PAGE_SIZES.includes(Number(params.get("limit"))) ? params.get("limit") : "",
        after: params.get("after") || "",
        q: (params.get("q") || "").slice(0, 200),
      };
      this.rows = new Map();         // job id -> {tr, job}
    }

    get limit() { return Number(this.params.limit) || 50; }

    go(changes) {
      const params = {...this.params, ...changes, after: ""};
      if (this.failed) delete params.state;
      location.hash = hashWith(this.base, params);
    }

    async start() {
      const names = await handlerNames();
      if (this.stopped) return;
      const handlerOptions = [["", "any handler"], ...names.map((n) => [n, n])];
      if (this.params.handler && !names.includes(this.params.handler)) {
        handlerOptions.push([this.params.handler, this.params.handler]);
      }
      const filters = h("form", {class: "filters", onsubmit: (e) => e.preventDefault()},
        this.failed ? null : select("state", "State", [["", "any state"], ...STATES.map((s) => [s, s])],
                                    this.params.state, (e) => this.go({state: e.target.value})),
        select("handler", "Handler", handlerOptions, this.params.handler, (e) => this.go({handler: e.target.value})),
        select("limit", "Per page", PAGE_SIZES.map((n) => [String(n), String(n)]), String(this.limit),
               (e) => this.go({limit: e.target.value === "50" ? "" : e.target.value})),
        h("label", {class: "field"}, h("span", null, "Arguments contain"),
          h("input", {type: "search", name: "q", id: "filter-q", value: this.params.q, maxlength: 200,
                      placeholder: "e.g. an order id", onchange: (e) => this.go({q: e.target.value.trim()})})));
      this.body = h("tbody");
      this.count = h("span", {class: "muted", id: "selected-count"});
      const columns = this.failed
        ? [h("th", {class: "check"}, this.selectAll = h("input", {type: "checkbox", id: "select-all",
              "aria-label": "select every job on this page", onchange: (e) => this.toggleAll(e.target.checked)})),
           "job", "handler", "state", "attempts", "error", "finished"]
        : ["job", "handler", "state", "attempts", "progress", "created", "finished", "runtime"];
      const table = h("table", {class: "table jobs", id: "jobs-table"},
        h("thead", null, h("tr", null, columns.map((c) => (c instanceof Node ? c : h("th", null, c))))), this.body);
      const key = this.base + "|" + this.params.state + "|" + this.params.handler + "|" + this.params.limit + "|" +
                  this.params.q;
      if (!this.params.after) pageStacks.delete(key);
      this.pager = pager(key, this.params, null, this.base);
      let actions = null;
      if (this.failed) {
        const allowed = can("admin");
        const title = allowed ? null : "retrying needs the admin role";
        this.retrySelected = h("button", {type: "button", class: "primary", id: "retry-selected", disabled: true, title,
                                          onclick: () => this.retry([...this.selected()])}, "Retry selected");
        this.retryAll = h("button", {type: "button", id: "retry-all", disabled: !allowed, title,
                                     onclick: () => this.retry([...this.rows.keys()].filter((id) =>
                                       this.rows.get(id).job.state === "failed"))}, "Retry all on page");
        actions = h("div", {class: "bulk"}, this.retrySelected, this.retryAll, this.count);
      }
      put(clear(this.root), [
        pageHeader(this.failed ? "Failed jobs" : "Jobs",
          this.failed ? "Jobs whose last attempt failed, newest first. Retry runs a job again with the same id."
                      : "Newest first; rows follow /events live."),
        card(null, [filters, actions, h("div", {class: "table-wrap"}, table), this.pager.el])]);
      await this.refresh();
    }

    stop() { this.stopped = true; }

    async refresh() {
      if (!this.body) return;        // a stream reset while start() is still building: start() refreshes
      const query = new URLSearchParams({limit: String(this.limit)});
      if (this.params.state) query.set("state", this.params.state);
      if (this.params.handler) query.set("handler", this.params.handler);
      if (this.params.after) query.set("after", this.params.after);
      if (this.params.q) query.set("q", this.params.q);
      let data;
      try {
        data = await api.get("/jobs?" + query);
      } catch (error) {
        if (this.stopped) return;
        clear(this.body).append(h("tr", null, h("td", {colspan: 8, class: "error"}, error.message)));
        return;
      }
      if (this.stopped) return;
      clear(this.body);
      this.rows.clear();
      for (const job of data.jobs || []) this.addRow(job, false);
      if (!this.rows.size) this.empty();
      setNext(this.pager.older, data.next);
      this.updateSelection();
    }

    empty() {
      this.body.append(h("tr", {class: "empty"}, h("td", {colspan: 8, class: "muted"},
        this.failed ? "No failed jobs." : "No jobs match.")));
    }

    addRow(job, atTop) {
      const tr = h("tr", {"data-job": String(job.id)});
      const row = {tr, job: {...job}};
      this.rows.set(job.id, row);
      this.fill(row);
      const empty = this.body.querySelector("tr.empty");
      if (empty) empty.remove();
      if (atTop) this.body.prepend(tr); else this.body.append(tr);
      return row;
    }

    fill(row) {
      const job = row.job;
      const cells = [];
      if (this.failed) {
        row.check = h("input", {type: "checkbox", class: "pick", "aria-label": "select job " + job.id,
                                disabled: job.state !== "failed" || !can("admin"),
                                checked: !!(row.check && row.check.checked && job.state === "failed"),
                                onchange: () => this.updateSelection()});
        cells.push(h("td", {class: "check"}, row.check));
      }
      cells.push(h("td", null, h("a", {href: jobHref(job.id), class: "mono"}, String(job.id))));
      cells.push(h("td", {class: "handler"}, String(job.handler)));
      cells.push(h("td", {class: "state"}, stateBadge(job.state)));
      cells.push(h("td", {class: "num attempts"}, String(job.attempts ?? "")));
      if (this.failed) {
        const error = job.error || {};
        const text = error.kind ? `${error.kind}: ${error.message ?? ""}` : (error.message ?? "");
        cells.push(h("td", {class: "error-text", title: String(text)}, String(text)));
        cells.push(h("td", null, timeCell(job.finished_at)));
      } else {
        const {bar, label} = progressBar(job.progress, true);
        cells.push(h("td", null, job.progress ? h("div", {class: "progress-cell"}, bar, h("span", {class: "muted"}, label))
                                              : h("span", {class: "muted"}, "—")));
        cells.push(h("td", null, timeCell(job.created_at)));
        cells.push(h("td", null, timeCell(job.finished_at)));
        const runtime = job.started_at && job.finished_at ? (new Date(job.finished_at) - new Date(job.started_at)) / 1000
                      : null;
        cells.push(h("td", {class: "num runtime"}, runtime === null ? "—" : fmtDuration(runtime)));
      }
      clear(row.tr);
      put(row.tr, cells);
      row.tr.dataset.state = String(job.state);
      const matches = (!this.params.state || job.state === this.params.state);
      row.tr.classList.toggle("stale", !matches);
      row.tr.title = matches ? "" : "no longer matches the filter";
    }

    onEvents(batch) {
      if (!this.body) return;        // still building (start() awaits the handler names): its refresh lists these
      const changed = new Set();
      for (const event of batch) {
        const row = this.rows.get(event.job);
        if (row) {
          row.job.state = event.state;
          row.job.attempts = event.attempts;
          if (event.progress !== undefined) row.job.progress = event.progress;
          if (event.error !== undefined) row.job.error = event.error;
          if (event.event === "submitted" || event.event === "retrying") row.job.finished_at = null;
          if (event.event === "started") row.job.started_at = event.at;
          if (["succeeded", "failed", "cancelled"].includes(event.event)) row.job.finished_at = event.at;
          changed.add(row);
        } else if (this.accepts(event)) {
          // A new job (or a newly failed one) that belongs at the top of the first page.
          changed.add(this.addRow({id: event.job, handler: event.handler, state: event.state,
                                   attempts: event.attempts, progress: event.progress || null,
                                   error: event.error || null, created_at: event.at,
                                   finished_at: event.event === "failed" ? event.at : null}, true));
        }
      }
      for (const row of changed) {
        this.fill(row);
        row.tr.classList.remove("flash-row");
        void row.tr.offsetWidth;         // restart the highlight animation
        row.tr.classList.add("flash-row");
      }
      this.trim();
      this.updateSelection();
    }

    /** Whether a job not on the page belongs at its top now: new, or just moved into the filtered state. */
    accepts(event) {
      if (this.params.after) return false;                       // only the first page grows
      if (this.params.q) return false;                           // events carry no arguments: refresh finds them
      if (this.params.handler && event.handler !== this.params.handler) return false;
      if (!this.params.state) return event.event === "submitted";
      return event.event !== "progress" && event.state === this.params.state;
    }

    /** Keep one page: rows pushed off the bottom are on the next page now. */
    trim() {
      let last = null;
      while (this.rows.size > this.limit) {
        const tr = this.body.lastElementChild;
        if (!tr) break;
        this.rows.delete(tr.dataset.job);
        tr.remove();
        last = true;
      }
      if (last) setNext(this.pager.older, this.body.lastElementChild.dataset.job);
    }

    *selected() {
      for (const [id, row] of this.rows) if (row.check && row.check.checked && !row.check.disabled) yield id;
    }

    toggleAll(checked) {
      for (const row of this.rows.values()) if (row.check && !row.check.disabled) row.check.checked = checked;
      this.updateSelection();
    }

    updateSelection() {
      if (!this.failed) return;
      const n = [...this.selected()].length;
      const failedRows = [...this.rows.values()].filter((r) => r.job.state === "failed").length;
      this.retrySelected.disabled = n === 0 || !can("admin");
      this.retrySelected.textContent = n ? `Retry selected (${n})` : "Retry selected";
      this.retryAll.disabled = failedRows === 0 || !can("admin");
      this.count.textContent = `${failedRows} failed on this page`;
      this.selectAll.checked = n > 0 && n === failedRows;
      this.selectAll.indeterminate = n > 0 && n < failedRows;
    }

    async retry(ids) {
      if (!ids.length) return;
      this.retrySelected.disabled = this.retryAll.disabled = true;
      let done = 0;
      const refused = [];
      // A few at a time: a page of 200 retries should not open 200 connections at once.
      const queue = [...ids];
      const worker = async () => {
        while (queue.length) {
          const id = queue.shift();
          try {
            const job = await api.post("/jobs/" + encodeURIComponent(id) + "/retry");
            const row = this.rows.get(id);
            if (row) {
              row.job = {...row.job, ...job};
              if (row.check) row.check.checked = false;
              this.fill(row);
            }
            done += 1;
          } catch (error) {
            refused.push(`${id}: ${error.message}`);
          }
        }
      };
      await Promise.all(Array.from({length: Math.min(6, ids.length)}, worker));
      this.updateSelection();
      if (refused.length) flash(`Retried ${done}; refused ${refused.length}: ${refused[0]}`, "error");
      else flash(`Retried ${done} job${done === 1 ? "" : "s"}.`);
    }
  }

  // ---------------------------------------------------------------- job detail

  class JobPage {
    constructor(root, id) {
      this.root = root;
      this.id = id;
      this.job = null;
      this.stream = null;
      this.pendingFetch = null;
    }

    async start() {
      put(clear(this.root), h("p", {class: "muted"}, "Loading job…"));
      // This page's own stream: only this job's events, whatever the rest of the server does.
      // Opened before the first GET, so nothing that happens in between is missed.
      this.stream = new Stream("/events?job=" + encodeURIComponent(this.id), {
        onEvents: (batch) => this.onJobEvents(batch),
        onReset: () => this.refresh(),
      });
      await this.refresh();
    }

    stop() {
      this.stopped = true;
      if (this.stream) this.stream.close();
      clearTimeout(this.pendingFetch);
      clearTimeout(this.flowTimer);
    }

    async refresh() {
      try {
        const job = await api.get("/jobs/" + encodeURIComponent(this.id));
        // a workflow's step: its steps and their states, beside the job
        const flow = job.workflow ? await api.get("/workflows/" + encodeURIComponent(job.workflow.id)) : null;
        if (this.stopped) return;
        this.job = job;
        this.flow = flow;
      } catch (error) {
        if (this.stopped) return;
        if (!this.job) {
          put(clear(this.root), [pageHeader("Job not found", null),
            card(null, [h("p", {class: "error"}, error.message), h("a", {href: "#/jobs"}, "← all jobs")])]);
        } else {
          flash(error.message, "error");
        }
        return;
      }
      this.render();
    }

    onJobEvents(batch) {
      let refetch = false;
      for (const event of batch) {
        if (event.job !== this.id || !this.job) continue;
        this.job.state = event.state;
        this.job.attempts = event.attempts;
        if (event.event === "progress") this.job.progress = event.progress;
        else refetch = true;          // results, errors and tracebacks are not in events: GET the job
      }
      this.renderLive();
      if (refetch) {
        clearTimeout(this.pendingFetch);
        this.pendingFetch = setTimeout(() => this.refresh(), 50);
      }
    }

    render() {
      const job = this.job;
      this.badge = h("span", {id: "job-state"});
      this.bar = h("div", {class: "progress-block", id: "job-progress"});
      this.cancelButton = h("button", {type: "button", class: "danger", id: "cancel",
                                       onclick: () => this.act("cancel")}, "Cancel");
      this.retryButton = h("button", {type: "button", class: "primary", id: "retry",
                                      onclick: () => this.act("retry")}, "Retry");
      this.attemptsEl = h("dd", {id: "job-attempts"});
      const row = (k, v) => [h("dt", null, k), h("dd", null, v)];
      const duration = job.started_at && job.finished_at
        ? (new Date(job.finished_at) - new Date(job.started_at)) / 1000 : null;
      const facts = h("dl", {class: "facts"},
        row("id", h("span", {class: "mono"}, String(job.id))),
        row("handler", h("a", {href: hashWith("#/jobs", {handler: job.handler})}, String(job.handler))),
        row("kind", String(job.kind)),
        [h("dt", null, "attempts"), this.attemptsEl],
        row("priority", String(job.priority ?? "—")),
        row("timeout", job.timeout === null || job.timeout === undefined ? "—" : fmtDuration(job.timeout)),
        row("batch", job.batch ? h("span", {class: "mono"}, String(job.batch)) : "—"),
        row("schedule", job.schedule ? h("span", {id: "job-schedule"},
          h("a", {href: scheduleHref(job.schedule.name)}, String(job.schedule.name)),
          job.schedule.fire_at ? h("span", {class: "muted"}, " · slot ", timeCell(job.schedule.fire_at))
                               : h("span", {class: "muted"}, " · run now")) : "—"),
        row("run at", timeCell(job.run_at)),
        row("waiting", job.waiting ? h("span", {id: "job-waiting"}, waitingText(job.waiting),
          job.waiting.until ? h("span", {class: "muted"}, " · until ", timeCell(job.waiting.until)) : "") : "—"),
        row("limits", flowText(job)),
        row("expires", timeCell(job.expires_at)),
        row("created", timeCell(job.created_at)),
        row("started", timeCell(job.started_at)),
        row("finished", timeCell(job.finished_at)),
        row("duration", fmtDuration(duration)),
        row("ran by", job.ran_by ? h("span", {id: "job-ran-by", title: String(job.ran_by.id)},
          `${job.ran_by.host} pid ${job.ran_by.pid ?? "?"} · ${job.ran_in === "worker" ? "a cpu worker" : "a server"}`)
          : "—"));

      const args = card("Arguments", h("div", {class: "stack"},
        h("div", null, h("h3", null, "args"), jsonView(job.args ?? [])),
        h("div", {id: "job-kwargs"}, h("h3", null, "kwargs"), jsonView(job.kwargs ?? {}))));
      const sections = [];
      if (job.state === "succeeded" || job.result !== null) {
        sections.push(card("Result", h("div", {id: "job-result"}, jsonView(job.result))));
      }
      if (job.error) {
        sections.push(card("Error", this.errorView(job.error, null), "error-card"));
      }
      const errors = Array.isArray(job.errors) ? job.errors : [];
      if (errors.length) {
        const list = h("div", {class: "attempts", id: "job-errors"});
        errors.forEach((error, i) => {
          list.append(h("details", {class: "attempt", open: i === errors.length - 1},
            h("summary", null, h("strong", null, `Attempt ${i + 1}`), " ",
              h("span", {class: "error-kind"}, String(error && error.kind || "error")), " ",
              h("span", {class: "error-text"}, String(error && error.message || ""))),
            this.errorView(error, i + 1)));
        });
        sections.push(card(`Every attempt's error (${errors.length})`, list));
      }

      if (this.flow) sections.unshift(this.workflowView(this.flow));
      clearTimeout(this.flowTimer);       // other steps' ends are not this page's events: re-read while it runs
      if (this.flow && this.flow.state === "running") this.flowTimer = setTimeout(() => this.refresh(), REFRESH_MS);
      put(clear(this.root), [
        h("nav", {class: "crumbs"}, h("a", {href: "#/jobs"}, "Jobs"), " / ", h("span", {class: "mono"}, String(job.id))),
        pageHeader(String(job.handler), null, this.badge, this.cancelButton, this.retryButton),
        card("Progress", this.bar),
        h("div", {class: "grid detail"}, card("Job", facts), args),
        sections,
      ]);
      this.renderLive();
    }

    /** The workflow this job is a step of: every step in order with its state; this one marked. */
    workflowView(flow) {
      const body = h("tbody");
      flow.jobs.forEach((step, i) => {
        const here = step.id === this.id;
        body.append(h("tr", {"data-job": String(step.id), class: here ? "current" : null},
          h("td", {class: "num"}, String(i + 1)),
          h("td", null, here ? h("strong", {class: "mono"}, String(step.id))
                             : h("a", {href: jobHref(step.id), class: "mono"}, String(step.id))),
          h("td", {class: "handler"}, String(step.handler)),
          h("td", {class: "state"}, stateBadge(step.state),
            step.waiting_for ? h("span", {class: "muted"}, ` waiting for ${step.waiting_for}`) : null,
            step.error && step.error.kind === "upstream_failed" ? h("span", {class: "muted"}, " upstream failed") : null)));
      });
      const title = `Workflow ${flow.kind} · ${flow.state}` +
        (flow.state === "succeeded" ? "" : ` · ${flow.jobs.filter((j) => ACTIVE.has(j.state)).length} active`);
      return card(title, h("div", {class: "table-wrap"},
        h("table", {class: "table jobs", id: "workflow-steps", "data-workflow": String(flow.id), "data-state": String(flow.state)},
          h("thead", null, h("tr", null, ["#", "job", "handler", "state"].map((c) => h("th", null, c)))), body)));
    }

    errorView(error, attempt) {
      const box = h("div", {class: "error-view", "data-attempt": attempt === null ? "last" : String(attempt)});
      if (!error || typeof error !== "object") return put(box, [jsonView(error)]);
      put(box, [h("p", null, h("span", {class: "error-kind"}, String(error.kind ?? "error")), " ",
                  h("span", {class: "error-text"}, String(error.message ?? "")))]);
      if (error.traceback) box.append(h("pre", {class: "traceback"}, String(error.traceback)));
      else box.append(h("p", {class: "muted small"}, "no traceback"));
      return box;
    }

    renderLive() {
      const job = this.job;
      if (!job || !this.badge) return;
      clear(this.badge).append(stateBadge(job.state));
      const maxAttempts = typeof job.max_retries === "number" ? ` of ${job.max_retries + 1}` : "";
      this.attemptsEl.textContent = `${job.attempts ?? 0}${maxAttempts}`;
      const {bar, fraction, label} = progressBar(job.progress, false);
      const message = job.progress && job.progress.message !== null && job.progress.message !== undefined
        ? String(job.progress.message) : "";
      put(clear(this.bar), [bar,
        h("div", {class: "progress-text"},
          fraction === null ? h("span", {class: "muted", id: "job-progress-value"}, "no progress reported")
                            : h("strong", {id: "job-progress-value"}, label),
          message ? h("span", {class: "muted", id: "job-progress-message"}, " · " + message) : null)]);
      const admin = can("admin");
      this.cancelButton.hidden = !ACTIVE.has(job.state);
      this.retryButton.hidden = job.state !== "failed";
      this.cancelButton.disabled = this.retryButton.disabled = !admin;
      this.cancelButton.title = this.retryButton.title = admin ? "" : "needs the admin role";
    }

    async act(action) {
      const id = encodeURIComponent(this.id);
      const button = action === "cancel" ? this.cancelButton : this.retryButton;
      button.disabled = true;
      try {
        this.job = action === "cancel" ? await api.del("/jobs/" + id) : await api.post("/jobs/" + id + "/retry");
        flash(action === "cancel" ? "Job cancelled." : "Job queued again.");
        this.render();
      } catch (error) {
        flash(error.message, "error");
        button.disabled = false;
        this.refresh();
      }
    }
  }

  // ---------------------------------------------------------------- schedules

  const scheduleHref = (name) => "#/schedules/" + encodeURIComponent(name);
  const schedulePath = (name, action) => "/schedules/" + encodeURIComponent(name) + (action ? "/" + action : "");

  /** Why a job does not run yet, in words (the API's job.waiting.reason). */
  function waitingText(waiting) {
    const reasons = {rate_limit: "its rate limit", max_running: "a free slot of its handler (max_running)",
                     upstream: `${waiting.steps} earlier workflow step(s)`, run_at: "its run_at"};
    return `for ${reasons[waiting.reason] || waiting.reason}`;
  }

  /** A job's flow control: its rate bucket, concurrency limit and unique key, or a dash. */
  function flowText(job) {
    const parts = [];
    if (job.rate_limit) parts.push(`${job.rate_limit.per_second}/s in ${job.rate_limit.bucket}`);
    if (job.max_running) parts.push(`max ${job.max_running} running`);
    if (job.unique_key) parts.push(`unique key ${job.unique_key}`);
    return parts.length ? parts.join(" · ") : "—";
  }

  function whenText(schedule) {
    if (schedule.cron) return `cron ${schedule.cron} · ${schedule.timezone || "UTC"}`;
    const every = Number(schedule.every);
    return `every ${Number.isInteger(every) && every < 120 ? every + " s" : fmtDuration(every)}`;
  }

  /** Pause or resume, run now: the buttons of one schedule, on the list and on its own page. */
  function scheduleActions(schedule, onDone) {
    const admin = can("admin");
    const title = admin ? null : "managing schedules needs the admin role";
    const act = async (button, action, message) => {
      button.disabled = true;
      try {
        const answer = await api.post(schedulePath(schedule.name, action));
        flash(action === "run" ? `${schedule.name}: job ${answer.id} submitted.` : message);
        onDone(action, answer);
      } catch (error) {
        flash(error.message, "error");
        button.disabled = false;
      }
    };
    const toggle = h("button", {type: "button", class: "schedule-toggle", disabled: !admin, title,
                                "data-action": schedule.paused ? "resume" : "pause"},
                     schedule.paused ? "Resume" : "Pause");
    toggle.addEventListener("click", () => act(toggle, schedule.paused ? "resume" : "pause",
                                               `${schedule.name} ${schedule.paused ? "resumed" : "paused"}.`));
    const run = h("button", {type: "button", class: "primary schedule-run", disabled: !admin, title}, "Run now");
    run.addEventListener("click", () => act(run, "run"));
    return [toggle, run];
  }

  function lastJobCell(schedule) {
    const job = schedule.last_job;
    if (!job) return h("span", {class: "muted"}, "—");
    return h("span", {class: "last-job"}, stateBadge(job.state), " ",
             h("a", {href: jobHref(job.id), class: "mono"}, String(job.id)));
  }

  /** A page re-read every REFRESH_MS: schedules are few and their events are jobs', so it polls. */
  class PolledPage {
    constructor(root) {
      this.root = root;
      this.timer = null;
    }

    async start() {
      this.build();
      await this.refresh();
      if (!this.stopped) this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    }

    stop() {
      this.stopped = true;
      clearInterval(this.timer);
    }
  }

  class SchedulesPage extends PolledPage {
    build() {
      this.body = h("tbody");
      const table = h("table", {class: "table schedules", id: "schedules-table"},
        h("thead", null, h("tr", null, ["schedule", "handler", "when", "next", "last slot", "last job", "source", ""]
          .map((c) => h("th", null, c)))), this.body);
      put(clear(this.root), [
        pageHeader("Schedules", "Periodic jobs. Every server fires them; each slot once. Refreshed every 2 s."),
        card(null, h("div", {class: "table-wrap"}, table))]);
    }

    async refresh() {
      let data;
      try {
        data = await api.get("/schedules");
      } catch (error) {
        if (!this.stopped) clear(this.body).append(h("tr", null, h("td", {colspan: 8, class: "error"}, error.message)));
        return;
      }
      if (this.stopped) return;
      clear(this.body);
      const schedules = data.schedules || [];
      if (!schedules.length) {
        this.body.append(h("tr", {class: "empty"}, h("td", {colspan: 8, class: "muted"},
          "No schedules. Declare them in the ini (greenjobs.schedules) or POST /schedules.")));
      }
      for (const schedule of schedules) {
        this.body.append(h("tr", {"data-schedule": String(schedule.name), "data-paused": String(!!schedule.paused)},
          h("td", null, h("a", {href: scheduleHref(schedule.name), class: "mono"}, String(schedule.name))),
          h("td", {class: "handler"}, String(schedule.handler)),
          h("td", {class: "when"}, whenText(schedule)),
          h("td", {class: "next"}, schedule.paused ? h("span", {class: "badge paused"}, "paused")
                                                   : timeCell(schedule.next_fire_at)),
          h("td", null, timeCell(schedule.last_fire_at)),
          h("td", null, lastJobCell(schedule)),
          h("td", {class: "muted"}, String(schedule.source || "")),
          h("td", {class: "actions"}, scheduleActions(schedule, () => this.refresh()))));
      }
    }
  }

  /** What can be submitted: where each handler runs (an io handler rerouted to the workers says why), its
   * defaults and flow control, and how many jobs its limits hold back now.  Re-read every 2 s. */
  class HandlersPage extends PolledPage {
    build() {
      this.body = h("tbody");
      const table = h("table", {class: "table handlers", id: "handlers-table"},
        h("thead", null, h("tr", null, ["handler", "runs in", "active", "timeout", "retries", "rate limit",
                                        "max running", "waiting", "about"].map((c) => h("th", null, c)))), this.body);
      put(clear(this.root), [
        pageHeader("Handlers", "What can be submitted, where it runs and what limits it. Refreshed every 2 s."),
        card(null, h("div", {class: "table-wrap"}, table))]);
    }

    async refresh() {
      let data;
      try {
        data = await api.get("/handlers");
      } catch (error) {
        if (!this.stopped) clear(this.body).append(h("tr", null, h("td", {colspan: 8, class: "error"}, error.message)));
        return;
      }
      if (this.stopped) return;
      clear(this.body);
      for (const handler of data.handlers || []) {
        const waiting = Object.entries(handler.waiting || {}).map(([reason, n]) => `${n} for ${reason}`).join(", ");
        const runsIn = handler.kind === "cpu" ? "worker processes" : "the event loop";
        const active = Object.entries(handler.active || {}).map(([state, n]) => `${n} ${state}`).join(", ");
        this.body.append(h("tr", {"data-handler": String(handler.name), "data-kind": String(handler.kind)},
          h("td", null, h("a", {href: hashWith("#/jobs", {handler: handler.name}), class: "mono"}, String(handler.name))),
          h("td", {class: "runs-in"}, handler.rerouted
            ? [h("span", {class: "badge rerouted", title: String(handler.rerouted)}, "rerouted"), " ", runsIn]
            : `${runsIn}${handler.declared_kind === "auto" ? " (auto)" : ""}`),
          h("td", {class: "active"}, active || "—"),
          h("td", null, handler.timeout === null ? "—" : fmtDuration(handler.timeout)),
          h("td", null, String(handler.max_retries)),
          h("td", null, handler.rate_limit ? `${handler.rate_limit}${handler.rate_key ? " per " + handler.rate_key : ""}` : "—"),
          h("td", null, handler.max_running === null || handler.max_running === undefined ? "—" : String(handler.max_running)),
          h("td", {class: "waiting"}, waiting || "—"),
          h("td", {class: "muted"}, handler.rerouted ? `rerouted: ${handler.rerouted}` : String(handler.doc || ""))));
      }
    }
  }

  /** Flower's Workers view, for a cluster: every server and io worker on the ledger (host, pid, role, its
   * pool's load, jobs per second, the cpu worker processes it supervises, open event streams), alive or lost;
   * an admin resizes or restarts a server's cpu workers here (POST /servers/{owner}/workers).  Re-read every 2 s. */
  class ServersPage extends PolledPage {
    build() {
      this.body = h("tbody");
      this.totals = h("p", {class: "muted", id: "servers-totals"});
      const columns = ["server", "host", "pid", "role", "io running", "jobs/s in · ok · failed", "cpu workers",
                       "streams", "started", "heartbeat", "state", "last request"];
      if (can("admin")) columns.push("cpu workers: admin");
      this.columns = columns.length;
      const table = h("table", {class: "table servers", id: "servers-table"},
        h("thead", null, h("tr", null, columns.map((c) => h("th", null, c)))), this.body);
      put(clear(this.root), [
        pageHeader("Servers", "Every server and io worker sharing this ledger; rates over the last 10 s. " +
                              "Refreshed every 2 s."),
        card(null, [this.totals, h("div", {class: "table-wrap"}, table)])]);
    }

    async refresh() {
      let data;
      try {
        data = await api.get("/servers");
      } catch (error) {
        if (!this.stopped) clear(this.body).append(h("tr", null, h("td", {colspan: this.columns, class: "error"}, error.message)));
        return;
      }
      if (this.stopped) return;
      const servers = data.servers || [];
      const alive = servers.filter((s) => s.alive);
      const sum = (key) => alive.reduce((n, s) => n + (Number(s[key]) || 0), 0);
      const rate = (name) => alive.reduce((n, s) => n + (Number((s.rate || {})[name]) || 0), 0);
      this.totals.textContent = `${alive.length} alive, ${servers.length - alive.length} lost · io ` +
        `${sum("pool_busy")} running of ${sum("pool_size")} slots · ${sum("cpu_workers")} cpu worker processes · ` +
        `${fmtRate(rate("submitted"))} submitted, ${fmtRate(rate("succeeded"))} succeeded, ` +
        `${fmtRate(rate("failed"))} failed per second`;
      // An admin typing a size keeps it across refreshes: rows are rebuilt, the input's value is carried over.
      const typed = new Map([...this.body.querySelectorAll("input.resize")].filter((i) => i.value !== i.defaultValue)
        .map((i) => [i.dataset.owner, i.value]));
      const focused = document.activeElement && document.activeElement.dataset
        ? document.activeElement.dataset.owner : null;
      clear(this.body);
      for (const s of servers) {
        const r = s.rate || {};
        const row = h("tr", {"data-owner": String(s.owner), "data-alive": String(!!s.alive)},
          h("td", {class: "mono"}, String(s.owner).split(":").slice(-1)[0] + (s.me ? " (this one)" : "")),
          h("td", null, String(s.host)), h("td", {class: "num"}, String(s.pid)), h("td", null, String(s.role)),
          h("td", {class: "num"}, `${s.pool_busy} / ${s.pool_size}`),
          h("td", {class: "num rate"}, `${fmtRate(Number(r.submitted) || 0)} · ${fmtRate(Number(r.succeeded) || 0)} · ` +
                                       fmtRate(Number(r.failed) || 0)),
          h("td", {class: "num cpu"}, cpuText(s)),
          h("td", {class: "num"}, String(s.streams ?? 0)), h("td", null, timeCell(new Date(s.started_at * 1000).toISOString())),
          h("td", {class: "muted"}, `${Number(s.heartbeat_age).toFixed(1)} s ago`),
          h("td", null, h("span", {class: "badge " + (s.alive ? "ok" : "bad")}, s.alive ? "alive" : "lost")),
          h("td", {class: "control"}, controlText(s.control)));
        if (can("admin")) row.append(h("td", {class: "actions"}, this.controls(s, typed.get(String(s.owner)))));
        this.body.append(row);
      }
      if (focused) {
        const input = this.body.querySelector(`input.resize[data-owner="${CSS.escape(focused)}"]`);
        if (input) input.focus();
      }
    }

    /** Resize and restart for a server that supervises its cpu workers (others: why not, as a tooltip). */
    controls(s, typed) {
      const cpu = s.cpu || {};
      const why = !s.alive ? "this server is lost" : !cpu.supervised ? "this server supervises no cpu workers" : null;
      const size = h("input", {type: "number", class: "resize", min: 0, max: 256, step: 1, "data-owner": String(s.owner),
                               "aria-label": "cpu workers for " + s.owner, disabled: !!why,
                               value: typed !== undefined ? typed : String(cpu.target ?? s.cpu_workers ?? 0)});
      const resize = h("button", {type: "button", class: "button resize", disabled: !!why, title: why,
        onclick: () => this.act(s, {size: Number(size.value)}, resize)}, "Resize");
      const restart = h("button", {type: "button", class: "button restart", disabled: !!why || !!cpu.restarting,
        title: why || "restart them one at a time, each after its jobs end",
        onclick: () => this.act(s, {restart: true}, restart)}, cpu.restarting ? "Restarting…" : "Restart");
      return [size, " ", resize, " ", restart];
    }

    async act(s, body, button) {
      if (body.size !== undefined && !(Number.isInteger(body.size) && body.size >= 0 && body.size <= 256)) {
        flash("The number of cpu workers is a whole number from 0 to 256.", "error");
        return;
      }
      button.disabled = true;
      try {
        const answer = await api.post("/servers/" + encodeURIComponent(s.owner) + "/workers", body);
        flash(answer.applied ? `${s.host}:${s.pid}: ${answer.applied.result}`
                             : `${s.host}:${s.pid} will act on it at its next heartbeat.`);
      } catch (error) {
        flash(error.message, "error");
      }
      const input = this.body.querySelector(`input.resize[data-owner="${CSS.escape(String(s.owner))}"]`);
      if (input && body.size !== undefined) input.value = String(body.size);
      if (document.activeElement) document.activeElement.blur();
      await this.refresh();
    }
  }

  function cpuText(s) {
    const cpu = s.cpu || {};
    if (!cpu.supervised) return s.cpu_workers ? String(s.cpu_workers) : "—";
    const text = `${cpu.alive ?? s.cpu_workers} / ${cpu.target}` + (cpu.restarts ? ` · ${cpu.restarts} restarts` : "");
    return cpu.restarting ? text + " · restarting" : text;
  }

  function controlText(control) {
    const asked = control && control.requested;
    if (!asked) return "—";
    const what = asked.size !== undefined ? `resize to ${asked.size}` : "restart";
    const applied = control.applied && control.applied.id === asked.id ? control.applied : null;
    const by = asked.by ? ` by ${asked.by}` : "";
    return h("span", {class: applied && !applied.ok ? "error" : null, title: asked.at ? fmtTime(asked.at * 1000) : null},
      `${what}${by}: ${applied ? applied.result : "waiting for its heartbeat"}`);
  }

  class SchedulePage extends PolledPage {
    constructor(root, name) {
      super(root);
      this.name = name;
    }

    build() {
      put(clear(this.root), h("p", {class: "muted"}, "Loading schedule…"));
    }

    async refresh() {
      let schedule, jobs;
      try {
        [schedule, jobs] = await Promise.all([
          api.get(schedulePath(this.name)),
          api.get("/jobs?" + new URLSearchParams({schedule: this.name, limit: "20"}))]);
      } catch (error) {
        if (this.stopped) return;
        if (this.shown && error.status !== 404) { flash(error.message, "error"); return; }    // try again next time
        if (error.status === 404) this.stop();          // deleted, or never was: nothing to poll for
        put(clear(this.root), [pageHeader(error.status === 404 ? "Schedule not found" : "Cannot read the schedule", null),
          card(null, [h("p", {class: "error"}, error.message), h("a", {href: "#/schedules"}, "← all schedules")])]);
        return;
      }
      if (this.stopped) return;
      this.shown = true;
      const row = (k, v) => [h("dt", null, k), h("dd", null, v)];
      const facts = h("dl", {class: "facts", id: "schedule-facts"},
        row("when", whenText(schedule)),
        row("state", schedule.paused ? h("span", {class: "badge paused"}, "paused") : "active"),
        row("next slot", schedule.paused ? "—" : timeCell(schedule.next_fire_at)),
        row("last slot", timeCell(schedule.last_fire_at)),
        row("missed", String(schedule.missed)),
        row("overlap", String(schedule.overlap)),
        row("jitter", schedule.jitter ? fmtDuration(Number(schedule.jitter)) : "—"),
        row("start at", timeCell(schedule.start_at)),
        row("end at", timeCell(schedule.end_at)),
        row("source", String(schedule.source || "")),
        row("updated", timeCell(schedule.updated_at)));
      const template = {};
      for (const key of ["handler", "args", "kwargs", "priority", "timeout", "max_retries", "callback_url"]) {
        if (schedule[key] !== undefined && schedule[key] !== null) template[key] = schedule[key];
      }
      const body = h("tbody");
      for (const job of jobs.jobs || []) {
        body.append(h("tr", {"data-job": String(job.id)},
          h("td", null, h("a", {href: jobHref(job.id), class: "mono"}, String(job.id))),
          h("td", null, job.schedule && job.schedule.fire_at ? timeCell(job.schedule.fire_at)
                                                             : h("span", {class: "muted"}, "run now")),
          h("td", {class: "state"}, stateBadge(job.state)),
          h("td", null, timeCell(job.created_at)),
          h("td", null, timeCell(job.finished_at))));
      }
      if (!body.firstChild) body.append(h("tr", {class: "empty"}, h("td", {colspan: 5, class: "muted"}, "No jobs yet.")));
      const recent = h("table", {class: "table jobs", id: "schedule-jobs"},
        h("thead", null, h("tr", null, ["job", "slot", "state", "created", "finished"].map((c) => h("th", null, c)))), body);
      put(clear(this.root), [
        h("nav", {class: "crumbs"}, h("a", {href: "#/schedules"}, "Schedules"), " / ", h("span", {class: "mono"}, this.name)),
        pageHeader(this.name, whenText(schedule), scheduleActions(schedule, () => this.refresh())),
        h("div", {class: "grid detail"}, card("Schedule", facts), card("Job template", jsonView(template))),
        card("Recent jobs (its slots and run-nows, newest first)", h("div", {class: "table-wrap"}, recent))]);
    }
  }

  // ---------------------------------------------------------------- router

  let current = null;

  function route() {
    const text = location.hash.replace(/^#\/?/, "");
    const [pathText, queryText] = text.split("?");
    const path = pathText.split("/").filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch (_) { return p; } });
    const params = new URLSearchParams(queryText || "");
    const root = document.getElementById("view");
    if (current) current.stop();
    let page;
    if (path[0] === "jobs" && path.length > 1) page = new JobPage(root, path.slice(1).join("/"));
    else if (path[0] === "schedules" && path.length > 1) page = new SchedulePage(root, path.slice(1).join("/"));
    else if (path[0] === "schedules") page = new SchedulesPage(root);
    else if (path[0] === "handlers") page = new HandlersPage(root);
    else if (path[0] === "servers") page = new ServersPage(root);
    else if (path[0] === "jobs") page = new JobsPage(root, params, false);
    else if (path[0] === "failed") page = new JobsPage(root, params, true);
    else page = new OverviewPage(root);
    current = page;
    const name = ["jobs", "failed", "schedules", "handlers", "servers"].includes(path[0]) ? path[0] : "overview";
    for (const link of document.querySelectorAll("nav a[data-page]")) {
      link.classList.toggle("active", link.dataset.page === name);
      if (link.dataset.page === name) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    }
    const titles = {overview: "Overview", failed: "Failed jobs", jobs: path.length > 1 ? "Job" : "Jobs",
                    schedules: path.length > 1 ? "Schedule" : "Schedules", handlers: "Handlers", servers: "Servers"};
    document.title = `${titles[name]} · greenjobs`;
    Promise.resolve(page.start()).catch((error) => {
      if (current === page) put(clear(root), card(null, h("p", {class: "error"}, error.message)));
    });
  }

  function start() {
    live.open();
    route();
  }

  async function boot() {
    document.getElementById("signin-form").addEventListener("submit", signIn);
    document.getElementById("signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", () => { if (document.getElementById("signin").hidden) route(); });
    try {
      await loadSession();
    } catch (error) {
      put(clear(document.getElementById("view")), card(null, h("p", {class: "error"},
        "Cannot reach the server: " + error.message)));
      return;
    }
    if (session.auth === "on" && !session.authenticated) showSignIn();
    else start();
  }

  // Exposed for the browser tests and the curious: read-only views of the live state.
  window.greenjobsDashboard = {rates, session};

  boot();
})();
