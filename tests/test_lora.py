"""LoRA and head-only fine-tuning: only the adapters (or the head) train, merged weights act as
the unmerged adapters do, adapters round-trip through their file, and the trainer exports both."""

import numpy as np
import pytest
import torch
from helpers import write_dataset

from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.runtime.policy import load_policy
from vlaforge.train.config import TrainConfig
from vlaforge.train.lora import LoRALinear, add_adapters, apply_adapter, merged_state_dict, save_adapter
from vlaforge.train.trainer import train

TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8])
SPEC = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4, "vocab_size": 12}


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (2, 1, 1, 64, 64, 3), generator=g, dtype=torch.uint8),
            torch.randn(2, 1, 4, generator=g), torch.randint(1, 12, (2, 16), generator=g))


def test_only_adapters_train_and_merging_changes_nothing(tmp_path):
    torch.manual_seed(0)
    model = build_policy(TINY, SPEC).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(*inputs())
    names = add_adapters(model, rank=4, alpha=8.0)
    assert names and all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert "head" not in names and all(not n.startswith("head.") for n in names)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".lora_a", ".lora_b")) for n in trainable)
    torch.testing.assert_close(model(*inputs()), before)  # B = 0: the adapted model starts as the base
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        model(*inputs()).square().mean().backward()
        opt.step()
        opt.zero_grad()
    state = model.state_dict()
    for key, value in base.items():  # every base weight is untouched, under its wrapped name
        wrapped = key if key in state else key.rpartition(".")[0] + ".base." + key.rpartition(".")[2]
        torch.testing.assert_close(state[wrapped], value, rtol=0, atol=0)
    after = model(*inputs(1))
    original = build_policy(TINY, SPEC).eval()
    original.load_state_dict(base)
    assert not torch.allclose(after, original(*inputs(1)))  # the adapters did learn something
    merged = build_policy(TINY, SPEC).eval()
    merged.load_state_dict(merged_state_dict(state, 8.0 / 4))
    torch.testing.assert_close(merged(*inputs(1)), after, rtol=1e-5, atol=1e-5)
    path = save_adapter(state, tmp_path / "adapter.safetensors", 4, 8.0)
    fresh = build_policy(TINY, SPEC).eval()
    fresh.load_state_dict(base)
    torch.testing.assert_close(apply_adapter(fresh, path)(*inputs(1)), after, rtol=1e-5, atol=1e-5)


def test_the_trainer_fine_tunes_with_lora_or_the_head_only(tmp_path):
    write_dataset(tmp_path / "data", episodes=3)
    common = dict(dataset=str(tmp_path / "data"), batch_size=4, tracking="none")
    base_dir = train(TrainConfig(output_dir=str(tmp_path / "base"), steps=3, policy=TINY, **common), show_progress=False)
    base = load_policy(base_dir)
    lora_dir = train(TrainConfig(output_dir=str(tmp_path / "lora"), steps=3, init_from=str(base_dir), finetune="lora",
                                 lora_rank=4, **common), show_progress=False)
    tuned = load_policy(lora_dir)
    meta = tuned.meta["finetune"]
    assert meta["mode"] == "lora" and meta["rank"] == 4 and 0 < meta["trainable_params"] < sum(
        p.numel() for p in base.model.parameters()) / 5
    adapter = lora_dir.with_name("policy.adapter.safetensors")
    assert adapter.is_file()
    unmerged = load_policy(base_dir)
    apply_adapter(unmerged.model, adapter)
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 255, base.image_shape, dtype=np.uint8), "state": rng.normal(size=4).astype(np.float32),
           "instruction": "reach the red cube"}
    np.testing.assert_allclose(unmerged.act(obs), tuned.act(obs), atol=1e-5)
    assert not np.allclose(tuned.act(obs), base.act(obs))
    head_dir = train(TrainConfig(output_dir=str(tmp_path / "head"), steps=3, init_from=str(base_dir), finetune="head",
                                 **common), show_progress=False)
    head, ref = load_policy(head_dir).model.state_dict(), base.model.state_dict()
    changed = {k for k in ref if k in head and not torch.equal(head[k], ref[k]) and head[k].shape == ref[k].shape}
    assert changed and all(k.startswith("head.") for k in changed)


@pytest.mark.parametrize("kw, message", [
    ({"finetune": "adapters"}, "unknown finetune mode 'adapters'; known: full, lora, head"),
    ({"finetune": "lora"}, "--finetune=lora adapts a trained policy: give it --init_from=DIR"),
])
def test_bad_finetune_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(dataset=str(tmp_path), output_dir=str(tmp_path / "run"), steps=1, **kw), show_progress=False)
