"""Instruction-grounded keypoints: projection of task points, heatmap supervision, word binding."""

import numpy as np
import pytest
import torch

from vlaforge.data.sampler import pixel_columns
from vlaforge.envs.tabletop import TabletopEnv
from vlaforge.envs.tabletop.scene import COLORS
from vlaforge.models.language import TextEncoder
from vlaforge.models.vision import ConvEncoder, cell_centres, heatmap_loss


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
