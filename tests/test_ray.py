"""``--backend=ray``: on a Ray cluster started here (a head and one worker node, on this machine),
collection and evaluation return what the local pool returns for the same seeds, and a job whose
worker process dies is run again without its result being lost or repeated."""

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, synthetic_policy

import vlaforge.eval.ablate as ablate_mod
import vlaforge.eval.generalization as generalization
import vlaforge.eval.transfer as transfer
from vlaforge.config import ConfigError, apply_overrides
from vlaforge.data.collect import collect
from vlaforge.data.config import CollectConfig
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.config import AblateConfig, EvalConfig, GeneralizeConfig, TransferConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.pool import WorkerDied, map_in_workers

RAY_CLI = Path(sys.executable).parent / "ray"


@pytest.fixture(scope="module")
def cluster():
    """The address of a two-node Ray cluster (one CPU each) that lives as long as this module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlaforge[ray]'): Ray backend untested")
    if not RAY_CLI.is_file():
        pytest.skip(f"the ray command is not beside {sys.executable}: Ray backend untested")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver (this process) too: a loopback cluster without tokens
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
    nodes = [subprocess.Popen([str(RAY_CLI), "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--temp-dir={temp}", *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 90
        while not _listening(port) and time.time() < deadline:
            time.sleep(0.5)
        nodes.append(subprocess.Popen([str(RAY_CLI), "start", f"--address={address}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ray.init(address=address)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "the worker node did not join the cluster"
        yield address
    finally:
        ray.shutdown()
        for node in nodes:
            os.killpg(node.pid, 9)  # the node's raylet, GCS and workers share its session
            node.wait()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def square_dies_once(job: tuple[int, str]) -> int:
    """job = (i, directory): job 2 kills its worker process on its first run, as an OOM kill would."""
    i, where = job
    if i == 2 and not os.path.exists(os.path.join(where, "died")):
        open(os.path.join(where, "died"), "w").close()
        os._exit(1)
    with open(os.path.join(where, f"ran-{i}-{os.getpid()}"), "w"):
        pass
    return i * i


def always_dies(i: int) -> int:
    os._exit(1)


@pytest.fixture
def by_value():
    """Ship this module's job functions to the Ray workers by value (tests/ is not on their path)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_job_whose_worker_dies_is_run_again_and_returned_once(cluster, by_value, tmp_path):
    jobs = [(i, str(tmp_path)) for i in range(6)]
    assert list(map_in_workers(square_dies_once, jobs, 2, int, backend="ray", address=cluster)) == [0, 1, 4, 9, 16, 25]
    assert (tmp_path / "died").exists(), "the planted crash did not happen"
    ran = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("ran-*"))
    assert ran == [0, 1, 2, 3, 4, 5], "a job finished twice or not at all"
    (tmp_path / "died").unlink()
    assert sorted(map_in_workers(square_dies_once, jobs, 0, int, ordered=False, backend="ray",
                                 address=cluster)) == [0, 1, 4, 9, 16, 25]


def test_a_job_that_keeps_killing_its_worker_is_an_error(cluster, by_value):
    with pytest.raises(WorkerDied, match="lost its Ray worker 4 times"):
        list(map_in_workers(always_dies, [0], 1, int, backend="ray", address=cluster))


def test_an_error_in_a_job_reaches_the_caller(cluster):
    with pytest.raises(ValueError, match="math domain error"):
        import math

        list(map_in_workers(math.sqrt, [4.0, -1.0], 2, int, backend="ray", address=cluster))


def _frames(root: Path) -> dict:
    data = LeRobotDataset(root).load()
    return {k: np.asarray(v) for k, v in vars(data).items() if isinstance(v, np.ndarray)}


def test_collection_on_ray_equals_the_local_pool(cluster, tmp_path):
    cfg = CollectConfig(env=EnvConfig(tasks=["reach", "press_button"], max_steps=60), episodes_per_task=2, workers=2,
                        noise=0.3)
    local = collect(dataclasses.replace(cfg, output=str(tmp_path / "local")), show_progress=False)
    remote = collect(dataclasses.replace(cfg, output=str(tmp_path / "ray"), backend="ray", ray_address=cluster),
                     show_progress=False)
    a, b = _frames(local), _frames(remote)
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ea, eb = LeRobotDataset(local).episodes, LeRobotDataset(remote).episodes
    assert [(e["vlaforge/task"], e["vlaforge/seed"], e["length"]) for e in ea] == \
           [(e["vlaforge/task"], e["vlaforge/seed"], e["length"]) for e in eb]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return synthetic_policy(tmp_path_factory.mktemp("raypolicy"))


def test_evaluation_on_ray_equals_the_local_pool(cluster, policy, tmp_path):
    cfg = EvalConfig(policy=policy, split="train", tasks=["reach", "press_button"], episodes=3, workers=2, max_steps=15)
    local = evaluate(dataclasses.replace(cfg, output_dir=str(tmp_path / "local")), show_progress=False)
    remote = evaluate(dataclasses.replace(cfg, output_dir=str(tmp_path / "ray"), backend="ray", ray_address=cluster),
                      show_progress=False)
    timing = {"wall_seconds"}
    rows = [[{k: v for k, v in e.items() if k not in timing} for e in r["episodes_detail"]] for r in (local, remote)]
    assert rows[0] == rows[1] and len(rows[0]) == 6


def test_the_backend_reaches_every_run_a_verb_makes(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("vlaforge.eval.rollout.evaluate", lambda cfg, show_progress=True: seen.append(cfg) or {})
    ray_pool = {"backend": "ray", "ray_address": "10.0.0.1:6379", "workers": 8}
    for module, cfg in ((transfer, TransferConfig(policy="p", targets=["real-proxy-A"], **ray_pool)),
                        (generalization, GeneralizeConfig(policy="p", splits=["train"], **ray_pool))):
        monkeypatch.setattr(module, "evaluate", lambda cfg, show_progress=True: seen.append(cfg) or _stop())
        monkeypatch.setattr("vlaforge.runtime.policy.load_policy", lambda p: type("P", (), {"meta": {"suite": "tabletop"}}))
        with pytest.raises(_Stop):
            (transfer.transfer if module is transfer else generalization.generalize)(
                dataclasses.replace(cfg, output_dir=str(tmp_path / module.__name__)), False)
    assert [(c.backend, c.ray_address, c.workers) for c in seen] == [("ray", "10.0.0.1:6379", 8)] * 2
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: {collect: {workers: 3}, eval: {workers: 5}}\naxes: {seed: {train.seed: [0, 1]}}\n")
    cells = []
    monkeypatch.setattr(ablate_mod, "run_cell", lambda cfg, *a: cells.append(cfg) or _stop())
    with pytest.raises(_Stop):
        ablate_mod.ablate(AblateConfig(grid=str(grid), output_dir=str(tmp_path / "ab"), backend="ray",
                                       ray_address="auto"), False)
    c = cells[0]
    assert (c.collect.backend, c.collect.ray_address, c.collect.workers) == ("ray", "auto", 3)
    assert (c.eval.backend, c.eval.ray_address, c.eval.workers) == ("ray", "auto", 5)


class _Stop(Exception):
    pass


def _stop():
    raise _Stop


def test_an_unknown_backend_is_refused_when_parsed():
    with pytest.raises(ConfigError, match="'backend' must be one of local, ray, got 'dask'"):
        apply_overrides(EvalConfig(), ["backend=dask"])
    with pytest.raises(ConfigError, match="'backend' must be one of local, ray"):
        ablate_mod.ablate(AblateConfig(grid="g.yaml", backend="spark"), False)
