"""Dataset versions: the manifest hash changes iff content changes, diffs name episodes, the run
records the hash in MLflow, and DVC versions a dataset through a local remote."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_dataset

from vlaforge.cli import main
from vlaforge.data.dataset import DatasetWriter, make_features
from vlaforge.data.manifest import build_manifest, dataset_hash, diff_manifests, write_manifest
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES


def test_hash_changes_iff_content_changes(tmp_path):
    write_dataset(tmp_path / "a", episodes=3, length=8)
    write_dataset(tmp_path / "b", episodes=3, length=8)
    h = dataset_hash(tmp_path / "a")
    assert h == dataset_hash(tmp_path / "b")  # equal content written twice, elsewhere
    # Files beside the content do not count: reports, configs, the manifest itself, DVC files.
    write_manifest(tmp_path / "a")
    (tmp_path / "a" / "qc").mkdir()
    (tmp_path / "a" / "qc" / "qc.json").write_text("{}")
    (tmp_path / "a" / "collect_config.yaml").write_text("seed: 1\n")
    os.utime(tmp_path / "a" / "meta" / "info.json", (0, 0))
    assert dataset_hash(tmp_path / "a") == h
    # One changed byte of an episode changes it.
    data_file = next((tmp_path / "b" / "data").rglob("*.parquet"))
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 1
    data_file.write_bytes(bytes(raw))
    assert dataset_hash(tmp_path / "b") != h
    # So does one more episode.
    write_dataset(tmp_path / "c", episodes=4, length=8)
    assert dataset_hash(tmp_path / "c") != h


def test_episode_hashes_follow_content_not_position(tmp_path):
    _, eps = write_dataset(tmp_path / "a", episodes=3, length=8)
    w = DatasetWriter(tmp_path / "b", make_features(["front"], 64, STATE_NAMES, ACTION_NAMES), fps=20)
    for ep in (eps[2], eps[0]):  # episode 1 removed, the others reordered
        w.add_episode(ep)
    a, b = build_manifest(tmp_path / "a"), build_manifest(tmp_path / "b")
    d = diff_manifests(a, b)
    assert not d["same"] and d["kept"] == 2 and d["added"] == []
    assert [e["index"] for e in d["removed"]] == [1]
    assert a["episodes"][2]["sha256"] == b["episodes"][0]["sha256"]
    assert diff_manifests(a, a)["same"]


def test_data_diff_cli(tmp_path, capsys):
    write_dataset(tmp_path / "v1", episodes=3, length=8)
    assert main(["data", "manifest", str(tmp_path / "v1")]) == 0
    shutil.copy(tmp_path / "v1" / "manifest.json", tmp_path / "v1.json")  # a saved version
    write_dataset(tmp_path / "v2", episodes=5, length=8)
    capsys.readouterr()
    assert main(["data", "diff", str(tmp_path / "v1.json"), str(tmp_path / "v2")]) == 0
    out = capsys.readouterr().out
    assert "3 -> 5 episodes; 2 added, 0 removed, 3 kept" in out
    assert main(["data", "diff", str(tmp_path / "v1"), str(tmp_path / "v1.json")]) == 0
    assert "same content" in capsys.readouterr().out
    assert main(["data", "diff", str(tmp_path / "v1")]) == 2
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["data", "diff", str(tmp_path / "v1"), str(tmp_path / "junk.json")]) == 2
    assert "not a vlaforge manifest" in capsys.readouterr().err


def test_training_run_records_the_dataset_hash_in_mlflow(tmp_path):
    pytest.importorskip("mlflow")
    from test_train import tiny_cfg

    from vlaforge.train.trainer import train

    write_dataset(tmp_path / "ds", episodes=2, length=8)
    train(tiny_cfg(tmp_path, tmp_path / "ds", steps=2, tracking="mlflow"), show_progress=False)
    tags = list((tmp_path / "run" / "mlruns").rglob("tags/dataset_hash"))
    assert len(tags) == 1 and tags[0].read_text().strip() == dataset_hash(tmp_path / "ds")


def _run(cmd: list[str], cwd: Path) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_dvc_versions_a_dataset_through_a_local_remote(tmp_path, monkeypatch):
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists() or shutil.which("git") is None:
        pytest.skip("dvc (pip install -e .[test]) and git are needed")
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(key, value)
    _run(["git", "init", "-q"], repo)
    _run([str(dvc), "init", "-q"], repo)
    _run([str(dvc), "remote", "add", "-d", "local", str(remote)], repo)
    write_dataset(repo / "data", episodes=3, length=8)
    v1 = dataset_hash(repo / "data")
    _run([str(dvc), "add", "-q", "data"], repo)
    _run(["git", "add", "data.dvc", ".gitignore", ".dvc/config"], repo)
    _run(["git", "commit", "-qm", "dataset v1"], repo)
    _run([str(dvc), "push", "-q"], repo)
    # A second version: two more episodes.
    shutil.rmtree(repo / "data")
    write_dataset(repo / "data", episodes=5, length=8)
    v2 = dataset_hash(repo / "data")
    _run([str(dvc), "add", "-q", "data"], repo)
    _run(["git", "commit", "-qam", "dataset v2"], repo)
    _run([str(dvc), "push", "-q"], repo)
    # Back to v1 from the remote alone: drop the workspace copy and the cache, check out, pull.
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(["git", "checkout", "-q", "HEAD~1"], repo)
    _run([str(dvc), "pull", "-q"], repo)
    assert dataset_hash(repo / "data") == v1 != v2
    assert json.loads((repo / "data" / "meta" / "info.json").read_text())["total_episodes"] == 3
