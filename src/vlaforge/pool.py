"""Map jobs over worker processes (or inline for one worker): shared by collection and evaluation.

Workers are spawned, not forked, so no torch/OpenMP or GL state is inherited; each one runs
``initializer(*initargs)`` once (load a policy, pin torch to one thread) and then takes jobs.
A worker that dies (killed for memory, a crash in native code) stops the map with an error
naming the cause, rather than leaving it waiting for a result that will never come; a worker
whose parent dies exits too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

_ENV: dict = {}


class WorkerDied(RuntimeError):
    """A worker process ended abruptly while jobs were running."""


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
        import torch

        threads = torch.get_num_threads()  # the initializer pins torch to one thread: not the caller's
        try:
            initializer(*initargs)
            yield from map(fn, jobs)
        finally:
            torch.set_num_threads(threads)
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start_worker,
                             initargs=(os.getpid(), initializer, initargs)) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        try:
            for future in futures if ordered else as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            raise WorkerDied(
                "a worker process died while running jobs (killed for memory? `dmesg` shows OOM kills); "
                "collection keeps the episodes written so far and resumes with --resume"
            ) from None
        finally:
            for future in futures:  # stopped early (an error, or the caller stopped reading)
                future.cancel()


def _start_worker(parent: int, initializer: Callable[..., None], initargs: tuple) -> None:
    """Watch the parent, then run the caller's initializer. A worker whose parent was killed
    (kill -9 leaves no chance to stop the pool) would otherwise finish its queue of jobs and
    linger; it is reparented, which the watcher sees within a second, and exits."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    initializer(*initargs)


def worker_env(key: tuple, make: Callable[[], Any]) -> Any:
    """This worker's env for ``key``, made on first use. Jobs arrive task by task, so one env is
    kept and the previous one closed when the key changes: caching one per task held 50
    Meta-World envs with their renderers in each worker on MT50 (~11 GB) until it was killed."""
    if _ENV.get("key") != key:
        old = _ENV.pop("env", None)
        _ENV.pop("key", None)
        if old is not None:
            old.close()
        _ENV["env"] = make()
        _ENV["key"] = key
    return _ENV["env"]
