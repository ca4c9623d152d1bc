/*
 * The run page's system panel (issue 13): CPU, memory and, when the run has GPUs, each GPU's
 * utilisation and memory, from GET /api/runs/<id>/system (system.jsonl) and then from
 * `system` events. Names are MLflow's system-metric names without the "system/" prefix.
 * A sample is known by its step, so a replayed event adds nothing. The panel stays hidden
 * until the first sample (a run with system_metrics_interval_s = 0 has none).
 */
import { Chart } from "./chart.js";
import { el, fmt, isNum } from "./common.js";

var GPU_COLORS = ["#0891b2", "#c026d3", "#ca8a04", "#4f46e5", "#059669", "#dc2626", "#7c3aed", "#ea580c"];

export function SystemPanel(section) {
  this.section = section;
  this.samples = new Map(); // step -> {t, metrics}
  this.gpus = [];
  var chart = function (id, series) { return new Chart(section.querySelector(id), series, { x: "t", time: true, height: 180, empty: "no samples yet" }); };
  this.charts = {
    cpu: chart("#chart-sys-cpu", [
      { key: "cpu_utilization_percentage", label: "CPU %", color: "#2563eb" },
      { key: "system_memory_usage_percentage", label: "memory %", color: "#ea580c" },
    ]),
    memory: chart("#chart-sys-mem", [
      { key: "system_memory_usage_megabytes", label: "system MB", color: "#ea580c" },
      { key: "process_memory_rss_megabytes", label: "process RSS MB", color: "#7c3aed" },
    ]),
    gpu: chart("#chart-sys-gpu", []),
    gpuMemory: chart("#chart-sys-gpu-mem", []),
  };
}

/** Add system.jsonl lines ({step, time, name: value, ...}). */
SystemPanel.prototype.addLines = function (lines) {
  var self = this;
  var added = false;
  (lines || []).forEach(function (line) {
    if (!line || !Number.isInteger(line.step) || self.samples.has(line.step)) return;
    var metrics = {};
    Object.keys(line).forEach(function (k) { if (k !== "step" && k !== "time" && isNum(line[k])) metrics[k] = line[k]; });
    var t = Date.parse(line.time || "") / 1000;
    if (!isFinite(t)) return;
    self.samples.set(line.step, { t: t, metrics: metrics });
    added = true;
  });
  if (added) this.draw();
};

/** Add one `system` event ({step, time, metrics: {...}}). */
SystemPanel.prototype.addEvent = function (event) {
  this.addLines([Object.assign({ step: event.step, time: event.time }, event.metrics || {})]);
};

SystemPanel.prototype.draw = function () {
  var records = Array.from(this.samples.values())
    .sort(function (a, b) { return a.t - b.t; })
    .map(function (s) { return Object.assign({ t: s.t }, s.metrics); });
  this.section.hidden = records.length === 0;
  this.section.dataset.samples = String(records.length);
  if (!records.length) return;
  this.findGpus(records);
  this.charts.cpu.update(records);
  this.charts.memory.update(records);
  if (this.gpus.length) {
    this.charts.gpu.update(records);
    this.charts.gpuMemory.update(records);
  }
  this.drawLatest(records[records.length - 1]);
};

SystemPanel.prototype.findGpus = function (records) {
  var found = new Set();
  records.forEach(function (r) {
    Object.keys(r).forEach(function (k) {
      var m = /^gpu_(\d+)_/.exec(k);
      if (m) found.add(Number(m[1]));
    });
  });
  var gpus = Array.from(found).sort(function (a, b) { return a - b; });
  if (gpus.join() === this.gpus.join()) return;
  this.gpus = gpus;
  var series = function (suffix, unit) {
    return gpus.map(function (i) {
      return { key: "gpu_" + i + "_" + suffix, label: "GPU " + i + " " + unit, color: GPU_COLORS[i % GPU_COLORS.length] };
    });
  };
  this.charts.gpu.setSeries(series("utilization_percentage", "%"));
  this.charts.gpuMemory.setSeries(series("memory_usage_megabytes", "MB"));
  this.section.querySelectorAll(".gpu-card").forEach(function (card) { card.hidden = gpus.length === 0; });
};

SystemPanel.prototype.drawLatest = function (r) {
  var parts = [
    ["CPU", r.cpu_utilization_percentage, "%"],
    ["memory", r.system_memory_usage_megabytes, " MB"],
    ["process", r.process_memory_rss_megabytes, " MB"],
  ];
  this.gpus.forEach(function (i) {
    parts.push(["GPU " + i, r["gpu_" + i + "_utilization_percentage"], "%"]);
    parts.push(["GPU " + i + " memory", r["gpu_" + i + "_memory_usage_megabytes"], " MB"]);
    parts.push(["GPU " + i + " power", r["gpu_" + i + "_power_usage_watts"], " W"]);
    parts.push(["GPU " + i + " temperature", r["gpu_" + i + "_temperature_celsius"], " °C"]);
  });
  var latest = this.section.querySelector("#system-latest");
  latest.replaceChildren.apply(latest, parts.filter(function (p) { return isNum(p[1]); }).map(function (p) {
    return el("span", { class: "sys-figure" }, [el("span", { class: "muted", text: p[0] + " " }), fmt(p[1]) + p[2]]);
  }));
};
