/*
 * trackbridge dashboard: a client of the live API (DESIGN §5), and nothing else.
 *
 * The server puts two relative URLs on <body>: data-api (where /api is, seen
 * from this page) and data-root (the runs list). A ?token= the page was opened
 * with has already been exchanged by the server for an HttpOnly, SameSite=Strict
 * cookie that every request of this page carries (fetch and EventSource alike):
 * the page removes it from the address bar, and no URL it requests holds it.
 *
 * The run page draws the run's history from /metrics, then extends it from
 * the SSE stream. Epoch records are kept in a Map keyed by epoch, so a record
 * seen twice (history, then a replayed event, or a resumed run that redoes an
 * epoch) replaces the point instead of doubling it.
 */
(function () {
  "use strict";

  var body = document.body;
  var API = body.dataset.api.replace(/\/+$/, "");
  var ROOT = body.dataset.root;
  // The token is in the cookie now: out of the address bar, the history and any Referer.
  (function dropTokenFromUrl() {
    var url = new URL(window.location.href);
    if (!url.searchParams.has("token")) return;
    url.searchParams.delete("token");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  })();
  var TERMINAL = { completed: true, failed: true, stopped: true };
  var TERMINAL_EVENTS = { training_complete: "completed", training_failed: "failed", training_stopped: "stopped" };
  var EVENT_TYPES = ["run_started", "epoch_end", "progress", "checkpoint_saved", "status",
    "training_complete", "training_failed", "training_stopped"];

  // ---------------------------------------------------------------- helpers
  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    return fetch(API + path, {
      method: options.method || "GET", headers: headers, cache: "no-store", credentials: "same-origin"
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
          if (!response.ok) {
            var error = new Error((data && data.error) || ("HTTP " + response.status + " from " + path));
            error.status = response.status;
            throw error;
          }
          return data;
        });
      });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  function fmt(v) {
    if (!isNum(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }

  function duration(seconds) {
    if (!isNum(seconds)) return "–";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    var h = Math.floor(m / 60);
    return h + " h " + (m % 60) + " min";
  }

  function age(iso) {
    var t = Date.parse(iso || "");
    if (!isFinite(t)) return "–";
    var s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function mlflowUrl(run) {
    return (run && (run.mlflow_url || (run.mlflow && run.mlflow.url))) || null;
  }

  function setStatus(node, status, error) {
    node.dataset.status = status || "";
    node.textContent = status || "unknown";
    if (error) node.title = error; else node.removeAttribute("title");
  }

  var banner = document.getElementById("banner");
  function showBanner(error) {
    var text = error && error.status === 401
      ? "This server needs a token: open this page as …?token=<TRACKBRIDGE_TOKEN>."
      : "Cannot reach the trackbridge API: " + (error && error.message ? error.message : error);
    banner.textContent = text;
    banner.hidden = false;
  }
  function hideBanner() { banner.hidden = true; }

  // ------------------------------------------------------------- runs list
  function runsView() {
    var table = document.getElementById("runs");
    var tbody = table.querySelector("tbody");
    var empty = document.getElementById("runs-empty");
    var updated = document.getElementById("runs-updated");
    var labels = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) { return th.textContent; });

    function row(run) {
      var link = el("a", { class: "run-link", href: ROOT + "runs/" + encodeURIComponent(run.run_id), text: run.run_id });
      var status = el("span", { class: "status" });
      setStatus(status, run.status, run.error);
      var best = isNum(run.best_score)
        ? (run.monitor || "best") + " " + fmt(run.best_score) + (run.best_epoch != null ? " @ " + run.best_epoch : "")
        : "–";
      var url = mlflowUrl(run);
      var mlflow = url ? el("a", { href: url, target: "_blank", rel: "noopener", class: "mlflow-link", text: "open ↗" }) : "–";
      var cells = [
        link,
        run.task || "–",
        status,
        (run.epochs_done || 0) + "/" + (run.max_epochs != null ? run.max_epochs : "?"),
        best,
        el("span", { title: run.created_at || "", text: age(run.created_at) }),
        mlflow,
      ];
      return el("tr", { dataset: { runId: run.run_id, status: run.status || "" } }, cells.map(function (cell, i) {
        var td = el("td", { "data-label": labels[i], class: i === 3 || i === 4 ? "num" : null });
        td.appendChild(typeof cell === "string" ? document.createTextNode(cell) : cell);
        return td;
      }));
    }

    function render(runs) {
      runs = runs.slice().sort(function (a, b) {
        return String(b.created_at || b.run_id).localeCompare(String(a.created_at || a.run_id));
      });
      tbody.replaceChildren.apply(tbody, runs.map(row));
      table.dataset.count = String(runs.length);
      table.hidden = runs.length === 0;
      empty.hidden = runs.length !== 0;
      updated.textContent = "updated " + new Date().toLocaleTimeString();
    }

    function refresh() {
      api("/runs")
        .then(function (data) { render(Array.isArray(data) ? data : (data && data.runs) || []); hideBanner(); })
        .catch(showBanner)
        .then(function () { window.setTimeout(refresh, document.hidden ? 15000 : 3000); });
    }
    refresh();
  }

  // ------------------------------------------------------------------ chart
  function Chart(container, series) {
    this.container = container;
    this.series = series; // [{key, label, color, dash}]
    this.plot = null;
    this.placeholder = el("div", { class: "chart-empty", text: "waiting for the first epoch…" });
    container.appendChild(this.placeholder);
    var self = this;
    var pending = false;
    // Resize on the next frame, not inside the observer, so a resize never loops.
    new ResizeObserver(function () {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        if (self.plot && container.clientWidth > 0) self.plot.setSize({ width: container.clientWidth, height: 240 });
      });
    }).observe(container);
  }

  Chart.prototype.setSeries = function (series) {
    if (this.plot) { this.plot.destroy(); this.plot = null; }
    this.series = series;
  };

  Chart.prototype.update = function (records) {
    var series = this.series;
    var xs = records.map(function (r) { return r.epoch; });
    var data = [xs].concat(series.map(function (s) {
      return records.map(function (r) { return isNum(r[s.key]) ? r[s.key] : null; });
    }));
    var drawn = data.slice(1).some(function (col) { return col.some(function (v) { return v !== null; }); });
    this.container.dataset.points = String(drawn ? xs.length : 0);
    if (!drawn) return;
    if (this.plot) { this.plot.setData(data); return; }
    this.placeholder.remove();
    this.plot = new uPlot(this.options(), data, this.container);
  };

  Chart.prototype.options = function () {
    return {
      width: Math.max(this.container.clientWidth, 200),
      height: 240,
      scales: {
        x: {
          time: false,
          range: function (u, min, max) { return min === max ? [min - 1, max + 1] : [min, max]; },
        },
      },
      axes: [
        { label: "epoch", labelSize: 18, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
          values: function (u, splits) { return splits.map(function (v) { return Number.isInteger(v) ? String(v) : ""; }); } },
        { size: 62, values: function (u, splits) { return splits.map(fmt); } },
      ],
      series: [{ label: "epoch", value: function (u, v) { return v == null ? "–" : String(v); } }].concat(
        this.series.map(function (s) {
          return {
            label: s.label,
            stroke: s.color,
            width: 2,
            dash: s.dash,
            spanGaps: true,
            points: { show: true, size: 6, fill: s.color },
            value: function (u, v) { return fmt(v); },
          };
        })
      ),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    };
  };

  // --------------------------------------------------------------- run page
  function runView() {
    var runId = body.dataset.runId;
    var base = "/runs/" + encodeURIComponent(runId);
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
      window.setTimeout(function () { refreshRun(); refreshMetrics(); }, 400);
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

    function openStream() {
      var params = new URLSearchParams();
      if (state.lastEventId > 0) params.set("last_event_id", String(state.lastEventId));
      var query = params.toString();
      var source = new EventSource(API + "/training/" + encodeURIComponent(runId) + "/stream" + (query ? "?" + query : ""));
      state.stream = source;
      var onMessage = function (message) {
        var event;
        try { event = JSON.parse(message.data); } catch (err) { return; }
        handleEvent(event);
      };
      source.onmessage = onMessage;
      EVENT_TYPES.forEach(function (type) { source.addEventListener(type, onMessage); });
      source.onopen = function () { setNote("Live: new epochs appear as they end."); };
      source.onerror = function () {
        if (state.stream !== source) return;
        if (source.readyState === EventSource.CLOSED) {
          // The server refused the stream: fall back to reading the record every few seconds.
          state.stream = null;
          setNote("Live stream unavailable; refreshing every 3 s.");
          startPolling(3000);
        } else {
          setNote("Live stream interrupted; reconnecting…");
        }
      };
    }

    function closeStream() {
      if (state.stream) { state.stream.close(); state.stream = null; }
    }

    function startPolling(interval) {
      if (state.polling) return;
      state.polling = window.setInterval(function () {
        if (isTerminal()) { window.clearInterval(state.polling); state.polling = null; return; }
        refreshRun().then(refreshMetrics).catch(showBanner);
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
            var runs = Array.isArray(data) ? data : (data && data.runs) || [];
            var listed = runs.some(function (r) { return r.run_id === runId; });
            // A run served from MLflow only is not in the list: ask for it now and then.
            if (listed || attempt % 10 === 9) start(); else waitForRun(attempt + 1);
          })
          .catch(function (error) { showBanner(error); waitForRun(attempt + 1); });
      }, 2000);
    }
    start();
  }

  if (body.dataset.view === "run") runView(); else runsView();
})();
