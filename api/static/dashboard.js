/* SignalEngine real-time dashboard: REST for history, /ws/feed for live updates.
 * An optional ?token= in the page URL is kept in sessionStorage and removed from the address
 * bar (so it is not logged again or bookmarked); it is sent as a bearer header over REST and
 * as the WebSocket subprotocol pair ["signalengine.bearer", token], never in a URL. */
(function () {
  "use strict";

  const params = new URLSearchParams(window.location.search);
  const TOKEN = params.get("token") || window.sessionStorage.getItem("signalengine.token");
  if (params.has("token")) {
    window.sessionStorage.setItem("signalengine.token", params.get("token"));
    params.delete("token");
    const rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? `?${rest}` : ""));
  }
  const MAX_ROWS = 300;
  const TOAST_MS = 6000;
  const PERF_REFRESH_MS = 15000;
  const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000];
  // Replay a little before the newest signal seen: a long transaction can commit a
  // signal whose created_at is older than one already shown. Duplicates are skipped.
  const REPLAY_MARGIN_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const seen = new Map(); // id -> signal
  let newestCreated = null;
  let attempt = 0;
  let socket = null;
  const timers = {};

  function debounce(key, ms, fn) {
    clearTimeout(timers[key]);
    timers[key] = setTimeout(fn, ms);
  }

  async function api(path) {
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(path, { headers });
    if (!response.ok) { throw new Error(`${path}: HTTP ${response.status}`); }
    return response.json();
  }

  /* ---- formatting ---- */
  const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)}%`);
  const ret = (v) => (v === null || v === undefined ? "–" : `${v >= 0 ? "+" : ""}${v.toFixed(2)}%`);
  const num = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  function price(v) {
    if (v === null || v === undefined) { return "–"; }
    const abs = Math.abs(v);
    return v.toFixed(abs >= 1000 ? 2 : abs >= 1 ? 4 : 6);
  }
  function duration(sec) {
    if (sec === null || sec === undefined) { return "–"; }
    if (sec < 3600) { return `${Math.round(sec / 60)} min`; }
    return `${(sec / 3600).toFixed(1)} h`;
  }
  function bytes(v) {
    if (!v) { return "–"; }
    return `${(v / 1024 ** 3).toFixed(1)} GiB`;
  }
  function whenCell(iso) {
    // "MM-DD HH:MM" in UTC; the date part is hidden on narrow screens.
    const text = iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "").slice(5, 16);
    const td = document.createElement("td");
    const date = document.createElement("span");
    date.className = "opt-sm";
    date.textContent = `${text.slice(0, 5)} `;
    td.append(date, text.slice(6));
    td.title = iso;
    return td;
  }

  /* ---- connection status ---- */
  function setStatus(state) {
    const el = $("connection-status");
    el.dataset.state = state;
    el.textContent = state;
  }

  /* ---- signal table ---- */
  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    return td;
  }

  function mtfChips(details) {
    const td = document.createElement("td");
    const box = document.createElement("div");
    box.className = "chips";
    const order = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"];
    const keys = Object.keys(details || {}).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    for (const tf of keys) {
      const vote = String(details[tf]);
      const chip = document.createElement("span");
      chip.className = `chip chip-${vote === "long" || vote === "short" ? vote : "neutral"}`;
      chip.dataset.testid = "mtf-chip";
      chip.dataset.timeframe = tf;
      chip.dataset.vote = vote;
      chip.title = `${tf}: ${vote}`;
      chip.textContent = tf;
      box.appendChild(chip);
    }
    td.appendChild(box);
    return td;
  }

  function row(signal, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "signal-row";
    tr.dataset.id = signal.id;
    tr.dataset.direction = signal.direction;
    tr.dataset.symbol = signal.symbol;
    tr.dataset.strategy = signal.strategy;
    if (fresh) { tr.className = "fresh"; }
    tr.classList.toggle("other-strategy", !shows(signal.strategy));
    tr.append(
      whenCell(signal.emitted_at),
      cell(signal.symbol),
      cell(signal.strategy, "opt"),
      cell(signal.direction === "long" ? "LONG" : "SHORT", `dir-${signal.direction}`),
      cell(signal.timeframe, "opt"),
      cell(price(signal.entry_price), "num"),
      cell(price(signal.take_profit), "num opt"),
      cell(price(signal.stop_loss), "num opt"),
      cell(num(signal.score), "num opt-sm"),
      mtfChips(signal.mtf_details),
      cell(signal.ai_probability === null ? "–" : pct(signal.ai_probability, 0), "num opt"),
    );
    return tr;
  }

  function remember(signal) {
    seen.set(signal.id, signal);
    if (!newestCreated || signal.created_at > newestCreated) { newestCreated = signal.created_at; }
    if (seen.size > MAX_ROWS * 2) {
      const oldest = seen.keys().next().value;
      seen.delete(oldest);
    }
  }

  function addSignal(signal, { fresh }) {
    if (seen.has(signal.id)) { return false; }
    remember(signal);
    const body = $("signals-body");
    const tr = row(signal, fresh);
    // Keep newest (emitted_at) first even when a replay delivers older ones.
    let before = body.firstElementChild;
    while (before && (seen.get(before.dataset.id) || {}).emitted_at > signal.emitted_at) {
      before = before.nextElementSibling;
    }
    body.insertBefore(tr, before);
    while (body.children.length > MAX_ROWS) { body.removeChild(body.lastChild); }
    $("signals-empty").hidden = true;
    addSymbol(signal.symbol);
    addStrategy(signal.strategy);
    return true;
  }

  /* ---- strategy selector: the table, chart markers and performance of one strategy ---- */
  const strategy = () => $("strategy-select").value;  // "" = all strategies
  const shows = (name) => !strategy() || name === strategy();
  function withStrategy(path) {
    if (!strategy()) { return path; }
    return `${path}${path.includes("?") ? "&" : "?"}strategy=${encodeURIComponent(strategy())}`;
  }

  function addStrategy(name) {
    const select = $("strategy-select");
    if (!name || [...select.options].some((o) => o.value === name)) { return; }
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    option.dataset.testid = "strategy-option";
    select.appendChild(option);
  }

  function setupStrategies() {
    $("strategy-select").addEventListener("change", () => {
      for (const tr of $("signals-body").children) {
        tr.classList.toggle("other-strategy", !shows(tr.dataset.strategy));
      }
      $("signals-table").dataset.strategy = strategy();
      redrawAll();
    });
  }

  async function loadStrategies() {
    try {
      for (const s of await api("/performance/by-strategy")) { addStrategy(s.strategy); }
    } catch (err) {
      console.warn(err);
    }
  }

  function toast(signal) {
    const el = document.createElement("div");
    el.className = `toast ${signal.direction}`;
    el.dataset.testid = "toast";
    const title = document.createElement("strong");
    title.textContent = `${signal.direction.toUpperCase()} ${signal.symbol}`;
    const detail = document.createElement("div");
    detail.textContent = `${signal.timeframe} @ ${price(signal.entry_price)} · score ${num(signal.score)}`;
    el.append(title, detail);
    $("toasts").prepend(el);
    while ($("toasts").children.length > 4) { $("toasts").lastChild.remove(); }
    setTimeout(() => { el.classList.add("fading"); }, TOAST_MS - 400);
    setTimeout(() => { el.remove(); }, TOAST_MS);
  }

  /* ---- direction filter ---- */
  function setupFilters() {
    for (const button of document.querySelectorAll(".filter")) {
      button.addEventListener("click", () => {
        $("signals-table").dataset.filter = button.dataset.filter;
        for (const other of document.querySelectorAll(".filter")) {
          const active = other === button;
          other.classList.toggle("active", active);
          other.setAttribute("aria-pressed", String(active));
        }
      });
    }
  }

  /* ---- live stats ---- */
  function showStatus(data) {
    const m = data.metrics || {};
    $("stat-total").textContent = m.total_signals ?? "–";
    $("stat-winrate").textContent = pct(m.win_rate);
    $("stat-avgreturn").textContent = ret(m.avg_return_pct);
    $("stat-cpu").textContent = m.cpu_percent === undefined ? "–" : `${Number(m.cpu_percent).toFixed(0)}%`;
    $("stat-cpu").title = `memory in use: ${bytes(m.memory_bytes)}`;
    $("stat-clients").textContent = data.connected_clients ?? "–";
  }

  /* ---- charts and performance ---- */
  function addSymbol(symbol) {
    const select = $("chart-symbol");
    if ([...select.options].some((o) => o.value === symbol)) { return; }
    const option = document.createElement("option");
    option.value = symbol;
    option.textContent = symbol;
    select.appendChild(option);
    if (select.options.length === 1) { select.value = symbol; drawCandles(); }
  }

  async function drawCandles() {
    const symbol = $("chart-symbol").value;
    const timeframe = $("chart-timeframe").value;
    const canvas = $("candles");
    if (!symbol) { window.SignalCharts.candles(canvas, [], []); return; }
    const q = encodeURIComponent(symbol);
    try {
      const [series, page] = await Promise.all([
        api(`/klines/${q}?timeframe=${timeframe}&limit=120`),
        api(withStrategy(`/signals?symbol=${q}&limit=200`)),
      ]);
      const bars = series.klines.map((k) => ({ t: Date.parse(k.ts), open: k.open, high: k.high, low: k.low, close: k.close }));
      const markers = page.signals.map((s) => ({ t: Date.parse(s.ts), price: s.entry_price, direction: s.direction }));
      window.SignalCharts.candles(canvas, bars, markers);
      canvas.dataset.bars = String(bars.length);
    } catch (err) {
      console.warn(err);
    }
  }

  async function refreshPerformance() {
    try {
      const shown = strategy();
      const [stats, curve, bySymbol] = await Promise.all([
        api(withStrategy("/performance/stats")),
        api(withStrategy("/performance/equity?points=400")),
        api(withStrategy("/performance/by-symbol")),
      ]);
      if (shown !== strategy()) { return; }  // the selection moved on: a newer refresh draws
      $("performance").dataset.strategy = shown;
      $("perf-count").textContent = stats.count;
      $("perf-winrate").textContent = pct(stats.win_rate);
      $("perf-avg").textContent = ret(stats.avg_return_pct);
      $("perf-median").textContent = ret(stats.median_return_pct);
      $("perf-pf").textContent = num(stats.profit_factor);
      $("perf-sharpe").textContent = num(stats.sharpe);
      $("perf-mdd").textContent = stats.max_drawdown_pct === null ? "–" : `${stats.max_drawdown_pct.toFixed(2)}%`;
      $("perf-duration").textContent = duration(stats.avg_duration_sec);
      window.SignalCharts.line($("equity"), curve.points.map((p) => ({ t: Date.parse(p.exit_time), v: p.equity })), { base: 1 });
      window.SignalCharts.hbars($("winrate"), bySymbol.map((s) => ({ label: s.symbol, value: s.win_rate })));
    } catch (err) {
      console.warn(err);
    }
  }

  /* ---- health: a silenced engine must be visible, not just quiet ---- */
  function healthMessage(health) {
    const f = health.ai_filter || {};
    if (f.status === "rejecting_all") {
      return `AI filter model v${f.model_version} rejected all of the last ${f.scored} candidates:` +
        " no signals are emitted. See /performance/model and MLflow; retrain or remove the champion alias.";
    }
    if (!health.database) { return "Database unavailable."; }
    if (!health.feed) { return "Live feed reconnecting: new signals may be delayed."; }
    return health.status === "ok" ? "" : `Health: ${health.status}`;
  }

  async function refreshHealth() {
    const banner = $("health-banner");
    let health;
    try {
      const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
      health = await (await fetch("/health", { headers })).json();  // 503 still has a body
    } catch (err) {
      health = { status: "degraded", database: false, feed: false };
    }
    const text = healthMessage(health);
    banner.textContent = text;
    banner.hidden = !text;
    banner.dataset.state = health.ai_filter && health.ai_filter.status === "rejecting_all"
      ? "rejecting_all" : health.status;
  }

  /* ---- WebSocket feed ---- */
  function feedUrl() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams();
    if (newestCreated) {
      query.set("since", new Date(Date.parse(newestCreated) - REPLAY_MARGIN_MS).toISOString());
    }
    const qs = query.toString();
    return `${scheme}://${window.location.host}/ws/feed${qs ? `?${qs}` : ""}`;
  }

  function onMessage(event) {
    let message;
    try { message = JSON.parse(event.data); } catch (err) { return; }
    if (message.type === "connected") {
      attempt = 0;
      setStatus("connected");
    } else if (message.type === "signal") {
      const signal = message.data;
      if (addSignal(signal, { fresh: true })) {
        toast(signal);
        if (signal.symbol === $("chart-symbol").value) { debounce("candles", 500, drawCandles); }
        debounce("perf", 2000, refreshPerformance);
      }
    } else if (message.type === "status") {
      showStatus(message.data);
    }
  }

  function connect() {
    setStatus(attempt ? "reconnecting" : "connecting");
    socket = TOKEN ? new WebSocket(feedUrl(), ["signalengine.bearer", TOKEN])
      : new WebSocket(feedUrl());
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", () => {
      setStatus("reconnecting");
      const delay = BACKOFF[Math.min(attempt, BACKOFF.length - 1)] * (0.8 + Math.random() * 0.4);
      attempt += 1;
      setTimeout(connect, delay);
    });
  }

  async function loadHistory() {
    try {
      const page = await api("/signals?limit=100");
      for (const signal of page.signals.slice().reverse()) { addSignal(signal, { fresh: false }); }
    } catch (err) {
      console.warn(err);
    }
    if (!$("chart-symbol").options.length) { addSymbol("BTC/USDT"); }
  }

  function redrawAll() {
    drawCandles();
    refreshPerformance();
  }

  async function start() {
    setupFilters();
    setupStrategies();
    $("chart-symbol").addEventListener("change", drawCandles);
    $("chart-timeframe").addEventListener("change", drawCandles);
    window.addEventListener("resize", () => debounce("resize", 200, redrawAll));
    await Promise.all([loadHistory(), loadStrategies()]);
    connect();
    redrawAll();
    setInterval(refreshPerformance, PERF_REFRESH_MS);
    refreshHealth();
    setInterval(refreshHealth, PERF_REFRESH_MS);
  }

  start();
})();
