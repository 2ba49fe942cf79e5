"""Live monitoring of a served policy: Prometheus metrics and a drift detector.

``PolicyMonitor`` keeps its own ``prometheus_client`` registry (a server's metrics never mix
with another's) and is fed by the policy server after every action: request and inference
latency histograms, requests by status, deadline misses, action statistics, out-of-distribution
scores and alarms, safety interventions and emergency stops (``record_safety``), and the drift
detector's statistic, p-value and alarm. The server exposes them at ``GET /metrics`` (behind
its token; Prometheus sends it with ``authorization: {credentials: TOKEN}``).

``DriftDetector`` compares the scenes the served robot meets with the training distribution, one
episode at a time. An episode (the requests from one ``reset`` to the next) is summarised by
its first observation, before the policy has acted: per camera the mean and standard deviation
of each colour channel, and the proprio state; the training dataset's episodes by their first
frames, all standardised by the reference's statistics. The unit is the episode because
requests are not exchangeable: a window of consecutive requests comes from a few scenes, so a
test on requests rejects on the policy's own training-domain traffic. The first observation,
because every later one depends on the actions taken: the training episodes were driven by the
demonstrator, the live ones by the policy, so features of the whole episode differ on clean
traffic whenever the two behave differently (benchmarks/results/mlops.json of commit c115a7d:
8% of tests alarmed at a nominal 1% with episode means of observation and action), while first
observations are draws of the scene distribution alone and so exchangeable with the reference
until the scenes change. tests/test_monitor.py plants both failure modes. What the policy does
with a scene is watched by the action statistics and, for success, by the A/B test. Every
``every`` episodes, once ``window`` have started, a kernel two-sample test compares the last
``window`` episodes with up to ``reference_size`` training episodes: the maximum mean
discrepancy (Gretton et al. 2012, "A kernel two-sample test") with a Gaussian kernel whose
bandwidth is the median pairwise distance of the reference, and its permutation p-value. The
alarm is raised while p < ``alpha``. Tests run on a background thread, so a check never delays
a reply.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from pathlib import Path

import numpy as np

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def observation_features(image: np.ndarray, state: np.ndarray) -> np.ndarray:
    """(V * 6 + S,) float64: channel means and stds per camera of uint8 frames (V, H, W, 3) and
    the state (S,)."""
    pixels = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1, 3) / 255.0
    return np.concatenate([pixels.mean(1).ravel(), pixels.std(1).ravel(), np.ravel(state)])


class DriftDetector:
    """A two-sample test of live feature vectors (one per episode in a served policy) against a
    reference sample (N, D); ``update`` feeds one live vector at a time."""

    def __init__(self, reference: np.ndarray, window: int = 20, every: int = 5, alpha: float = 0.01,
                 permutations: int = 200, reference_size: int = 300, seed: int = 0) -> None:
        if reference.ndim != 2 or len(reference) < 10:
            raise ValueError(f"the drift reference needs (N >= 10, D) features, got shape {reference.shape}")
        if not 0 < alpha < 1 or window < 3 or every < 1 or permutations < 20:
            raise ValueError("drift detector needs 0 < alpha < 1, window >= 3, every >= 1 and permutations >= 20")
        self.rng = np.random.default_rng(seed)
        self.mean, self.std = reference.mean(0), np.maximum(reference.std(0), 1e-6)
        pick = self.rng.choice(len(reference), size=min(reference_size, len(reference)), replace=False)
        self.reference = (reference[pick] - self.mean) / self.std
        d = np.sqrt(((self.reference[:, None] - self.reference[None]) ** 2).sum(-1))
        self.bandwidth = float(np.median(d[np.triu_indices(len(d), 1)])) or 1.0
        self.window, self.every, self.alpha, self.permutations = window, every, alpha, permutations
        self.live: deque = deque(maxlen=window)
        self.seen = 0
        self.last: dict | None = None

    @classmethod
    def from_dataset(cls, dataset: str | Path, episodes: int = 300, seed: int = 0, **kw) -> DriftDetector:
        """Reference: the features of the first frames of up to ``episodes`` episodes of a
        training dataset."""
        from vlaforge.data.dataset import LeRobotDataset

        source = LeRobotDataset(dataset)
        if len(source.episodes) < 10:
            raise ValueError(f"--drift_reference {dataset} holds {len(source.episodes)} episodes; "
                             "the drift test needs at least 10")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(source.episodes), size=min(episodes, len(source.episodes)), replace=False)
        data = source.load(episodes=pick.tolist())
        first = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])  # frames are stored in episode order
        ref = np.stack([observation_features(data.images[i], data.state[i]) for i in first])
        return cls(ref, seed=seed, **kw)

    def update(self, features: np.ndarray) -> dict | None:
        """Add one live vector; every ``every`` once the window is full, run the test and return
        its result (else None)."""
        self.live.append((np.asarray(features, dtype=np.float64) - self.mean) / self.std)
        self.seen += 1
        if len(self.live) < self.window or self.seen % self.every:
            return None
        self.last = self.test(np.stack(self.live))
        return self.last

    def test(self, live: np.ndarray) -> dict:
        """MMD^2 (biased V-statistic) of ``live`` against the reference and its permutation
        p-value ((1 + #{permuted >= observed}) / (1 + permutations))."""
        pooled = np.concatenate([self.reference, live])
        sq = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
        k = np.exp(-sq / (2 * self.bandwidth ** 2))
        n = len(self.reference)

        def mmd(order: np.ndarray) -> float:
            x, y = order[:n], order[n:]
            return float(k[np.ix_(x, x)].mean() + k[np.ix_(y, y)].mean() - 2 * k[np.ix_(x, y)].mean())

        observed = mmd(np.arange(len(pooled)))
        exceed = sum(mmd(self.rng.permutation(len(pooled))) >= observed for _ in range(self.permutations))
        p = (1 + exceed) / (1 + self.permutations)
        return {"mmd2": observed, "p_value": p, "alarm": p < self.alpha, "seen": self.seen}


class PolicyMonitor:
    """Prometheus metrics of one served policy (and, with a detector, drift)."""

    def __init__(self, action_dim: int, drift: DriftDetector | None = None, deadline_ms: float = 0.0) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise ImportError("serving metrics need prometheus-client: pip install 'vlaforge[mlops]'") from None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vlaforge_requests", "act requests by HTTP status", ["code"], registry=r)
        self.request_seconds = Histogram("vlaforge_request_seconds",
                                         "act request wall time, parse to reply (its send excluded)",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("vlaforge_inference_seconds", "policy inference time per act",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.deadline_misses = Counter("vlaforge_deadline_misses", "acts slower than the deadline", registry=r)
        self.action_mean = Gauge("vlaforge_action_mean", "mean of the first action over the last 100 acts", ["dim"],
                                 registry=r)
        self.action_std = Gauge("vlaforge_action_std", "std of the first action over the last 100 acts", ["dim"],
                                registry=r)
        self.ood_score = Gauge("vlaforge_ood_score", "last out-of-distribution score (> 1: out)", registry=r)
        self.ood_alarms = Counter("vlaforge_ood_alarms", "observations scored out of distribution", registry=r)
        self.interventions = Counter("vlaforge_safety_interventions", "safety-filter interventions", ["kind"],
                                     registry=r)
        self.estops = Counter("vlaforge_emergency_stops", "emergency stops latched", registry=r)
        self.drift_mmd = Gauge("vlaforge_drift_mmd2", "MMD^2 of the live window against training", registry=r)
        self.drift_p = Gauge("vlaforge_drift_p_value", "permutation p-value of the last drift test", registry=r)
        self.drift_alarm = Gauge("vlaforge_drift_alarm", "1 while the last drift test rejected", registry=r)
        self.drift_alpha = Gauge("vlaforge_drift_alpha", "significance level of the drift tests", registry=r)
        self.drift_episodes = Counter("vlaforge_drift_episodes", "episodes started and fed to the drift test", registry=r)
        self.drift_checks = Counter("vlaforge_drift_checks", "drift tests run", registry=r)
        self.drift_alarms = Counter("vlaforge_drift_alarms", "drift tests that rejected", registry=r)
        self.ab_episodes = Gauge("vlaforge_ab_episodes", "A/B test: episodes with an outcome, per arm", ["arm"],
                                 registry=r)
        self.ab_successes = Gauge("vlaforge_ab_successes", "A/B test: successful episodes, per arm", ["arm"],
                                  registry=r)
        self.ab_e_value = Gauge("vlaforge_ab_e_value", "A/B test: running e-value of each claim",
                                ["claim"], registry=r)
        self.ab_threshold = Gauge("vlaforge_ab_threshold", "A/B test: the e-value at which a claim is made", registry=r)
        self.ab_decision = Gauge("vlaforge_ab_decision", "A/B test: 0 running, 1 challenger promoted, -1 rolled back",
                                 registry=r)
        self.drift_p.set(1.0)
        self.deadline_ms, self.drift = deadline_ms, drift
        self.actions: deque = deque(maxlen=100)
        self.action_dim = action_dim
        self._checks: queue.Queue = queue.Queue()
        if drift is not None:  # the tests run off the request path, on their own thread
            self.drift_alpha.set(drift.alpha)
            threading.Thread(target=self._run_checks, daemon=True, name="drift-checks").start()

    def observe(self, obs: dict, actions: np.ndarray, inference_ms: float, request_s: float,
                new_episode: bool = False) -> None:
        """One successful act: latencies, deadline, action statistics and, for the first request of
        an episode (``new_episode``: the request reset the policy), the queued drift features."""
        self.requests.labels(code="200").inc()
        self.request_seconds.observe(request_s)
        self.inference_seconds.observe(inference_ms / 1000)
        if self.deadline_ms and inference_ms > self.deadline_ms:
            self.deadline_misses.inc()
        first = np.asarray(actions, dtype=np.float64).reshape(-1, self.action_dim)[0]
        self.actions.append(first)
        window = np.stack(self.actions)
        for d, (m, s) in enumerate(zip(window.mean(0), window.std(0))):
            self.action_mean.labels(dim=str(d)).set(m)
            self.action_std.labels(dim=str(d)).set(s)
        if self.drift is not None and new_episode:
            self._checks.put(observation_features(obs["image"], obs["state"]))

    def failed(self, code: int) -> None:
        self.requests.labels(code=str(code)).inc()

    def record_ood(self, score: float) -> None:
        self.ood_score.set(score)
        if score > 1:
            self.ood_alarms.inc()

    def record_safety(self, kind: str) -> None:
        """A supervisor or safety-filter event: ``estop`` latches count as emergency stops."""
        if kind == "estop":
            self.estops.inc()
        else:
            self.interventions.labels(kind=kind).inc()

    def record_ab(self, state: dict) -> None:
        """The A/B experiment's state (``ABTest.state()``) after an outcome."""
        for arm, n in state["episodes"].items():
            self.ab_episodes.labels(arm=arm).set(n)
            self.ab_successes.labels(arm=arm).set(state["successes"][arm])
        self.ab_e_value.labels(claim="challenger_better").set(state["e_challenger_better"])
        self.ab_e_value.labels(claim="challenger_worse").set(state["e_challenger_worse"])
        self.ab_threshold.set(state["threshold"])
        decision = state["decision"]
        self.ab_decision.set(0 if decision is None else 1 if decision["action"] == "promote" else -1)

    def _run_checks(self) -> None:
        while True:
            features = self._checks.get()
            try:
                result = self.drift.update(features)
                self.drift_episodes.inc()
                if result is not None:
                    self.drift_checks.inc()
                    self.drift_mmd.set(result["mmd2"])
                    self.drift_p.set(result["p_value"])
                    self.drift_alarm.set(float(result["alarm"]))
                    if result["alarm"]:
                        self.drift_alarms.inc()
            finally:
                self._checks.task_done()

    def flush(self) -> None:
        """Wait until every queued request has reached the drift detector (tests and benchmarks)."""
        self._checks.join()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
