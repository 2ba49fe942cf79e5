"""The default VLA policy network, readable top to bottom.

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

The runtime around the network (observation history, normaliser, tokenizer, ``act``) and the
policy-directory format are in runtime/policy.py.
"""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models import heads, mamba, moe  # noqa: F401  (registration)
from vlaforge.models.config import PolicyConfig
from vlaforge.models.language import TextEncoder
from vlaforge.models.transformer import Block
from vlaforge.models.vision import ConvEncoder, heatmap_loss
from vlaforge.registry import BACKBONES, FFNS, HEADS, POLICIES, TEXT_ENCODERS

DEFAULT_ACTION_RANGE = 3.0  # normalised action bounds (std units) when the data gives none


@POLICIES.register("vla")
class VLAPolicy(nn.Module):
    def __init__(
        self, cfg: PolicyConfig, image_size: int, num_cameras: int, state_dim: int, action_dim: int, vocab_size: int,
        aux_dim: int = 0, action_range: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.vision = ConvEncoder(image_size, cfg.vision_channels, d, cfg.keypoints)
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
        self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None, guide: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """image uint8 (B, T, V, H, W, 3), state (B, T, S), tokens (B, L) -> normalised actions
        (B, K, A); a sampling head starts from ``noise`` (B, K, A) or draws it from ``generator``,
        and with ``guide`` (prefix (B, K, A), weights (B, K)) inpaints committed actions."""
        cond = self._run(image, state, tokens)[0]
        if guide is not None:
            return self.head.predict(cond, generator, noise, guide)
        return self.head.predict(cond, generator) if noise is None else self.head.predict(cond, generator, noise)

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

    def aux_prediction(self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's target and goal (B, aux_dim), in the training data's standard units
        (eval/localization.py reads it against the truth)."""
        if not self.aux_dim:
            raise ValueError("this policy has no auxiliary target/goal head")
        return self._run(image, state, tokens)[1]

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
