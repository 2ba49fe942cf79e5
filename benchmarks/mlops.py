"""MLOps figures: the promotion gate's decisions on trained policies, the drift alarm's delay and
false-alarm rate, and the online A/B test's episodes to decision and wrong-decision rate.

    python benchmarks/mlops.py [--steps=800] [--demos=40] [--tasks=[reach,press_button]]
                               [--drift_repeats=3] [--clean_episodes=30] [--ab_repeats=3]
                               [--ab_small_repeats=1] [--ab_cap=600] [--ab_equal_cap=150]
                               [--mc_runs=1000] [--mc_cap=2000]

Every episode below is rolled in the tabletop simulator (``--tasks``, trained on ``--demos``
scripted demos per task), and every episode of the drift and A/B parts gets its actions from a
policy server over HTTP (vlaforge.deploy.traffic), as a robot would.

- **Gate**: a champion trained for ``--steps`` on the data, a degraded challenger trained on a
  quarter of it, and a better challenger trained twice as long, all registered in a fresh MLflow
  registry; `registry promote` (margin 5 points, alpha 0.05, 10 episodes per task per round, at
  most 10 rounds) must refuse the first and promote the second.
- **Drift**: the champion served with the drift detector (reference: the first frames of the
  training episodes, compared with each served episode's first observation; a test every 5
  episodes on the last 20, alpha 0.01). Per repeat, a fresh detector (its own permutation seed)
  sees ``--clean_episodes`` episodes of the training distribution and then episodes of a
  held-out target domain until it alarms (at most 40): the alarm delay in episodes after the
  switch, per domain. False alarms: every test run on clean episodes only (per test, and per
  clean stream: any alarm at all).
- **A/B**: champion against a challenger that, in a share ``q`` of its episodes (drawn from the
  episode's seed), holds the robot still (zero actions) and so fails; its expected success is the
  champion's times (1 - q), so the gap is planted: q is set to 20 and 5 points over the
  champion's measured success. Per repeat a fresh ``ABTest`` (its own routing seed) serves new
  scenes until it decides (at most ``--ab_cap`` episodes): episodes and pairs to decision, which
  way. Equal policies (q = 0, at most ``--ab_equal_cap`` episodes) for wrong decisions. Because
  real rollouts limit the repeats and their length, the test's operating characteristics are
  also simulated: ``--mc_runs`` runs of the same ``ABTest`` (at most ``--mc_cap`` episodes) on
  Bernoulli outcomes, the champion at the success rate its arm had over all served runs and the
  challenger at that rate times (1 - q).

Writes benchmarks/results/mlops.{json,md}.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys

import numpy as np
from common import arg, cache_root, cached_json, collect_once, stage, train_and_eval, write

from vlaforge.data.config import CollectConfig
from vlaforge.deploy.ab import ABTest
from vlaforge.deploy.monitor import DriftDetector, PolicyMonitor
from vlaforge.deploy.server import PolicyClient, PolicyServer
from vlaforge.deploy.traffic import Traffic
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.config import RegistryConfig
from vlaforge.eval.gate import promote
from vlaforge.runtime.policy import load_policy, on_policy_thread
from vlaforge.runtime.registry import PolicyRegistry
from vlaforge.seeds import EVAL_SEEDS

DOMAINS = ["real-proxy-A", "real-proxy-B"]  # lighting/camera/latency shift; colours, textures and a noisy camera
GATE = dict(margin=0.05, alpha=0.05, episodes=10, rounds=10)


class HoldsStill:
    """The served policy, except that in a share ``q`` of episodes (drawn from the episode's seed)
    every action is zero: the arm stays where it is and the episode fails."""

    SALT = 0x5EED  # keeps this draw apart from ABTest's routing draw, default_rng([seed, episode])

    def __init__(self, policy, q: float, salt: int = 0) -> None:
        self.policy, self.q, self.salt, self.failing = policy, q, salt, False

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def reset(self, seed: int = 0) -> None:
        # A draw independent of the routing one: drawn from the same generator, a sabotaged episode
        # would also be one routed to the challenger, and P(fail | challenger) would be q / share.
        self.failing = bool(np.random.default_rng([self.SALT, self.salt, abs(int(seed))]).random() < self.q)
        self.policy.reset(seed)

    def act(self, obs: dict) -> np.ndarray:
        out = self.policy.act(obs)
        return np.zeros_like(out) if self.failing else out


class Outcomes:
    """Stands in for a policy in the simulated A/B runs (ABTest checks these attributes)."""

    image_shape, state_dim, action_dim = (1, 64, 64, 3), 4, 4

    def reset(self, seed: int = 0) -> None:
        pass


def gate(root, runs: dict) -> dict:
    """A fresh registry: the champion promoted first, then each challenger through the gate."""
    shutil.rmtree(root / "registry", ignore_errors=True)
    uri = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    (root / "registry").mkdir(parents=True)
    reg = PolicyRegistry(uri)
    out = {}
    for name in ("champion", "quarter_data", "twice_trained"):
        reg.register(runs[name] / "policy", "bench", str(runs[name] / "eval" / "train" / "results.json"), "challenger")
        with stage(f"gate {name}"):
            d = promote(RegistryConfig(action="promote", uri=uri, name="bench", output_dir=str(root / "gates"), **GATE))
        test = d.get("test", {})
        out[name] = {"decision": d["decision"], "reason": d["reason"], "rounds": test.get("rounds"),
                     "pairs": test.get("pairs"), "e_noninferior": test.get("e_noninferior"),
                     "e_inferior": test.get("e_inferior"), "difference": test.get("difference"),
                     "champion_successes": sum(p["champion"] for p in test.get("pairs_detail", [])),
                     "challenger_successes": sum(p["challenger"] for p in test.get("pairs_detail", []))}
        print(f"gate {name}: {out[name]['decision']} ({out[name]['reason']})", flush=True)
    out["champions"] = reg.champions("bench")
    return out


def serve(policy, monitor=None) -> tuple[PolicyServer, PolicyClient]:
    server = PolicyServer(policy, port=0, monitor=monitor).start()
    return server, PolicyClient(server.url, server.token)


def drift(policy_dir, data, repeats: int, clean: int) -> dict:
    """Alarm delay after a domain switch, and false alarms on the clean part of every stream."""
    policy = on_policy_thread(load_policy, str(policy_dir))
    rows = []
    seed = EVAL_SEEDS + 500_000
    for domain in DOMAINS:
        for r in range(repeats):
            monitor = PolicyMonitor(policy.action_dim, DriftDetector.from_dataset(data, seed=r))
            server, client = serve(policy, monitor)
            traffic = Traffic(client)
            tests, delay = [], None  # (episodes started when the test ran, alarm)
            for e in range(clean + 40):
                traffic.episode(seed, domain if e >= clean else "")
                seed += 1
                monitor.flush()
                last = monitor.drift.last
                if last is not None and (not tests or last["seen"] != tests[-1][0]):
                    tests.append((last["seen"], bool(last["alarm"])))
                    # A test whose window includes a shifted episode has seen more than ``clean`` start.
                    if last["seen"] > clean and last["alarm"]:
                        delay = e - clean + 1  # episodes started in the new domain when the alarm rose
                        break
            server.stop()
            clean_tests = [a for n, a in tests if n <= clean]
            rows.append({"domain": domain, "repeat": r, "clean_checks": len(clean_tests),
                         "clean_alarms": sum(clean_tests), "delay": delay})
            print(f"drift {domain} #{r}: clean {sum(clean_tests)}/{len(clean_tests)} alarms, delay {delay}", flush=True)
    return {"rows": rows}


def ab_served(policy_dir, q: float, repeats: int, cap: int, first_seed: int) -> list[dict]:
    """``repeats`` A/B experiments through the server, each on new scenes, until decided or ``cap``."""
    runs = []
    seed = first_seed
    for r in range(repeats):
        champion = on_policy_thread(load_policy, str(policy_dir))
        challenger = HoldsStill(on_policy_thread(load_policy, str(policy_dir)), q, salt=r)
        ab = ABTest(champion, challenger, share=0.5, alpha=0.05, seed=r)
        server, client = serve(ab)
        traffic = Traffic(client)
        for _ in range(cap):
            traffic.episode(seed, report=True)
            seed += 1
            if ab.decision is not None:
                break
        server.stop()
        s = ab.state()
        runs.append({"repeat": r, "q": q, "decision": ab.decision and ab.decision["action"],
                     "episodes": sum(s["episodes"].values()), "pairs": s["pairs"], "per_arm": s["episodes"],
                     "successes": s["successes"]})
        print(f"A/B q={q:.3f} #{r}: {runs[-1]['decision']} after {runs[-1]['episodes']} episodes "
              f"({s['successes']} of {s['episodes']})", flush=True)
    return runs


def ab_simulated(rates: dict, runs: int, cap: int, seed: int) -> dict:
    """``runs`` ABTests on Bernoulli outcomes at ``rates`` (arm -> success probability)."""
    rng = np.random.default_rng(seed)
    decisions, episodes = [], []
    for r in range(runs):
        ab = ABTest(Outcomes(), Outcomes(), share=0.5, alpha=0.05, seed=r)
        for e in range(cap):
            ab.record(e, bool(rng.random() < rates[ab.arm_for(e)]))
            if ab.decision is not None:
                break
        decisions.append(ab.decision and ab.decision["action"])
        episodes.append(e + 1)
    decided = [n for n, d in zip(episodes, decisions) if d]
    return {"rates": rates, "runs": runs, "cap": cap,
            "promote": decisions.count("promote") / runs, "rollback": decisions.count("rollback") / runs,
            "undecided": decisions.count(None) / runs,
            "episodes_median": float(np.median(decided)) if decided else None,
            "episodes_p90": round(float(np.percentile(decided, 90))) if decided else None}


def main(argv: list[str]) -> None:
    steps, demos = int(arg("steps", "800", argv)), int(arg("demos", "40", argv))
    tasks = arg("tasks", "[reach,press_button]", argv).strip("[]").split(",")
    drift_repeats, clean = int(arg("drift_repeats", "3", argv)), int(arg("clean_episodes", "30", argv))
    ab_repeats, ab_small = int(arg("ab_repeats", "3", argv)), int(arg("ab_small_repeats", "1", argv))
    cap, equal_cap = int(arg("ab_cap", "600", argv)), int(arg("ab_equal_cap", "150", argv))
    mc_runs, mc_cap = int(arg("mc_runs", "1000", argv)), int(arg("mc_cap", "2000", argv))
    if demos % 4 or demos < 8:
        raise SystemExit(f"--demos must be a multiple of 4 and >= 8 (a quarter is collected too), got {demos}")
    root = cache_root("runs/bench_mlops")
    env = EnvConfig(tasks=tasks)
    full = collect_once(CollectConfig(env=env, episodes_per_task=demos), root / "data")
    # the same first scenes: a quarter of the full collection
    quarter = collect_once(CollectConfig(env=env, episodes_per_task=demos // 4), root / "data_quarter",
                           "collect quarter")
    runs = {"champion": root / "champion", "quarter_data": root / "quarter_data", "twice_trained": root / "twice_trained"}
    alone = {
        "champion": train_and_eval(full, runs["champion"], steps, 25, optim=_lr()),
        "quarter_data": train_and_eval(quarter, runs["quarter_data"], steps, 25, optim=_lr()),
        "twice_trained": train_and_eval(full, runs["twice_trained"], 2 * steps, 25, optim=_lr()),
    }
    gates = cached_json(root / "gate.json", lambda: _dump(root / "gate.json", gate(root, runs)), "gate")
    drifts = cached_json(root / "drift.json", lambda: _dump(root / "drift.json",
                                                             drift(runs["champion"] / "policy", full, drift_repeats,
                                                                   clean)), "drift")
    p = alone["champion"]["success_rate"]
    if p < 0.2:
        raise SystemExit(f"the champion succeeds in {p:.0%} of episodes: a 20-point gap cannot be planted (train longer)")
    planted = {"gap20": min(1.0, 0.20 / p), "gap5": min(1.0, 0.05 / p), "equal": 0.0}
    served = {}
    sizes = {"gap20": (ab_repeats, cap), "gap5": (ab_small, cap), "equal": (ab_repeats, equal_cap)}
    for i, (name, q) in enumerate(planted.items()):
        reps, most = sizes[name]
        served[name] = cached_json(root / f"ab_{name}.json", lambda q=q, reps=reps, most=most, i=i, name=name: _dump(
            root / f"ab_{name}.json", {"runs": ab_served(runs["champion"] / "policy", q, reps, most,
                                                         EVAL_SEEDS + 600_000 + 100_000 * i)}), f"A/B served {name}")
    # The simulation's champion succeeds at the rate the champion arm had over every served run,
    # its challenger at that rate times (1 - q): the planted gap, without the served runs' noise.
    champ = [r for case in served.values() for r in case["runs"]]
    p_served = sum(r["successes"]["champion"] for r in champ) / sum(r["per_arm"]["champion"] for r in champ)
    with stage("A/B simulated"):
        simulated = {name: ab_simulated({"champion": p_served, "challenger": p_served * (1 - q)}, mc_runs, mc_cap, seed=i)
                     for i, (name, q) in enumerate(planted.items())}
    figures = _figures(alone, gates, drifts, served, simulated, planted, p, p_served)
    rows = _rows(figures)
    write("mlops", figures, rows, "MLOps: promotion gate, drift alarm, online A/B",
          seeds={"train": 0, "collect_scenes_from": 0, "gate_scenes_from": EVAL_SEEDS,
                 "drift_scenes_from": EVAL_SEEDS + 500_000, "ab_scenes_from": EVAL_SEEDS + 600_000,
                 "drift_detector": list(range(drift_repeats)), "ab_routing": list(range(ab_repeats)),
                 "simulation": list(range(len(planted)))})


def _lr():
    from vlaforge.train.config import OptimConfig

    return OptimConfig(lr=3e-3)


def _dump(path, result: dict) -> dict:
    path.write_text(json.dumps(result, indent=2))
    return result


def _figures(alone, gates, drifts, served, simulated, planted, p, p_served) -> dict:
    drift_summary: dict = {}
    for domain in DOMAINS:
        rows = [r for r in drifts["rows"] if r["domain"] == domain]
        delays = [r["delay"] for r in rows if r["delay"]]
        drift_summary[domain] = {"detected": f"{len(delays)}/{len(rows)}", "delay_episodes": delays,
                                 "delay_episodes_median": statistics.median(delays) if delays else None}
    clean_checks = sum(r["clean_checks"] for r in drifts["rows"])
    clean_alarms = sum(r["clean_alarms"] for r in drifts["rows"])
    ab = {}
    for name, q in planted.items():
        runs = served[name]["runs"]
        ab[name] = {"q": q, "planted_gap": q * p, "served_runs": runs,
                    "served_decisions": [r["decision"] for r in runs],
                    "served_episodes_median": statistics.median(r["episodes"] for r in runs),
                    "simulated": simulated[name]}
    return {
        "standalone_success": {k: v["success_rate"] for k, v in alone.items()},
        "gate": gates, "gate_settings": GATE,
        "gate_meets_target": gates["quarter_data"]["decision"] == "refused"
        and gates["twice_trained"]["decision"] == "promoted",
        "drift": drift_summary,
        "drift_false_alarms": {"per_test": clean_alarms / clean_checks if clean_checks else None, "tests": clean_checks,
                               "alarms": clean_alarms, "streams_with_any": sum(r["clean_alarms"] > 0 for r in drifts["rows"]),
                               "streams": len(drifts["rows"])},
        "drift_raw": drifts["rows"],
        "ab": ab, "ab_champion_success_served": p_served,
    }


def _rows(f: dict) -> list[dict]:
    rows = [{"part": "gate", "case": f"{k} (alone: {100 * f['standalone_success'][k]:.0f}% success)",
             "result": f"{v['decision']}" + (f" after {v['rounds']} rounds, {v['pairs']} pairs, challenger "
                                            f"{v['challenger_successes']} vs champion {v['champion_successes']}"
                                            if v["rounds"] else " (first version)")}
            for k, v in f["gate"].items() if k != "champions"]
    for domain, d in f["drift"].items():
        rows.append({"part": "drift", "case": f"switch to {domain}", "result":
                     f"alarmed in {d['detected']} streams, after {d['delay_episodes']} episodes"})
    fa = f["drift_false_alarms"]
    rows.append({"part": "drift", "case": "training distribution", "result":
                 f"{fa['alarms']} of {fa['tests']} tests alarmed ({fa['streams_with_any']} of {fa['streams']} streams)"})
    for name, a in f["ab"].items():
        s = a["simulated"]
        rows.append({"part": "A/B", "case": f"{name}: planted gap {100 * a['planted_gap']:.1f} points",
                     "result": f"served: {a['served_decisions']} after median {a['served_episodes_median']} episodes; "
                               f"simulated x{s['runs']}: promote {s['promote']:.1%}, rollback {s['rollback']:.1%}, "
                               f"undecided {s['undecided']:.1%}, median {s['episodes_median']} episodes "
                               f"(p90 {s['episodes_p90']})"})
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
