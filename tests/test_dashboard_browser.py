"""The dashboard in a real browser: `nas.dashboard.serve.serve` on a free port, driven by
Playwright through Debian's Chromium (/usr/bin/chromium; .ci/chromium.sh installs it).

Slow (starting Streamlit and Chromium takes ~15 s on 2 cores), so marked `slow`; run it
with ``pytest -m slow tests/test_dashboard_browser.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from nas.dashboard.seed import seed_store
from tests.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 90  # Streamlit's first start imports a lot on a busy 2-core machine
EXPERIMENT = "cifar_fast"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's Chromium at /usr/bin/chromium: run .ci/chromium.sh "
                              "(apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The URL of a dashboard served by `serve()` in a child process on a seeded store."""
    folder = tmp_path_factory.mktemp("browser")
    seeded = seed_store(f"sqlite:///{folder / 'nas.db'}")
    port = free_port()
    log = open(folder / "streamlit.log", "w")
    code = ("import sys; from nas.dashboard.serve import serve; "
            f"sys.exit(serve({seeded.url!r}, {port}, address='127.0.0.1'))")
    # Own session: Ctrl-C (SIGINT to the group) reaches serve() and Streamlit alike.
    process = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, folder / "streamlit.log")
        yield base, seeded
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            assert process.wait(timeout=20) == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_healthy(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the dashboard exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the dashboard did not answer in {START_TIMEOUT_S} s:\n{log.read_text()}")


def _wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until the script has run (Streamlit marks its root with the script state)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout_ms)


def test_pareto_chart_trials_table_and_an_architecture_in_chromium(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    base, seeded = dashboard
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            page.goto(f"{base}/pareto?exp={EXPERIMENT}")
            _wait_idle(page)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            chart.wait_for(timeout=30_000)
            page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=30_000)
            assert page.locator(".js-plotly-plot .legendtext", has_text="Pareto front").count() == 1
            assert "Accuracy (%)" in chart.inner_text()
            page.screenshot(path=str(tmp_path / "pareto.png"), full_page=True)

            page.goto(f"{base}/trials?exp={EXPERIMENT}")
            _wait_idle(page)
            table = page.locator('[data-testid="stDataFrame"]').first
            table.wait_for(timeout=30_000)
            assert page.get_by_text(f"{len(seeded.search_ids) + len(seeded.confirm_ids)} of").count() >= 1

            # Open an architecture the way a user does: click its point on the Pareto front.
            page.goto(f"{base}/pareto?exp={EXPERIMENT}")
            _wait_idle(page)
            front = page.locator(".js-plotly-plot .scatterlayer .trace").nth(1)  # architectures, front, ...
            front.locator("path.point").first.wait_for(timeout=30_000)
            front.locator("path.point").first.click(force=True)
            page.wait_for_url(re.compile(r"/architecture\?.*arch=[0-9a-f]{12}"), timeout=30_000)
            arch_hash = parse_qs(urlparse(page.url).query)["arch"][0]
            _wait_idle(page)
            page.get_by_text(f"nas export {EXPERIMENT} --arch {arch_hash} --out winner/").wait_for(timeout=30_000)
            page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=30_000)
            page.set_viewport_size({"width": 1400, "height": 2300})  # Streamlit scrolls inside the page
            page.wait_for_timeout(1_500)  # let the resized charts redraw
            shot = tmp_path / "architecture.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshots: {tmp_path}")
        finally:
            browser.close()
