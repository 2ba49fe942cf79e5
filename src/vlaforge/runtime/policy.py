"""A policy at run time, and the policy directory it is stored as.

``Policy`` wraps a network with what acting needs around it: the observation history, the
normaliser and the tokenizer; ``act(obs)`` returns an action chunk in env units, finite or an
error. A policy directory holds config.json (with the sha256 of the files below), model.safetensors
and normalization.json (+ the tokenizer's files); a deployed one adds deploy.json, which names a
runtime from the ``DEPLOY_RUNTIMES`` registry (runtime/backends.py). ``load_policy`` reads either,
so evaluation, benchmarks and the control loop run a deployed policy exactly as a trained one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlaforge.config import from_dict
from vlaforge.data.normalize import Normalizer
from vlaforge.data.tokenizer import SubwordTokenizer, WordTokenizer, load_tokenizer
from vlaforge.envs.base import check_observation
from vlaforge.files import atomic_dir, sha256_file
from vlaforge.models.config import PolicyConfig
from vlaforge.models.policy import build_policy

# A state this many training standard deviations out is not a state of the task (a unit mix-up, a
# sensor fault); far enough out, its features overflow and the actions turn NaN.
STATE_LIMIT = 1e4
CHECKED = ("model.safetensors", "normalization.json")  # files whose sha256 config.json records


class Policy:
    """A trained policy with its normaliser and tokenizer: ``act(obs)`` returns an action chunk."""

    def __init__(self, model: nn.Module, normalizer: Normalizer, tokenizer: WordTokenizer | SubwordTokenizer,
                 meta: dict) -> None:
        self.model = model.eval()
        self._setup(model.cfg, normalizer, tokenizer, meta)
        self._noise = torch.Generator(next(model.parameters()).device)
        self.reset()

    def _setup(self, cfg: PolicyConfig, normalizer: Normalizer, tokenizer: WordTokenizer | SubwordTokenizer,
               meta: dict) -> None:
        """What every runtime of a policy shares: config, normaliser, tokenizer, input shapes."""
        self.cfg = cfg
        self.normalizer, self.tokenizer, self.meta = normalizer, tokenizer, meta
        spec = meta["spec"]
        self.image_shape = (len(spec["cameras"]), spec["image_size"], spec["image_size"], 3)
        self.state_dim = spec["state_dim"]
        self._history: deque = deque(maxlen=cfg.n_obs_steps)

    def reset(self, seed: int = 0) -> None:
        """Forget the observation history and restart the head's noise from ``seed`` (call at
        every episode start), so an episode's sampled chunks are reproducible."""
        self._history.clear()
        self._noise.manual_seed(seed)

    def act(self, obs: dict) -> np.ndarray:
        """One observation dict -> (chunk_size, action_dim) float32 actions in env units.

        Raises ValueError for an observation outside the contract (``check_observation``, or a
        state ``STATE_LIMIT`` standard deviations from the training data) and FloatingPointError
        rather than return a non-finite action."""
        pred = self.predict(*self.inputs(obs))
        if not np.all(np.isfinite(pred)):
            raise FloatingPointError("the policy produced a non-finite action; refusing to return it")
        return np.clip(self.normalizer.unnorm_action(pred), -1.0, 1.0).astype(np.float32)

    def inputs(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check ``obs``, push it onto the history and return the model inputs: uint8 images
        (1, T, V, H, W, 3), normalised states (1, T, S) and instruction tokens (1, L)."""
        check_observation(obs, self.image_shape, self.state_dim)
        image = torch.from_numpy(np.ascontiguousarray(obs["image"]))
        normed = self.normalizer.norm_state(np.asarray(obs["state"], np.float64))
        far = np.abs(normed)
        if not np.all(far <= STATE_LIMIT):
            i = int(np.argmax(np.where(np.isfinite(far), far, np.inf)))
            value = float(np.asarray(obs["state"])[i])
            raise ValueError(f"observation state[{i}] = {value:.3g} is {far[i]:.3g} standard deviations from the "
                             f"training data (limit {STATE_LIMIT:g}): not a state this policy knows")
        state = torch.from_numpy(normed.astype(np.float32))
        if not self._history:
            self._history.extend([(image, state)] * self.cfg.n_obs_steps)
        else:
            self._history.append((image, state))
        images = torch.stack([h[0] for h in self._history])[None]
        states = torch.stack([h[1] for h in self._history])[None].float()
        tokens = torch.tensor([self.tokenizer.encode(obs["instruction"], self.cfg.max_text_tokens)])
        return images, states, tokens

    @torch.no_grad()
    def predict(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        """Model inputs -> the normalised action chunk (K, A) of the first batch element."""
        device = next(self.model.parameters()).device
        out = self.model(images.to(device), states.to(device), tokens.to(device), self._noise)
        return out[0].float().cpu().numpy()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the policy directory atomically (a temporary directory renamed into place)."""
        out = Path(directory)
        with atomic_dir(out, replace=True) as tmp:
            state = {k: v.detach().float().contiguous().cpu() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            self.normalizer.save(tmp / "normalization.json")
            meta = dict(self.meta, policy=dataclasses.asdict(self.cfg), **self.tokenizer.save(tmp),
                        sha256={name: sha256_file(tmp / name) for name in CHECKED})
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        return out


def load_policy(directory: str | os.PathLike, device: str = "cpu", verify: bool = True) -> Policy:
    """Load a policy directory written by ``Policy.save`` (or the trainer), or a deployed one
    (``vlaforge export`` / ``vlaforge quantize``: its ``deploy.json`` names the runtime).
    ``verify`` checks every file against the sha256 recorded when it was written."""
    d = Path(directory)
    if (d / "deploy.json").is_file():
        from vlaforge.runtime.backends import load_deployed

        return load_deployed(d, verify)
    return load_torch_policy(d, device, verify)


def check_sha256(path: Path, expected: str | None, record: Path) -> None:
    """Raise ValueError when ``path``'s content differs from the sha256 ``record`` holds for it."""
    if expected is not None and sha256_file(path) != expected:
        raise ValueError(f"{path} does not match its sha256 in {record}: the file changed after it was written "
                         "(corruption or an edit); refusing to act with it")


def load_torch_policy(d: Path, device: str = "cpu", verify: bool = True) -> Policy:
    """The PyTorch policy stored in ``d`` (weights, config, normaliser), ignoring any deploy.json.
    Directories written before checksums were recorded load unverified."""
    for name in ("config.json", *CHECKED):
        if not (d / name).is_file():
            raise FileNotFoundError(f"policy directory {d} lacks {name}")
    try:
        meta = json.loads((d / "config.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"policy config {d / 'config.json'} must be a JSON object, got {type(meta).__name__}")
        sums = meta.pop("sha256", {})
        if verify:
            for name in CHECKED:
                check_sha256(d / name, sums.get(name), d / "config.json")
        cfg = from_dict(PolicyConfig, meta["policy"])
        tokenizer = load_tokenizer(d, meta)
        spec = dict(meta["spec"], vocab_size=len(tokenizer))
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise ValueError(f"policy config {d / 'config.json'} is unreadable: {e}") from None
    model = build_policy(cfg, spec)
    try:
        model.load_state_dict(load_file(str(d / "model.safetensors")))
    except Exception as e:
        raise ValueError(f"policy weights {d / 'model.safetensors'} do not load: {e}") from None
    meta.pop("policy"), meta.pop("vocab", None), meta.pop("tokenizer", None)
    normalizer = Normalizer.load(d / "normalization.json", spec["state_dim"], spec["action_dim"])
    return Policy(model.to(device), normalizer, tokenizer, meta)


class RuntimePolicy(Policy):
    """A policy whose network call is ``predict_fn`` (a compiled, quantized or ORT network)."""

    def __init__(self, base: Policy, predict_fn: Callable) -> None:
        self._setup(base.cfg, base.normalizer, base.tokenizer, base.meta)
        self._predict_fn = predict_fn
        self.reset()

    def reset(self, seed: int = 0) -> None:
        self._history.clear()

    def predict(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        return self._predict_fn(images, states, tokens)


def example_inputs(policy, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random model inputs of the policy's shapes (images, states, tokens of real vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    t = policy.cfg.n_obs_steps
    images = torch.randint(0, 256, (batch, t, *policy.image_shape), generator=g, dtype=torch.uint8)
    states = torch.randn(batch, t, policy.state_dim, generator=g)
    tokens = torch.randint(1, len(policy.tokenizer), (batch, policy.cfg.max_text_tokens), generator=g)
    return images, states, tokens
