// Billowin dashboard: charts (uPlot) from /dashboard/apps/<app>/charts.json, and live logs from
// /dashboard/apps/<app>/logs (both on the session cookie; the JSON API wants a bearer token).
(function () {
  "use strict";
  const charts = document.getElementById("charts");
  const colors = ["#4455dd", "#0f9d58", "#e8a317", "#d93025", "#8e44ad"];

  function draw(spec) {
    const el = document.getElementById("chart-" + spec.id);
    if (!el) return;
    el.textContent = "";
    const hasData = spec.x.length > 0 && spec.series.some((s) => s.values.some((v) => v !== null));
    if (!hasData) {
      el.innerHTML = '<p class="muted">No data yet.</p>';
      el.dataset.points = "0";
      return;
    }
    const opts = {
      width: Math.max(320, el.clientWidth || 380),
      height: 180,
      scales: { x: { time: true, range: () => spec.range } },
      axes: [{}, { size: 56 }],
      series: [{}].concat(spec.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 1.5 }))),
    };
    new uPlot(opts, [spec.x].concat(spec.series.map((s) => s.values)), el);
    el.dataset.points = String(spec.x.length);
  }

  async function loadCharts() {
    if (!charts) return;
    const app = charts.dataset.app;
    try {
      const resp = await fetch("/dashboard/apps/" + encodeURIComponent(app) + "/charts.json", { credentials: "same-origin" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      data.charts.forEach(draw);
      charts.dataset.loaded = "true";
    } catch (err) {
      charts.dataset.loaded = "error";
      console.error("charts", err);
    }
  }

  async function followLogs() {
    const pre = document.getElementById("logs");
    if (!pre) return;
    const app = pre.dataset.app;
    try {
      const resp = await fetch("/dashboard/apps/" + encodeURIComponent(app) + "/logs", { credentials: "same-origin" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pre.textContent += decoder.decode(value, { stream: true });
        const lines = pre.textContent.split("\n");
        if (lines.length > 500) pre.textContent = lines.slice(-500).join("\n");
        pre.scrollTop = pre.scrollHeight;
      }
    } catch (err) {
      pre.textContent += "\n[log stream ended: " + err + "]";
    }
  }

  loadCharts();
  setInterval(loadCharts, 30000);
  followLogs();
})();
