"""The dashboard's gallery, system panel and compare view (issues 12 and 13) in real headless Chromium.

One `trackbridge serve` and two real trainings for the module: a paced classification run
(a few seconds per epoch, system metrics every second) watched live, and a short one to
compare it with. Every page must run without a console error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ARTIFACTS, free_port, wait_for_http, wait_until
from browser import chromium, open_page

PACED_TRAINING = Path(__file__).with_name("paced_training.py")
LIVE, OTHER = "watched-1", "other-1"
PANEL = ".media-panel[data-key='confusion_matrix']"

pytestmark = pytest.mark.slow


class Site:
    def __init__(self, base: str, runs_root: Path, live: subprocess.Popen, other: subprocess.Popen) -> None:
        self.base, self.runs_root, self.live, self.other = base, runs_root, live, other

    def media(self, run_id: str) -> list[dict]:
        path = self.runs_root / run_id / "media.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard-media")
    runs_root = tmp / "runs"
    port = free_port()
    logs = [open(tmp / name, "wb") for name in ("serve.log", "live.log", "other.log")]
    serve = subprocess.Popen(
        [sys.executable, "-m", "trackbridge", "serve", "--port", str(port), "--runs-root", str(runs_root)],
        stdout=logs[0], stderr=subprocess.STDOUT,
    )
    training = [sys.executable, str(PACED_TRAINING), str(runs_root)]
    live = subprocess.Popen(
        [*training, LIVE, "--epochs", "10", "--steps-per-epoch", "8", "--pace", "0.3", "--system-interval", "1"],
        stdout=logs[1], stderr=subprocess.STDOUT,
    )
    other = subprocess.Popen([*training, OTHER, "--epochs", "3", "--steps-per-epoch", "4", "--seed", "1"],
                             stdout=logs[2], stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=serve)
        yield Site(f"http://127.0.0.1:{port}", runs_root, live, other)
    finally:
        for proc in (live, other, serve):
            _stop(proc)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


def _step(page) -> int:
    return int(page.get_attribute(PANEL, "data-step"))


def test_gallery_follows_the_live_run_and_its_slider_goes_back(site: Site, browser) -> None:
    wait_until(lambda: site.media(LIVE), 180, "the first confusion matrix")
    assert site.live.poll() is None, "the watched run should still be training"
    page = open_page(browser, f"{site.base}/runs/{LIVE}", viewport={"width": 1280, "height": 1000})
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    page.wait_for_selector(PANEL, timeout=30_000)
    first, first_src = _step(page), page.get_attribute(f"{PANEL} img", "src")
    # the next epoch's figure replaces it, live
    page.wait_for_function(f"() => document.querySelector(\"{PANEL}\").dataset.step > {first}", timeout=90_000)
    assert page.get_attribute(f"{PANEL} img", "src") != first_src
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    latest = _step(page)
    entry = next(e for e in site.media(LIVE) if e["key"] == "confusion_matrix" and e["step"] == latest)
    assert page.get_attribute(f"{PANEL} img", "src").endswith(entry["path"].removeprefix("media/"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-gallery.png"), full_page=True)

    # The slider, as a person moves it (keyboard): back to the first epoch, whose image it shows ...
    page.focus(f"{PANEL} input.media-slider")
    page.keyboard.press("Home")
    assert _step(page) == 1
    assert page.get_attribute(f"{PANEL} img", "src").endswith("confusion_matrix/000001.png")
    assert "step 1 · 1/" in page.text_content(f"{PANEL} .media-step")
    # ... and stays there while later epochs arrive (the slider grows; the image shown does not change).
    steps = int(page.get_attribute(PANEL, "data-steps"))
    page.wait_for_function(f"() => document.querySelector(\"{PANEL}\").dataset.steps > {steps}", timeout=90_000)
    assert _step(page) == 1
    page.keyboard.press("End")  # back to the newest: it follows again
    assert _step(page) == int(page.get_attribute(PANEL, "data-steps"))
    assert page.problems == []


def test_system_panel_draws_the_run_samples(site: Site, browser) -> None:
    page = open_page(browser, f"{site.base}/runs/{LIVE}", viewport={"width": 1280, "height": 1000})
    page.wait_for_function("() => document.querySelector('#system').dataset.samples >= 3", timeout=60_000)
    shown = int(page.get_attribute("#system", "data-samples"))
    # live samples extend it (one a second)
    page.wait_for_function(f"() => document.querySelector('#system').dataset.samples > {shown}", timeout=30_000)
    assert page.is_visible("#system")
    assert int(page.get_attribute("#chart-sys-cpu", "data-points")) >= 3
    assert page.get_attribute("#chart-sys-cpu", "data-series") == "2"  # CPU % and memory %
    assert page.get_attribute("#chart-sys-mem", "data-series") == "2"  # system MB and process RSS
    assert re.search(r"CPU \d", page.text_content("#system-latest"))
    assert not page.is_visible("#chart-sys-gpu")  # no GPU here: no GPU chart
    assert page.problems == []


def test_compare_view_of_two_runs_from_the_runs_list(site: Site, browser) -> None:
    wait_until(lambda: site.other.poll() is not None, 180, "the short run to finish")
    assert site.other.returncode == 0
    runs = open_page(browser, f"{site.base}/", viewport={"width": 1280, "height": 700})
    for run_id in (LIVE, OTHER):
        runs.check(f"tr[data-run-id='{run_id}'] input.select-run")
    assert runs.text_content("#compare-link") == "Compare 2 runs"
    runs.click("#compare-link")
    runs.wait_for_url(re.compile(r"/compare\?runs="))
    assert sorted(runs.url.split("runs=")[1].split(",")) == sorted([LIVE, OTHER])  # a link that names the runs
    page = runs
    page.wait_for_function("() => document.querySelector('#chart-cmp-loss').dataset.runs == 2", timeout=30_000)
    assert page.get_attribute("#chart-cmp-loss", "data-series") == "4"  # train and val loss of each run
    page.wait_for_function("() => document.querySelector('#chart-cmp-val_accuracy').dataset.series == 2",
                           timeout=30_000)
    # both runs' latest confusion matrix, side by side
    row = "#compare-media .compare-media-row[data-key='confusion_matrix']"
    page.wait_for_function(f"() => document.querySelectorAll(\"{row} img\").length == 2", timeout=30_000)
    other_step = page.get_attribute(f"{row} .compare-cell[data-run-id='{OTHER}']", "data-step")
    assert other_step == "3"
    # the run still training moves on in the compare view too
    if site.live.poll() is None:
        points = int(page.get_attribute("#chart-cmp-loss", "data-points"))
        page.wait_for_function(f"() => document.querySelector('#chart-cmp-loss').dataset.points > {points}",
                               timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"), full_page=True)
    assert page.problems == [] and runs.problems == []


def test_compare_page_refuses_bad_run_ids_with_json(site: Site) -> None:
    import requests

    bad = requests.get(f"{site.base}/compare", params={"runs": f"{LIVE},../etc"}, timeout=10)
    assert bad.status_code == 400 and "error" in bad.json()
    many = requests.get(f"{site.base}/compare", params={"runs": ",".join(f"r{i}" for i in range(13))}, timeout=10)
    assert many.status_code == 400 and "at most 12" in many.json()["error"]
    none = requests.get(f"{site.base}/compare", timeout=10)
    assert none.status_code == 200 and 'data-runs=""' in none.text
