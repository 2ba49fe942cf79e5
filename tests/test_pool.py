"""Worker pools used by collection and evaluation: results, dead workers, one env per worker."""

import math
import os

import pytest

from vlaforge import pool
from vlaforge.pool import WorkerDied, map_in_workers, worker_env


def test_results_in_order_and_unordered():
    jobs = [0.0, 1.0, 4.0, 9.0, 16.0]
    assert list(map_in_workers(math.sqrt, jobs, 2, int)) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted(map_in_workers(math.sqrt, jobs, 2, int, ordered=False)) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_dead_worker_is_an_error_not_a_hang():
    # os._exit ends the worker process abruptly, as an out-of-memory kill does.
    with pytest.raises(WorkerDied, match="worker process died"):
        list(map_in_workers(os._exit, [3, 3], 2, int, ordered=False))


class FakeEnv:
    def __init__(self, name):
        self.name, self.closed = name, False

    def close(self):
        self.closed = True


def test_worker_env_keeps_one_env_and_closes_the_previous(monkeypatch):
    monkeypatch.setattr(pool, "_ENV", {})
    made = []

    def make(name):
        made.append(FakeEnv(name))
        return made[-1]

    a = worker_env(("s", "a"), lambda: make("a"))
    assert worker_env(("s", "a"), lambda: make("again")) is a and len(made) == 1
    b = worker_env(("s", "b"), lambda: make("b"))
    assert a.closed and not b.closed and b.name == "b"
    assert worker_env(("s", "a"), lambda: make("a2")).name == "a2" and b.closed


def test_worker_env_cache_tells_env_configs_apart():
    from vlaforge.envs.randomization.wrapper import worker_domain_env

    cfg = {"suite": "tabletop", "tasks": [], "image_size": 64, "cameras": ["front"], "max_steps": 4, "num_objects": 3}
    short = worker_domain_env("tabletop", "reach", "train", cfg, None)
    long = worker_domain_env("tabletop", "reach", "train", {**cfg, "max_steps": 50}, None)
    assert short.max_steps == 4 and long.max_steps == 50


def test_inline_map_keeps_the_callers_torch_threads():
    import torch

    from vlaforge.pool import map_in_workers

    before = torch.get_num_threads()
    assert list(map_in_workers(abs, [-1, 2], 1, lambda: torch.set_num_threads(1))) == [1, 2]
    assert torch.get_num_threads() == before
