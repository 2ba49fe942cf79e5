"""The default VLA policy, readable top to bottom, and the on-disk policy format.

Tokens, in order: instruction words, image keypoint tokens from a language-conditioned CNN
(models/vision.py) for every history frame and camera, one proprio token per frame, and one
learned query per future action. The fusion backbone (by default a transformer with full
attention) mixes them all, and the action head reads the query tokens out as a normalised
action chunk.

The parts are chosen by name (models/heads, models/transformer.py, models/mamba.py,
models/moe.py): ``--policy.head`` regression | tokenized | dit | flow, ``--policy.backbone``
transformer | mamba for the fusion layers' token mixer, ``--policy.ffn`` mlp | moe for their
feed-forward, and ``--policy.attention`` for the attention kernel. A Mamba backbone scans the
tokens in the order above, so the queries, last, see everything.

Training can use privileged simulator state that the policy never sees as input: the image
positions of the task's target and goal supervise the first keypoint maps (a heatmap
cross-entropy), and their world positions are regressed from one extra query token. Both teach
the binding of instruction words to pixels, which behaviour cloning alone learns too slowly.

A policy directory holds config.json, model.safetensors and normalization.json and loads
with ``vlaforge.load_policy(dir)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlaforge.config import PolicyConfig, from_dict
from vlaforge.data.normalize import Normalizer
from vlaforge.data.tokenizer import SubwordTokenizer, WordTokenizer, load_tokenizer
from vlaforge.envs.base import check_observation
from vlaforge.files import atomic_dir, sha256_file
from vlaforge.models import heads, mamba, moe  # noqa: F401  (registration)
from vlaforge.models.language import TextEncoder
from vlaforge.models.transformer import Block
from vlaforge.models.vision import ConvEncoder, heatmap_loss
from vlaforge.registry import BACKBONES, FFNS, HEADS, POLICIES, TEXT_ENCODERS

DEFAULT_ACTION_RANGE = 3.0  # normalised action bounds (std units) when the data gives none
# A state this many training standard deviations out is not a state of the task (a unit mix-up, a
# sensor fault); far enough out, its features overflow and the actions turn NaN.
STATE_LIMIT = 1e4
CHECKED = ("model.safetensors", "normalization.json")  # files whose sha256 config.json records


@POLICIES.register("vla")
class VLAPolicy(nn.Module):
    def __init__(
        self, cfg: PolicyConfig, image_size: int, num_cameras: int, state_dim: int, action_dim: int, vocab_size: int,
        aux_dim: int = 0, action_range: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.vision = ConvEncoder(image_size, cfg.vision_channels, d)
        self.frame_embed = nn.Parameter(torch.zeros(1, cfg.n_obs_steps * num_cameras, 1, d))
        embed_dim = TEXT_ENCODERS.get(cfg.text_encoder).embed_dim
        self.text = TextEncoder(vocab_size, cfg.max_text_tokens, d, cfg.n_heads, cfg.dropout, embed_dim,
                                train_embed=embed_dim is None or cfg.text_finetune)
        self.state_proj = nn.Linear(state_dim, d)
        self.state_pos = nn.Parameter(torch.zeros(1, cfg.n_obs_steps, d))
        self.queries = nn.Parameter(torch.randn(1, cfg.chunk_size, d) * 0.02)
        # A dict keyed by layer number, so that a pipeline stage can drop the blocks of other
        # stages and keep the names (and checkpoint keys) of its own.
        mixer, ffn = BACKBONES.get(cfg.backbone), FFNS.get(cfg.ffn)
        self.blocks = nn.ModuleDict({str(i): Block(d, mixer(cfg), ffn(cfg), cfg.dropout) for i in range(cfg.n_layers)})
        self.ln_f = nn.LayerNorm(d)
        if action_range is None:
            action_range = ([-DEFAULT_ACTION_RANGE] * action_dim, [DEFAULT_ACTION_RANGE] * action_dim)
        low, high = (torch.tensor(r, dtype=torch.float32) for r in action_range)
        if low.shape != (action_dim,) or high.shape != (action_dim,) or not bool((high > low).all()):
            raise ValueError(f"action_range must be two lists of {action_dim} bounds with high > low, got {action_range}")
        self.head = HEADS.get(cfg.head)(cfg, action_dim, low, high)
        # Auxiliary "where is the target / goal" query, trained on privileged sim state only.
        self.aux_dim = aux_dim
        if aux_dim:
            self.aux_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.aux_head = nn.Linear(d, aux_dim)

    def forward(
        self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """image uint8 (B, T, V, H, W, 3), state (B, T, S), tokens (B, L) -> normalised actions
        (B, K, A); a sampling head draws its noise from ``generator``."""
        return self.head.predict(self._run(image, state, tokens)[0], generator)

    def _run(
        self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """-> query tokens for the head, auxiliary target/goal (or None), keypoint logit maps
        (B*T*V, K, H', W')."""
        x, mask, heatmaps = self.embed(image, state, tokens)
        for block in self.blocks.values():
            x = block(x, mask)
        return (*self.readout(x), heatmaps)

    def query_tokens(self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The action head's conditioning tokens (B, K, d): what RL fine-tuning reads its mean
        action and its value estimates from."""
        return self._run(image, state, tokens)[0]

    def embed(
        self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token sequence (B, N, d), its key mask (B, N) and the keypoint logit maps."""
        b, t, v = image.shape[:3]
        text, text_mask = self.text(tokens)
        patches, heatmaps = self.vision(image.flatten(0, 2), text, text_mask)  # (B*T*V, P, d)
        patches = patches.view(b, t * v, -1, patches.shape[-1]) + self.frame_embed
        patches = patches.flatten(1, 2)
        proprio = self.state_proj(state) + self.state_pos
        queries = [self.queries.expand(b, -1, -1)]
        if self.aux_dim:
            queries.append(self.aux_query.expand(b, -1, -1))
        x = torch.cat([text, patches.to(text.dtype), proprio.to(text.dtype), *[q.to(text.dtype) for q in queries]], dim=1)
        rest = x.shape[1] - text.shape[1]
        mask = torch.cat([text_mask, text_mask.new_ones(b, rest)], dim=1)
        return x, mask, heatmaps

    def visual_features(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The vision encoder's global (spatially pooled) token, one (d,) row per frame and
        camera: the appearance summary that feature alignment (``--train.align_dataset``)
        matches across domains."""
        text, text_mask = self.text(tokens)
        patches, _ = self.vision(image.flatten(0, 2), text, text_mask)
        return patches[:, -1].float()

    def readout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's query tokens (B, K, d); the auxiliary prediction from the last token."""
        x = self.ln_f(x)
        k = self.cfg.chunk_size
        if self.aux_dim:
            return x[:, -k - 1 : -1], self.aux_head(x[:, -1])
        return x[:, -k:], None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = bc_loss(self.head, *self._run(batch["image"], batch["state"], batch["tokens"]), batch)
        stats = self._routing_stats()
        if stats:
            loss = loss + self.cfg.moe_aux_weight * torch.stack([s["aux_loss"] for s in stats]).mean()
        return loss

    def _routing_stats(self) -> list[dict[str, torch.Tensor]]:
        """The last forward's routing statistics of every mixture-of-experts layer (none for MLPs)."""
        return [b.ffn.stats for b in self.blocks.values() if getattr(b.ffn, "stats", None)]

    def metrics(self) -> dict[str, float]:
        """Mixture-of-experts routing figures from the last forward, averaged over layers:
        dropped assignments and each expert's share of the kept ones."""
        stats = self._routing_stats()
        if not stats:
            return {}
        out = {"moe_dropped": float(torch.stack([s["dropped"] for s in stats]).mean()),
               "moe_balance_loss": float(torch.stack([s["aux_loss"].detach() for s in stats]).mean())}
        share = torch.stack([s["utilisation"] for s in stats]).mean(0)
        return out | {f"moe_expert{i}_share": float(v) for i, v in enumerate(share)}


def bc_loss(head: nn.Module, cond: torch.Tensor, aux: torch.Tensor | None, heatmaps: torch.Tensor,
            batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The action head's loss on the demonstrated chunk (steps past the episode end count
    zero); plus the target/goal regression L1 when the batch carries ``env_state`` and the
    heatmap cross-entropy when it carries their image positions (``keypoints``).

    Every term is a mean over a fixed number of slots per sample, so the mean of equal
    micro-batches' losses is the whole batch's loss: gradient accumulation and data
    parallelism then give exactly the large-batch update (for the sampling heads, in
    expectation over their noise)."""
    loss = head.loss(cond, batch["action"], batch["action_valid"])
    if aux is not None and "env_state" in batch:
        loss = loss + (aux.float() - batch["env_state"]).abs().mean()
    if "keypoints" in batch:
        loss = loss + heatmap_loss(heatmaps, batch["keypoints"].flatten(0, 2))
    return loss


def build_policy(cfg: PolicyConfig, spec: dict) -> nn.Module:
    cls = POLICIES.get(cfg.name)
    return cls(
        cfg, spec["image_size"], len(spec["cameras"]), spec["state_dim"], spec["action_dim"], spec["vocab_size"],
        spec.get("aux_dim", 0), spec.get("action_range"),
    )


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
        from vlaforge.deploy.artifact import load_deployed

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
