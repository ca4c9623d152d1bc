/*
 * The run page: the run's history from /metrics, /media and /system, then extended from its
 * SSE stream without a reload — charts, progress, ETA, best, Stop, the gallery (gallery.js)
 * and the system panel (system.js).
 *
 * Epoch records are kept in a Map keyed by epoch, so a record seen twice (history, then a
 * replayed event, or a resumed run that redoes an epoch) replaces the point instead of
 * doubling it; media entries and system samples are deduplicated likewise.
 */
import { Chart } from "./chart.js";
import {
  TERMINAL, TERMINAL_EVENTS, api, body, duration, el, fmt, hideBanner, isNum, mlflowUrl, runPath, runsOf, setStatus,
  showBanner,
} from "./common.js";
import { Gallery } from "./gallery.js";
import { openEventStream } from "./stream.js";
import { SystemPanel } from "./system.js";

export function runView() {
  var runId = body.dataset.runId;
  var base = runPath(runId);
  var node = function (id) { return document.getElementById(id); };
  var state = {
    run: null,
    status: null,
    error: null,
    records: new Map(),
    maxEpochs: null,
    progress: null,
    etaAt: null,
    epochEtaAt: null,
    lastEventId: 0,
    resumedAt: null,
    stream: null,
    stopping: false,
    polling: null,
  };

  var charts = {
    loss: new Chart(node("chart-loss"), [
      { key: "train_loss", label: "train_loss", color: "#2563eb" },
      { key: "val_loss", label: "val_loss", color: "#ea580c" },
    ]),
    monitor: new Chart(node("chart-monitor"), []),
    lr: new Chart(node("chart-lr"), [{ key: "lr", label: "lr", color: "#7c3aed" }]),
  };
  var gallery = new Gallery(node("gallery"), runId, {
    onChange: function (keys) { node("gallery-box").hidden = keys === 0; },
  });
  var system = new SystemPanel(node("system"));

  function monitor() { return (state.run && state.run.monitor) || null; }
  function mode() { return (state.run && state.run.mode) || "max"; }
  function isTerminal() { return !!TERMINAL[state.status]; }

  function sortedRecords() {
    return Array.from(state.records.values()).sort(function (a, b) { return a.epoch - b.epoch; });
  }

  function best() {
    var key = monitor(), found = null;
    if (!key) return null;
    sortedRecords().forEach(function (r) {
      var v = r[key];
      if (!isNum(v)) return;
      // strict, like ModelCheckpoint: a tie keeps the earlier epoch
      if (!found || (mode() === "min" ? v < found.score : v > found.score)) found = { epoch: r.epoch, score: v };
    });
    if (!found && state.run && isNum(state.run.best_score)) {
      found = { epoch: state.run.best_epoch, score: state.run.best_score };
    }
    return found;
  }

  function addRecords(records) {
    var changed = false;
    (records || []).forEach(function (r) {
      if (r && Number.isInteger(r.epoch)) { state.records.set(r.epoch, r); changed = true; }
    });
    if (changed) drawCharts();
  }

  // -- drawing -----------------------------------------------------------
  function drawCharts() {
    var records = sortedRecords();
    charts.loss.update(records);
    charts.monitor.update(records);
    charts.lr.update(records);
    drawEpochTable(records);
    drawStats();
  }

  function drawEpochTable(records) {
    var preferred = ["train_loss", "val_loss", monitor(), "lr", "duration_s"];
    var keys = [];
    records.forEach(function (r) {
      Object.keys(r).forEach(function (k) {
        if (k !== "epoch" && k !== "time" && keys.indexOf(k) < 0) keys.push(k);
      });
    });
    keys.sort(function (a, b) {
      var ia = preferred.indexOf(a), ib = preferred.indexOf(b);
      if (ia < 0) ia = 99;
      if (ib < 0) ib = 99;
      return ia - ib || a.localeCompare(b);
    });
    var b = best();
    var table = node("epochs");
    table.tHead.replaceChildren(el("tr", {}, [el("th", { text: "epoch" })].concat(keys.map(function (k) {
      return el("th", { text: k });
    }))));
    table.tBodies[0].replaceChildren.apply(table.tBodies[0], records.slice().reverse().map(function (r) {
      return el("tr", { class: b && b.epoch === r.epoch ? "best" : null }, [el("td", { text: String(r.epoch) })].concat(
        keys.map(function (k) { return el("td", { text: fmt(r[k]) }); })));
    }));
    node("epochs-count").textContent = String(records.length);
  }

  function drawStats() {
    var records = sortedRecords();
    var done = records.length ? records[records.length - 1].epoch : (state.run && state.run.epochs_done) || 0;
    var p = state.progress;
    var current = !isTerminal() && p && p.epoch > done ? p.epoch : done;
    var max = state.maxEpochs || (state.run && state.run.max_epochs);
    node("stat-epoch").textContent = (current || 0) + " / " + (max != null ? max : "?");

    var bar = node("epoch-bar");
    var fill = bar.firstElementChild;
    var batchText = node("stat-batch");
    if (isTerminal()) {
      fill.style.width = state.status === "completed" ? "100%" : fill.style.width;
      bar.setAttribute("aria-valuenow", state.status === "completed" ? "100" : "0");
      batchText.textContent = state.status === "completed" ? "all epochs done" : "not running";
    } else if (p && p.epoch > done && isNum(p.batch)) {
      var pct = isNum(p.total_batches) && p.total_batches > 0 ? Math.min(100, (100 * p.batch) / p.total_batches) : 0;
      fill.style.width = pct.toFixed(1) + "%";
      bar.setAttribute("aria-valuenow", pct.toFixed(0));
      batchText.textContent = "batch " + p.batch + " / " + (p.total_batches != null ? p.total_batches : "?") +
        (isNum(p.train_loss) ? " · train_loss " + fmt(p.train_loss) : "");
    } else {
      fill.style.width = "0%";
      bar.setAttribute("aria-valuenow", "0");
      batchText.textContent = state.status === "running" ? "starting epoch " + (done + 1) + "…" : "–";
    }
    drawEta();

    var b = best();
    node("stat-best-metric").textContent = monitor() || "";
    node("stat-best").textContent = b ? fmt(b.score) : "–";
    node("stat-best-epoch").textContent = b ? "epoch " + b.epoch + (mode() === "min" ? " · lower is better" : " · higher is better") : "";
  }

  function drawEta() {
    var now = Date.now();
    var running = !isTerminal() && state.etaAt !== null;
    node("stat-eta").textContent = isTerminal() ? "done" : running ? duration((state.etaAt - now) / 1000) : "–";
    node("stat-epoch-eta").textContent = running && state.epochEtaAt !== null
      ? "this epoch " + duration((state.epochEtaAt - now) / 1000) : "";
  }

  function drawRun() {
    var run = state.run || {};
    node("run-task").textContent = run.task || "";
    node("run-task").hidden = !run.task;
    setStatus(node("run-status"), state.status, state.error);
    var error = node("run-error");
    error.hidden = !(state.status === "failed" && state.error);
    error.textContent = state.error || "";
    var url = mlflowUrl(run);
    var link = node("run-mlflow");
    link.hidden = !url;
    if (url) link.href = url;
    var stop = node("stop");
    stop.disabled = state.stopping || !(state.status === "running" || state.status === "pending");
    stop.textContent = state.stopping && !isTerminal() ? "Stopping…" : "Stop";
    var key = monitor();
    if (key && charts.monitor.series.length === 0) {
      node("chart-monitor-title").textContent = key + (mode() === "min" ? " (lower is better)" : " (higher is better)");
      charts.monitor.setSeries([{ key: key, label: key, color: "#15803d" }]);
      charts.monitor.update(sortedRecords());
    }
    drawStats();
  }

  function setNote(text) { node("live-note").textContent = text; }

  // -- state changes -------------------------------------------------------
  function applyRun(run) {
    state.run = run;
    if (run.max_epochs != null) state.maxEpochs = run.max_epochs;
    var resumed = isTerminal() && !TERMINAL[run.status] && run.resumed_at && run.resumed_at !== state.resumedAt;
    state.resumedAt = run.resumed_at || null;
    // An API that tells the run's last event id spares the stream a replay of the history.
    if (!state.stream && isNum(run.last_event_id) && run.last_event_id > state.lastEventId) {
      state.lastEventId = run.last_event_id;
    }
    // A terminal status goes back to running only when the run was resumed:
    // otherwise a run.json read just before the terminal event must not undo it.
    if (!isTerminal() || TERMINAL[run.status] || resumed) {
      state.status = run.status;
      state.error = run.error || null;
    }
    drawRun();
    if (resumed && !state.stream) {
      state.stopping = false;
      openStream();
    }
  }

  function finish(status, error) {
    state.status = status;
    if (error) state.error = error;
    state.progress = null;
    state.etaAt = state.epochEtaAt = null;
    closeStream();
    drawRun();
    setNote("Run " + status + ". The charts show its whole record.");
    // One last read: best, final status and the MLflow link as the training wrote them.
    window.setTimeout(function () { refreshRun(); refreshMetrics(); refreshMedia(); }, 400);
  }

  function handleEvent(event) {
    if (!event || typeof event !== "object") return;
    if (isNum(event.id)) state.lastEventId = Math.max(state.lastEventId, event.id);
    switch (event.type) {
      case "run_started":
        if (isNum(event.max_epochs)) state.maxEpochs = event.max_epochs;
        if (!isTerminal()) { state.status = "running"; state.error = null; }
        drawRun();
        break;
      case "progress":
        if (isNum(event.max_epochs)) state.maxEpochs = event.max_epochs;
        state.progress = event;
        state.etaAt = isNum(event.eta_s) ? Date.now() + event.eta_s * 1000 : null;
        state.epochEtaAt = isNum(event.epoch_eta_s) ? Date.now() + event.epoch_eta_s * 1000 : null;
        drawStats();
        break;
      case "epoch_end":
        if (isNum(event.max_epochs)) state.maxEpochs = event.max_epochs;
        addRecords([Object.assign({ epoch: event.epoch }, event.metrics || {})]);
        // The epoch's own ETA is spent; the run's keeps counting down until the next progress event.
        if (state.progress && state.progress.epoch <= event.epoch) state.epochEtaAt = null;
        break;
      case "checkpoint_saved":
        setNote("Checkpoint " + (event.name || "") + " saved at epoch " + event.epoch + ".");
        break;
      case "status":
        if (event.status && !isTerminal()) { state.status = event.status; drawRun(); }
        break;
      case "media":
        gallery.add([event]);
        break;
      case "system":
        system.addEvent(event);
        break;
      default:
        if (TERMINAL_EVENTS[event.type]) finish(event.status || TERMINAL_EVENTS[event.type], event.error);
    }
  }

  // -- I/O -------------------------------------------------------------------
  function refreshRun() {
    return api(base).then(function (run) { hideBanner(); applyRun(run); return run; });
  }

  function refreshMetrics() {
    return api(base + "/metrics").then(function (data) { addRecords((data && data.epochs) || []); });
  }

  // The gallery and the system panel: their history (a run without them answers empty lists).
  function refreshMedia() {
    return Promise.all([
      api(base + "/media").then(function (data) { gallery.add((data && data.media) || []); }),
      api(base + "/system").then(function (data) { system.addLines((data && data.samples) || []); }),
    ]).catch(function () { /* the charts matter most; the stream brings what follows */ });
  }

  function openStream() {
    var source = openEventStream(runId, state.lastEventId, {
      onEvent: handleEvent,
      onOpen: function () { setNote("Live: new epochs appear as they end."); },
      onError: function (closed) {
        if (state.stream !== source) return;
        if (closed) {
          // The server refused the stream: fall back to reading the record every few seconds.
          state.stream = null;
          setNote("Live stream unavailable; refreshing every 3 s.");
          startPolling(3000);
        } else {
          setNote("Live stream interrupted; reconnecting…");
        }
      },
    });
    state.stream = source;
  }

  function closeStream() {
    if (state.stream) { state.stream.close(); state.stream = null; }
  }

  function startPolling(interval) {
    if (state.polling) return;
    state.polling = window.setInterval(function () {
      if (isTerminal()) { window.clearInterval(state.polling); state.polling = null; return; }
      refreshRun().then(refreshMetrics).then(refreshMedia).catch(showBanner);
    }, interval);
  }

  node("stop").addEventListener("click", function () {
    state.stopping = true;
    drawRun();
    api(base + "/stop", { method: "POST" })
      .then(function () { setNote("Stop requested; the run stops after its current batch."); })
      .catch(function (error) { state.stopping = false; drawRun(); showBanner(error); });
  });

  // The ETA counts down between progress events (they come at most once a second).
  window.setInterval(drawEta, 1000);

  function start() {
    refreshRun()
      .then(refreshMetrics)
      .then(refreshMedia)
      .then(function () {
        if (isTerminal()) setNote("Run " + state.status + ". The charts show its whole record.");
        else openStream();
        // run.json also moves without events: the MLflow link appears, a dead process is
        // marked failed, a finished run is resumed.
        window.setInterval(function () {
          refreshRun().catch(function () { /* the stream or the next poll will tell */ });
        }, isTerminal() ? 15000 : 5000);
      })
      .catch(function (error) {
        if (error.status !== 404) { showBanner(error); return; }
        // Not there yet (the page was opened before the run started): watch the runs
        // list, which answers 200, rather than asking for the run again and again.
        setNote("Run " + runId + " has not started yet; waiting for it…");
        waitForRun(0);
      });
  }

  function waitForRun(attempt) {
    window.setTimeout(function () {
      api("/runs")
        .then(function (data) {
          var runs = runsOf(data);
          var listed = runs.some(function (r) { return r.run_id === runId; });
          // A run served from MLflow only is not in the list: ask for it now and then.
          if (listed || attempt % 10 === 9) start(); else waitForRun(attempt + 1);
        })
        .catch(function (error) { showBanner(error); waitForRun(attempt + 1); });
    }, 2000);
  }
  start();
}
