"""The HTML report: built by `snakemake --report` on a tiny run, opened in a headless browser.

The browser is Debian's ``chromium``. When it is missing and the tests run as root, the
session installs it with apt-get; otherwise (or when the install fails, e.g. offline) the
browser test is skipped with the reason, and the report is still checked as a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow

CONFIG = {
    "dataset": "rep",
    "demo": {"size": 32, "n_train": 1, "n_val": 1, "n_test": 2, "n_predict": 0},
    "tile": {"patch_size": 16},
    "model": {"depth": 2, "base_channels": 4},
    "train": {"epochs": 1, "batch_size": 4, "max_minutes": 1},
    "inference": {"tile": 32},
}
CATEGORIES = ("Data", "Training", "Segmentations", "Metrics", "Provenance")
FIGURES = ("training_curve.png", "test_00.png", "test_01.png", "worst_samples.png",
           "metric_distributions.png", "instance_curves.png")  # fmt: skip
PAGES = ("data.html", "model_card.html", "metrics.html", "per_image.csv")
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--virtual-time-budget=10000",
)  # fmt: skip

# Appended to a copy of the report: once the app has rendered, open the Segmentations
# category and show the gallery figure the way a click does, then record which images decoded.
PROBE = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const path = Object.keys(results).find(k => k.endsWith("worst_samples.png"));
  app.showCategory("Segmentations");
  setTimeout(() => app.setView({content: "img", contentPath: results[path].data_uri, resultPath: path}), 300);
  setTimeout(() => {
    const shown = [...document.querySelectorAll("img")].filter(i => i.src.startsWith("data:image/png"));
    document.body.setAttribute("data-probe", JSON.stringify({
      path: path, images: shown.length, decoded: shown.filter(i => i.complete && i.naturalWidth > 100).length,
      menu: document.querySelector("nav").innerText}));
  }, 1500);
}, 1500));
</script>
"""


def _run(command: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A tiny demo run and its report; returns the report's path."""
    root = tmp_path_factory.mktemp("report")
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    # The report pages are asked for by name, so the test holds whether or not the default
    # target lists them.
    targets = ["all", "results/rep/report/data.html", "results/rep/report/model_card.html"]
    # Targets first: --configfile and --resources take every word that follows them.
    base = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--resources", "gpu=1"]
    for extra in ([], ["--report", "report.html"]):
        result = _run(base + extra + ["--configfile", "tiny.yaml"], cwd=root, timeout=600)
        if result.returncode:
            raise AssertionError(f"snakemake {extra} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return root / "report.html"


def test_report_is_self_contained_and_lists_every_item(report) -> None:
    text = report.read_text()
    for name in FIGURES + PAGES:
        assert name in text, name
    for category in CATEGORIES:
        assert f'"{category}"' in text, category
    # Self-contained: every result is embedded as a data URI, nothing is fetched from a server.
    for name in FIGURES:
        assert re.search(rf"data:image/png;[^,]*filename={re.escape(name)};base64,", text), name
    assert not re.search(r'<(?:img|script|link)[^>]+(?:src|href)="https?://', text)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory) -> str:
    """Path of a headless-capable chromium, installed with apt-get if missing and root."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium on PATH and not root with apt-get to install Debian's chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
            if result.returncode:
                pytest.skip(f"could not install chromium ({' '.join(command)}): {result.stderr[-500:]}")
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get took too long")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium command is on PATH")
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 120 s: {' '.join(command)}")


def test_report_renders_in_a_browser(report, chromium, tmp_path) -> None:
    dom = _browser(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    # The app ran: its menu lists every category (absent from the DOM before the scripts ran).
    assert "<nav" in dom and "<nav" not in report.read_text()
    for category in CATEGORIES:
        assert f">{category}<" in dom, f"category {category} not rendered"

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text() + PROBE)
    dom = _browser(chromium, tmp_path / "profile", "--dump-dom", probe.as_uri()).stdout
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe script did not run"
    state = json.loads(match.group(1).replace("&quot;", '"'))
    assert state["path"].endswith("worst_samples.png") and state["images"] >= 1
    assert state["decoded"] == state["images"], f"figures did not decode: {state}"
    assert "Worst by Dice" in state["menu"] and "Every image" in state["menu"]  # the category's subcategories

    shot = tmp_path / "report.png"
    _browser(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1000", probe.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UNETSEG_REPORT_SCREENSHOT"):  # for the README: keep the picture
        shutil.copy(shot, os.environ["UNETSEG_REPORT_SCREENSHOT"])
