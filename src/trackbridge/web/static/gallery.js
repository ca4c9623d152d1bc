/*
 * The run page's gallery (issue 12): one panel per media key, its latest image, and a step
 * slider to go back to an earlier step. Entries come from GET /api/runs/<id>/media (the
 * media.jsonl index) and then from `media` events, in any order and any number of times: an
 * entry is known by its path, so a replayed event adds nothing.
 *
 * A panel follows the newest step while its slider is at the right end; moved back, it stays
 * on the step shown until the slider is moved again. Each panel carries data-key, data-step
 * (the step shown) and data-steps (how many it has).
 */
import { el, mediaUrl } from "./common.js";

export function Gallery(container, runId, options) {
  options = options || {};
  this.container = container;
  this.runId = runId;
  this.onChange = options.onChange || function () {};
  this.seen = new Set(); // paths
  this.panels = new Map(); // key -> panel state
}

/** Add media.jsonl entries (the index, or one event's entry). */
Gallery.prototype.add = function (entries) {
  var self = this;
  var touched = new Set();
  (entries || []).forEach(function (entry) {
    if (!entry || typeof entry.key !== "string" || typeof entry.path !== "string" || self.seen.has(entry.path)) return;
    self.seen.add(entry.path);
    var panel = self.panels.get(entry.key) || self.newPanel(entry.key);
    var step = Number.isInteger(entry.step) ? entry.step : 0;
    if (!panel.byStep.has(step)) panel.byStep.set(step, []);
    panel.byStep.get(step).push(entry);
    touched.add(panel);
  });
  touched.forEach(function (panel) { self.refresh(panel); });
  if (touched.size) {
    this.container.dataset.keys = String(this.panels.size);
    this.onChange(this.panels.size);
  }
};

Gallery.prototype.newPanel = function (key) {
  var panel = {
    key: key,
    byStep: new Map(), // step -> [entry, ...] in the order written
    steps: [],
    index: -1, // position of the shown step in steps
    follow: true,
  };
  var slider = el("input", { type: "range", min: "0", max: "0", step: "1", value: "0", class: "media-slider",
    "aria-label": key + ": step" });
  panel.node = el("figure", { class: "media-panel", dataset: { key: key, step: "", steps: "0" } }, [
    el("figcaption", {}, [el("span", { class: "media-key", text: key }), el("span", { class: "media-step muted" })]),
    el("div", { class: "media-images" }),
    slider,
    el("p", { class: "media-caption muted small" }),
  ]);
  panel.slider = slider;
  var self = this;
  slider.addEventListener("input", function () {
    panel.index = Number(slider.value);
    panel.follow = panel.index === panel.steps.length - 1;
    self.show(panel);
  });
  // Panels in key order: the same place on every page load, whatever came first.
  var keys = Array.from(this.panels.keys()).concat([key]).sort();
  var next = keys[keys.indexOf(key) + 1];
  this.container.insertBefore(panel.node, next !== undefined ? this.panels.get(next).node : null);
  this.panels.set(key, panel);
  return panel;
};

Gallery.prototype.refresh = function (panel) {
  var shownStep = panel.index >= 0 ? panel.steps[panel.index] : null;
  panel.steps = Array.from(panel.byStep.keys()).sort(function (a, b) { return a - b; });
  panel.index = panel.follow || shownStep === null ? panel.steps.length - 1 : panel.steps.indexOf(shownStep);
  panel.slider.max = String(Math.max(0, panel.steps.length - 1));
  panel.slider.value = String(panel.index);
  panel.slider.hidden = panel.steps.length < 2;
  panel.node.dataset.steps = String(panel.steps.length);
  this.show(panel);
};

Gallery.prototype.show = function (panel) {
  var step = panel.steps[panel.index];
  var entries = panel.byStep.get(step) || [];
  var runId = this.runId;
  if (panel.node.dataset.step === String(step) && panel.node.dataset.count === String(entries.length)) return;
  panel.node.dataset.step = String(step);
  panel.node.dataset.count = String(entries.length);
  var first = entries[0] || {};
  var where = "step " + step + (Number.isInteger(first.epoch) && first.epoch !== step ? " (epoch " + first.epoch + ")" : "");
  panel.node.querySelector(".media-step").textContent = where + " · " + (panel.index + 1) + "/" + panel.steps.length;
  panel.node.querySelector(".media-images").replaceChildren.apply(
    panel.node.querySelector(".media-images"),
    entries.map(function (entry) {
      var url = mediaUrl(runId, entry.path);
      var img = el("img", { src: url, alt: entry.key + " at step " + entry.step, decoding: "async",
        width: entry.width, height: entry.height });
      return el("a", { href: url, target: "_blank", rel: "noopener", title: "open full size" }, [img]);
    })
  );
  var captions = entries.map(function (e) { return e.caption; }).filter(Boolean);
  panel.node.querySelector(".media-caption").textContent = Array.from(new Set(captions)).join(" · ");
};

/** The newest entry of each key (the compare view's side-by-side images). */
export function latestByKey(entries) {
  var latest = new Map();
  (entries || []).forEach(function (e) {
    if (!e || typeof e.key !== "string") return;
    var held = latest.get(e.key);
    if (!held || (e.step || 0) >= (held.step || 0)) latest.set(e.key, e);
  });
  return latest;
}
