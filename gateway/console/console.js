// marlops operator console: polls the gateway's JSON API with the operator's bearer token.
// Every value from the API reaches the page through textContent (never parsed as markup), and the page
// loads nothing but its own files (the gateway serves it with a strict Content-Security-Policy).
"use strict";

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = "marlops.console.token";
  const PRINCIPAL_KEY = "marlops.console.principal";

  // Who may press what, mirroring gateway/api/routes.py (admin always may). The API decides in the
  // end: this only greys out buttons when GET /v1/whoami tells the page the operator's role.
  const ACTIONS = {
    "kill-switch": {
      path: "/v1/kill-switch", roles: ["trader", "risk_officer", "admin"], label: "Kill switch",
      question: "Engage the kill switch? Trading goes HALTED: no new orders are sent.",
    },
    resume: {
      path: "/v1/resume", roles: ["risk_officer", "admin"], label: "Resume",
      question: "Resume trading? Trading goes back to ACTIVE.",
    },
    flatten: {
      path: "/v1/flatten", roles: ["risk_officer", "admin"], label: "Flatten",
      question: "Flatten? Trading goes HALTED and every position is closed gradually (safe mode).",
    },
  };

  const $ = (id) => document.getElementById(id);

  const session = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    principal: sessionStorage.getItem(PRINCIPAL_KEY) || "",
    role: null, // from GET /v1/whoami; null = unknown (then every control is offered)
    whoamiPrincipal: null,
    rejected: false, // the last poll answered 401
    ready: false, // the first poll since connecting has answered (role known or known to be unknown)
    generation: 0, // bumped on connect/forget so answers to an older token are dropped
    timer: null,
    pendingAction: null,
  };

  // ---- HTTP ------------------------------------------------------------------------------------
  function reasonOf(status, body) {
    if (body && typeof body === "object") {
      if (Array.isArray(body.reasons) && body.reasons.length) return body.reasons.map(String).join("; ");
      if (typeof body.detail === "string") return body.detail;
      if (typeof body.error === "string") return body.error;
    }
    if (typeof body === "string" && body) return body.slice(0, 300);
    return `HTTP ${status}`;
  }

  async function api(method, path, payload) {
    const headers = { Accept: "application/json" };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return { ok: false, status: 0, missing: false, body: null, reason: `gateway unreachable (${err.message})` };
    }
    const text = await response.text();
    let body = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_notJson) {
      // keep the text: it becomes the reason shown to the operator
    }
    const missing = response.status === 404 || response.status === 405;
    return {
      ok: response.ok, status: response.status, missing, body,
      reason: response.ok ? "" : reasonOf(response.status, body),
    };
  }

  // GET `path`; when this gateway has no such endpoint, GET `fallback` instead (if given).
  async function getWithFallback(path, fallback) {
    const first = await api("GET", path);
    if (!first.missing || !fallback) return { ...first, path };
    const second = await api("GET", fallback);
    return { ...second, path: fallback, fellBack: true, missingPath: path };
  }

  // ---- formatting ------------------------------------------------------------------------------
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const money = (x) => (isNum(x)
    ? x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : "n/a");
  const qty = (x) => (isNum(x) ? x.toLocaleString("en-US", { maximumFractionDigits: 6 }) : "n/a");
  const pct = (x) => (isNum(x) ? `${(x * 100).toFixed(2)}%` : "n/a");

  function when(value) {
    if (typeof value !== "string" || !value) return isNum(value) ? String(value) : "";
    const t = Date.parse(value);
    if (Number.isNaN(t)) return value;
    return new Date(t).toISOString().replace("T", " ").slice(0, 19); // UTC, as the headers say
  }

  function text(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // A status figure by its name: drawdowns as %, timestamps in UTC, other numbers grouped.
  function figure(name, value) {
    if (isNum(value)) return /drawdown/.test(name) ? pct(value) : qty(value);
    if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return when(value);
    return text(value);
  }

  // A field of a row, whether the row is flat or an audit event ({seq, occurred_at, payload: {...}}).
  function field(item, ...names) {
    for (const name of names) {
      if (item && item[name] !== undefined && item[name] !== null) return item[name];
      const inner = item && item.payload;
      if (inner && inner[name] !== undefined && inner[name] !== null) return inner[name];
    }
    return undefined;
  }

  function listOf(body, ...keys) {
    if (Array.isArray(body)) return body;
    if (!body || typeof body !== "object") return [];
    for (const key of [...keys, "items", "events"]) {
      if (Array.isArray(body[key])) return body[key];
    }
    return [];
  }

  // ---- DOM -------------------------------------------------------------------------------------
  function cell(value, cls) {
    const td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value);
    else td.textContent = text(value);
    if (cls) td.className = cls;
    return td;
  }

  // rows: arrays of values, or {cells, cls, testid}; a cell is a value or [value, class].
  function fillTable(id, source, rows, emptyText) {
    const table = $(id);
    const body = table.tBodies[0];
    const width = table.tHead.rows[0].cells.length;
    table.dataset.source = source;
    const out = [];
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(emptyText);
      td.colSpan = width;
      tr.appendChild(td);
      out.push(tr);
    }
    for (const row of rows) {
      const spec = Array.isArray(row) ? { cells: row } : row;
      const tr = document.createElement("tr");
      if (spec.cls) tr.className = spec.cls;
      if (spec.testid) tr.dataset.testid = spec.testid;
      if (spec.key !== undefined) tr.dataset.key = String(spec.key);
      for (const c of spec.cells) tr.appendChild(Array.isArray(c) ? cell(c[0], c[1]) : cell(c));
      out.push(tr);
    }
    body.replaceChildren(...out);
  }

  function unavailable(id, answer) {
    if (answer.missing) {
      fillTable(id, "missing", [], `n/a (${answer.missingPath || answer.path} is not available on this gateway)`);
    } else {
      fillTable(id, "error", [], `n/a (${answer.reason})`);
    }
  }

  function setLine(id, level, message) {
    const line = $(id);
    line.dataset.level = level;
    line.textContent = message;
  }

  // ---- rendering each endpoint -----------------------------------------------------------------
  function renderState(status, state) {
    const badge = $("state-badge");
    const source = status.ok ? status.body : state.ok ? state.body : null;
    const value = source && typeof source.trading_state === "string" ? source.trading_state : "n/a";
    badge.textContent = value;
    badge.dataset.state = value;
    badge.className = `badge state-${/^[A-Z]+$/.test(value) ? value : "unknown"}`;
    renderSafeMode(status.ok && status.body ? status.body.safe_mode : null);
    renderTriggers(status.ok && status.body ? status.body : null);
  }

  // Safe mode closes each position in slices; progress = share of its starting positions now closed.
  function progressOf(safe) {
    if (isNum(safe.progress)) return Math.min(Math.max(safe.progress, 0), 1);
    if (safe.flat === true) return 1;
    const slices = safe.slices && typeof safe.slices === "object" ? Object.keys(safe.slices).length : null;
    if (slices && isNum(safe.remaining_positions)) return Math.min(Math.max((slices - safe.remaining_positions) / slices, 0), 1);
    return null;
  }

  function safeModeDetail(safe, progress) {
    const parts = [];
    const slices = safe.slices && typeof safe.slices === "object" ? Object.keys(safe.slices).length : null;
    if (slices !== null && isNum(safe.remaining_positions)) {
      parts.push(`${slices - safe.remaining_positions} of ${slices} positions closed`);
    } else if (progress !== null) parts.push(`${pct(progress)} done`);
    if (safe.flat === true) parts.push("book is flat");
    if (isNum(safe.fraction)) parts.push(`${pct(safe.fraction)} of each position per interval`);
    if (safe.principal || safe.reason) parts.push(`by ${text(safe.principal)}: ${text(safe.reason)}`);
    if (safe.started_at) parts.push(`since ${when(safe.started_at)}`);
    return parts.join(" · ");
  }

  function renderSafeMode(safe) {
    const box = $("safe-mode");
    if (!safe || typeof safe !== "object" || safe.active === false) {
      box.hidden = true;
      box.dataset.active = "false";
      return;
    }
    box.hidden = false;
    box.dataset.active = "true";
    const bar = $("safe-mode-progress");
    const progress = progressOf(safe);
    bar.hidden = progress === null;
    if (progress !== null) bar.value = progress;
    $("safe-mode-detail").textContent = safeModeDetail(safe, progress);
  }

  function renderTriggers(status) {
    const box = $("triggers");
    const entries = [];
    if (status && status.triggers && typeof status.triggers === "object") {
      for (const [name, value] of Object.entries(status.triggers)) entries.push([`trigger ${name}`, value]);
    }
    if (status && status.last_reconcile !== undefined) entries.push(["last reconcile", status.last_reconcile]);
    const out = entries.map(([name, value]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value && typeof value === "object" && !Array.isArray(value)
        ? Object.entries(value).map(([k, v]) => `${k}: ${figure(k, v)}`).join(" · ") : figure(name, value);
      div.append(dt, dd);
      return div;
    });
    box.replaceChildren(...out);
  }

  function renderPortfolio(answer) {
    const figures = ["equity", "cash", "gross-exposure", "drawdown", "open-orders"];
    if (!answer.ok || !answer.body || typeof answer.body !== "object") {
      for (const id of figures) $(id).textContent = "n/a";
      unavailable("positions", answer);
      return;
    }
    const p = answer.body;
    $("equity").textContent = money(p.equity);
    $("cash").textContent = money(p.cash);
    // gross_exposure is sum |position value| as a multiple of equity
    $("gross-exposure").textContent = isNum(p.gross_exposure)
      ? `${p.gross_exposure.toFixed(2)}× (${pct(p.gross_exposure)})` : "n/a";
    $("drawdown").textContent = pct(p.drawdown);
    $("open-orders").textContent = Array.isArray(p.open_orders) ? String(p.open_orders.length) : "n/a";
    const positions = p.positions && typeof p.positions === "object" ? p.positions : {};
    const rows = Object.entries(positions).map(([symbol, v]) => ({
      key: symbol,
      testid: "position-row",
      cells: [symbol, [qty(v.qty), "num"], [money(v.mark), "num"], [money(v.market_value), "num"],
        [pct(v.weight), "num"]],
      cls: isNum(v.qty) && v.qty < 0 ? "short" : "",
    }));
    fillTable("positions", "api", rows, "no positions");
  }

  function renderExposure(answer) {
    if (!answer.ok || !answer.body || typeof answer.body !== "object") {
      unavailable("sectors", answer);
      return;
    }
    const equity = answer.body.equity;
    const share = (x) => (isNum(x) && isNum(equity) && equity > 0 ? pct(x / equity) : "n/a");
    const sectors = answer.body.sectors && typeof answer.body.sectors === "object" ? answer.body.sectors : {};
    const rows = Object.entries(sectors).map(([name, s]) => ({
      key: name,
      testid: "sector-row",
      cells: [name, [share(s.long), "num"], [share(s.short), "num"],
        [isNum(s.gross_weight) ? pct(s.gross_weight) : share(s.gross), "num"],
        [isNum(s.net_weight) ? pct(s.net_weight) : share(s.net), "num"]],
    }));
    fillTable("sectors", "api", rows, "no exposure");
  }

  function renderAlerts(answer) {
    if (!answer.ok) {
      unavailable("alerts", answer);
      return;
    }
    const rows = listOf(answer.body, "alerts").map((a) => ({
      key: text(field(a, "name")),
      testid: "alert-row",
      cls: `severity-${text(field(a, "severity")).replace(/[^a-z]/gi, "")}`,
      cells: [when(field(a, "since")), field(a, "name"), field(a, "severity"), [field(a, "detail"), "detail"]],
    }));
    fillTable("alerts", "api", rows, "no active alerts");
  }

  function sourceNote(id, answer) {
    $(id).textContent = answer.ok && answer.fellBack ? `(from the audit trail: ${answer.missingPath} not available)` : "";
  }

  function renderOrders(answer) {
    sourceNote("orders-source", answer);
    if (!answer.ok) {
      unavailable("orders", answer);
      return;
    }
    const rows = listOf(answer.body, "orders").map((o) => ({
      key: text(field(o, "client_order_id")),
      testid: "order-row",
      cells: [when(field(o, "updated_at", "occurred_at", "submitted_at", "at", "time", "timestep")),
        field(o, "symbol"), field(o, "side"), [qty(field(o, "qty")), "num"],
        field(o, "status") ?? (o.kind === "fill" ? `fill @ ${money(field(o, "price"))}` : ""),
        [field(o, "error", "reason_code", "reason") ?? "", "detail"]],
    }));
    fillTable("orders", answer.fellBack ? "audit" : "api", rows, "no orders yet");
  }

  function decisionStatus(d) {
    const status = field(d, "status");
    if (status !== undefined) return status;
    if (d.kind === "decision") {
      const target = field(d, "target_level");
      return isNum(target) ? `decided: target ${target}` : "decided";
    }
    const approved = field(d, "approved");
    if (approved === true) return "approved";
    if (approved === false) return "denied";
    return "";
  }

  function renderDecisions(answer) {
    sourceNote("decisions-source", answer);
    if (!answer.ok) {
      unavailable("decisions", answer);
      return;
    }
    const rows = listOf(answer.body, "decisions").map((d) => ({
      key: text(field(d, "symbol")),
      testid: "decision-row",
      cells: [when(field(d, "timestep", "occurred_at", "at", "time")), field(d, "symbol"), decisionStatus(d),
        field(d, "reason_code") ?? "", [field(d, "detail") ?? "", "detail"]],
    }));
    fillTable("decisions", answer.fellBack ? "audit" : "api", rows, "no decisions yet");
  }

  // ---- monitoring panels: performance, latency, sector exposure, Alertmanager, routing -------------------
  // The SVG namespace, from an <svg> the HTML parser placed in it (index.html): no URL literal in this file.
  const SVG_NS = $("svg-namespace").namespaceURI;
  const HISTORY = 120; // polls kept per figure for its sparkline (4 minutes at one poll every 2 s)
  const LATENCY_WARN_MS = 250;
  const LATENCY_BAD_MS = 400;
  const NO_VALUE = "\u2014"; // an em dash: "no value yet", never a misleading 0

  // The figures of GET /v1/performance, in the order of the Grafana performance and risk dashboards.
  const FIGURES = [
    { key: "drawdown_intraday", label: "Drawdown, intraday", hint: "from the session's peak" },
    { key: "drawdown_from_peak", label: "Drawdown from peak", hint: "from the all-time peak" },
    { key: "rolling_sharpe", label: "Rolling Sharpe", hint: "annualised, per-bar returns" },
    { key: "win_rate", label: "Win rate", hint: "winning bars / bars that moved" },
    { key: "profit_factor", label: "Profit factor", hint: "gains / losses per bar" },
    { key: "turnover", label: "Turnover", hint: "traded / equity, per bar" },
    { key: "cost_to_gross_profit", label: "Cost / gross profit", hint: "trailing fills; alert above 0.40" },
    { key: "realized_cost_signed", label: "Realized cost (signed)", hint: "since start, account currency" },
    { key: "herfindahl", label: "Herfindahl", hint: "1/n for n equal positions", digits: 3 },
    { key: "benchmark_divergence", label: "Divergence from benchmark", hint: "book return - benchmark's" },
  ];

  const history = {}; // figure key -> recent finite values
  const tiles = new Map(); // figure key -> its tile

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    return el;
  }

  // A sparkline of `values` (finite numbers); null when there are fewer than two.
  function sparkline(values, width = 120, height = 26) {
    if (values.length < 2) return null;
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const span = hi - lo || 1;
    const step = width / (values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(hi === lo ? height / 2
      : height - 2 - ((v - lo) / span) * (height - 4)).toFixed(1)}`).join(" ");
    const chart = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `last ${values.length} polls` });
    chart.appendChild(svg("polyline", { points }));
    return chart;
  }

  // Horizontal bars: [{value, cls}] on a scale of `max`, with optional marker lines (e.g. thresholds).
  function bars(items, max, markers = [], width = 160, height = 14) {
    const chart = svg("svg", { class: "bars", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const scale = (v) => Math.max(0, Math.min(width, (v / max) * width));
    const rowH = height / Math.max(items.length, 1);
    items.forEach((item, i) => {
      if (!isNum(item.value)) return;
      chart.appendChild(svg("rect", { class: item.cls || "bar", x: 0, y: (i * rowH + 1).toFixed(1),
        width: Math.max(scale(item.value), 1).toFixed(1), height: Math.max(rowH - 2, 1).toFixed(1) }));
    });
    for (const marker of markers) {
      if (marker.value > max) continue;
      const x = scale(marker.value).toFixed(1);
      chart.appendChild(svg("line", { class: marker.cls || "marker", x1: x, x2: x, y1: 0, y2: height }));
    }
    return chart;
  }

  // A figure's display: "—" (no value, with why), "∞", or the number in its unit.
  function figureText(fig, spec) {
    const v = fig ? fig.value : null;
    if (v === "+Inf") return "\u221e";
    if (v === "-Inf") return "-\u221e";
    if (!isNum(v)) return NO_VALUE;
    switch (fig.unit) {
      case "fraction": return pct(v);
      case "multiple": return `${v.toFixed(2)}\u00d7`;
      case "currency": return money(v);
      default: return v.toFixed(spec.digits ?? 2);
    }
  }

  function tileFor(container, spec) {
    let tile = tiles.get(spec.key);
    if (tile && tile.parentNode === container) return tile;
    tile = document.createElement("div");
    tiles.set(spec.key, tile);
    tile.className = "tile";
    tile.dataset.key = spec.key;
    tile.dataset.testid = `figure-${spec.key}`;
    const label = document.createElement("div");
    label.className = "tile-label";
    label.textContent = spec.label;
    const value = document.createElement("div");
    value.className = "tile-value";
    value.dataset.testid = "figure-value";
    const why = document.createElement("div");
    why.className = "tile-why";
    why.dataset.testid = "figure-why";
    const spark = document.createElement("div");
    spark.className = "tile-spark";
    tile.append(label, value, why, spark);
    container.appendChild(tile);
    return tile;
  }

  function renderPerformance(answer) {
    const container = $("performance");
    if (!answer.ok || !answer.body || typeof answer.body.figures !== "object") {
      container.dataset.source = answer.missing ? "missing" : "error";
      container.replaceChildren();
      $("performance-note").textContent = answer.missing
        ? "n/a (/v1/performance is not available on this gateway)" : `n/a (${answer.reason || "unexpected answer"})`;
      renderSectorBars(answer);
      return;
    }
    const body = answer.body;
    const windowInfo = body.window || {};
    $("performance-window").textContent = isNum(windowInfo.bars)
      ? `(trailing ${windowInfo.bars} bars; costs over the last ${qty(windowInfo.cost_window_fills)} fills)` : "";
    const specs = [...FIGURES];
    for (const key of Object.keys(body.figures)) {
      if (!specs.some((s) => s.key === key)) specs.push({ key, label: key.replace(/_/g, " "), hint: "" });
    }
    for (const spec of specs) {
      const fig = body.figures[spec.key];
      if (!fig) continue;
      const tile = tileFor(container, spec);
      if (spec.key === "benchmark_divergence" && windowInfo.benchmark_symbol) {
        tile.querySelector(".tile-label").textContent = `Divergence from ${windowInfo.benchmark_symbol}`;
      }
      const shown = figureText(fig, spec);
      tile.querySelector(".tile-value").textContent = shown;
      tile.dataset.value = fig.value === null || fig.value === undefined ? "" : String(fig.value);
      tile.dataset.state = shown === NO_VALUE ? "unavailable" : typeof fig.value === "string" ? "infinite" : "ok";
      tile.title = `${fig.metric || spec.key}${spec.hint ? ` (${spec.hint})` : ""}`;
      tile.querySelector(".tile-why").textContent = fig.why ? fig.why : spec.hint;
      if (isNum(fig.value)) {
        const seen = history[spec.key] || (history[spec.key] = []);
        seen.push(fig.value);
        if (seen.length > HISTORY) seen.shift();
      }
      const chart = sparkline(history[spec.key] || []);
      tile.querySelector(".tile-spark").replaceChildren(...(chart ? [chart] : []));
    }
    container.dataset.source = "api";
    $("performance-note").textContent = `${qty(body.timesteps)} timesteps and ${qty(body.fills)} fills since the `
      + "gateway started; sparklines: this page's recent polls";
    renderSectorBars(answer);
  }

  function renderSectorBars(answer) {
    if (!answer.ok || !answer.body || typeof answer.body.sector_exposure !== "object") {
      unavailable("sector-bars", answer.ok ? { ...answer, reason: "unexpected answer" } : answer);
      return;
    }
    const sectors = Object.entries(answer.body.sector_exposure || {});
    if (answer.body.sector_exposure_why) {
      fillTable("sector-bars", "api", [], `${NO_VALUE} (${answer.body.sector_exposure_why})`);
      return;
    }
    const max = Math.max(0.01, ...sectors.map(([, v]) => (isNum(v) ? v : 0))); // bars relative to the largest
    const rows = sectors.map(([sector, value]) => ({
      key: sector, testid: "sector-bar-row",
      cells: [sector, [pct(value), "num"], bars([{ value }], max)],
    }));
    fillTable("sector-bars", "api", rows, "flat book: no exposure");
  }

  const LATENCIES = [
    ["decision", "Decision (bar in -> intents durable)"],
    ["action_to_order", "Action -> order (broker ack)"],
    ["order_to_fill", "Order -> fill"],
    ["timestep_settle", "Timestep settled"],
    ["directive", "Directive propagation"],
  ];
  const ms = (x) => (isNum(x) ? x.toFixed(1) : NO_VALUE);

  function renderLatency(answer) {
    if (!answer.ok || !answer.body || typeof answer.body !== "object") {
      unavailable("latency", answer.ok ? { ...answer, reason: "unexpected answer" } : answer);
      return;
    }
    const known = LATENCIES.filter(([kind]) => answer.body[kind] && typeof answer.body[kind] === "object");
    const p99s = known.map(([kind]) => answer.body[kind].p99).filter(isNum);
    const max = Math.max(LATENCY_BAD_MS * 1.25, ...p99s) * 1.05;
    const level = (x) => (!isNum(x) ? "" : x >= LATENCY_BAD_MS ? "bad" : x >= LATENCY_WARN_MS ? "warn" : "ok");
    const rows = known.map(([kind, label]) => {
      const q = answer.body[kind];
      const empty = !q.count;
      return {
        key: kind, testid: "latency-row", cls: `latency-${level(q.p99) || "none"}`,
        cells: [label, [qty(q.count || 0), "num"], [ms(q.p50), "num"], [ms(q.p99), "num"],
          empty ? "no samples yet" : bars([{ value: q.p50, cls: "bar p50" }, { value: q.p99, cls: `bar p99 ${level(q.p99)}` }],
            max, [{ value: LATENCY_WARN_MS, cls: "marker warn" }, { value: LATENCY_BAD_MS, cls: "marker bad" }])],
      };
    });
    fillTable("latency", "api", rows, "no latencies measured yet");
  }

  // A source the gateway reads for the console (Alertmanager, the routing store): not configured, unreadable, or ok.
  function sourceState(id, answer, what) {
    const line = $(id);
    if (!answer.ok) {
      line.dataset.state = answer.missing ? "missing" : "error";
      line.textContent = answer.missing ? `n/a (${answer.path} is not available on this gateway)` : `n/a (${answer.reason})`;
      return false;
    }
    const body = answer.body || {};
    if (body.configured === false) {
      line.dataset.state = "not-configured";
      line.textContent = `${what} not configured: ${text(body.detail || "")}`;
      return false;
    }
    if (typeof body.error === "string") {
      line.dataset.state = "error";
      line.textContent = body.error;
      return false;
    }
    line.dataset.state = "ok";
    return true;
  }

  function labelList(labels) {
    if (!labels || typeof labels !== "object") return "";
    return Object.entries(labels).filter(([k]) => k !== "alertname" && k !== "severity")
      .map(([k, v]) => `${k}=${text(v)}`).join(", ");
  }

  function renderActiveAlerts(answer) {
    if (!sourceState("am-status", answer, "Alertmanager")) {
      const state = $("am-status").dataset.state;
      fillTable("am-alerts", state, [], state === "not-configured" ? "not configured" : "n/a (see above)");
      return;
    }
    const body = answer.body;
    const alerts = listOf(body, "alerts");
    $("am-status").textContent = `${alerts.length} firing in Alertmanager at ${text(body.source)}`;
    const rows = alerts.map((a) => ({
      key: text(a.name), testid: "am-alert-row", cls: `severity-${text(a.severity).replace(/[^a-z]/gi, "")}`,
      cells: [when(a.startsAt), a.name, a.severity, a.state, [a.value ?? "", "num"], [a.summary ?? "", "detail"],
        [labelList(a.labels), "detail"]],
    }));
    fillTable("am-alerts", "api", rows, "no alerts firing");
  }

  const SLOTS = ["production", "candidate", "sl_fallback", "master"];

  function renderRouting(answer) {
    if (!sourceState("routing-status", answer, "Routing table")) {
      const state = $("routing-status").dataset.state;
      const empty = state === "not-configured" ? "not configured" : "n/a (see above)";
      fillTable("routing-policies", state, [], empty);
      fillTable("routing-routes", state, [], empty);
      return;
    }
    const body = answer.body;
    const by = body.updated_by ? ` by ${text(body.updated_by)}` : "";
    const reason = body.reason ? `: ${text(body.reason)}` : "";
    $("routing-status").textContent = `revision ${text(body.revision)}, updated ${when(body.updated_at)} UTC${by}${reason}`
      + ` (${text(body.source)})`;
    const policies = body.policies && typeof body.policies === "object" ? body.policies : {};
    const slots = [...SLOTS.filter((s) => s in policies), ...Object.keys(policies).filter((s) => !SLOTS.includes(s))];
    fillTable("routing-policies", "api", slots.map((slot) => ({
      key: slot, testid: "routing-policy-row",
      cells: [slot, text(policies[slot].model), [text(policies[slot].version), "num"]],
    })), "no policy slot set");
    const rows = Array.isArray(body.rows) ? body.rows : [];
    fillTable("routing-routes", "api", rows.map((r) => ({
      key: text(r.symbol), testid: "routing-route-row",
      cells: [r.symbol === "*" ? (r.implicit ? "* (no row: every other symbol)" : "* (every other symbol)") : r.symbol,
        r.variant, r.policy ?? `(slot ${text(r.variant)} unset)`, r.shadow ?? "",
        r.shadow ? (r.shadow_policy ?? `(slot ${text(r.shadow)} unset)`) : ""],
    })), "no routes");
  }

  // ---- identity and controls ------------------------------------------------------------------
  function renderIdentity(answer) {
    if (answer.ok && answer.body && typeof answer.body === "object") {
      session.role = typeof answer.body.role === "string" ? answer.body.role : null;
      session.whoamiPrincipal = typeof answer.body.principal === "string" ? answer.body.principal : null;
      if (!session.principal && session.whoamiPrincipal) {
        session.principal = session.whoamiPrincipal;
        sessionStorage.setItem(PRINCIPAL_KEY, session.principal);
        $("principal").value = session.principal;
      }
    } else {
      session.role = null;
      session.whoamiPrincipal = null;
    }
    const who = session.principal || "(type your principal)";
    const role = session.role ? `role ${session.role}` : answer.missing ? "role unknown (no /v1/whoami)" : "role unknown";
    let identity = `${who} · ${role}`;
    if (session.whoamiPrincipal && session.principal && session.whoamiPrincipal !== session.principal) {
      identity += ` · the token belongs to ${session.whoamiPrincipal}`;
    }
    const box = $("identity");
    box.textContent = identity;
    box.dataset.role = session.role || "";
    updateControls();
  }

  function updateControls() {
    for (const [name, action] of Object.entries(ACTIONS)) {
      const button = $(name);
      let why = "";
      if (!session.token) why = "connect with an API token first";
      else if (!session.ready) why = "waiting for the gateway's first answer";
      else if (session.rejected) why = "the token was rejected";
      else if (session.role && !action.roles.includes(session.role)) {
        why = `role ${session.role} may not use ${action.label}; needs one of ${action.roles.join(", ")}`;
      }
      button.disabled = why !== "";
      button.title = why || action.question;
    }
  }

  function openConfirm(name) {
    const action = ACTIONS[name];
    session.pendingAction = name;
    $("confirm-title").textContent = action.question;
    $("confirm-panel").dataset.action = name;
    $("confirm-reason").value = "";
    $("confirm-submit").disabled = true;
    $("confirm-submit").textContent = `Confirm ${action.label}`;
    $("confirm-panel").hidden = false;
    $("confirm-reason").focus();
  }

  function closeConfirm() {
    session.pendingAction = null;
    $("confirm-panel").hidden = true;
  }

  async function runAction(name, reason) {
    const action = ACTIONS[name];
    const principal = ($("principal").value || "").trim();
    if (!principal) {
      setLine("action-status", "error", `${action.label}: type your principal name next to the token first`);
      return;
    }
    session.principal = principal;
    sessionStorage.setItem(PRINCIPAL_KEY, principal);
    setLine("action-status", "info", `${action.label}: sending…`);
    const answer = await api("POST", action.path, { principal, reason });
    if (answer.ok) {
      const state = answer.body && typeof answer.body.trading_state === "string" ? answer.body.trading_state : "";
      const changed = answer.body && answer.body.changed === false ? " (no change)" : "";
      setLine("action-status", "ok", `${action.label} done by ${principal}${state ? `: trading state ${state}` : ""}${changed}`);
      if (state) renderState({ ok: true, body: { ...answer.body, trading_state: state } }, { ok: false });
    } else if (answer.status === 401) {
      session.rejected = true;
      setLine("action-status", "error", `${action.label}: token rejected (${answer.reason})`);
    } else if (answer.status === 403) {
      setLine("action-status", "error", `${action.label} refused: ${answer.reason}`);
    } else if (answer.missing) {
      setLine("action-status", "error", `${action.label} is not available on this gateway (${action.path}: HTTP ${answer.status})`);
    } else {
      setLine("action-status", "error", `${action.label} failed: ${answer.reason}`);
    }
    await refresh();
  }

  // ---- polling ---------------------------------------------------------------------------------
  function reportReads(answers) {
    const rejected = answers.find((a) => a.status === 401);
    const forbidden = answers.find((a) => a.status === 403);
    const failed = answers.filter((a) => !a.ok && !a.missing && a.status !== 401 && a.status !== 403);
    session.rejected = Boolean(rejected);
    if (rejected) setLine("status-line", "error", `token rejected: ${rejected.reason}`);
    else if (forbidden) setLine("status-line", "error", `forbidden: ${forbidden.reason}`);
    else if (failed.length) {
      setLine("status-line", "error", failed.map((a) => `${a.path}: ${a.status ? `HTTP ${a.status} ` : ""}${a.reason}`).join(" | "));
    } else setLine("status-line", "ok", "connected");
    const missing = answers.filter((a) => a.missing || a.fellBack).map((a) => a.missingPath || a.path);
    const note = $("missing-endpoints");
    note.hidden = missing.length === 0;
    note.textContent = missing.length ? `not available on this gateway: ${missing.join(", ")}` : "";
  }

  async function refresh() {
    if (!session.token) return;
    const generation = session.generation;
    const [whoami, status, portfolio, exposure, alerts, orders, decisions, performance, latency, activeAlerts,
      routing] = await Promise.all([
      api("GET", "/v1/whoami").then((a) => ({ ...a, path: "/v1/whoami" })),
      getWithFallback("/v1/status", "/v1/state"),
      getWithFallback("/v1/portfolio"),
      getWithFallback("/v1/exposure"),
      getWithFallback("/v1/alerts"),
      getWithFallback("/v1/orders?limit=50", "/v1/audit?kind=order&limit=50"),
      getWithFallback("/v1/decisions?limit=50", "/v1/audit?kind=risk_decision&limit=50"),
      getWithFallback("/v1/performance"),
      getWithFallback("/v1/latency"),
      getWithFallback("/v1/alerts/active"),
      getWithFallback("/v1/routing"),
    ]);
    if (generation !== session.generation) return; // the token changed while these were in flight
    const state = status.fellBack ? status : { ok: false };
    renderState(status.fellBack ? { ok: false } : status, state);
    renderPortfolio(portfolio);
    renderExposure(exposure);
    renderAlerts(alerts);
    renderOrders(orders);
    renderDecisions(decisions);
    renderPerformance(performance);
    renderLatency(latency);
    renderActiveAlerts(activeAlerts);
    renderRouting(routing);
    reportReads([status, portfolio, exposure, alerts, orders, decisions, performance, latency, activeAlerts, routing,
      whoami]);
    session.ready = true;
    renderIdentity(whoami);
    $("updated").textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function schedule() {
    clearTimeout(session.timer);
    session.timer = null;
    if (!session.token) return;
    const generation = session.generation;
    refresh().finally(() => {
      if (generation === session.generation) session.timer = setTimeout(schedule, POLL_MS);
    });
  }

  function connect(event) {
    event.preventDefault(); // never submit the form: the token must not end up in a URL
    const token = ($("token").value || "").trim();
    if (!token) {
      setLine("status-line", "error", "paste an API token first");
      return;
    }
    session.token = token;
    session.principal = ($("principal").value || "").trim();
    session.role = null;
    session.rejected = false;
    session.ready = false;
    session.generation += 1;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(PRINCIPAL_KEY, session.principal);
    setLine("status-line", "info", "connecting…");
    setLine("action-status", "info", "");
    updateControls();
    schedule();
  }

  function forget() {
    sessionStorage.removeItem(TOKEN_KEY);
    session.token = "";
    session.role = null;
    session.ready = false;
    session.generation += 1;
    clearTimeout(session.timer);
    $("token").value = "";
    closeConfirm();
    setLine("status-line", "info", "token forgotten; paste an API token and press Connect.");
    $("identity").textContent = "not connected";
    updateControls();
  }

  function init() {
    $("token").value = session.token;
    $("principal").value = session.principal;
    $("login-form").addEventListener("submit", connect);
    $("forget").addEventListener("click", forget);
    $("principal").addEventListener("change", () => {
      session.principal = ($("principal").value || "").trim();
      sessionStorage.setItem(PRINCIPAL_KEY, session.principal);
    });
    for (const name of Object.keys(ACTIONS)) $(name).addEventListener("click", () => openConfirm(name));
    $("confirm-reason").addEventListener("input", () => {
      $("confirm-submit").disabled = $("confirm-reason").value.trim() === "";
    });
    $("confirm-cancel").addEventListener("click", closeConfirm);
    $("confirm-panel").addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = $("confirm-reason").value.trim();
      const name = session.pendingAction;
      if (!name || !reason) return; // the reason is required: nothing is sent without one
      closeConfirm();
      runAction(name, reason);
    });
    updateControls();
    if (session.token) {
      setLine("status-line", "info", "connecting…");
      schedule();
    }
  }

  init();
})();
