"""A collection killed at any write point of an episode, then resumed, equals an uninterrupted one.

The kill is simulated in process: the writer's atomic-write primitive raises at its k-th call,
either before the temporary file is written or after it is written but before the rename (what
a SIGKILL at that instant leaves). benchmarks/reliability.py does the same with real kill -9s.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_episode

import vlaforge.files as files_module
from vlaforge.data.dataset import DatasetError, DatasetWriter, LeRobotDataset, make_features
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES

FEATURES = make_features(["front"], 32, STATE_NAMES, ACTION_NAMES)
TASKS = ["reach the red cube", "go to the blue ball", "reach the red cube", "press the green button"]
WRITES_PER_EPISODE = 5  # data file, episode row, tasks.parquet, stats.json, info.json


class Killed(BaseException):
    pass


def episodes():
    rng = np.random.default_rng(3)
    return [synthetic_episode(rng, length=8 + i, size=32, task=task) for i, task in enumerate(TASKS)]


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def collect(root: Path, eps, kill_at: int | None = None, after_tmp: bool = False, monkeypatch=None) -> None:
    """Write ``eps`` (skipping those already there, as ``collect --resume`` does), killed at write ``kill_at``."""
    writer = DatasetWriter(root, FEATURES, fps=20, resume=root.exists())
    if kill_at is not None:
        calls = {"n": 0}
        real = files_module.atomic_write_bytes

        def write(path, payload):
            calls["n"] += 1
            if calls["n"] == kill_at:
                if after_tmp:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.with_name(path.name + ".tmp").write_bytes(payload)
                raise Killed(path)
            real(path, payload)

        monkeypatch.setattr(files_module, "atomic_write_bytes", write)
    for ep in eps[writer.num_episodes:]:
        writer.add_episode(ep)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "ds"
    collect(root, episodes())
    return files(root)


@pytest.mark.parametrize("after_tmp", [False, True])
@pytest.mark.parametrize("episode", [1, 3])  # each brings a new instruction
def test_a_kill_at_every_write_point_resumes_to_the_uninterrupted_dataset(tmp_path, monkeypatch, reference, episode,
                                                                           after_tmp):
    eps = episodes()
    for point in range(WRITES_PER_EPISODE):
        root = tmp_path / f"kill{point}"
        with pytest.raises(Killed):
            collect(root, eps, kill_at=episode * WRITES_PER_EPISODE + point + 1, after_tmp=after_tmp,
                    monkeypatch=monkeypatch)
        monkeypatch.undo()
        before = LeRobotDataset(root)
        finished = episode + (point >= 2)  # the episode row (write 1) is the commit point
        assert before.num_episodes == finished
        # What the kill left loads only if it is consistent; otherwise it is refused with the repair.
        problems = before.metadata_problems(totals=False)
        if problems:
            with pytest.raises(DatasetError, match="collect --resume"):
                before.load()
        else:
            before.load()
        collect(root, eps)
        assert files(root) == reference, f"kill at write {point} of episode {episode}"
        assert LeRobotDataset(root).metadata_problems() == []


def test_stale_stats_and_a_colliding_task_index_are_found(tmp_path):
    """The failure the issue reported: the row landed, the global metadata did not."""
    root = tmp_path / "ds"
    eps = episodes()
    collect(root, eps[:1])
    good = files(root)
    collect(root, eps[:2])
    for rel in ("meta/tasks.parquet", "meta/stats.json", "meta/info.json"):  # as they were before episode 1
        (root / rel).write_bytes(good[rel])
    problems = LeRobotDataset(root).metadata_problems()
    assert any("stats.json: observation.state counts" in p for p in problems)
    assert any("tasks.parquet lacks the task 'go to the blue ball'" in p for p in problems)
    assert any("info.json: total_episodes is 1, the episodes hold 2" in p for p in problems)
    with pytest.raises(DatasetError, match="stats.json.*collect --resume"):
        LeRobotDataset(root).load()
    collect(root, eps)  # resume repairs and continues; the next new task gets its own index
    ds = LeRobotDataset(root)
    assert ds.metadata_problems() == [] and ds.tasks == ["reach the red cube", "go to the blue ball",
                                                         "press the green button"]


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import os, time
        from vlaforge.pool import map_in_workers

        def job(i):
            open(os.path.join({str(tmp_path)!r}, f"worker-{{os.getpid()}}"), "w").close()
            time.sleep(60)

        if __name__ == "__main__":
            list(map_in_workers(job, [0, 1], 2, int))
    """)
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], cwd=tmp_path)
    deadline = time.time() + 60
    while len(list(tmp_path.glob("worker-*"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    assert len(pids) == 2, "the workers did not start"
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[1].startswith("Z"))


def test_data_check_reports_what_loading_refuses(tmp_path, capsys):
    from vlaforge.cli import main
    from vlaforge.data.manifest import write_manifest

    root = tmp_path / "ds"
    eps = episodes()
    collect(root, eps[:2])
    write_manifest(root)
    stats = root / "meta/stats.json"
    stats.write_text(stats.read_text().replace("[", "[ ", 1))  # same numbers, other bytes: only the manifest sees it
    main(["data", "check", f"--dataset={root}", f"--output={tmp_path / 'qc'}"])
    out = capsys.readouterr().out
    assert "integrity: " in out and "stats.json does not match its sha256" in out
    report = json.loads((tmp_path / "qc/qc.json").read_text())
    assert report["clean"] is False and len(report["integrity"]) == 1
    with pytest.raises(DatasetError, match="stats.json does not match its sha256"):
        LeRobotDataset(root).load()
