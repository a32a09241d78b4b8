"""Where extraction tasks run: in this process, on a local Dask cluster, or on any Dask cluster.

The only module that imports dask. A runner ships one large object (the backbone weights) to
every worker once, then maps a task function over payloads with a bounded number in flight,
yielding results as they complete; the caller (the single writer) stores them.
"""
from __future__ import annotations

import importlib
import logging
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

logger = logging.getLogger(__name__)


class LocalRunner:
    """Run tasks in this process (`--workers 0`): no cluster, no transfers, easiest to debug.

    With `slots` > 1 tasks run on that many threads (a GPU forward of one shard overlaps the
    decoding of the next); results are yielded as they complete.
    """

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.description = "this process" + (f" ({slots} task threads)" if slots > 1 else "")

    def share(self, obj: Any) -> Any:
        return obj

    def run(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)

    def map(self, fn: Callable, payloads: Iterable[tuple[Any, Any]], *shared: Any) -> Iterator[tuple[Any, Any]]:
        """For each (key, payload): yield (key, fn(payload, *shared)), at most `slots` in flight."""
        if self.slots == 1:
            for key, payload in payloads:
                yield key, fn(payload, *shared)
            return
        with ThreadPoolExecutor(self.slots) as pool:
            running = {}
            for key, payload in payloads:
                running[pool.submit(fn, payload, *shared)] = key
                if len(running) >= self.slots:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield running.pop(future), future.result()
            for future in list(running):
                yield running.pop(future), future.result()

    def close(self) -> None:
        pass


class DaskRunner:
    """A dask.distributed client: a new LocalCluster of `workers` processes, or `scheduler`'s cluster.

    Workers need the maf package importable and nothing else: no shared file system, since
    payloads (image bytes) and results (features) travel through Dask.
    """

    def __init__(self, workers: int = 1, threads_per_worker: int = 1, scheduler: str | None = None,
                 torch_threads: int | None = None, preload: tuple[str, ...] = ()) -> None:
        """`preload`: modules every worker imports at once, while the driver prepares the work."""
        import dask
        from distributed import Client, LocalCluster

        # worker processes may start decode processes of their own; long GIL-holding forwards are normal
        dask.config.set({
            "distributed.worker.daemon": False,
            "distributed.admin.tick.limit": "60s",
            # no dashboard here: the stack sampler (every 10 ms, GIL-taking) only costs CPU time
            "distributed.worker.profile.enabled": False,
        })
        if torch_threads:
            # Dask starts workers with OMP_NUM_THREADS=1; torch.set_num_threads raises the count
            # later, but measured here the forward then runs about 30% slower than when OpenMP
            # starts with the count it will use.
            n = str(torch_threads)
            dask.config.set({"distributed.nanny.pre-spawn-environ": {
                "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}})
        if not logger.isEnabledFor(logging.DEBUG):  # dask's INFO chatter buries the progress bar
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if scheduler:
            self.client = Client(scheduler, timeout="30s")
            self.cluster = None
            self.description = f"Dask cluster at {scheduler}"
        else:
            self.cluster = LocalCluster(
                n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)
            self.description = f"local Dask cluster, {workers} worker processes x {threads_per_worker} threads"
        info = self.client.scheduler_info()["workers"]
        if not info:
            self.client.wait_for_workers(1, timeout=60)
            info = self.client.scheduler_info()["workers"]
        self.slots = sum(w["nthreads"] for w in info.values())
        self._warming = [self.client.submit(_warm_up, address, preload, pure=False, workers=[address])
                         for address in info]

    def share(self, obj: Any) -> Any:
        """Send `obj` to every worker once; tasks receive it by reference."""
        return self.client.scatter([obj], broadcast=True, hash=False)[0]  # a list: a dict would be split

    def run(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False).result()

    def map(self, fn: Callable, payloads: Iterable[tuple[Any, Any]], *shared: Any,
            in_flight: int | None = None) -> Iterator[tuple[Any, Any]]:
        """For each (key, payload): yield (key, fn(payload, *shared)) as tasks complete.

        At most `in_flight` tasks (default twice the worker threads) exist at once, so the
        payloads are produced lazily and memory stays flat however many there are.
        """
        from distributed import as_completed

        limit = in_flight or max(2, 2 * self.slots)
        payloads = iter(payloads)
        keys = {}
        pending = as_completed()
        for key, payload in payloads:
            future = self.client.submit(fn, payload, *shared, pure=False)
            keys[future.key] = key
            pending.add(future)
            if len(keys) >= limit:
                break
        for future in pending:
            result = future.result()
            key = keys.pop(future.key)
            future.release()
            del future
            for next_key, payload in payloads:
                following = self.client.submit(fn, payload, *shared, pure=False)
                keys[following.key] = next_key
                pending.add(following)
                break
            yield key, result

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _warm_up(address: str, modules: tuple[str, ...]) -> str:
    for name in modules:
        importlib.import_module(name)
    return address


def make_runner(workers: int, threads_per_worker: int = 1, scheduler: str | None = None,
                torch_threads: int | None = None, preload: tuple[str, ...] = ()):
    """`--workers 0` → in-process; otherwise Dask (a local cluster, or `scheduler` when given)
    whose workers import `preload` first."""
    if scheduler:
        return DaskRunner(scheduler=scheduler, preload=preload)
    if workers == 0:
        return LocalRunner(threads_per_worker)
    return DaskRunner(workers=workers, threads_per_worker=threads_per_worker, torch_threads=torch_threads,
                      preload=preload)


def worker_threads() -> int:
    """Task threads of the Dask worker running this code (1 outside Dask)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return 1


def worker_index() -> int:
    """A small integer per worker of a LocalCluster (its name), 0 elsewhere: picks its GPU."""
    try:
        from distributed import get_worker

        name = get_worker().name
        return int(name) if str(name).isdigit() else 0
    except (ImportError, ValueError, AttributeError):
        return 0


def default_workers() -> int:
    """Local worker processes for CPU extraction: one per 4 cores (so each has several threads)."""
    return max(1, (os.cpu_count() or 1) // 4)
