"""Training batches streamed from disk with bounded memory: the sampler for datasets larger than
memory (``train --loader=stream``, or ``auto`` when decoding everything would not fit).

Each data-parallel rank reads its own shard of episodes, a window of ``window`` whole episodes
at a time (whole, so observation histories and action chunks stay inside one episode, as in the
in-memory sampler). Per epoch e the episodes are permuted (seed, e); rank r takes every
ranks-th of them, starting at r; its episodes form consecutive windows, and the frames of a
window are permuted (seed, e, window, r): the shuffle buffer. The rank's stream is the
concatenation of these frame orders, epoch after epoch, and batch b is positions
[b * B, (b + 1) * B) of it. Every position is a pure function of (seed, rank, ranks, b), so a
resumed run draws exactly the batches it would have drawn, and within an epoch every frame is
drawn once, by one rank. Memory holds at most two windows (the current one and, across a
boundary, the next); the next window is decoded on a background thread while the current one
trains.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from vlaforge.data.dataset import ENV_STATE, EpisodeArrays, LeRobotDataset
from vlaforge.data.normalize import Normalizer
from vlaforge.data.sampler import ChunkSampler
from vlaforge.data.tokenizer import WordTokenizer


def _perm(n: int, *key: int) -> np.ndarray:
    return np.random.default_rng([abs(k) for k in key]).permutation(n)


class StreamingSampler:
    """The ``ChunkSampler`` interface (``draw``, ``generator``, ``standardise_env_state``,
    ``env_state_dim``, ``pixel_index``) over a dataset read window by window."""

    def __init__(self, ds: LeRobotDataset, normalizer: Normalizer, tokenizer: WordTokenizer, n_obs_steps: int,
                 chunk_size: int, max_text_tokens: int, pixel_index: list[list[list[int]]] | None = None,
                 window: int = 64, accumulate: int = 1) -> None:
        if window < 1:
            raise ValueError(f"stream_window must be >= 1 episode, got {window}")
        self.ds, self.window, self.accumulate = ds, window, accumulate
        self.args = (normalizer, tokenizer, n_obs_steps, chunk_size, max_text_tokens, pixel_index)
        self.pixel_index = pixel_index
        self.lengths = np.array([e["length"] for e in ds.episodes], dtype=np.int64)
        stats = ds.stats.get(ENV_STATE)
        self.env_state_dim = None
        if ENV_STATE in ds.features:
            if not stats:
                raise ValueError(f"{ds.root}: streaming needs {ENV_STATE} mean/std in meta/stats.json")
            mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
            self.env_state_stats = (mean, np.maximum(std, 1e-3))  # as env_state_stats floors them
            self.env_state_dim = len(mean)
        self._shards: dict[tuple[int, ...], list[np.ndarray]] = {}  # the current (and last) epoch's windows
        self._epoch_frames: dict[tuple[int, ...], int] = {}
        self._cache: dict[tuple[int, ...], ChunkSampler] = {}
        self._pending: dict[tuple[int, ...], threading.Thread] = {}
        self._lock = threading.Lock()
        self.windows_loaded = 0  # decoded windows so far (tests count them)

    # --- the schedule: pure functions of (seed, rank, ranks, position)

    def shard(self, seed: int, epoch: int, rank: int, ranks: int) -> list[np.ndarray]:
        """The rank's episodes in epoch ``epoch``, as windows (arrays of episode positions)."""
        key = (seed, epoch, rank, ranks)
        if key not in self._shards:  # a permutation of every episode: computed once per epoch
            mine = _perm(len(self.lengths), seed, epoch)[rank::ranks]
            self._shards = {k: v for k, v in self._shards.items() if k[1] >= epoch - 1}  # this epoch and the last
            self._shards[key] = [mine[i:i + self.window] for i in range(0, len(mine), self.window)]
        return self._shards[key]

    def locate(self, seed: int, rank: int, ranks: int, position: int) -> tuple[int, int, int]:
        """(epoch, window, offset in the window's frame order) of the rank's stream position."""
        if len(self.lengths) < ranks:
            raise ValueError(f"{len(self.lengths)} episodes cannot be sharded over {ranks} ranks")
        epoch = 0
        while True:
            key = (seed, epoch, rank, ranks)
            if key not in self._epoch_frames:  # the rank's frames in each epoch: a few ints, kept
                self._epoch_frames[key] = int(self.lengths[_perm(len(self.lengths), seed, epoch)[rank::ranks]].sum())
            if position < self._epoch_frames[key]:
                break
            position -= self._epoch_frames[key]
            epoch += 1
        windows = self.shard(seed, epoch, rank, ranks)
        for w, eps in enumerate(windows):
            size = int(self.lengths[eps].sum())
            if position < size:
                return epoch, w, position
            position -= size
        raise AssertionError("unreachable: position inside the epoch")

    def frames(self, seed: int, epoch: int, w: int, rank: int, ranks: int) -> tuple[np.ndarray, np.ndarray]:
        """The window's episodes (dataset order) and its frame order: indices into the window's
        frames as ``load(episodes=...)`` lays them out."""
        eps = np.sort(self.shard(seed, epoch, rank, ranks)[w])
        return eps, _perm(int(self.lengths[eps].sum()), seed, epoch, w, rank)

    # --- windows

    def _load(self, key: tuple[int, ...], eps: np.ndarray) -> None:
        data: EpisodeArrays = self.ds.load(verify=False, episodes=eps.tolist())
        sampler = ChunkSampler(data, *self.args)
        if self.env_state_dim is not None:  # the dataset's units, not the window's
            sampler.env_state = torch.from_numpy(self.standardise_env_state(data.env_state))
        with self._lock:
            self._cache[key] = sampler
            self.windows_loaded += 1

    def _window(self, key: tuple[int, ...]) -> ChunkSampler:
        """The window ``key`` = (seed, epoch, window, rank, ranks), decoded (or waited for), with
        earlier windows released and the next one's decoding started."""
        thread = self._pending.pop(key, None)
        if thread is not None:
            thread.join()
        if key not in self._cache:
            self._load(key, self.frames(*key)[0])
        for old in [k for k in self._cache if k != key and k < key]:  # windows already passed
            del self._cache[old]
        nxt = self._next_key(key)
        if nxt not in self._cache and nxt not in self._pending:  # decode the next window meanwhile
            t = threading.Thread(target=self._load, args=(nxt, self.frames(*nxt)[0]), daemon=True)
            self._pending[nxt] = t
            t.start()
        return self._cache[key]

    def _next_key(self, key: tuple[int, ...]) -> tuple[int, ...]:
        seed, epoch, w, rank, ranks = key
        if w + 1 < len(self.shard(seed, epoch, rank, ranks)):
            return seed, epoch, w + 1, rank, ranks
        return seed, epoch + 1, 0, rank, ranks

    # --- batches

    generator = ChunkSampler.generator  # the same per-step augmentation streams

    def standardise_env_state(self, env_state: np.ndarray) -> np.ndarray:
        mean, std = self.env_state_stats
        return ((env_state - mean) / std).astype(np.float32)

    def positions(self, seed: int, rank: int, ranks: int, start: int, count: int) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Stream positions [start, start + count) as (window key, frame indices in it) runs."""
        out, position = [], start
        while count > 0:
            epoch, w, offset = self.locate(seed, rank, ranks, position)
            _, order = self.frames(seed, epoch, w, rank, ranks)
            take = min(count, len(order) - offset)
            out.append(((seed, epoch, w, rank, ranks), order[offset:offset + take]))
            position, count = position + take, count - take
        return out

    def draw(self, seed: int, step: int, micro: int, batch_size: int, shift: int = 0,
             part: tuple[int, int] = (0, 1), jitter: float = 0.0) -> dict[str, torch.Tensor]:
        """Batch ``step * accumulate + micro`` of this rank's stream (``part`` = (rank, ranks)),
        augmented as ``ChunkSampler.sample`` augments (its random draws from the step's
        generator)."""
        rank, ranks = part
        b = step * self.accumulate + micro
        parts, tasks = [], []
        for key, frames in self.positions(seed, rank, ranks, b * batch_size, batch_size):
            sampler = self._window(key)
            i = torch.from_numpy(frames)
            parts.append(sampler.gather(i))
            tasks.append(sampler.task_index[i])
        batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return sampler.augment(batch, torch.cat(tasks), slice(None), self.generator(seed, step, micro), shift, jitter)

    def epoch_frames(self, seed: int, epoch: int, rank: int, ranks: int) -> Sequence[tuple[int, int]]:
        """(episode position, frame in episode) of every frame the rank draws in ``epoch``, in
        stream order: what the sharding test checks for losses and duplicates."""
        out = []
        for w, _ in enumerate(self.shard(seed, epoch, rank, ranks)):
            eps, order = self.frames(seed, epoch, w, rank, ranks)
            pairs = [(int(e), f) for e in eps for f in range(int(self.lengths[e]))]
            out += [pairs[i] for i in order]
        return out
