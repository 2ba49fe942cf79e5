"""Instruction-grounded keypoints: projection of task points, heatmap supervision, word binding,
and co-training the grounding losses on rendered scenes without demonstrations."""

import functools
import json

import numpy as np
import pytest
import torch
from helpers import write_dataset

from vlaforge.data.dataset import LeRobotDataset
from vlaforge.data.grounding import render_scenes
from vlaforge.data.sampler import pixel_columns
from vlaforge.envs import policy_env
from vlaforge.envs.randomization.wrapper import domain_env
from vlaforge.envs.tabletop import TabletopEnv
from vlaforge.envs.tabletop.scene import COLORS
from vlaforge.eval.localization import localization_error
from vlaforge.models.config import PolicyConfig
from vlaforge.models.language import TextEncoder
from vlaforge.models.vision import ConvEncoder, cell_centres, heatmap_loss
from vlaforge.runtime.policy import load_policy
from vlaforge.seeds import EVAL_SEEDS, GROUNDING_SCENES, RL_SCENES, TASK_STRIDE
from vlaforge.train import parallel
from vlaforge.train.config import TrainConfig
from vlaforge.train.techniques import Grounding
from vlaforge.train.trainer import build_run, train


@pytest.mark.parametrize("family", ["reach", "pick_place", "put_in_bowl"])
def test_projected_target_lands_on_the_named_object(family):
    env = TabletopEnv(task=family, image_size=128)
    hits = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        colour = env.episode.objects[env.episode.target][1]
        u, v = env.task_points()[6:8]
        px = obs["image"][0, int((v + 1) / 2 * 128), int((u + 1) / 2 * 128)] / 255.0
        nearest = min(COLORS, key=lambda c: np.sum((np.asarray(COLORS[c]) - px) ** 2))
        hits += nearest == colour
    env.close()
    assert hits >= 5  # the gripper may hide a target now and then


def test_heatmap_loss_expectation_is_unbiased():
    points = torch.tensor([[[0.33, -0.71], [-0.9, 0.05]]])
    h = w = 16
    # The loss is minimised by logits equal to the log of the bilinear label.
    logits = torch.zeros(1, 4, h, w, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        heatmap_loss(logits, points).backward()
        opt.step()
    expected = logits[0, :2].flatten(1).softmax(-1) @ cell_centres(h, w, torch.device("cpu"))
    torch.testing.assert_close(expected, points[0], atol=0.02, rtol=0)
    assert heatmap_loss(logits.detach(), points) < heatmap_loss(torch.zeros(1, 4, h, w), points)
    with pytest.raises(ValueError, match="policy.keypoints >= 2"):
        heatmap_loss(torch.zeros(1, 1, h, w), points)


def test_policy_keypoints_set_the_vision_tokens_and_the_fusion_sequence():
    from vlaforge.models.policy import build_policy

    spec = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4, "vocab_size": 10, "aux_dim": 10}
    image = torch.zeros(2, 1, 1, 64, 64, 3, dtype=torch.uint8)
    state, tokens = torch.zeros(2, 1, 4), torch.tensor([[1, 2, 0], [3, 0, 0]])
    for k in (32, 16, 8):
        model = build_policy(PolicyConfig(keypoints=k, max_text_tokens=3), spec)
        x, mask, heatmaps = model.embed(image, state, tokens)
        assert model.vision.num_tokens == k + 1 and heatmaps.shape[:2] == (2, k)
        assert x.shape[1] == mask.shape[1] == 3 + (k + 1) + 1 + 8 + 1  # words, vision, proprio, queries, aux


def test_keypoint_learns_to_follow_the_named_colour():
    """Two coloured squares per image; the instruction names one; the supervised keypoint must
    find the named square in new images, i.e. words are bound to pixels, not memorised."""
    gen = torch.Generator().manual_seed(0)
    vocab = {"<pad>": 0, "red": 1, "blue": 2}

    def batch(n):
        images = torch.zeros(n, 64, 64, 3, dtype=torch.uint8)
        pos = torch.randint(4, 56, (n, 2, 2), generator=gen)  # (n, square, xy) top-left corner
        for i in range(n):
            for s, rgb in enumerate(([220, 30, 30], [30, 60, 220])):
                x, y = pos[i, s].tolist()
                images[i, y : y + 6, x : x + 6] = torch.tensor(rgb, dtype=torch.uint8)
        named = torch.randint(0, 2, (n,), generator=gen)
        tokens = (named + 1)[:, None]
        centre = pos[torch.arange(n), named].float() + 3.0
        return images, tokens, (centre / 64 * 2 - 1)[:, None]

    torch.manual_seed(0)
    text = TextEncoder(len(vocab), 4, 64, 4, 0.0)
    enc = ConvEncoder(64, [32, 32, 32], 64, keypoints=4)
    opt = torch.optim.AdamW([*text.parameters(), *enc.parameters()], lr=3e-3)
    for _ in range(150):
        images, tokens, points = batch(32)
        words, mask = text(tokens)
        _, logits = enc(images, words, mask)
        loss = heatmap_loss(logits, points)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, tokens, points = batch(64)
    with torch.no_grad():
        words, mask = text(tokens)
        _, logits = enc(images, words, mask)
    found = logits[:, :1].flatten(2).softmax(-1) @ cell_centres(*logits.shape[-2:], torch.device("cpu"))
    error_px = ((found - points).norm(dim=-1) * 32).mean()
    assert error_px < 3.0, f"named square located within {error_px:.1f} px"


def test_pixel_columns():
    names = ["target_x", "front.target_u", "front.target_v", "front.goal_u", "front.goal_v",
             "top.target_u", "top.target_v", "top.goal_u", "top.goal_v"]
    assert pixel_columns(names, ["front"]) == [[[1, 2], [3, 4]]]
    assert pixel_columns(names, ["top", "front"]) == [[[5, 6], [7, 8]], [[1, 2], [3, 4]]]
    assert pixel_columns(names, ["side"]) is None
    assert pixel_columns(["target_x"], ["front"]) is None


def tabletop_env(task: str):
    return TabletopEnv(task=task)


def test_grounding_scenes_are_reproducible_labelled_and_in_their_own_seed_range():
    a = render_scenes(tabletop_env, ["reach", "pick_place"], 3, max_random_steps=4)
    b = render_scenes(tabletop_env, ["reach", "pick_place"], 3, max_random_steps=4)
    assert a.images.shape == (6, 1, 64, 64, 3) and a.images.dtype == np.uint8
    assert a.state.shape == (6, 4) and a.task_points.shape == (6, 10)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.task_points, b.task_points)
    assert a.instructions == b.instructions and len(set(map(bytes, a.images))) == 6  # six different scenes
    assert all(s.startswith(("reach", "go to", "move the gripper")) for s in a.instructions[:3])
    assert RL_SCENES < GROUNDING_SCENES and GROUNDING_SCENES + 2 * TASK_STRIDE < EVAL_SEEDS
    env = TabletopEnv(task="pick_place")  # the label is the env's own, for the scene drawn from that seed
    env.reset(seed=GROUNDING_SCENES + TASK_STRIDE)
    np.testing.assert_allclose(a.task_points[3, :3], env.task_points()[:3], atol=0.05)  # random steps may nudge it
    with pytest.raises(ValueError, match="per_task"):
        render_scenes(tabletop_env, ["reach"], 0)
    # Split over worker processes, every scene is still the one its seed draws, in the same order.
    c = render_scenes(functools.partial(policy_env, {"suite": "tabletop", "env": {}}, split="train"),
                      ["reach", "pick_place"], 3, max_random_steps=4, workers=2)
    np.testing.assert_array_equal(a.images, c.images)
    np.testing.assert_array_equal(a.task_points, c.task_points)
    assert a.instructions == c.instructions


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from vlaforge.cli import main

    root = tmp_path_factory.mktemp("grounding")
    assert main(["collect", "--env.tasks=[reach,press_button]", "--episodes_per_task=2", "--workers=1",
                 f"--output={root / 'data'}"]) == 0
    return root / "data"


def tiny(data, out, **kw) -> TrainConfig:
    return TrainConfig(dataset=str(data), output_dir=str(out), steps=3, batch_size=8, tracking="none", ema_decay=0.0,
                       policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8]), **kw)


def test_grounding_frames_replace_a_share_of_each_batch_and_carry_no_actions(demos, tmp_path):
    cfg = tiny(demos, tmp_path / "run", grounding_scenes=4, grounding_fraction=0.25)
    d, device = parallel.init(cfg.parallel, torch.device("cpu"))
    run = build_run(cfg, d, device)
    (technique,) = [t for t in run.techniques if isinstance(t, Grounding)]
    plain = run.sampler.sample(8, run.sampler.generator(0, 5))
    (mixed,) = technique.batches(5, iter([plain]))
    assert mixed["image"].shape == plain["image"].shape and mixed["keypoints"].shape == plain["keypoints"].shape
    for key in plain:
        torch.testing.assert_close(mixed[key][:6], plain[key][:6])  # the demonstrations kept
    assert not mixed["action_valid"][6:].any() and mixed["action_valid"][:6].equal(plain["action_valid"][:6])
    frames = render_scenes(tabletop_env, ["reach", "press_button"], 4)
    labels = torch.from_numpy(run.sampler.standardise_env_state(frames.task_points))
    assert all(any(torch.allclose(row, label) for label in labels) for row in mixed["env_state"][6:])
    (again,) = technique.batches(5, iter([plain]))  # the step's seed decides which scenes
    assert again["env_state"].equal(mixed["env_state"])
    # No behaviour-cloning signal from them: the head's loss on grounding rows alone is zero.
    cond = torch.randn(2, cfg.policy.chunk_size, 32)
    assert run.model.head.loss(cond, mixed["action"][6:], mixed["action_valid"][6:]).item() == 0.0


def test_grounding_scenes_are_rendered_in_the_datasets_domain(tmp_path):
    """A policy trained on visually randomized data gets randomized grounding scenes: each the
    scene its seed draws, in the look that seed draws, not the nominal simulation's."""
    from vlaforge.cli import main

    assert main(["collect", "--env.tasks=[reach]", "--episodes_per_task=1", "--workers=1", "--domain.preset=dr-visual",
                 f"--output={tmp_path / 'data'}"]) == 0
    cfg = tiny(tmp_path / "data", tmp_path / "run", grounding_scenes=3)
    d, device = parallel.init(cfg.parallel, torch.device("cpu"))
    (technique,) = [t for t in build_run(cfg, d, device).techniques if isinstance(t, Grounding)]
    def scenes(domain: dict | None):
        return render_scenes(functools.partial(domain_env, "tabletop", split="train", env_cfg={}, domain=domain),
                             ["reach"], 3)

    nominal, randomized = scenes(None), scenes(LeRobotDataset(tmp_path / "data").info["vlaforge"]["domain"])
    np.testing.assert_array_equal(technique.image[:, 0].numpy(), randomized.images)
    assert all((a != b).any() for a, b in zip(randomized.images, nominal.images))  # every scene re-coloured
    # The same scenes underneath (target and goal in the world), seen from the drawn camera poses.
    np.testing.assert_allclose(randomized.task_points[:, :6], nominal.task_points[:, :6])
    assert not np.allclose(randomized.task_points[:, 6:], nominal.task_points[:, 6:])


def test_training_with_grounding_scenes_records_them_and_refuses_bad_settings(demos, tmp_path):
    policy = train(tiny(demos, tmp_path / "run", grounding_scenes=3), show_progress=False)
    meta = json.loads((policy / "config.json").read_text())
    assert meta["grounding"]["scenes_per_task"] == 3 and meta["grounding"]["fraction"] == 0.25
    with pytest.raises(ValueError, match="grounding_fraction"):
        train(tiny(demos, tmp_path / "bad", grounding_scenes=3, grounding_fraction=1.0), show_progress=False)
    with pytest.raises(ValueError, match="grounding_scenes must be >= 0"):
        train(tiny(demos, tmp_path / "bad2", grounding_scenes=-1), show_progress=False)
    write_dataset(tmp_path / "synthetic", episodes=2)  # no privileged task points
    with pytest.raises(ValueError, match="synthetic"):
        train(tiny(tmp_path / "synthetic", tmp_path / "bad3", grounding_scenes=3), show_progress=False)
    assert not (tmp_path / "bad" / "policy").exists()


def test_localization_error_reads_the_aux_head_in_metres(demos, tmp_path):
    policy = load_policy(train(tiny(demos, tmp_path / "run"), show_progress=False))
    # Planted: a head that always answers 0 in standard units, i.e. the dataset's mean position.
    policy.model.aux_prediction = lambda image, state, tokens: torch.zeros(1, policy.model.aux_dim)
    data = LeRobotDataset(str(demos)).load(verify=False)
    firsts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    mean = data.env_state.mean(0)
    expected = np.mean([np.linalg.norm(mean[:2] - data.env_state[i, :2]) for i in firsts])
    got = localization_error(policy, str(demos), scenes_per_task=2)
    assert got["train_frames"]["frames"] == len(firsts) and got["new_scenes"]["frames"] == 4
    assert got["train_frames"]["target_m"] == pytest.approx(expected, rel=1e-5)
    assert 0.01 < got["new_scenes"]["target_m"] < 0.5
    write_dataset(tmp_path / "synthetic", episodes=2)
    with pytest.raises(ValueError, match="synthetic"):
        localization_error(policy, str(tmp_path / "synthetic"))
