/* Small canvas charts for the SignalEngine dashboard: candles with markers, a line, bars.
 * No dependencies. Every function takes a <canvas>, sizes it to its CSS box at the
 * device pixel ratio, and redraws it from scratch. */
(function () {
  "use strict";

  const COLORS = {
    grid: "#26313d", text: "#8b98a5", up: "#26a269", down: "#e5534b",
    line: "#4493f8", fill: "rgba(68, 147, 248, 0.15)", base: "#6e7781",
  };
  const PAD = { left: 8, right: 58, top: 10, bottom: 22 };

  function setup(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(canvas.clientWidth, 50);
    const height = Math.max(canvas.clientHeight, 50);
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx, width, height };
  }

  function niceTicks(min, max, count) {
    if (!(max > min)) { max = min + 1; }
    const raw = (max - min) / count;
    const step = Math.pow(10, Math.floor(Math.log10(raw)));
    const unit = [1, 2, 5, 10].map((m) => m * step).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(min / unit) * unit; v <= max + unit * 1e-9; v += unit) {
      ticks.push(v);
    }
    return ticks;
  }

  function formatNumber(value) {
    const abs = Math.abs(value);
    if (abs >= 1000) { return value.toFixed(0); }
    if (abs >= 10) { return value.toFixed(2); }
    if (abs >= 1) { return value.toFixed(3); }
    return value.toPrecision(3);
  }

  function frame(ctx, width, height, min, max, format) {
    const plotH = height - PAD.top - PAD.bottom;
    const y = (v) => PAD.top + (1 - (v - min) / (max - min)) * plotH;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const tick of niceTicks(min, max, 4)) {
      const yy = Math.round(y(tick)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(PAD.left, yy);
      ctx.lineTo(width - PAD.right, yy);
      ctx.stroke();
      ctx.fillText((format || formatNumber)(tick), width - PAD.right + 4, yy);
    }
    return y;
  }

  function empty(ctx, width, height, text) {
    ctx.strokeStyle = COLORS.grid;
    ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5,
      width - PAD.left - PAD.right, height - PAD.top - PAD.bottom);
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(text || "No data yet", width / 2, height / 2);
  }

  function timeLabel(ms) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  }

  function timeAxis(ctx, xs, times, width, height) {
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const room = Math.max(1, Math.floor((width - PAD.left - PAD.right) / 95));
    const count = Math.min(4, room, times.length);
    for (let i = 0; i < count; i += 1) {
      const index = Math.round((i + 0.5) * (times.length - 1) / count);
      ctx.fillText(timeLabel(times[index]), xs(index), height - PAD.bottom + 6);
    }
  }

  /* bars: [{t: ms, open, high, low, close}] oldest first;
   * markers: [{t: ms, price, direction: "long"|"short"}] */
  function candles(canvas, bars, markers) {
    const { ctx, width, height } = setup(canvas);
    if (!bars.length) { empty(ctx, width, height); return; }
    let min = Infinity;
    let max = -Infinity;
    for (const b of bars) { min = Math.min(min, b.low); max = Math.max(max, b.high); }
    const margin = (max - min) * 0.08 || max * 0.01 || 1;
    min -= margin;
    max += margin;
    const y = frame(ctx, width, height, min, max);
    const plotW = width - PAD.left - PAD.right;
    const slot = plotW / bars.length;
    const x = (i) => PAD.left + (i + 0.5) * slot;
    const body = Math.max(1, Math.min(12, slot * 0.7));
    bars.forEach((b, i) => {
      const color = b.close >= b.open ? COLORS.up : COLORS.down;
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.moveTo(Math.round(x(i)) + 0.5, y(b.high));
      ctx.lineTo(Math.round(x(i)) + 0.5, y(b.low));
      ctx.stroke();
      const top = y(Math.max(b.open, b.close));
      const h = Math.max(1, y(Math.min(b.open, b.close)) - top);
      ctx.fillRect(x(i) - body / 2, top, body, h);
    });
    const starts = bars.map((b) => b.t);
    for (const m of markers || []) {
      let index = -1;
      for (let i = starts.length - 1; i >= 0; i -= 1) {
        if (starts[i] <= m.t) { index = i; break; }
      }
      if (index < 0) { continue; }
      const b = bars[index];
      const long = m.direction === "long";
      const tip = long ? y(b.low) + 4 : y(b.high) - 4;
      const dir = long ? 1 : -1;
      ctx.fillStyle = long ? COLORS.up : COLORS.down;
      ctx.strokeStyle = "#ffffff";
      ctx.beginPath();
      ctx.moveTo(x(index), tip);
      ctx.lineTo(x(index) - 6, tip + 10 * dir);
      ctx.lineTo(x(index) + 6, tip + 10 * dir);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }
    timeAxis(ctx, x, starts, width, height);
  }

  /* points: [{t: ms, v}] oldest first; a dashed baseline at opts.base (e.g. 1.0). */
  function line(canvas, points, opts) {
    const { ctx, width, height } = setup(canvas);
    if (!points.length) { empty(ctx, width, height, (opts && opts.emptyText) || "No settled signals yet"); return; }
    const base = opts && typeof opts.base === "number" ? opts.base : null;
    let min = Math.min(...points.map((p) => p.v));
    let max = Math.max(...points.map((p) => p.v));
    if (base !== null) { min = Math.min(min, base); max = Math.max(max, base); }
    const margin = (max - min) * 0.08 || Math.abs(max) * 0.01 || 1;
    min -= margin;
    max += margin;
    const y = frame(ctx, width, height, min, max);
    const plotW = width - PAD.left - PAD.right;
    const x = (i) => PAD.left + (points.length === 1 ? plotW / 2 : (i / (points.length - 1)) * plotW);
    if (base !== null) {
      ctx.strokeStyle = COLORS.base;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(PAD.left, y(base));
      ctx.lineTo(width - PAD.right, y(base));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p.v)) : ctx.moveTo(x(i), y(p.v))));
    ctx.strokeStyle = COLORS.line;
    ctx.lineWidth = 2;
    ctx.stroke();
    ctx.lineTo(x(points.length - 1), height - PAD.bottom);
    ctx.lineTo(x(0), height - PAD.bottom);
    ctx.closePath();
    ctx.fillStyle = COLORS.fill;
    ctx.fill();
    ctx.lineWidth = 1;
    timeAxis(ctx, x, points.map((p) => p.t), width, height);
  }

  /* items: [{label, value (0..1), note}] drawn as horizontal bars with a 50 % guide. */
  function hbars(canvas, items) {
    const { ctx, width, height } = setup(canvas);
    if (!items.length) { empty(ctx, width, height, "No settled signals yet"); return; }
    const labelW = 78;
    const right = 44;
    const rowH = Math.min(28, (height - 10) / items.length);
    const plotW = width - labelW - right;
    ctx.textBaseline = "middle";
    ctx.strokeStyle = COLORS.base;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(labelW + plotW / 2, 4);
    ctx.lineTo(labelW + plotW / 2, 6 + rowH * items.length);
    ctx.stroke();
    ctx.setLineDash([]);
    items.forEach((item, i) => {
      const mid = 6 + rowH * (i + 0.5);
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "right";
      ctx.fillText(item.label, labelW - 6, mid);
      ctx.fillStyle = COLORS.grid;
      ctx.fillRect(labelW, mid - rowH * 0.3, plotW, rowH * 0.6);
      ctx.fillStyle = item.value >= 0.5 ? COLORS.up : COLORS.down;
      ctx.fillRect(labelW, mid - rowH * 0.3, Math.max(1, plotW * item.value), rowH * 0.6);
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "left";
      ctx.fillText(`${(item.value * 100).toFixed(0)}%`, labelW + plotW + 4, mid);
    });
  }

  window.SignalCharts = { candles, line, hbars };
})();
