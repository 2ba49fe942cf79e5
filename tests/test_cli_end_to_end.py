"""The user-facing verbs end to end through the CLI: quickstart (what `make demo` runs), serve
(a real server process answering a client) and bench."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import train_tiny_policy

from vlaforge.cli import main

TINY = ["--collect.env.tasks=[reach]", "--collect.episodes_per_task=1", "--collect.workers=1", "--train.steps=2",
        "--train.batch_size=4", "--train.tracking=none", "--train.policy.d_model=32", "--train.policy.n_layers=1",
        "--train.policy.n_heads=2", "--train.policy.vision_channels=[8,8]", "--eval.episodes=2", "--eval.workers=1",
        "--eval.max_steps=10", "--eval.videos_per_task=0", "--splits=[train,unseen]", "--train.grounding_scenes=3"]


def test_quickstart_runs_collect_train_eval_and_resumes(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", f"--output_dir={out}", *TINY]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["reused_stages"] == [] and set(s["stage_seconds"]) == {"collect", "train", "eval_train", "eval_unseen"}
    for split in ("train", "unseen"):
        r = json.loads((out / "eval" / split / "results.json").read_text())
        assert r["episodes"] == 2 and s["success_rate"][split] == r["success_rate"]
        assert (out / "eval" / split / "report.html").is_file()
    assert (out / "train" / "policy" / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "train" / "policy" / "config.json").read_text())["grounding"]["scenes_per_task"] == 3
    weights = (out / "train" / "policy" / "model.safetensors").read_bytes()
    assert main(["quickstart", f"--output_dir={out}", *TINY]) == 0  # a finished policy is reused, not retrained
    assert json.loads((out / "summary.json").read_text())["reused_stages"] == ["collect", "train"]
    assert (out / "train" / "policy" / "model.safetensors").read_bytes() == weights
    capsys.readouterr()
    assert main(["quickstart", f"--output_dir={out}", "--train.stepz=3"]) == 2
    assert "stepz" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["http", "stream"])
def test_serve_answers_a_client_with_the_local_policys_actions(tmp_path, protocol):
    from vlaforge.deploy.latency import observation
    from vlaforge.deploy.server import PolicyClient
    from vlaforge.runtime.policy import load_policy

    client = PolicyClient
    if protocol == "stream":
        pytest.importorskip("websockets", reason="the stream protocol needs websockets (pip install 'vlaforge[serve]')")
        from vlaforge.deploy.stream import StreamClient as client
    policy_dir = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    token = "k3y-from-the-environment-7Qz"
    metrics = ["--metrics=true"] if protocol == "stream" and importlib.util.find_spec("prometheus_client") else []
    proc = subprocess.Popen([sys.executable, "-m", "vlaforge", "serve", f"--policy={policy_dir}", "--port=0",
                             f"--protocol={protocol}", *metrics], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, VLAFORGE_TOKEN=token))
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line + (proc.stderr.read() if proc.poll() is not None else "")  # read only at EOF
        assert token not in line and "$VLAFORGE_TOKEN" in line
        if metrics:  # the stream's own port answers the dashboard
            assert re.search(r"GET /metrics; dashboard: http://127\.0\.0\.1:\d+/dashboard#token=TOKEN", line), line
        url = line.split(" at ")[1].split(" ")[0]
        local = load_policy(policy_dir)
        obs = observation(local)
        remote = client(url, token).act(obs)
        local.reset()
        np.testing.assert_allclose(remote, local.act(obs), atol=1e-5)
        with pytest.raises(RuntimeError, match="401"):
            client(url, "wrong-token-of-enough-length").act(obs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_with_metrics_and_an_ab_test_through_the_cli(tmp_path, capsys):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install 'vlaforge[mlops]')")
    import urllib.request

    from vlaforge.deploy.latency import observation
    from vlaforge.deploy.server import PolicyClient
    from vlaforge.runtime.policy import load_policy

    policy_dir = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    token = "k3y-from-the-environment-7Qz"
    proc = subprocess.Popen([sys.executable, "-m", "vlaforge", "serve", f"--policy={policy_dir}", "--port=0",
                             "--metrics=true", f"--challenger={policy_dir}", f"--ab_log={tmp_path / 'ab.jsonl'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, VLAFORGE_TOKEN=token))
    try:
        line = proc.stdout.readline()
        assert "GET /metrics, POST /outcome, GET /ab; dashboard: http" in line, line  # stderr stays open: not read
        url = line.split(" at ")[1].split(" ")[0]
        client = PolicyClient(url, token)
        client.reset(seed=3)
        client.act(observation(load_policy(policy_dir)))
        req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert 'vlaforge_requests_total{code="200"} 1.0' in r.read().decode()
        start, assigned = (json.loads(x) for x in (tmp_path / "ab.jsonl").read_text().splitlines()[:2])
        assert start["event"] == "start" and assigned["episode"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert main(["serve", f"--policy={policy_dir}", "--deadline_ms=5"]) == 2
    assert "--drift_reference and --deadline_ms feed the metrics: add --metrics=true" in capsys.readouterr().err


def test_bench_latency_and_server_through_the_cli(tmp_path, capsys):
    policy_dir = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", f"--policy={policy_dir}", "--runtimes=[eager,dynamic-int8]", "--calls=5",
                 "--warmup=1", "--threads=1", f"--output={out}"]) == 0
    rows = {r["runtime"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["eager"]["max_action_diff"] == 0 and rows["eager"]["calls"] == 5 and rows["eager"]["threads"] == 1
    assert rows["dynamic-int8"]["p99_ms"] >= rows["dynamic-int8"]["p50_ms"] > 0
    out = tmp_path / "server.json"
    assert main(["bench", "server", f"--policy={policy_dir}", "--clients=2", "--requests=3", f"--output={out}"]) == 0
    r = json.loads(out.read_text())
    assert r["requests"] == 6 and r["errors"] == 0 and r["latency_ms_p99"] >= r["latency_ms_p50"] > 0
    if importlib.util.find_spec("websockets"):
        out = tmp_path / "stream.json"
        assert main(["bench", "stream", f"--policy={policy_dir}", "--calls=5", "--warmup=1", "--robots=2",
                     "--rate_hz=10", "--seconds=0.5", f"--output={out}"]) == 0
        r = json.loads(out.read_text())
        assert r["one_robot"]["stream"]["calls"] == 5 and r["fleet"]["robots"] == 2 and r["fleet"]["errors"] == 0
    assert main(["bench", "throughput", f"--policy={policy_dir}"]) == 2
    assert "unknown benchmark 'throughput'" in capsys.readouterr().err
    assert Path(policy_dir).is_dir()
