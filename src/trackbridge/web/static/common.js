/*
 * What every view of the dashboard shares: where the API is, requests, DOM building, number
 * formats, status badges, the banner, and the URLs of pages and media files.
 *
 * The server puts two relative URLs on <body>: data-api (where /api is, seen from this page)
 * and data-root (the runs list). Every URL the page builds starts from one of them, so the
 * page works at / of `trackbridge serve`, under /trackbridge/ of the MLflow server and behind
 * a proxy alike. A ?token= the page was opened with has already been exchanged by the server
 * for an HttpOnly, SameSite=Strict cookie that every request of the page carries (fetch,
 * EventSource and <img> alike): the page removes it from the address bar.
 */
export var body = document.body;
export var API = body.dataset.api.replace(/\/+$/, "");
export var ROOT = body.dataset.root;

export var TERMINAL = { completed: true, failed: true, stopped: true };
export var TERMINAL_EVENTS = { training_complete: "completed", training_failed: "failed", training_stopped: "stopped" };

/** The token is in the cookie now: out of the address bar, the history and any Referer. */
export function dropTokenFromUrl() {
  var url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  url.searchParams.delete("token");
  window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
}

/** GET (or options.method) API + path as JSON; rejects with an Error carrying .status. */
export function api(path, options) {
  options = options || {};
  return fetch(API + path, {
    method: options.method || "GET", headers: { Accept: "application/json" }, cache: "no-store",
    credentials: "same-origin",
  }).then(function (response) {
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

export function runPath(runId) { return "/runs/" + encodeURIComponent(runId); }
export function runPageUrl(runId) { return ROOT + "runs/" + encodeURIComponent(runId); }
export function compareUrl(runIds) { return ROOT + "compare?runs=" + runIds.map(encodeURIComponent).join(","); }

/** The URL of a media.jsonl entry's image: its path is relative to the run, under media/. */
export function mediaUrl(runId, path) {
  var inside = String(path || "").replace(/^media\//, "");
  return API + runPath(runId) + "/media/" + inside.split("/").map(encodeURIComponent).join("/");
}

export function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (key) {
    var value = attrs[key];
    if (value === null || value === undefined || value === false) return;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  });
  (children || []).forEach(function (child) {
    if (child === null || child === undefined) return;
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  });
  return node;
}

export function isNum(v) { return typeof v === "number" && isFinite(v); }

export function fmt(v) {
  if (!isNum(v)) return "–";
  var a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

export function duration(seconds) {
  if (!isNum(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + " s";
  var m = Math.floor(seconds / 60), s = seconds % 60;
  if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
  var h = Math.floor(m / 60);
  return h + " h " + (m % 60) + " min";
}

export function age(iso) {
  var t = Date.parse(iso || "");
  if (!isFinite(t)) return "–";
  var s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

export function mlflowUrl(run) {
  return (run && (run.mlflow_url || (run.mlflow && run.mlflow.url))) || null;
}

export function setStatus(node, status, error) {
  node.dataset.status = status || "";
  node.textContent = status || "unknown";
  if (error) node.title = error; else node.removeAttribute("title");
}

/** The runs of a GET /api/runs answer (a list, or {"runs": [...]}). */
export function runsOf(data) { return Array.isArray(data) ? data : (data && data.runs) || []; }

var banner = document.getElementById("banner");
export function showBanner(error) {
  banner.textContent = error && error.status === 401
    ? "This server needs a token: open this page as …?token=<TRACKBRIDGE_TOKEN>."
    : "Cannot reach the trackbridge API: " + (error && error.message ? error.message : error);
  banner.hidden = false;
}
export function hideBanner() { banner.hidden = true; }
