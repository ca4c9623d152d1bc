/*
 * The runs list: every run with its task, status, progress, best and MLflow link, refreshed
 * every few seconds; a checkbox per run selects runs (of any tasks) for the compare view,
 * whose link names them (compare?runs=a,b), so a comparison can be shared.
 */
import {
  age, api, compareUrl, el, fmt, hideBanner, isNum, mlflowUrl, runPageUrl, runsOf, setStatus, showBanner,
} from "./common.js";

export function runsView() {
  var table = document.getElementById("runs");
  var tbody = table.querySelector("tbody");
  var empty = document.getElementById("runs-empty");
  var updated = document.getElementById("runs-updated");
  var compare = document.getElementById("compare-link");
  var labels = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) { return th.textContent; });
  var selected = new Set(); // run ids, kept across refreshes
  var shown = [];

  function drawCompare() {
    var ids = shown.filter(function (id) { return selected.has(id); }); // in the list's order
    compare.dataset.count = String(ids.length);
    compare.textContent = ids.length ? "Compare " + ids.length + " run" + (ids.length > 1 ? "s" : "") : "Compare";
    if (ids.length) {
      compare.href = compareUrl(ids);
      compare.removeAttribute("aria-disabled");
    } else {
      compare.removeAttribute("href");
      compare.setAttribute("aria-disabled", "true");
    }
  }

  function checkbox(runId) {
    var box = el("input", { type: "checkbox", class: "select-run", "aria-label": "select " + runId + " to compare",
      checked: selected.has(runId) });
    box.addEventListener("change", function () {
      if (box.checked) selected.add(runId); else selected.delete(runId);
      drawCompare();
    });
    return box;
  }

  function row(run) {
    var link = el("a", { class: "run-link", href: runPageUrl(run.run_id), text: run.run_id });
    var status = el("span", { class: "status" });
    setStatus(status, run.status, run.error);
    var best = isNum(run.best_score)
      ? (run.monitor || "best") + " " + fmt(run.best_score) + (run.best_epoch != null ? " @ " + run.best_epoch : "")
      : "–";
    var url = mlflowUrl(run);
    var mlflow = url ? el("a", { href: url, target: "_blank", rel: "noopener", class: "mlflow-link", text: "open ↗" }) : "–";
    var cells = [
      checkbox(run.run_id),
      link,
      run.task || "–",
      status,
      (run.epochs_done || 0) + "/" + (run.max_epochs != null ? run.max_epochs : "?"),
      best,
      el("span", { title: run.created_at || "", text: age(run.created_at) }),
      mlflow,
    ];
    return el("tr", { dataset: { runId: run.run_id, status: run.status || "" } }, cells.map(function (cell, i) {
      var td = el("td", { "data-label": labels[i], class: i === 0 ? "select" : i === 4 || i === 5 ? "num" : null });
      td.appendChild(typeof cell === "string" ? document.createTextNode(cell) : cell);
      return td;
    }));
  }

  function render(runs) {
    runs = runs.slice().sort(function (a, b) {
      return String(b.created_at || b.run_id).localeCompare(String(a.created_at || a.run_id));
    });
    shown = runs.map(function (r) { return r.run_id; });
    tbody.replaceChildren.apply(tbody, runs.map(row));
    table.dataset.count = String(runs.length);
    table.hidden = runs.length === 0;
    empty.hidden = runs.length !== 0;
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    drawCompare();
  }

  function refresh() {
    api("/runs")
      .then(function (data) { render(runsOf(data)); hideBanner(); })
      .catch(showBanner)
      .then(function () { window.setTimeout(refresh, document.hidden ? 15000 : 3000); });
  }
  drawCompare();
  refresh();
}
