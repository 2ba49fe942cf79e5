"""Self-supervised pretraining: the objectives learn on structured frames, the encoder loads
into a policy and is used by it, resume is exact, and bad input fails clearly."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import TINY_POLICY, write_dataset
from safetensors.torch import load_file

from vlaforge.cli import main
from vlaforge.data.augment import color_jitter
from vlaforge.train.config import PretrainConfig
from vlaforge.train.pretrain import pretrain

SMALL = dict(steps=80, batch_size=16, vision_channels=[8, 8], d_model=32)


def drifting_squares(images):
    """Two coloured squares drifting over the episode on a grey table: frames with structure."""
    rng = np.random.default_rng(int(images[0, 0, 0, 0, 0]))
    out = np.full(images.shape, 110, np.uint8)
    for _ in range(2):
        x, y = rng.integers(4, 44, 2)
        dx, dy = rng.integers(-1, 2, 2)
        colour = rng.integers(0, 255, 3)
        for i in range(len(images)):
            xi, yi = np.clip([x + dx * i, y + dy * i], 0, 52)
            out[i, :, yi:yi + 12, xi:xi + 12] = colour
    return out


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl") / "data"
    write_dataset(root, episodes=8, length=20, image_fn=drifting_squares)
    return root


@pytest.mark.parametrize("method,drop", [("mae", 0.2), ("simclr", 0.2), ("predictive", 0.2)])
def test_loss_falls(frames, tmp_path, method, drop):
    run = pretrain(PretrainConfig(datasets=[str(frames)], method=method, output_dir=str(tmp_path / method), **SMALL),
                   show_progress=False)
    s = json.loads((run / "pretrain.json").read_text())
    assert s["frames"] == sum(20 + i for i in range(8))
    assert s["loss_last"] < (1 - drop) * s["loss_first"], s
    weights = load_file(str(run / "encoder.safetensors"))
    assert weights and all(k.startswith("stages.") for k in weights)


def test_moco_trains_and_its_momentum_encoder_follows(frames, tmp_path):
    from vlaforge.models.ssl import MoCo
    from vlaforge.models.vision import ConvEncoder

    moco = MoCo(ConvEncoder(64, [8, 8], 32), queue=64)
    before = moco.key_encoder.stages[0].conv.weight.clone()
    opt = torch.optim.AdamW([p for p in moco.parameters() if p.requires_grad], lr=1e-2)
    imgs = torch.randint(0, 255, (16, 64, 64, 3), dtype=torch.uint8)
    loss = moco.loss(imgs, imgs, torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    moco.after_step()
    assert not torch.equal(moco.key_encoder.stages[0].conv.weight, before)  # moved towards the online encoder
    assert int(moco.queue_ptr) == 16
    assert moco.key_encoder.stages[0].conv.weight.grad is None


def test_resume_is_exact(frames, tmp_path):
    cfg = dict(datasets=[str(frames)], method="simclr", steps=20, batch_size=8, vision_channels=[8, 8], d_model=32,
               ckpt_every=10)
    whole = pretrain(PretrainConfig(output_dir=str(tmp_path / "whole"), **cfg), show_progress=False)
    part = tmp_path / "part"
    pretrain(PretrainConfig(output_dir=str(part), **cfg), show_progress=False)
    # An interruption after step 10: the later checkpoint and the encoder never got written.
    shutil.rmtree(part / "checkpoints" / "step_0000020")
    (part / "encoder.safetensors").unlink()
    resumed = pretrain(PretrainConfig(output_dir=str(part), resume=True, **cfg), show_progress=False)
    a, b = load_file(str(whole / "encoder.safetensors")), load_file(str(resumed / "encoder.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    losses = [json.loads(line)["loss"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20


def test_behaviour_cloning_starts_from_the_encoder(frames, tmp_path):
    run = pretrain(PretrainConfig(datasets=[str(frames)], method="mae", output_dir=str(tmp_path / "mae"), **SMALL),
                   show_progress=False)
    args = ["train", f"--dataset={frames}", "--steps=1", "--batch_size=4", "--tracking=none", "--ema_decay=0", "--optim.lr=1e-9"]
    assert main([*args, f"--output_dir={tmp_path / 'bc'}", f"--init_encoder={run}", *TINY_POLICY]) == 0
    policy = load_file(str(tmp_path / "bc" / "policy" / "model.safetensors"))
    encoder = load_file(str(run / "encoder.safetensors"))
    assert all(torch.allclose(policy[f"vision.{k}"], v, atol=1e-6) for k, v in encoder.items())
    meta = json.loads((tmp_path / "bc" / "policy" / "config.json").read_text())
    assert meta["init_encoder"]["method"] == "mae"
    # A policy of another width cannot take it, and says why.
    assert main([*args, f"--output_dir={tmp_path / 'wide'}", f"--init_encoder={run}", "--policy.d_model=64"]) == 2
    assert main([*args, f"--output_dir={tmp_path / 'none'}", f"--init_encoder={tmp_path}", *TINY_POLICY]) == 2


def test_bad_input(frames, tmp_path, capsys):
    assert main(["pretrain", f"--datasets=[{frames}]", "--method=byol", f"--output_dir={tmp_path / 'a'}"]) == 2
    assert "unknown self-supervised method 'byol'" in capsys.readouterr().err
    assert main(["pretrain", f"--datasets=[{frames}]", "--image_size=128", f"--output_dir={tmp_path / 'b'}"]) == 2
    assert "64px" in capsys.readouterr().err
    assert main(["pretrain", f"--datasets=[{tmp_path / 'missing'}]", f"--output_dir={tmp_path / 'c'}"]) == 2
    run = pretrain(PretrainConfig(datasets=[str(frames)], output_dir=str(tmp_path / "d"), **(SMALL | {"steps": 2})),
                   show_progress=False)
    assert main(["pretrain", f"--datasets=[{frames}]", f"--output_dir={run}"]) == 2  # never overwrites a run
    assert "already holds" in capsys.readouterr().err


def test_color_jitter_keeps_dtype_and_changes_colour():
    imgs = torch.full((4, 2, 8, 8, 3), 100, dtype=torch.uint8)
    imgs[:, :, :4] = 200
    out = color_jitter(imgs, 0.3, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == imgs.shape
    assert not torch.equal(out, imgs)
    assert torch.equal(out[:, 0], out[:, 1])  # one draw per sample: every frame alike
    assert torch.equal(color_jitter(imgs, 0.0, torch.Generator()), imgs)
