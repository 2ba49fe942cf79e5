import json

import numpy as np
import pytest
import torch
from helpers import synthetic_episode, write_dataset

from vlaforge.data.augment import random_shift
from vlaforge.data.dataset import DatasetWriter, LeRobotDataset, make_features
from vlaforge.data.normalize import Normalizer
from vlaforge.data.sampler import ChunkSampler
from vlaforge.data.tokenizer import WordTokenizer
from vlaforge.envs.base import ACTION_NAMES, STATE_NAMES


def test_history_and_chunks_respect_episode_bounds(tmp_path):
    write_dataset(tmp_path / "ds", episodes=2, length=5)  # lengths 5 and 6
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    norm = Normalizer.from_stats(ds.stats)
    s = ChunkSampler(data, norm, WordTokenizer.from_texts(data.tasks), n_obs_steps=3, chunk_size=4, max_text_tokens=8)
    b = s.gather(torch.tensor([5, 3]))  # first frame of episode 1; frame 3 of episode 0
    # History before an episode start repeats its first frame, never the previous episode's.
    assert torch.equal(b["image"][0, 0], torch.from_numpy(data.images[5]))
    assert torch.equal(b["image"][0, 1], torch.from_numpy(data.images[5]))
    assert torch.equal(b["image"][1, 0], torch.from_numpy(data.images[1]))
    # Chunks past the episode end are marked invalid and padded with the last action.
    assert b["action_valid"][1].tolist() == [True, True, False, False]
    assert torch.allclose(b["action"][1, 3], b["action"][1, 1])
    np.testing.assert_allclose(b["action"][0, 0].numpy(), norm.norm_action(data.action[5]), rtol=1e-6)


def test_batches_depend_only_on_seed_and_step(tmp_path):
    write_dataset(tmp_path / "ds", episodes=2)
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    s = ChunkSampler(data, Normalizer.from_stats(ds.stats), WordTokenizer.from_texts(data.tasks), 1, 4, 8)
    a = s.sample(8, s.generator(0, 17))
    b = s.sample(8, s.generator(0, 17))
    c = s.sample(8, s.generator(0, 18))
    assert torch.equal(a["action"], b["action"]) and not torch.equal(a["action"], c["action"])


def test_rank_slices_of_a_batch_make_the_whole_batch(tmp_path):
    write_dataset(tmp_path / "ds", episodes=3, length=12)
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    s = ChunkSampler(data, Normalizer.from_stats(ds.stats), WordTokenizer.from_texts(data.tasks), 2, 4, 8)
    whole = s.sample(8, s.generator(0, 3), shift=3)
    parts = [s.sample(4, s.generator(0, 3), shift=3, part=(r, 2)) for r in range(2)]
    for key, value in whole.items():
        assert torch.equal(value, torch.cat([p[key] for p in parts])), key


def test_random_shift_translates_content():
    img = torch.zeros(1, 1, 1, 16, 16, 3, dtype=torch.uint8)
    img[..., 8, 8, :] = 255
    out = random_shift(img, torch.tensor([[2, -1]]))
    ys, xs = torch.nonzero(out[0, 0, 0, :, :, 0], as_tuple=True)
    assert (int(xs[0]), int(ys[0])) == (8 - 2, 8 + 1) and len(ys) == 1
    assert out.dtype == torch.uint8 and out.shape == img.shape


def test_keypoint_targets_follow_the_observation_history(tmp_path):
    write_dataset(tmp_path / "ds", episodes=2, length=5)
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    data.env_state = np.random.default_rng(0).uniform(-1, 1, (len(data.action), 10)).astype(np.float32)
    s = ChunkSampler(data, Normalizer.from_stats(ds.stats), WordTokenizer.from_texts(data.tasks), 2, 4, 8,
                     pixel_index=[[[6, 7], [8, 9]]])
    b = s.gather(torch.tensor([5, 3]))
    assert b["keypoints"].shape == (2, 2, 1, 2, 2)  # (batch, history, camera, point, uv)
    np.testing.assert_array_equal(b["keypoints"][0, 0, 0].numpy(), data.env_state[5, 6:].reshape(2, 2))
    np.testing.assert_array_equal(b["keypoints"][1, 0, 0].numpy(), data.env_state[2, 6:].reshape(2, 2))
    np.testing.assert_array_equal(b["keypoints"][1, 1, 0].numpy(), data.env_state[3, 6:].reshape(2, 2))


def test_shifted_keypoint_labels_follow_the_content(tmp_path):
    write_dataset(tmp_path / "ds", episodes=1, length=40)
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    # A white pixel per frame, recorded as the "target" image position.
    rng = np.random.default_rng(0)
    data.images[:] = 0
    pix = rng.integers(10, 54, (len(data.images), 2))
    data.images[np.arange(len(pix)), 0, pix[:, 1], pix[:, 0]] = 255
    data.env_state = ((pix + 0.5) / 64 * 2 - 1).astype(np.float32)
    s = ChunkSampler(data, Normalizer.from_stats(ds.stats), WordTokenizer.from_texts(data.tasks), 1, 4, 8,
                     pixel_index=[[[0, 1]]])
    b = s.sample(16, s.generator(0, 1), shift=4)
    for img, kp in zip(b["image"], b["keypoints"]):
        ys, xs = torch.nonzero(img[0, 0, :, :, 0], as_tuple=True)
        u, v = ((kp[0, 0, 0] + 1) / 2 * 64 - 0.5).tolist()
        assert (round(u), round(v)) == (int(xs[0]), int(ys[0]))


def test_balanced_sampling_draws_every_task_equally(tmp_path):
    tasks = ["reach the red cube", "press the button"]
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", make_features(["front"], 64, STATE_NAMES, ACTION_NAMES), fps=20)
    for i in range(8):  # 6 reach episodes to 2 press episodes, and longer ones for reach
        w.add_episode(synthetic_episode(rng, length=20 if i < 6 else 10, task=tasks[i >= 6]))
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    tok = WordTokenizer.from_texts(data.tasks)
    draws = {}
    for balance in ("none", "instruction", "task"):
        s = ChunkSampler(data, Normalizer.from_stats(ds.stats), tok, 1, 4, 8, balance=balance)
        i = torch.multinomial(s.weights, 20000, True, generator=torch.Generator().manual_seed(0)) if s.weights is not None \
            else torch.randint(0, s.n, (20000,))
        draws[balance] = float((torch.from_numpy(data.task_index)[i] == 0).float().mean())
        s.sample(4, s.generator(0, 0))  # the weighted draw runs
    assert abs(draws["none"] - 120 / 140) < 0.02
    assert abs(draws["instruction"] - 0.5) < 0.02 and abs(draws["task"] - 0.5) < 0.02
    with pytest.raises(ValueError, match="unknown balance 'scene'"):
        ChunkSampler(data, Normalizer.from_stats(ds.stats), tok, 1, 4, 8, balance="scene")


def test_paraphrases_are_drawn_as_instructions(tmp_path):
    write_dataset(tmp_path / "ds", episodes=3, tasks=["press the button"])
    (tmp_path / "ds" / "meta" / "paraphrases.json").write_text(json.dumps({"press the button": ["hit the button"]}))
    ds = LeRobotDataset(tmp_path / "ds")
    data = ds.load()
    tok = WordTokenizer.from_texts(data.tasks + ["hit the button"])
    s = ChunkSampler(data, Normalizer.from_stats(ds.stats), tok, 1, 4, 8)
    tokens = s.sample(64, s.generator(0, 0))["tokens"]
    seen = {tuple(t.tolist()) for t in tokens}
    assert seen == {tuple(tok.encode("press the button", 8)), tuple(tok.encode("hit the button", 8))}
