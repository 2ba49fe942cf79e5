"""Text encoders (models/language.py): the word tokenizer and the pretrained wordllama subword
embeddings. Skips with its reason when the wordllama wheel is not installed."""

import json

import numpy as np
import pytest
import torch
from helpers import write_dataset

import vlaforge
from vlaforge.data.tokenizer import SubwordTokenizer
from vlaforge.models.config import PolicyConfig
from vlaforge.registry import TEXT_ENCODERS
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.trainer import train

pytest.importorskip("wordllama", reason="the wordllama wheel (pip install 'vlaforge[language]') is not installed")
WL = TEXT_ENCODERS.get("wordllama")
TINY = PolicyConfig(d_model=32, n_layers=1, n_heads=2, chunk_size=4, vision_channels=[8, 8], text_encoder="wordllama")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ds"
    write_dataset(root, episodes=3, length=10)
    return root


def run(tmp_path, ds, name, **policy):
    cfg = TrainConfig(dataset=str(ds), output_dir=str(tmp_path / name), steps=8, batch_size=8, ckpt_every=8,
                      tracking="none", ema_decay=0.9, policy=PolicyConfig(**{**vars(TINY), **policy}),
                      optim=OptimConfig(warmup_steps=2))
    return train(cfg, show_progress=False)


def test_every_string_gets_real_subword_tokens():
    tok = WL.tokenizer([])
    assert len(tok) == 32000
    ids = tok.encode("grab the crimson sphere", 16)
    assert ids[0] == SubwordTokenizer.BOS and ids[-1] == 0 and 1 not in ids[1:]
    assert tok.pieces("grab the crimson sphere") == ["▁grab", "▁the", "▁crim", "son", "▁sphere"]
    for text in ["", "?", "...", "\x00", "🙂", "a" * 200]:
        ids = tok.encode(text, 16)
        assert len(ids) == 16 and ids[0] == SubwordTokenizer.BOS  # never an all-padding instruction
    assert 0 not in tok.encode("🙂 \x00 crimson", 16)[:8]  # byte fallback: no <unk> (id 0 is padding)


def test_pretrained_table_groups_synonyms():
    table, origin = WL.pretrained()
    assert table.shape == (32000, 256) and abs(table.pow(2).mean().item() - 1.0) < 1e-3
    assert origin["license"] == "MIT" and len(origin["weights_sha256"]) == 64
    tok = WL.tokenizer([])

    def vec(word):  # mean of the word's piece vectors, unit length
        return torch.nn.functional.normalize(table[[i for i in tok.encode(word, 8)[1:] if i]].mean(0), dim=0)

    cos = lambda a, b: float(vec(a) @ vec(b))  # noqa: E731
    assert cos("ball", "sphere") > cos("ball", "drawer") + 0.2
    assert cos("zone", "region") > cos("zone", "button") + 0.2
    assert cos("red", "crimson") > cos("blue", "crimson") + 0.1


def test_training_loads_the_frozen_table_and_the_policy_directory_carries_it(tmp_path, dataset):
    policy_dir = run(tmp_path, dataset, "frozen")
    table, origin = WL.pretrained()
    meta = json.loads((policy_dir / "config.json").read_text())
    assert meta["text_encoder"] == origin and meta["tokenizer"]["file"] == "tokenizer.json" and "vocab" not in meta
    policy = vlaforge.load_policy(policy_dir)
    torch.testing.assert_close(policy.model.text.embed.weight, table, rtol=0, atol=0)  # frozen, EMA'd unchanged
    tuned = vlaforge.load_policy(run(tmp_path, dataset, "tuned", text_finetune=True))
    assert not torch.equal(tuned.model.text.embed.weight, table)

    # Unseen words are read: two instructions that the word tokenizer would both turn into
    # <unk> give different actions.
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), "state": np.zeros(4, np.float32)}
    a = policy.act(obs | {"instruction": "grab the crimson sphere"})
    policy.reset()
    b = policy.act(obs | {"instruction": "grab the azure pyramid"})
    assert np.isfinite(a).all() and not np.allclose(a, b)
    policy.reset()
    assert np.isfinite(policy.act(obs | {"instruction": "?"})).all()  # the word tokenizer has no token for it


def test_a_tampered_tokenizer_file_is_refused(tmp_path, dataset):
    policy_dir = run(tmp_path, dataset, "run")
    path = policy_dir / "tokenizer.json"
    path.write_text(path.read_text().replace("▁crim", "▁crum", 1))
    with pytest.raises(ValueError, match="tokenizer.json does not match the sha256"):
        vlaforge.load_policy(policy_dir)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="lacks tokenizer.json"):
        vlaforge.load_policy(policy_dir)


def test_unknown_text_encoder_is_named(tmp_path, dataset):
    with pytest.raises(KeyError, match="unknown text encoder 'bert'; known: wordllama, words"):
        run(tmp_path, dataset, "bad", text_encoder="bert")
