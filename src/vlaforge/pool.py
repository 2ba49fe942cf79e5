"""Map jobs over worker processes (or inline for one worker): shared by collection and evaluation.

Two backends run the same jobs. ``local``: a process pool on this machine. Workers are spawned,
not forked, so no torch/OpenMP or GL state is inherited; each one runs ``initializer(*initargs)``
once (load a policy, pin torch to one thread) and then takes jobs. A worker that dies (killed for
memory, a crash in native code) stops the map with an error naming the cause, rather than leaving
it waiting for a result that will never come; a worker whose parent dies exits too.

``ray``: each job is a Ray task on a cluster (an existing one at ``address``, or one started on
this machine). Ray reuses its worker processes, so the initializer runs once per worker process
and map, as here. A task whose worker process or node dies is run again (Ray's
``max_retries``); the caller receives every job's result exactly once, so the journal a
collection or evaluation writes neither loses nor repeats an episode. Jobs are seeded, so both
backends return the same results.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

BACKENDS = ("local", "ray")
RAY_RETRIES = 3  # runs of a job whose worker died, after the first
_ENV: dict = {}
_RAY: dict = {}


class WorkerDied(RuntimeError):
    """A worker process ended abruptly while jobs were running."""


def single_thread() -> None:
    """The initializer of workers that need nothing loaded: torch on one thread each, so that
    the workers together do not oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)


def map_in_workers(
    fn: Callable[[Any], Any],
    jobs: list,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple = (),
    ordered: bool = True,
    backend: str = "local",
    address: str = "",
) -> Iterator[Any]:
    """Yield ``fn(job)`` for every job; in job order when ``ordered``, else as they finish.
    ``workers`` jobs run at once (for ``ray``, 0 = one per CPU of the cluster); ``address`` names
    the Ray cluster (empty: start one on this machine)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "ray":
        yield from _map_ray(fn, jobs, workers, initializer, initargs, ordered, address)
        return
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


def _map_ray(fn: Callable[[Any], Any], jobs: list, workers: int, initializer: Callable[..., None],
             initargs: tuple, ordered: bool, address: str) -> Iterator[Any]:
    """The ray backend of ``map_in_workers``: ``workers`` tasks running at once, results yielded
    as ``ordered`` asks; the tasks still running are cancelled if the caller stops. Where Ray's
    CPU count already caps the tasks running (a cluster started here with one CPU per worker, or
    ``workers=0``: the whole cluster), one more task per worker waits queued at the cluster, so a
    worker starts its next job without a round trip to this process."""
    ray = _ray(address, workers)
    queued = workers <= 0 or not address
    if workers <= 0:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    in_flight = 2 * workers if queued else workers
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_ray_job)
    init = ray.put((initializer, initargs, os.urandom(8).hex()))  # the last: this map, told apart from others
    pending: dict = {}
    done: dict[int, Any] = {}
    submitted = returned = 0
    try:
        while returned < len(jobs):
            while submitted < len(jobs) and len(pending) < in_flight:
                pending[task.remote(fn, jobs[submitted], init)] = submitted
                submitted += 1
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.LocalRayletDiedError) as e:
                raise WorkerDied(f"job {index} lost its Ray worker {RAY_RETRIES + 1} times ({type(e).__name__}); "
                                 "collection keeps the episodes written so far and resumes with --resume") from None
            if not ordered:
                returned += 1
                yield result
                continue
            done[index] = result
            while returned in done:
                yield done.pop(returned)
                returned += 1
    finally:
        for ref in pending:  # stopped early (an error, or the caller stopped reading)
            ray.cancel(ref, force=True)


def _ray(address: str, workers: int):
    """The ``ray`` module, connected: to ``address``, or to a cluster started here with one
    CPU per worker (kept for later maps in this process, as Ray keeps one connection)."""
    try:
        import ray
    except ImportError:
        raise ImportError("--backend=ray needs Ray: pip install 'vlaforge[ray]'") from None
    if ray.is_initialized():
        if _RAY.get("address", address) != address:
            raise ValueError(f"this process is connected to the Ray cluster {_RAY['address'] or '(local)'!r}; "
                             f"it cannot also use {address!r}")
        return ray
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # a private cluster: no address to connect to, and no other cluster on this machine picked up
        ray.init(address="local", num_cpus=max(workers, 1) if workers > 0 else None, include_dashboard=False)
    _RAY["address"] = address
    return ray


def _ray_job(fn: Callable[[Any], Any], job: Any, init: tuple) -> Any:
    """A Ray task: the map's initializer, once per worker process and map (as a local pool runs
    it once per worker), then the job. Ray passes ``init`` resolved from the object store."""
    initializer, initargs, token = init
    if _RAY.get("initialized") != token:
        initializer(*initargs)
        _RAY["initialized"] = token
    return fn(job)


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
