"""The monitoring dashboard: the A/B state reaches the metrics, and headless Chromium renders the
page the server serves, with the planted counts in its table and the live series in its plots
(skipped with the reason when no Chromium is installed)."""

import json
import shutil
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
from helpers import synthetic_policy, write_dataset

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install 'vlaforge[mlops]')")

from vlaforge.deploy.ab import ABTest  # noqa: E402
from vlaforge.deploy.latency import observation  # noqa: E402
from vlaforge.deploy.monitor import DriftDetector, PolicyMonitor  # noqa: E402
from vlaforge.deploy.server import PolicyClient, PolicyServer  # noqa: E402
from vlaforge.runtime.policy import load_policy  # noqa: E402

TOKEN = "dashboard-token-for-tests"
BLUE, RED = (0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)  # the page's first two series colours


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium binary (Debian: apt-get install chromium): the dashboard page is not rendered")


def outcome(url: str, seed: int, success: bool) -> dict:
    req = urllib.request.Request(url + "/outcome", method="POST", data=json.dumps({"seed": seed, "success": success}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An A/B test of two tiny policies served with metrics and drift: 8 episodes of 5 acts each,
    every even episode a success."""
    root = tmp_path_factory.mktemp("dashboard")
    a, b = (load_policy(synthetic_policy(root / n, steps=s)) for n, s in (("a", 1), ("b", 2)))
    write_dataset(root / "reference", episodes=12)
    drift = DriftDetector.from_dataset(root / "reference", window=4, every=2, permutations=50)
    monitor = PolicyMonitor(a.action_dim, drift)
    ab = ABTest(a, b, seed=0)
    server = PolicyServer(ab, token=TOKEN, port=0, monitor=monitor).start()
    client = PolicyClient(server.url, TOKEN)
    for episode in range(8):
        client.reset(episode)
        for k in range(5):
            client.act(observation(a, seed=10 * episode + k))
    for episode in range(8):
        outcome(server.url, episode, episode % 2 == 0)
    monitor.flush()
    yield server, ab, client, observation(a, seed=0), root
    server.stop()


def render(binary: str, url: str, profile, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``, run until the page's timers have had 3 s of virtual time."""
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=3000", *args, url], capture_output=True, text=True, timeout=120)


def test_the_ab_state_reaches_the_metrics(served):
    server, ab, _, _, _ = served
    req = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    state = ab.state()
    for arm in ("champion", "challenger"):
        assert f'vlaforge_ab_episodes{{arm="{arm}"}} {float(state["episodes"][arm])}' in text
        assert f'vlaforge_ab_successes{{arm="{arm}"}} {float(state["successes"][arm])}' in text
    assert sum(state["episodes"].values()) == 8 and sum(state["successes"].values()) == 4
    assert "vlaforge_ab_decision 0.0" in text and "vlaforge_ab_threshold 40.0" in text  # alpha 0.05: 2 / alpha


def test_the_dashboard_page_needs_no_token_but_its_data_does(served):
    server = served[0]
    page = urllib.request.urlopen(server.url + "/dashboard", timeout=10).read().decode()
    assert "<script>" in page and TOKEN not in page and 'fetch("/metrics"' in page


def test_headless_chromium_renders_the_dashboard(served):
    binary = chromium()
    server, ab, client, obs, root = served
    url = f"{server.url}/dashboard#token={TOKEN}&every=200"
    dom = render(binary, url, root / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    state = ab.state()

    def cell(id_: str) -> str:
        start = html.index(f'id="{id_}">') + len(f'id="{id_}">')
        return html[start:html.index("<", start)]

    assert cell("requests") == "40" and cell("errors") == "0"
    assert cell("drift-checks").startswith("3 / ")  # 8 episodes started: tests at 4, 6 and 8
    for arm in ("champion", "challenger"):
        assert cell(f"ab-{arm}") == f"{state['successes'][arm]} / {state['episodes'][arm]}"
    assert cell("ab-decision") == "running"
    charts = html[html.index('<div id="charts">'):html.index("<script>")]
    assert charts.count("<figcaption>") == 6 and charts.count("<polyline") == 1 + 2 + 1 + ab.action_dim + 2 + 2  # a line per series:
    # rate, latency p50 and p99, drift p, one per action dimension, success per arm, two e-values
    assert cell("status").startswith("polls: ")

    # A screenshot while traffic flows: the rate and latency panels draw lines in the series colours.
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            client.act(obs)
            time.sleep(0.01)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        shot = render(binary, url, root / "profile", f"--screenshot={root / 'dashboard.png'}", "--window-size=1000,1300")
    finally:
        stop.set()
        t.join()
    assert shot.returncode == 0, shot.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(root / "dashboard.png").convert("RGB"))
    assert pixels.shape == (1300, 1000, 3)
    for colour in (BLUE, RED):
        assert (pixels == colour).all(-1).sum() > 200, f"too few pixels of the series colour {colour}"
    assert (pixels != 255).any(-1).mean() > 0.2  # six plot areas, not a blank page
