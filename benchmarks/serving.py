"""Serving a policy to robots over the loopback: what the transport adds to act(), how many
robots one 2-core machine serves at a control rate, and why connections were reset under load.

    python benchmarks/serving.py [--seconds=10] [--rate_hz=20]

1. One robot asking back to back: act() in process against the same call over HTTP/JSON and
   over the WebSocket stream (``vlaforge.deploy.stream.overhead_test``).
2. A fleet: 1-16 robots, each its own WebSocket session at ``rate_hz`` on its own clock, for
   ``seconds`` (``fleet_test``): p50/p99 latency from the tick, deadline misses (a reply after
   the next tick), mean forward-pass batch; plus 8 robots with batching off (max_batch 1).
3. 50 HTTP clients at once, 20 requests each: a new connection per request against the
   listen backlog of 5 (Python's default, the server's before this benchmark's issue) and of
   256, and kept-alive connections (today's client): the connection resets an outside tester
   saw, reproduced and gone.
4. The sampling heads (flow, DiT) exported to ONNX with their loop unrolled and the noise as an
   input: batch-1 act() latency, eager against ONNX Runtime, at 1, 5 and 10 sampling steps
   (the same weights: sample_steps does not enter training), and the largest action difference.
5. Why servers run the policy on one thread: in a fresh process, act() p50 on the main thread
   alone, then on a second thread after the main one has run torch, with torch's default
   threads and with one.

The policy is the default architecture (1.14 M parameters) trained briefly on 2 tasks x 5
demonstrations: latency does not depend on what the weights learned. Server and robots share
the machine's 2 cores, as they would on a robot's computer, and every torch call of the process
runs on its one policy thread (as `vlaforge serve` does). Writes benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
from common import arg, cache_root, stage, write
from report import fleet_capacity

from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.deploy.artifact import deploy
from vlaforge.deploy.latency import observation, time_policy
from vlaforge.deploy.server import PolicyClient, PolicyServer, run_clients
from vlaforge.deploy.stream import fleet_test, overhead_test
from vlaforge.envs.config import EnvConfig
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy, on_policy_thread
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

FLEETS = [1, 2, 4, 8, 12, 16]


SAMPLE_STEPS = [1, 5, 10]


def make_policy(root: Path) -> Path:
    data, run = root / "data", root / "train"
    with stage("collect", reused=(data / "meta").exists()):
        if not (data / "meta").exists():
            collect(CollectConfig(env=EnvConfig(tasks=["reach", "push"]), episodes_per_task=5, output=str(data)),
                    show_progress=False)
    with stage("train", reused=(run / "policy").exists()):
        if not (run / "policy").exists():
            train(TrainConfig(dataset=str(data), output_dir=str(run), steps=50, tracking="none"), show_progress=False)
    return run / "policy"


def sampling_exports(root: Path, data: Path) -> dict:
    """Per head and sampling-step count: eager and ONNX Runtime act() latency, and parity."""
    out = {}
    for head in ("flow", "dit"):
        for steps in SAMPLE_STEPS:
            run = root / f"{head}_{steps}"
            with stage(f"make {head}, {steps} sampling steps", reused=(run / "onnx").exists()):
                if not (run / "train" / "policy").exists():
                    train(TrainConfig(dataset=str(data), output_dir=str(run / "train"), steps=50, tracking="none",
                                      policy=PolicyConfig(head=head, sample_steps=steps)), show_progress=False)
                if not (run / "onnx").exists():
                    deploy(run / "train" / "policy", run / "onnx", "onnx-fp32")
            with stage(f"time {head}, {steps} sampling steps"):
                eager = load_policy(run / "train" / "policy")
                onnx = time_policy(load_policy(run / "onnx"), eager, calls=200, warmup=20)
                out[f"{head}-{steps}"] = {"head": head, "sample_steps": steps, "onnx": onnx,
                                          "eager": time_policy(eager, load_policy(run / "train" / "policy"),
                                                               calls=200, warmup=20),
                                          "parity_max_abs": json.loads((run / "onnx" / "deploy.json").read_text())[
                                              "parity_max_abs"]}
    return out


CONTENTION = """
import json, sys, time, threading
import numpy as np, torch
from concurrent.futures import ThreadPoolExecutor
from vlaforge.deploy.latency import observation
from vlaforge.runtime.policy import load_policy
torch.set_num_threads(int(sys.argv[2]) or torch.get_num_threads())
policy = load_policy(sys.argv[1])
obs = observation(policy)
def p50(calls=100):
    for _ in range(10):
        policy.act(obs)
    times = []
    for _ in range(calls):
        t = time.perf_counter(); policy.act(obs); times.append(1000 * (time.perf_counter() - t))
    return float(np.median(times))
one = p50()
second = ThreadPoolExecutor(1).submit(p50).result()
print(json.dumps({"threads": torch.get_num_threads(), "one_thread_ms": one, "second_thread_ms": second}))
"""


def thread_contention(policy_dir: Path) -> list[dict]:
    """act() p50 on one thread, then on a second one, each in a fresh process (a process that
    has run torch on two threads stays slowed), at torch's default thread count and at 1."""
    out = []
    for threads in (0, 1):
        run = subprocess.run([sys.executable, "-c", CONTENTION, str(policy_dir), str(threads)], capture_output=True,
                             text=True, check=True)
        out.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return out


def http_burst(policy, clients: int, requests: int, backlog: int, keep_alive: bool) -> dict:
    """``clients`` threads released at once, ``requests`` /act calls each; a new connection per
    request (urllib) or one kept-alive connection per client (PolicyClient)."""
    server = PolicyServer(policy, port=0).start()
    server.httpd.socket.listen(backlog)  # Linux applies a new backlog to a listening socket
    obs = observation(policy)
    body = json.dumps({"image": base64.b64encode(obs["image"].tobytes()).decode(), "image_shape": list(obs["image"].shape),
                       "state": obs["state"].tolist(), "instruction": obs["instruction"]}).encode()

    def fresh_connection_call() -> None:
        req = urllib.request.Request(server.url + "/act", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {server.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()

    def connect():
        if not keep_alive:
            return fresh_connection_call, (lambda: None)
        client = PolicyClient(server.url, server.token)
        return (lambda: client.act(obs)), client.close

    r = run_clients(connect, clients, requests)
    server.stop()
    lat = r["latencies"] or [float("nan")]
    return {"clients": clients, "requests": clients * requests, "backlog": backlog, "keep_alive": keep_alive,
            "errors": len(r["errors"]), "error_rate": len(r["errors"]) / (clients * requests),
            "error_examples": sorted(set(r["errors"]))[:3], "requests_per_s": len(r["latencies"]) / r["wall_s"],
            "p50_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    seconds, rate = float(arg("seconds", "10")), float(arg("rate_hz", "20"))
    root = cache_root("runs/bench_serving")
    # Every torch call of this process runs on the policy thread, the servers' included: torch
    # on a second thread would slow all of them (vlaforge.runtime.policy.policy_thread).
    policy = on_policy_thread(lambda: load_policy(make_policy(root)))
    with stage("one robot: act, HTTP, stream"):
        one = overhead_test(policy, calls=300, warmup=30)
    fleets = {}
    for n in FLEETS:
        with stage(f"fleet of {n}"):
            fleets[n] = fleet_test(policy, robots=n, rate_hz=rate, seconds=seconds)
    with stage("fleet of 8, batching off"):
        unbatched = fleet_test(policy, robots=8, rate_hz=rate, seconds=seconds, max_batch=1)
    bursts = {}
    for name, backlog, keep in (("new connection per request, backlog 5", 5, False),
                                ("new connection per request, backlog 256", 256, False),
                                ("kept-alive connections, backlog 256", 256, True)):
        with stage(f"HTTP burst: {name}"):
            bursts[name] = http_burst(policy, clients=50, requests=20, backlog=backlog, keep_alive=keep)
    exports = on_policy_thread(sampling_exports, root, root / "data")
    with stage("act() on one thread and on two"):
        contention = thread_contention(root / "train" / "policy")
    period_ms = 1000 / rate
    most = fleet_capacity(fleets, period_ms)
    rows = [{"what": f"one robot, {k}", "p50 ms": f"{v['p50_ms']:.2f}", "p99 ms": f"{v['p99_ms']:.2f}",
             "overhead p50 ms": f"{v['overhead_p50_ms']:.2f}" if "overhead_p50_ms" in v else "", "misses": "",
             "mean batch": "", "errors": ""} for k, v in one.items()]
    for label, f in [*((f"{n} robots at {rate:g} Hz", fleets[n]) for n in FLEETS), ("8 robots, max_batch 1", unbatched)]:
        rows.append({"what": label, "p50 ms": f"{f['p50_ms']:.2f}", "p99 ms": f"{f['p99_ms']:.2f}", "overhead p50 ms": "",
                     "misses": f"{100 * f['miss_rate']:.1f}%", "mean batch": f"{f['mean_batch']:.2f}",
                     "errors": str(f["errors"])})
    for name, b in bursts.items():
        rows.append({"what": f"50 HTTP clients x 20, {name}", "p50 ms": f"{b['p50_ms']:.1f}", "p99 ms": f"{b['p99_ms']:.1f}",
                     "overhead p50 ms": "", "misses": "", "mean batch": "",
                     "errors": f"{b['errors']} ({100 * b['error_rate']:.1f}%)"})
    for name, e in exports.items():
        rows.append({"what": f"{e['head']} head, {e['sample_steps']} sampling steps: eager / ONNX Runtime",
                     "p50 ms": f"{e['eager']['p50_ms']:.2f} / {e['onnx']['p50_ms']:.2f}",
                     "p99 ms": f"{e['eager']['p99_ms']:.2f} / {e['onnx']['p99_ms']:.2f}", "overhead p50 ms": "",
                     "misses": "", "mean batch": "", "errors": f"max action diff {e['onnx']['max_action_diff']:.2g}"})
    for c in contention:
        rows.append({"what": f"act() with {c['threads']} torch threads: one thread / a second thread after the first",
                     "p50 ms": f"{c['one_thread_ms']:.2f} / {c['second_thread_ms']:.2f}", "p99 ms": "",
                     "overhead p50 ms": "", "misses": "", "mean batch": "", "errors": ""})
    figures = {"policy_params": sum(p.numel() for p in policy.model.parameters()), "rate_hz": rate,
               "period_ms": period_ms, "one_robot": one, "fleets": {str(n): f for n, f in fleets.items()},
               "fleet_8_unbatched": unbatched, "http_bursts": bursts,
               "sampling_exports": exports, "thread_contention": contention, "most_robots_p99_under_period": most,
               "targets": {"stream_overhead_p50_ms": 1.0, "robots_at_rate": 8},
               "meets_targets": {"stream_overhead": one["stream"]["overhead_p50_ms"] <= 1.0,
                                 "robots_at_rate": most >= 8}}
    write("serving", figures, rows, "Serving over the loopback: transport overhead, robots at a control rate, "
          "connection resets", seeds={"fleet_phases": 0, "observation": 0, "collect_scenes_from": 0, "train": 0})


if __name__ == "__main__":
    main()
