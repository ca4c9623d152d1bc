"""The README's two set-up commands, run as a newcomer would: in a fresh clone, from nothing.

Two reductions, both because this test is itself part of the suite:
- the test command runs a small selection of the suite (running the whole suite
  inside the suite would recurse);
- the main job runs with ``--task classification --epochs 1`` (the command
  passes its arguments to ``trackbridge demo``) and is stopped with Ctrl-C
  (SIGINT) once it serves, as a user would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import REPO, free_port

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == ["bash scripts/test.sh"]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path_factory.mktemp("fresh") / "trackbridge"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    return clone


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "TRACKBRIDGE_", "VIRTUAL_ENV", "PYTEST_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def test_readme_test_command_installs_and_runs_tests_in_a_fresh_clone(fresh_clone):
    assert not (fresh_clone / ".venv").exists()
    result = subprocess.run(
        ["bash", "scripts/test.sh", "tests/test_config.py", "-q", "-p", "no:cacheprovider"],
        cwd=fresh_clone, env=clean_env(), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)
    assert (fresh_clone / ".venv" / "bin" / "trackbridge").exists()


def test_readme_main_command_trains_serves_and_stops_cleanly_in_a_fresh_clone(fresh_clone):
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "scripts/demo.sh", "--port", str(port), "--task", "classification", "--epochs", "1"],
        cwd=fresh_clone, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            output.append(line)
            if "serving until Ctrl-C" in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "serving until Ctrl-C" in text, text[-3000:]
        urls = dict(re.findall(r"^\s+(Dashboard|MLflow UI):\s+(\S+)", text, re.M))
        for url in urls.values():
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert descendants, "the demo should be running a server process"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, text + rest
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert not alive, f"stray processes: {alive}"
        assert (fresh_clone / "mlruns" / "mlflow.db").is_file()
        assert any((fresh_clone / "runs").iterdir())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
