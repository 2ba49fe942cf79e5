"""Streaming training data (train --loader=stream): every frame once per epoch across ranks, the
same batches after a resume, at most two windows in memory, and the auto choice."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import TINY_POLICY, write_dataset

from vlaforge.cli import main
from vlaforge.data.dataset import DatasetWriter, EpisodeFrames, LeRobotDataset, make_features
from vlaforge.data.normalize import Normalizer
from vlaforge.data.streaming import StreamingSampler
from vlaforge.data.tokenizer import WordTokenizer
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Episodes of different lengths whose action at frame t of episode e is (e, t, 0, 0): a
    drawn sample names its own frame."""
    root = tmp_path_factory.mktemp("stream") / "ds"
    w = DatasetWriter(root, make_features(["front"], 32, STATE_NAMES, ACTION_NAMES), fps=20)
    rng = np.random.default_rng(0)
    for e in range(11):
        n = 5 + e % 4
        action = np.stack([np.full(n, e), np.arange(n), np.zeros(n), np.zeros(n)], 1).astype(np.float32)
        w.add_episode(EpisodeFrames(rng.integers(0, 255, (n, 1, 32, 32, 3), dtype=np.uint8),
                                    rng.normal(size=(n, 4)).astype(np.float32), action, "reach the red cube"))
    return LeRobotDataset(root)


def sampler(ds, window=3, accumulate=1):
    norm = Normalizer.from_stats(ds.stats, 4, 4)
    return StreamingSampler(ds, norm, WordTokenizer.from_texts(ds.tasks), 1, 1, 8, window=window, accumulate=accumulate)


def drawn_frames(s, batch, rank=0, ranks=1, steps=1, start=0):
    out = []
    for step in range(start, start + steps):
        b = s.draw(0, step, 0, batch, part=(rank, ranks))
        a = s.args[0].unnorm_action(b["action"][:, 0].numpy())
        out += [(int(round(x[0])), int(round(x[1]))) for x in a]
    return out


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_every_frame_once_per_epoch_across_ranks(labelled, ranks):
    s = sampler(labelled)
    every = sorted((e, t) for e in range(11) for t in range(5 + e % 4))
    for epoch in range(2):
        per_rank = [s.epoch_frames(0, epoch, r, ranks) for r in range(ranks)]
        assert sorted(p for frames in per_rank for p in frames) == every  # none lost, none twice
        for a in range(ranks):
            for b in range(a + 1, ranks):
                assert not {e for e, _ in per_rank[a]} & {e for e, _ in per_rank[b]}  # ranks read disjoint episodes
    # The batches draw exactly that order: rank 1 of 2, one epoch of its frames, batch 4.
    stream = s.epoch_frames(0, 0, 1, 2) + s.epoch_frames(0, 1, 1, 2)
    got = drawn_frames(s, 4, rank=1, ranks=2, steps=len(stream) // 4)
    assert got == stream[:len(got)]
    assert s.epoch_frames(0, 0, 0, 1) != s.epoch_frames(0, 1, 0, 1)  # reshuffled every epoch


def test_batches_are_a_function_of_the_step_and_memory_holds_two_windows(labelled):
    s = sampler(labelled, window=2)
    first = [s.draw(0, step, 0, 5) for step in range(12)]
    assert len(s._cache) <= 2
    later = sampler(labelled, window=2)  # a resumed run: a new sampler starting at step 7
    for step in range(7, 12):
        b = later.draw(0, step, 0, 5)
        for k in b:
            torch.testing.assert_close(b[k], first[step][k], msg=k)
    assert later.windows_loaded < s.windows_loaded


def test_train_stream_resumes_exactly_and_auto_picks_the_loader(tmp_path, monkeypatch, capsys):
    write_dataset(tmp_path / "data", episodes=6, length=10)
    common = [f"--dataset={tmp_path / 'data'}", *TINY_POLICY, "--steps=6", "--ckpt_every=3", "--batch_size=4",
              "--tracking=none", "--log_every=1", "--stream_window=2"]
    assert main(["train", *common, "--loader=stream", f"--output_dir={tmp_path / 'whole'}"]) == 0
    assert "data: streamed from disk" in capsys.readouterr().out
    run = tmp_path / "cut"
    assert main(["train", *common, "--loader=stream", f"--output_dir={run}"]) == 0
    shutil.rmtree(run / "checkpoints/step_0000006")
    shutil.rmtree(run / "policy")
    assert main(["train", *common, "--loader=stream", f"--output_dir={run}", "--resume=true"]) == 0
    losses = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(run) == losses(tmp_path / "whole")
    memory = tmp_path / "memory"
    assert main(["train", *common, f"--output_dir={memory}"]) == 0  # auto on a small dataset: in memory
    assert json.loads((memory / "train_summary.json").read_text())["loader"] == "memory"
    monkeypatch.setattr("vlaforge.train.trainer.available_memory", lambda: 1000)  # a machine without room
    assert main(["train", *common, f"--output_dir={tmp_path / 'auto'}"]) == 0
    assert "data: streamed from disk (decoded frames" in capsys.readouterr().out
    assert json.loads((tmp_path / "auto/train_summary.json").read_text())["loader"] == "stream"
    assert main(["train", *common, "--loader=stream", "--balance=task", f"--output_dir={tmp_path / 'x'}"]) == 2
    assert main(["train", *common, "--loader=disk", f"--output_dir={tmp_path / 'y'}"]) == 2
