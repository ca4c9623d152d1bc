/*
 * The compare view (issue 12): the runs named by ?runs=a,b (any tasks) side by side — their
 * loss curves overlaid, their monitor curves overlaid (one chart per monitor metric: tasks
 * differ), a table of where each stands, and each run's latest image of every media key.
 * Runs still training are followed live over their streams; finished runs are read once.
 */
import { Chart } from "./chart.js";
import {
  TERMINAL, TERMINAL_EVENTS, api, body, el, fmt, hideBanner, isNum, mediaUrl, runPageUrl, runPath, runsOf,
  setStatus, showBanner,
} from "./common.js";
import { latestByKey } from "./gallery.js";
import { openEventStream } from "./stream.js";

var COLORS = ["#2563eb", "#ea580c", "#15803d", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563"];
var RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The run ids the page names: the server's validated list, else the query (deduplicated, in order). */
export function requestedRuns() {
  var raw = body.dataset.runs || new URLSearchParams(window.location.search).get("runs") || "";
  var ids = [];
  raw.split(",").forEach(function (id) {
    id = id.trim();
    if (RUN_ID.test(id) && ids.indexOf(id) < 0) ids.push(id);
  });
  return ids;
}

export function compareView() {
  var node = function (id) { return document.getElementById(id); };
  var runs = requestedRuns().map(function (id, i) {
    return { id: id, index: i, color: COLORS[i % COLORS.length], run: null, status: null, records: new Map(),
      media: [], lastEventId: 0, stream: null };
  });
  node("compare-empty").hidden = runs.length > 0;
  node("compare-body").hidden = runs.length === 0;
  if (!runs.length) return;
  node("compare-title").textContent = "Comparing " + runs.length + " run" + (runs.length > 1 ? "s" : "");

  var lossChart = new Chart(node("chart-cmp-loss"), []);
  var monitorCharts = new Map(); // monitor key -> {chart, runs: ids}

  function isTerminal(r) { return !!TERMINAL[r.status]; }
  function key(r, metric) { return "r" + r.index + ":" + metric; }

  /** One record per epoch seen by any of `among` (all runs), holding each run's values under key(run, metric). */
  function merged(metrics, among) {
    var byEpoch = new Map();
    (among || runs).forEach(function (r) {
      r.records.forEach(function (record, epoch) {
        var row = byEpoch.get(epoch) || { epoch: epoch };
        metrics.forEach(function (m) { if (isNum(record[m])) row[key(r, m)] = record[m]; });
        byEpoch.set(epoch, row);
      });
    });
    return Array.from(byEpoch.values()).sort(function (a, b) { return a.epoch - b.epoch; });
  }

  function drawLoss() {
    var series = [];
    runs.forEach(function (r) {
      series.push({ key: key(r, "val_loss"), label: r.id + " val_loss", color: r.color });
      series.push({ key: key(r, "train_loss"), label: r.id + " train_loss", color: r.color, dash: [6, 4] });
    });
    if (lossChart.series.length !== series.length) lossChart.setSeries(series);
    lossChart.update(merged(["train_loss", "val_loss"]));
    lossChart.container.dataset.runs = String(runs.filter(function (r) {
      return Array.from(r.records.values()).some(function (rec) { return isNum(rec.val_loss) || isNum(rec.train_loss); });
    }).length);
  }

  function drawMonitors() {
    runs.forEach(function (r) {
      var monitor = r.run && r.run.monitor;
      if (!monitor) return;
      var held = monitorCharts.get(monitor);
      if (!held) {
        var box = el("div", { class: "chart", id: "chart-cmp-" + monitor.replace(/[^A-Za-z0-9_-]/g, "_"),
          dataset: { points: "0", monitor: monitor } });
        var title = monitor + (r.run.mode === "min" ? " (lower is better)" : " (higher is better)");
        node("compare-monitors").appendChild(el("figure", { class: "chart-card" }, [el("figcaption", { text: title }), box]));
        held = { chart: new Chart(box, []), runs: [] };
        monitorCharts.set(monitor, held);
      }
      if (held.runs.indexOf(r) < 0) held.runs.push(r);
    });
    monitorCharts.forEach(function (held, monitor) {
      var series = held.runs.map(function (r) { return { key: key(r, monitor), label: r.id, color: r.color }; });
      if (held.chart.series.length !== series.length) held.chart.setSeries(series);
      held.chart.update(merged([monitor], held.runs));
    });
  }

  function drawTable() {
    var tbody = node("compare-runs").tBodies[0];
    tbody.replaceChildren.apply(tbody, runs.map(function (r) {
      var run = r.run || {};
      var status = el("span", { class: "status" });
      setStatus(status, r.status || (r.missing ? "not found" : "loading"), run.error);
      var swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = r.color;
      var best = isNum(run.best_score) ? (run.monitor || "best") + " " + fmt(run.best_score) + " @ " + run.best_epoch : "–";
      var epochs = r.records.size ? Math.max.apply(null, Array.from(r.records.keys())) : run.epochs_done || 0;
      return el("tr", { dataset: { runId: r.id, status: r.status || "" } }, [
        el("td", {}, [swatch, el("a", { class: "run-link", href: runPageUrl(r.id), text: r.id })]),
        el("td", { text: run.task || "–" }),
        el("td", {}, [status]),
        el("td", { class: "num", text: epochs + "/" + (run.max_epochs != null ? run.max_epochs : "?") }),
        el("td", { class: "num", text: best }),
      ]);
    }));
  }

  function drawMedia() {
    var latest = runs.map(function (r) { return latestByKey(r.media); });
    var keys = new Set();
    latest.forEach(function (m) { m.forEach(function (e, k) { keys.add(k); }); });
    var box = node("compare-media");
    node("compare-media-box").hidden = keys.size === 0;
    box.dataset.keys = String(keys.size);
    box.replaceChildren.apply(box, Array.from(keys).sort().map(function (k) {
      return el("section", { class: "compare-media-row", dataset: { key: k } }, [
        el("h3", { class: "media-key", text: k }),
        el("div", { class: "compare-media-cells" }, runs.map(function (r, i) {
          var entry = latest[i].get(k);
          var label = el("div", { class: "compare-cell-label small" }, [
            el("span", { class: "swatch", "aria-hidden": "true" }), r.id + (entry ? " · step " + entry.step : ""),
          ]);
          label.firstChild.style.background = r.color;
          var image = entry
            ? el("a", { href: mediaUrl(r.id, entry.path), target: "_blank", rel: "noopener" }, [
              el("img", { src: mediaUrl(r.id, entry.path), alt: k + " of " + r.id + " at step " + entry.step,
                width: entry.width, height: entry.height }),
            ])
            : el("div", { class: "compare-cell-none muted small", text: "no " + k });
          return el("figure", { class: "compare-cell", dataset: { runId: r.id, step: entry ? String(entry.step) : "" } },
            [label, image]);
        })),
      ]);
    }));
  }

  function draw() { drawTable(); drawLoss(); drawMonitors(); }

  function addRecords(r, records) {
    (records || []).forEach(function (rec) { if (rec && Number.isInteger(rec.epoch)) r.records.set(rec.epoch, rec); });
  }

  function addMedia(r, entries) {
    var known = new Set(r.media.map(function (e) { return e.path; }));
    (entries || []).forEach(function (e) { if (e && e.path && !known.has(e.path)) { known.add(e.path); r.media.push(e); } });
  }

  function handle(r, event) {
    if (isNum(event.id)) r.lastEventId = Math.max(r.lastEventId, event.id);
    if (event.type === "epoch_end") {
      addRecords(r, [Object.assign({ epoch: event.epoch }, event.metrics || {})]);
      draw();
    } else if (event.type === "media") {
      addMedia(r, [event]);
      drawMedia();
    } else if (event.type === "status" && event.status && !isTerminal(r)) {
      r.status = event.status;
      drawTable();
    } else if (TERMINAL_EVENTS[event.type]) {
      r.status = event.status || TERMINAL_EVENTS[event.type];
      if (r.stream) { r.stream.close(); r.stream = null; }
      window.setTimeout(function () { load(r); }, 400); // best and status as the training wrote them
    }
  }

  function follow(r) {
    if (r.stream || isTerminal(r)) return;
    r.stream = openEventStream(r.id, r.lastEventId, {
      onEvent: function (event) { handle(r, event); },
      onError: function (closed) { if (closed) { r.stream = null; } },
    });
  }

  function load(r) {
    var base = runPath(r.id);
    return api(base)
      .then(function (run) {
        r.run = run;
        r.missing = false;
        if (!r.status || !isTerminal(r) || TERMINAL[run.status]) r.status = run.status;
        if (!r.stream && isNum(run.last_event_id) && run.last_event_id > r.lastEventId) r.lastEventId = run.last_event_id;
        return Promise.all([
          api(base + "/metrics").then(function (data) { addRecords(r, (data && data.epochs) || []); }),
          api(base + "/media").then(function (data) { addMedia(r, (data && data.media) || []); }).catch(function () {}),
        ]);
      })
      .then(function () { hideBanner(); follow(r); })
      .catch(function (error) {
        if (error.status === 404) r.missing = true; else showBanner(error);
      })
      .then(function () { draw(); drawMedia(); });
  }

  runs.forEach(load);
  // Runs that were not there yet (once the runs list has them: no 404 again and again), or whose
  // stream the server refused: read again now and then.
  window.setInterval(function () {
    var waiting = runs.filter(function (r) { return !r.stream && !isTerminal(r); });
    if (!waiting.length) return;
    api("/runs").then(function (data) {
      var listed = new Set(runsOf(data).map(function (run) { return run.run_id; }));
      waiting.forEach(function (r) { if (!r.missing || listed.has(r.id)) load(r); });
    }).catch(function () { /* the next round will tell */ });
  }, 5000);
}
