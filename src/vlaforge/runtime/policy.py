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
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
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
from vlaforge.registry import HEADS

# A state this many training standard deviations out is not a state of the task (a unit mix-up, a
# sensor fault); far enough out, its features overflow and the actions turn NaN.
STATE_LIMIT = 1e4
CHECKED = ("model.safetensors", "normalization.json")  # files whose sha256 config.json records


_POLICY_THREAD = "vlaforge-policy"
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def policy_thread() -> ThreadPoolExecutor:
    """The process's one thread for running policies when several threads want to (servers,
    the asynchronous control loop). Why one: torch's OpenMP runtime gives every OS thread that
    runs parallel ops its own team of workers, and two teams on the same cores fight: ``act``
    on a second thread, once the first has run torch, is several times slower on 2 cores
    (benchmarks/serving.py measures it)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix=_POLICY_THREAD)
        return _executor


def on_policy_thread(fn: Callable, *args):
    """``fn(*args)`` run on ``policy_thread()`` (directly when already there); its result or error."""
    if threading.current_thread().name.startswith(_POLICY_THREAD):
        return fn(*args)
    return policy_thread().submit(fn, *args).result()


class Session:
    """What one robot (one episode) carries between calls: the observation history the policy
    stacks, and the generator a sampling head's initial noise comes from. A server keeps one per
    connected robot, so robots never see each other's frames."""

    def __init__(self, n_obs_steps: int, device: torch.device | str = "cpu") -> None:
        self.history: deque = deque(maxlen=n_obs_steps)
        self.noise = torch.Generator(device)

    def reset(self, seed: int = 0) -> None:
        self.history.clear()
        self.noise.manual_seed(seed)


def rtc_weights(chunk: int, delay: int, overlap: int) -> np.ndarray:
    """RTC's soft mask over a chunk of ``chunk`` steps (Black et al. 2025, eq. 5): 1 for the
    ``delay`` steps that execute while the chunk is computed, c (e^c - 1) / (e - 1) with
    c = (overlap - i) / (overlap - delay + 1) over the rest of the ``overlap`` with the committed
    actions, 0 after it. (chunk,) float32."""
    i = np.arange(chunk, dtype=np.float64)
    delay, overlap = min(max(delay, 0), chunk), min(max(overlap, 0), chunk)
    c = (overlap - i) / max(overlap - delay + 1, 1)
    w = np.where(i < delay, 1.0, np.where(i < overlap, c * np.expm1(c) / np.expm1(1.0), 0.0))
    return w.astype(np.float32)


class Policy:
    """A trained policy with its normaliser and tokenizer: ``act(obs)`` returns an action chunk."""

    def __init__(self, model: nn.Module, normalizer: Normalizer, tokenizer: WordTokenizer | SubwordTokenizer,
                 meta: dict) -> None:
        self.model = model.eval()
        self._setup(model.cfg, normalizer, tokenizer, meta, next(model.parameters()).device)

    def _setup(self, cfg: PolicyConfig, normalizer: Normalizer, tokenizer: WordTokenizer | SubwordTokenizer,
               meta: dict, device: torch.device | str = "cpu") -> None:
        """What every runtime of a policy shares: config, normaliser, tokenizer, input shapes."""
        self.cfg = cfg
        self.normalizer, self.tokenizer, self.meta = normalizer, tokenizer, meta
        spec = meta["spec"]
        self.image_shape = (len(spec["cameras"]), spec["image_size"], spec["image_size"], 3)
        self.state_dim, self.action_dim = spec["state_dim"], spec["action_dim"]
        self.samples = HEADS.get(cfg.head).samples
        self.device = torch.device(device)
        self.session = self.new_session()

    def new_session(self) -> Session:
        """A fresh history and noise generator (seed 0), e.g. for another robot."""
        session = Session(self.cfg.n_obs_steps, self.device)
        session.reset()
        return session

    def reset(self, seed: int = 0) -> None:
        """Forget the observation history and restart the head's noise from ``seed`` (call at
        every episode start), so an episode's sampled chunks are reproducible."""
        self.session.reset(seed)

    def act(self, obs: dict) -> np.ndarray:
        """One observation dict -> (chunk_size, action_dim) float32 actions in env units.

        Raises ValueError for an observation outside the contract (``check_observation``, or a
        state ``STATE_LIMIT`` standard deviations from the training data) and FloatingPointError
        rather than return a non-finite action."""
        out = self.act_many([obs], [self.session])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def act_many(self, observations: list[dict], sessions: list[Session]) -> list[np.ndarray | Exception]:
        """One observation per session -> one action chunk each (as ``act`` returns it), from a
        single forward pass over all of them. A row that ``act`` would refuse gets its exception
        in its place (ValueError, FloatingPointError), and the others are unaffected: one robot's
        bad frame never fails another's request. Each session's noise comes from its own
        generator, so a batched row equals the same call made alone (up to float rounding)."""
        if len(observations) != len(sessions) or len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("act_many needs one observation per session, and distinct sessions")
        out: list[np.ndarray | Exception] = [ValueError("not run")] * len(observations)
        rows, inputs = [], []
        for i, (obs, session) in enumerate(zip(observations, sessions)):
            try:
                inputs.append(self.inputs(obs, session))
                rows.append(i)
            except ValueError as e:
                out[i] = e
        if not rows:
            return out
        noise = torch.cat([self._initial_noise(sessions[i]) for i in rows]) if self.samples else None
        images, states, tokens = (torch.cat(parts) for parts in zip(*inputs))
        for i, pred in zip(rows, self.predict_rows(images, states, tokens, noise)):
            out[i] = self._env_units(pred)
        return out

    def _env_units(self, pred: np.ndarray) -> np.ndarray | FloatingPointError:
        """A normalised chunk (K, A) -> float32 env-unit actions clipped to [-1, 1], or the error
        for a non-finite one (never returned as actions)."""
        if not np.all(np.isfinite(pred)):
            return FloatingPointError("the policy produced a non-finite action; refusing to return it")
        return np.clip(self.normalizer.unnorm_action(pred), -1.0, 1.0).astype(np.float32)

    def act_inpainted(self, obs: dict, committed: np.ndarray, delay: int) -> np.ndarray:
        """Real-time chunking (RTC, Black et al. 2025): the next chunk for ``obs`` generated to
        continue ``committed`` (P, A), the actions of the current chunk from this tick on in env
        units. Its first ``delay`` steps (executed while this chunk is computed) are held to
        them, the rest of the overlap is guided with RTC's exponentially decaying weights, and
        the steps past the overlap are free. Needs a sampling head (flow, dit) and the PyTorch
        runtime; -> (K, A) as ``act``."""
        if not self.samples or isinstance(self, RuntimePolicy):
            raise ValueError(f"real-time chunking inpaints a sampling head's chunk in PyTorch; this policy's head is "
                             f"{self.cfg.head!r}{' on a deployed runtime' if isinstance(self, RuntimePolicy) else ''} "
                             "(use temporal ensembling instead)")
        k = self.cfg.chunk_size
        committed = np.asarray(committed, np.float64)[:k]
        prefix = np.zeros((k, self.action_dim), np.float32)
        prefix[: len(committed)] = self.normalizer.norm_action(committed)
        guide = (torch.from_numpy(prefix)[None], torch.from_numpy(rtc_weights(k, delay, len(committed)))[None])
        pred = self.predict_rows(*self.inputs(obs), self._initial_noise(self.session), guide)[0]
        chunk = self._env_units(pred)
        if isinstance(chunk, Exception):
            raise chunk
        return chunk

    def inputs(self, obs: dict, session: Session | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check ``obs``, push it onto the session's history (the policy's own by default) and
        return the model inputs: uint8 images (1, T, V, H, W, 3), normalised states (1, T, S) and
        instruction tokens (1, L)."""
        history = (session or self.session).history
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
        if not history:
            history.extend([(image, state)] * self.cfg.n_obs_steps)
        else:
            history.append((image, state))
        images = torch.stack([h[0] for h in history])[None]
        states = torch.stack([h[1] for h in history])[None].float()
        tokens = torch.tensor([self.tokenizer.encode(obs["instruction"], self.cfg.max_text_tokens)])
        return images, states, tokens

    def predict(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        """Model inputs -> the normalised action chunk (K, A) of the first batch element (a
        sampling head draws its noise from the policy's session)."""
        noise = self._initial_noise(self.session) if self.samples else None
        return self.predict_rows(images[:1], states[:1], tokens[:1], noise)[0]

    def _initial_noise(self, session: Session) -> torch.Tensor:
        """A sampling head's starting noise (1, K, A), the next draw of ``session``'s generator."""
        return torch.randn(1, self.cfg.chunk_size, self.action_dim, generator=session.noise, device=self.device)

    @torch.no_grad()
    def predict_rows(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor,
                     noise: torch.Tensor | None = None,
                     guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        """Model inputs of B rows (and a sampling head's initial noise (B, K, A); for real-time
        chunking the guide (prefix (B, K, A), weights (B, K))) -> the normalised action chunks
        (B, K, A), in one forward pass."""
        args = [t.to(self.device) for t in (images, states, tokens)]
        if noise is None:
            out = self.model(*args)
        else:
            extra = () if guide is None else (tuple(t.to(self.device) for t in guide),)
            out = self.model(*args, None, noise.to(self.device), *extra)
        return out.float().cpu().numpy()

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
    """Load a policy directory written by ``Policy.save`` (or the trainer), a deployed one
    (``vlaforge export`` / ``vlaforge quantize``: its ``deploy.json`` names the runtime), or a
    registered version (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``: vlaforge.runtime.registry).
    ``verify`` checks every file against the sha256 recorded when it was written."""
    if str(directory).startswith("models:/"):
        from vlaforge.runtime.registry import resolve_policy

        directory = resolve_policy(str(directory))
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
    """A policy whose network call is ``predict_fn`` (a compiled, quantized or ORT network) on
    one row: batched calls run row by row."""

    def __init__(self, base: Policy, predict_fn: Callable) -> None:
        self._setup(base.cfg, base.normalizer, base.tokenizer, base.meta)
        self._predict_fn = predict_fn

    def predict_rows(self, images: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor,
                     noise: torch.Tensor | None = None,
                     guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
        if guide is not None:
            raise ValueError("a deployed runtime runs its exported graph, which takes no inpainting guide")
        return np.stack([self._predict_fn(images[i : i + 1], states[i : i + 1], tokens[i : i + 1],
                                          *(() if noise is None else (noise[i : i + 1],)))
                         for i in range(len(images))])


class WithNoise(nn.Module):
    """A sampling policy network with its initial noise (B, K, A) as a fourth input instead of a
    generator: the form graph exports (ONNX, PT2E) take, deterministic given its inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.model(image, state, tokens, None, noise)


def example_inputs(policy, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random model inputs of the policy's shapes (images, states, tokens of real vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    t = policy.cfg.n_obs_steps
    images = torch.randint(0, 256, (batch, t, *policy.image_shape), generator=g, dtype=torch.uint8)
    states = torch.randn(batch, t, policy.state_dim, generator=g)
    tokens = torch.randint(1, len(policy.tokenizer), (batch, policy.cfg.max_text_tokens), generator=g)
    return images, states, tokens
