/*
 * A line chart (uPlot, vendored) over records: one x key, one series per {key, label, color}.
 *
 * update(records) redraws from the records (objects holding the x key and series keys);
 * data-points on the container says how many x values it drew (0 while nothing is drawn),
 * data-series how many series have at least one value.
 */
import { el, fmt, isNum } from "./common.js";

var EPOCH_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

export function Chart(container, series, options) {
  options = options || {};
  this.container = container;
  this.series = series; // [{key, label, color, dash}]
  this.x = options.x || "epoch";
  this.time = !!options.time; // x in unix seconds, drawn as clock times
  this.height = options.height || 240;
  this.plot = null;
  this.placeholder = el("div", { class: "chart-empty", text: options.empty || "waiting for the first epoch…" });
  this.placeholder.style.height = this.height + "px";
  container.appendChild(this.placeholder);
  var self = this;
  var pending = false;
  // Resize on the next frame, not inside the observer, so a resize never loops.
  new ResizeObserver(function () {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      if (self.plot && container.clientWidth > 0) self.plot.setSize({ width: container.clientWidth, height: self.height });
    });
  }).observe(container);
}

Chart.prototype.setSeries = function (series) {
  if (this.plot) { this.plot.destroy(); this.plot = null; }
  this.series = series;
};

Chart.prototype.update = function (records) {
  var x = this.x;
  var xs = records.map(function (r) { return r[x]; });
  var columns = this.series.map(function (s) {
    return records.map(function (r) { return isNum(r[s.key]) ? r[s.key] : null; });
  });
  var shown = columns.filter(function (col) { return col.some(function (v) { return v !== null; }); }).length;
  this.container.dataset.points = String(shown ? xs.length : 0);
  this.container.dataset.series = String(shown);
  if (!shown) return;
  var data = [xs].concat(columns);
  if (this.plot) { this.plot.setData(data); return; }
  this.placeholder.remove();
  this.plot = new uPlot(this.options(), data, this.container);
};

Chart.prototype.options = function () {
  var time = this.time;
  var xAxis = time
    ? { space: 70 }
    : { label: this.x, labelSize: 18, incrs: EPOCH_TICKS,
        values: function (u, splits) { return splits.map(function (v) { return Number.isInteger(v) ? String(v) : ""; }); } };
  return {
    width: Math.max(this.container.clientWidth, 200),
    height: this.height,
    scales: {
      x: time ? { time: true } : {
        time: false,
        range: function (u, min, max) { return min === max ? [min - 1, max + 1] : [min, max]; },
      },
    },
    axes: [xAxis, { size: 62, values: function (u, splits) { return splits.map(fmt); } }],
    series: [time ? {} : { label: this.x, value: function (u, v) { return v == null ? "–" : String(v); } }].concat(
      this.series.map(function (s) {
        return {
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: !time, size: 6, fill: s.color },
          value: function (u, v) { return fmt(v); },
        };
      })
    ),
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
  };
};
