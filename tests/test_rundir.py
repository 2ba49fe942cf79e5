"""The run-directory helper shared by train, pretrain and safe RL."""

import json

import pytest

from vlaforge.train.rundir import open_run_dir, read_metrics, truncate_metrics


def test_open_refuses_a_start_over_a_run_and_a_resume_of_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume given but .* holds no pretraining checkpoint"):
        open_run_dir(tmp_path / "a", resume=True, started=False, what="pretraining")
    with pytest.raises(FileExistsError, match="already holds a safe-RL run; pass --resume"):
        open_run_dir(tmp_path, resume=False, started=True, what="safe-RL")
    assert open_run_dir(tmp_path / "b", resume=False, started=False, what="x").is_dir()


def test_metrics_are_cut_back_and_a_torn_last_line_dropped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    with pytest.warns(UserWarning, match="dropping a torn last line"):
        rows = truncate_metrics(log, lambda row: row["step"] <= 3)
    assert rows == [{"step": 1}, {"step": 2}, {"step": 3}] and read_metrics(log) == rows
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_metrics(log)
