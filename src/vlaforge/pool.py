"""Map jobs over worker processes (or inline for one worker): shared by collection and evaluation.

Workers are spawned, not forked, so no torch/OpenMP or GL state is inherited; each one runs
``initializer(*initargs)`` once (load a policy, pin torch to one thread) and then takes jobs.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable, Iterable, Iterator


def map_in_workers(
    fn: Callable[[Any], Any],
    jobs: list,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple = (),
    ordered: bool = True,
) -> Iterator[Any]:
    """Yield ``fn(job)`` for every job; in job order when ``ordered``, else as they finish."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(fn, jobs)
        return
    with mp.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs) as pool:
        results: Iterable = pool.imap(fn, jobs) if ordered else pool.imap_unordered(fn, jobs)
        yield from results
