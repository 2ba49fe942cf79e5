"""Run description (dataset hash, commit, machine), the W&B offline and console backends, and
`vlaforge runs`."""

import json

import pytest
from helpers import write_dataset
from test_train import tiny_cfg

from vlaforge.cli import main
from vlaforge.train.tracking import Tracker, dataset_hash
from vlaforge.train.trainer import train


def test_dataset_hash_changes_iff_content_changes(tmp_path):
    write_dataset(tmp_path / "a", episodes=2, length=8)
    write_dataset(tmp_path / "b", episodes=2, length=8)
    assert dataset_hash(tmp_path / "a") == dataset_hash(tmp_path / "b")  # same content, other place
    data_file = next((tmp_path / "b" / "data").rglob("*.parquet"))
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 1
    data_file.write_bytes(bytes(raw))
    assert dataset_hash(tmp_path / "a") != dataset_hash(tmp_path / "b")


def test_wandb_offline_run_and_runs_listing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    write_dataset(tmp_path / "ds", episodes=2, length=8)
    train(tiny_cfg(tmp_path, tmp_path / "ds", steps=4, tracking="wandb", log_every=2), show_progress=False)
    run = tmp_path / "run"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))  # logged without network
    info = json.loads((run / "run_info.json").read_text())
    assert info["dataset_hash"] == dataset_hash(tmp_path / "ds")
    assert info["commit"] is None or len(info["commit"]) == 40
    assert info["system"]["torch"] and info["system"]["cpu_count"] >= 1
    capsys.readouterr()
    assert main(["runs", f"--root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "finished" in out and "4/4" in out and info["dataset_hash"][:12] in out


def test_console_backend_and_bad_backend(tmp_path, capsys):
    tracker = Tracker(tmp_path, "console", {}, {"dataset_hash": "x"}, resume=False)
    tracker.log(3, {"loss": 0.5})
    assert "step 3: loss 0.5" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "loss": 0.5}
    with pytest.raises(ValueError, match="unknown tracking backend 'tensorboardx'"):
        Tracker(tmp_path, "tensorboardx", {}, {}, resume=False)
    assert main(["runs", f"--root={tmp_path / 'nowhere'}"]) == 2
