"""Serving metrics: the drift detector on planted streams, the metrics a served policy exports, and a
real Prometheus server scraping them (started here; skipped with the reason when it is missing)."""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from helpers import free_port, synthetic_policy, write_dataset

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install 'vlaforge[mlops]')")

from vlaforge.data.dataset import LeRobotDataset  # noqa: E402
from vlaforge.deploy.latency import observation  # noqa: E402
from vlaforge.deploy.monitor import DriftDetector, PolicyMonitor, observation_features  # noqa: E402
from vlaforge.deploy.server import PolicyClient, PolicyServer  # noqa: E402
from vlaforge.runtime.policy import load_policy  # noqa: E402

TOKEN = "monitor-token-for-tests"


def test_drift_stays_quiet_on_the_training_distribution_and_fires_on_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(600, 6))
    quiet = DriftDetector(reference, window=60, every=20, alpha=0.01, permutations=100, seed=1)
    checks = [r for r in (quiet.update(x) for x in rng.normal(size=(800, 6))) if r is not None]
    assert len(checks) == 38 and sum(r["alarm"] for r in checks) <= 2
    shifted = DriftDetector(reference, window=60, every=20, alpha=0.01, permutations=100, seed=1)
    stream = rng.normal(size=(60, 6)) + np.array([1.0, 1.0, 0, 0, 0, 0])
    first = [r for r in (shifted.update(x) for x in stream) if r is not None]
    assert len(first) == 1 and first[0]["alarm"] and first[0]["p_value"] < 0.02


def test_drift_tests_each_episodes_first_observation_so_neither_clustering_nor_behaviour_alarms():
    """Requests of one episode share a scene, so a window of requests is a few scenes' worth: a
    request-level test rejects on the training distribution itself. Later requests also follow the
    policy's actions, which differ from the demonstrator's: a test of whole-episode means rejects
    on clean scenes too. First observations are exchangeable with the reference's first frames:
    quiet on the same stream, and a shift of the scenes still fires."""
    rng = np.random.default_rng(0)
    image = np.zeros((1, 4, 4, 3), np.uint8)

    def features(state):
        return observation_features(image, state)

    reference = np.stack([features(s) for s in rng.normal(size=(300, 3))])  # first frames of training episodes

    def stream(episodes, shift=0.0):
        """10 requests per episode: the scene's first observation, then the policy moves the
        state 0.3 per request along the first axis (the demonstrator's episodes stay put)."""
        return [[scene + shift + np.array([0.3 * k, 0, 0]) + 0.05 * rng.normal(size=3) * (k > 0) for k in range(10)]
                for scene in rng.normal(size=(episodes, 3))]

    clean = stream(60)
    per_request = DriftDetector(reference, window=100, every=50, alpha=0.01, permutations=100, seed=1)
    alarms = [r["alarm"] for r in (per_request.update(features(s)) for ep in clean for s in ep) if r is not None]
    assert len(alarms) == 11 and sum(alarms) >= 8  # the request-level test fails on clean traffic
    episode_means = DriftDetector(reference, window=20, every=5, alpha=0.01, permutations=100, seed=1)
    alarms = [r["alarm"] for r in (episode_means.update(np.mean([features(s) for s in ep], 0)) for ep in clean)
              if r is not None]
    assert len(alarms) == 9 and sum(alarms) >= 8  # so does a test of whole episodes: it sees the behaviour

    monitor = PolicyMonitor(1, DriftDetector(reference, window=20, every=5, alpha=0.01, permutations=100, seed=1))
    for ep in clean:
        for k, s in enumerate(ep):
            monitor.observe({"image": image, "state": s}, np.zeros((2, 1)), 1.0, 0.001, new_episode=k == 0)
    monitor.flush()
    value = monitor.registry.get_sample_value
    assert value("vlaforge_drift_episodes_total") == 60 and value("vlaforge_drift_checks_total") == 9  # 20, 25 .. 60
    assert value("vlaforge_drift_alarms_total") <= 2  # of 9 overlapping tests (whole episodes: 8 or 9)
    for ep in stream(20, shift=1.5):  # the scenes move: the window fills with shifted episodes
        for k, s in enumerate(ep):
            monitor.observe({"image": image, "state": s}, np.zeros((2, 1)), 1.0, 0.001, new_episode=k == 0)
    monitor.flush()
    assert monitor.drift.last["alarm"] and value("vlaforge_drift_alarm") == 1


def test_drift_reference_is_the_first_frame_of_each_training_episode(tmp_path):
    """Episodes whose first frame is dark and whose later frames are bright: the reference holds
    only the dark first frames and the training states at reset."""
    def dark_then_bright(images):  # (T, V, H, W, 3)
        out = np.full_like(images, 200)
        out[0] = 0
        return out

    write_dataset(tmp_path / "ref", episodes=12, length=5, image_fn=dark_then_bright)
    detector = DriftDetector.from_dataset(tmp_path / "ref", episodes=300, permutations=20)
    data = LeRobotDataset(tmp_path / "ref").load()
    starts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    expected = np.stack([observation_features(data.images[i], data.state[i]) for i in starts])
    np.testing.assert_allclose(detector.mean, expected.mean(0))
    assert len(detector.reference) == 12 and np.allclose(detector.mean[:6], 0)  # dark, flat frames only


def test_observation_features_summarise_cameras_and_state():
    image = np.zeros((2, 4, 4, 3), np.uint8)
    image[1, ..., 0] = 255
    f = observation_features(image, np.array([0.5, -1.0]))
    np.testing.assert_allclose(f, [0, 0, 0, 1, 0, 0] + [0] * 6 + [0.5, -1.0])


def sample_value(text: str, series: str) -> float:
    """The value of one exposition line ``series value``."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in the exposition:\n{text}")


def test_monitor_counts_latency_deadlines_and_actions():
    m = PolicyMonitor(action_dim=2, deadline_ms=5.0)
    obs = {"image": np.zeros((1, 8, 8, 3), np.uint8), "state": np.zeros(4)}
    for ms, a in ((2.0, [1.0, 0.0]), (9.0, [3.0, 0.0]), (4.0, [2.0, 0.0])):
        m.observe(obs, np.array([a, [9.0, 9.0]]), ms, ms / 1000 + 0.001)
    m.failed(422)
    m.record_safety("filter")
    m.record_safety("estop")
    m.record_ood(1.5)
    text = m.exposition().decode()
    assert sample_value(text, 'vlaforge_requests_total{code="200"}') == 3
    assert sample_value(text, 'vlaforge_requests_total{code="422"}') == 1
    assert sample_value(text, "vlaforge_inference_seconds_count") == 3
    assert sample_value(text, 'vlaforge_inference_seconds_bucket{le="0.005"}') == 2
    assert sample_value(text, "vlaforge_deadline_misses_total") == 1
    assert sample_value(text, 'vlaforge_action_mean{dim="0"}') == 2.0  # the first action of each chunk
    assert sample_value(text, 'vlaforge_safety_interventions_total{kind="filter"}') == 1
    assert sample_value(text, "vlaforge_emergency_stops_total") == 1
    assert sample_value(text, "vlaforge_ood_alarms_total") == 1
    assert sample_value(text, "vlaforge_drift_p_value") == 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    path = synthetic_policy(root)
    policy = load_policy(path)
    write_dataset(root / "reference", episodes=12)
    drift = DriftDetector.from_dataset(root / "reference", window=5, every=5, permutations=50)
    monitor = PolicyMonitor(policy.action_dim, drift)
    server = PolicyServer(policy, token=TOKEN, port=0, monitor=monitor).start()
    yield policy, server, monitor
    server.stop()


def get_metrics(url: str, token: str) -> tuple[int, str]:
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_the_server_exports_its_metrics_behind_its_token(served):
    policy, server, monitor = served
    client = PolicyClient(server.url, TOKEN)
    before = get_metrics(server.url, TOKEN)[1]
    done = sample_value(before, 'vlaforge_requests_total{code="200"}') if 'code="200"' in before else 0
    for seed in range(20):  # 10 episodes of 2 requests
        client.reset(seed // 2)
        client.act(observation(policy, seed=seed))
    monitor.flush()
    code, text = get_metrics(server.url, TOKEN)
    assert code == 200 and sample_value(text, 'vlaforge_requests_total{code="200"}') == done + 20
    assert sample_value(text, "vlaforge_drift_episodes_total") >= 10
    assert sample_value(text, "vlaforge_drift_checks_total") >= 1  # a drift test ran on the full window
    assert 0 < sample_value(text, "vlaforge_drift_p_value") <= 1
    assert get_metrics(server.url, "wrong-token-wrong-token")[0] == 401


def test_a_real_prometheus_scrapes_the_served_metrics(served, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is missing (Debian: apt-get install prometheus): scraping untested")
    policy, server, monitor = served
    host, port = server.httpd.server_address[:2]
    (tmp_path / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "vlaforge", "metrics_path": "/metrics",
                            "authorization": {"credentials": TOKEN},
                            "static_configs": [{"targets": [f"{host}:{port}"]}]}]}))
    web = free_port()
    prom = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = PolicyClient(server.url, TOKEN)
        for seed in range(5):
            client.act(observation(policy, seed=100 + seed))
        monitor.flush()
        expected = sample_value(get_metrics(server.url, TOKEN)[1], 'vlaforge_requests_total{code="200"}')

        def query(q: str) -> list:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]

        deadline, result = time.time() + 60, []
        while time.time() < deadline:
            try:
                result = query('vlaforge_requests_total{code="200"}')
            except (urllib.error.URLError, ConnectionError):
                result = []
            if result and float(result[0]["value"][1]) == expected:
                break
            time.sleep(0.5)
        assert result and float(result[0]["value"][1]) == expected, result
        assert float(query("vlaforge_inference_seconds_count")[0]["value"][1]) == expected
        assert query("vlaforge_drift_alarm") and query('up{job="vlaforge"}')[0]["value"][1] == "1"
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def test_a_drift_reference_with_too_few_episodes_is_refused_with_its_path(tmp_path):
    write_dataset(tmp_path / "small", episodes=3)
    with pytest.raises(ValueError, match=r"small holds 3 episodes; the drift test needs at least 10"):
        DriftDetector.from_dataset(tmp_path / "small")
