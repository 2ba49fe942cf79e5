import json

import numpy as np
import pytest
import torch

import vlaforge
from vlaforge.data.normalize import Normalizer
from vlaforge.data.tokenizer import WordTokenizer
from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy
from vlaforge.runtime.policy import STATE_LIMIT, Policy


def make_policy(n_obs_steps=1, **kw):
    tok = WordTokenizer.from_texts(["reach the red cube", "press the button"])
    spec = {"image_size": 64, "cameras": ["front"], "state_dim": 4, "action_dim": 4, "vocab_size": len(tok)}
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(n_obs_steps=n_obs_steps, **kw), spec)
    norm = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32), np.full(4, 0.5, np.float32))
    meta = {"spec": {k: v for k, v in spec.items() if k != "vocab_size"}, "suite": "tabletop", "env": {}, "tasks": ["reach"]}
    return Policy(model, norm, tok, meta)


def obs(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
            "state": rng.normal(size=4).astype(np.float32), "instruction": "reach the red cube"}


def test_default_size_in_range():
    n = sum(p.numel() for p in make_policy().model.parameters())
    assert 1e6 <= n <= 10e6


def test_save_load_identical_actions(tmp_path):
    p = make_policy(n_obs_steps=2)
    with torch.no_grad():
        for prm in p.model.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)  # make the weights non-trivial
    p.save(tmp_path / "pol")
    q = vlaforge.load_policy(tmp_path / "pol")
    for s in range(3):
        a, b = p.act(obs(s)), q.act(obs(s))
        assert a.shape == (8, 4)
        np.testing.assert_array_equal(a, b)
    assert sorted(x.name for x in (tmp_path / "pol").iterdir()) == ["config.json", "model.safetensors", "normalization.json"]


def test_instruction_changes_action():
    p = make_policy()
    with torch.no_grad():
        for prm in p.model.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)
    o = obs()
    a = p.act(o)
    p.reset()
    b = p.act(dict(o, instruction="press the button"))
    assert not np.allclose(a, b)


def test_bad_observations_rejected():
    p = make_policy()
    with pytest.raises(ValueError, match="image must be uint8"):
        p.act(dict(obs(), image=np.zeros((1, 32, 32, 3), np.uint8)))
    with pytest.raises(ValueError, match="image must be uint8"):
        p.act(dict(obs(), image=np.zeros((1, 64, 64, 3), np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        p.act(dict(obs(), state=np.array([0, np.nan, 0, 0], np.float32)))
    with pytest.raises(ValueError, match="missing 'instruction'"):
        p.act({"image": obs()["image"], "state": obs()["state"]})


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        vlaforge.load_policy(tmp_path)
    make_policy().save(tmp_path / "pol")
    (tmp_path / "pol/model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="model.safetensors does not match its sha256"):
        vlaforge.load_policy(tmp_path / "pol")
    with pytest.raises(ValueError, match="do not load"):
        vlaforge.load_policy(tmp_path / "pol", verify=False)


def test_policies_saved_before_selectable_backbones_load(tmp_path):
    """Older policy files name the block parts attn (with one fused qkv) and mlp."""
    p = make_policy()
    p.save(tmp_path / "pol")
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "pol/model.safetensors"))
    old = {}
    for k, v in state.items():
        k = k.replace(".mixer.", ".attn.").replace(".ffn.", ".mlp.")
        old[k] = v
    for prefix in sorted({k.rsplit(".q.", 1)[0] for k in old if ".attn.q." in k}):
        for kind in ("weight", "bias"):
            old[f"{prefix}.qkv.{kind}"] = torch.cat([old.pop(f"{prefix}.{n}.{kind}") for n in "qkv"])
    assert any(".attn.qkv." in k for k in old) and not any(".mixer." in k for k in old)
    save_file(old, str(tmp_path / "pol/model.safetensors"))
    config = tmp_path / "pol/config.json"  # such files also predate recorded checksums
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "sha256"}))
    q = vlaforge.load_policy(tmp_path / "pol")
    np.testing.assert_array_equal(p.act(obs()), q.act(obs()))


def test_act_never_returns_a_non_finite_action():
    """Fuzz: random unicode and control-character instructions, and extreme finite states. Every
    call returns finite actions or raises ValueError naming the state; none returns NaN."""
    policy = make_policy()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    alphabet = [chr(c) for c in (*range(1, 32), *range(32, 127), 0x301, 0x202E, 0x4E2D, 0x1F642)]
    for i in range(60):
        text = "".join(rng.choice(alphabet, size=rng.integers(1, 12))) if i % 3 else "?"
        if not text.strip():
            continue  # empty instructions are refused by check_observation (tested elsewhere)
        policy.reset()
        assert np.isfinite(policy.act({"image": image, "state": np.zeros(4, np.float32), "instruction": text})).all()
    for value in (1e3, -5e3, 1e20, 3e38, -3e38):
        policy.reset()
        obs = {"image": image, "state": np.full(4, value, np.float32), "instruction": "reach the red cube"}
        if abs(value) <= STATE_LIMIT:  # make_policy's state mean is 0 and its std 1
            assert np.isfinite(policy.act(obs)).all()
        else:
            with pytest.raises(ValueError, match=r"state\[0\] .* standard deviations from the training data"):
                policy.act(obs)


def test_a_non_finite_prediction_raises_instead_of_being_returned(monkeypatch):
    policy = make_policy()
    monkeypatch.setattr(policy, "predict_rows", lambda *a: np.full((1, 8, 4), np.nan, np.float32))
    obs = {"image": np.zeros((1, 64, 64, 3), np.uint8), "state": np.zeros(4, np.float32), "instruction": "reach"}
    with pytest.raises(FloatingPointError, match="non-finite action"):
        policy.act(obs)


def test_a_committed_v1_policy_directory_keeps_loading_and_acting_the_same():
    """tests/data/policy_v1 was written by the format of 2026-12 (config.json with sha256,
    model.safetensors, normalization.json); a change that stops it loading, or changes what it
    does, breaks every policy users have on disk."""
    import json
    from pathlib import Path

    from vlaforge import load_policy

    root = Path(__file__).parent / "data"
    expected = json.loads((root / "policy_v1_expected.json").read_text())
    policy = load_policy(root / "policy_v1")
    rng = np.random.default_rng(expected["image_seed"])
    obs = {"image": rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8),
           "state": np.asarray(expected["state"], np.float32), "instruction": expected["instruction"]}
    np.testing.assert_allclose(policy.act(obs), expected["actions"], atol=1e-5)
