"""Training batches: observation history, proprio, instruction tokens and action chunks.

The whole dataset lives in memory as tensors and batches are gathered by index, which on
small datasets is far faster than a DataLoader. Batch indices come from a generator seeded
by (seed, step, micro-step), so a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from vlaforge.data.augment import apply_jitter, jitter_factors, random_shift
from vlaforge.data.dataset import EpisodeArrays
from vlaforge.data.normalize import Normalizer
from vlaforge.data.tokenizer import WordTokenizer


class ChunkSampler:
    def __init__(
        self,
        data: EpisodeArrays,
        normalizer: Normalizer,
        tokenizer: WordTokenizer,
        n_obs_steps: int,
        chunk_size: int,
        max_text_tokens: int,
        pixel_index: list[list[list[int]]] | None = None,
        balance: str = "none",
    ) -> None:
        self.n = len(data.action)
        self.weights = frame_weights(data, balance)
        starts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
        ends = starts + data.lengths
        ep_start, ep_end = starts[data.episode], ends[data.episode]
        idx = np.arange(self.n)
        # History frames before the episode start repeat the first frame.
        hist = idx[:, None] + np.arange(-n_obs_steps + 1, 1)[None]
        self.obs_index = torch.from_numpy(np.maximum(hist, ep_start[:, None]))
        fut = idx[:, None] + np.arange(chunk_size)[None]
        self.action_valid = torch.from_numpy(fut < ep_end[:, None])
        self.action_index = torch.from_numpy(np.minimum(fut, ep_end[:, None] - 1))
        self.images = torch.from_numpy(data.images)  # uint8 (N, V, H, W, 3)
        self.state = torch.from_numpy(normalizer.norm_state(data.state).astype(np.float32))
        self.action = torch.from_numpy(normalizer.norm_action(data.action).astype(np.float32))
        tokens = torch.tensor([tokenizer.encode(t, max_text_tokens) for t in data.tasks], dtype=torch.long)
        self.task_index = torch.from_numpy(data.task_index)
        self.tokens = tokens[self.task_index]
        # Paraphrases (meta/paraphrases.json): each draw of a frame reads one of its task's
        # wordings, the original included, uniformly.
        self.wordings = None
        if data.paraphrases:
            options = [[t, *data.paraphrases.get(t, [])] for t in data.tasks]
            width = max(len(o) for o in options)
            self.wordings = torch.tensor([[tokenizer.encode(o[j % len(o)], max_text_tokens) for j in range(width)]
                                          for o in options], dtype=torch.long)  # (tasks, width, L)
            self.wording_count = torch.tensor([len(o) for o in options])
        self.env_state = self.env_state_stats = None
        if data.env_state is not None:  # auxiliary target, standardised over the dataset
            es = data.env_state
            self.env_state_stats = env_state_stats(es)
            self.env_state = torch.from_numpy(self.standardise_env_state(es))
        self.pixel_index = pixel_index
        self.keypoints = None
        if pixel_index is not None:  # (N, V, P, 2) image coordinates of the grounded points
            self.keypoints = torch.from_numpy(data.env_state[:, np.asarray(pixel_index)].astype(np.float32))

    def standardise_env_state(self, env_state: np.ndarray) -> np.ndarray:
        """Privileged env state (N, E) in the dataset's standard units, as the auxiliary loss reads it."""
        mean, std = self.env_state_stats
        return ((env_state - mean) / std).astype(np.float32)

    def generator(self, seed: int, step: int, micro: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(hash((seed, step, micro)) & 0x7FFF_FFFF_FFFF)

    def sample(
        self, batch_size: int, gen: torch.Generator, shift: int = 0, part: tuple[int, int] = (0, 1), jitter: float = 0.0
    ) -> dict[str, torch.Tensor]:
        """A random batch; ``shift`` > 0 applies random-shift augmentation of up to that many
        pixels, ``jitter`` > 0 colour jitter of that strength.

        ``part`` = (rank, ranks) draws the batch of ``batch_size * ranks`` samples and returns the
        rank's slice, so data-parallel ranks together see what one process with the whole batch
        sees, draw for draw.
        """
        rank, ranks = part
        total = batch_size * ranks
        if self.weights is None:
            i = torch.randint(0, self.n, (total,), generator=gen)
        else:
            i = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        return self.augment(self.gather(i[mine]), self.task_index[i], mine, gen, shift, jitter)

    def draw(self, seed: int, step: int, micro: int, batch_size: int, shift: int = 0,
             part: tuple[int, int] = (0, 1), jitter: float = 0.0) -> dict[str, torch.Tensor]:
        """Micro-batch ``micro`` of training step ``step``: ``sample`` with the step's generator
        (the interface the trainer calls, shared with the streaming sampler)."""
        return self.sample(batch_size, self.generator(seed, step, micro), shift, part, jitter)

    def augment(self, batch: dict[str, torch.Tensor], task_index: torch.Tensor, mine: slice, gen: torch.Generator,
                shift: int = 0, jitter: float = 0.0) -> dict[str, torch.Tensor]:
        """Wordings, colour jitter and shifts for a drawn batch. The random draws cover every
        rank's samples (``task_index`` (total,)) and ``mine`` selects this rank's, so ranks
        together draw what one process with the whole batch draws."""
        total = len(task_index)
        if self.wordings is not None:
            pick = (torch.rand(total, generator=gen) * self.wording_count[task_index]).long()
            batch["tokens"] = self.wordings[task_index, pick][mine]
        if jitter > 0:
            factors = [f[mine] for f in jitter_factors(total, jitter, gen)]
            batch["image"] = apply_jitter(batch["image"], *factors)
        if shift > 0:
            dy = torch.randint(-shift, shift + 1, (total,), generator=gen)
            dx = torch.randint(-shift, shift + 1, (total,), generator=gen)
            offset = torch.stack([dx, dy], -1)[mine]
            batch["image"] = random_shift(batch["image"], offset)
            if "keypoints" in batch:  # content moved by -offset pixels; labels follow it
                size = torch.tensor(batch["image"].shape[-2:-4:-1], dtype=torch.float32)  # (W, H)
                batch["keypoints"] = batch["keypoints"] - (2 * offset.float() / size)[:, None, None, None]
        return batch

    @property
    def env_state_dim(self) -> int | None:
        return None if self.env_state is None else int(self.env_state.shape[1])

    def gather(self, i: torch.Tensor) -> dict[str, torch.Tensor]:
        oi = self.obs_index[i]
        ai = self.action_index[i]
        extra = {} if self.env_state is None else {"env_state": self.env_state[i]}
        if self.keypoints is not None:
            extra["keypoints"] = self.keypoints[oi]  # (B, T, V, P, 2)
        return extra | {
            "image": self.images[oi],  # (B, T, V, H, W, 3) uint8
            "state": self.state[oi],  # (B, T, S)
            "tokens": self.tokens[i],  # (B, L)
            "action": self.action[ai],  # (B, K, A)
            "action_valid": self.action_valid[i],  # (B, K)
        }


def env_state_stats(env_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored at 1e-3) of a dataset's privileged env state (N, E): the standard
    units the auxiliary target/goal head is trained and read in."""
    return env_state.mean(0), np.maximum(env_state.std(0), 1e-3)


BALANCE = ("none", "task", "instruction")


def frame_weights(data: EpisodeArrays, balance: str) -> torch.Tensor | None:
    """Sampling weights under which every task (or every instruction) is drawn equally often,
    and within one, every frame; None for uniform frames (``balance="none"``)."""
    if balance not in BALANCE:
        raise ValueError(f"unknown balance {balance!r}; known: {', '.join(BALANCE)}")
    if balance == "none":
        return None
    if balance == "task":
        names = data.episode_tasks or [data.tasks[data.task_index[s]] for s in np.cumsum(data.lengths) - data.lengths]
        group = np.unique(np.asarray(names), return_inverse=True)[1][data.episode]
    else:
        group = data.task_index
    counts = np.bincount(group)
    return torch.from_numpy(1.0 / counts[group])


def pixel_columns(names: list[str], cameras: list[str]) -> list[list[list[int]]] | None:
    """Column indices ``[camera][point] -> [u, v]`` of the image-coordinate env_state columns
    (named ``<camera>.<point>_u`` / ``_v``), or None when some camera has none."""
    index = []
    for cam in cameras:
        points = [n[len(cam) + 1 : -2] for n in names if n.startswith(cam + ".") and n.endswith("_u")]
        if not points or (index and len(points) != len(index[0])):
            return None
        index.append([[names.index(f"{cam}.{p}_u"), names.index(f"{cam}.{p}_v")] for p in points])
    return index
