"""Micro-batching for `maf serve`: concurrent requests share one forward.

Requests wait in a bounded queue. One worker thread takes the first, then keeps taking more
until it holds `max_items` tweets or `max_wait` seconds have passed since the first arrived,
runs them through the model as one call, and hands each request its own rows. A full queue
refuses at once (`QueueFull`: the server answers 503 with Retry-After) instead of growing
without bound. A failing batch is retried request by request, so one request's error never
becomes another's.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` requests already."""


@dataclass
class Request:
    items: list
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """`run(items) -> results` (one result per item, in order) applied to groups of requests.

    `max_items`: tweets per forward at most (a request larger than that runs alone);
    `max_wait`: seconds the first request of a group waits for others; `max_queue`: requests
    waiting at most. `lock`: held around each call, so that other users of the model (the
    browse page's attention) take turns with it.
    """

    def __init__(self, run: Callable[[list], list], max_items: int = 32, max_wait: float = 0.01,
                 max_queue: int = 64, lock: threading.Lock | None = None) -> None:
        self.run, self.max_items, self.max_wait = run, max_items, max_wait
        self.lock = lock or threading.Lock()
        self.queue: queue.Queue[Request | None] = queue.Queue(max_queue)
        self.batches = self.batched_requests = 0  # counters, for tests and the load benchmark
        self.busy = False  # holding a formed group (waiting for the lock, or running it)
        self._held: Request | None = None  # taken from the queue, but did not fit in the last group
        self._thread = threading.Thread(target=self._loop, name="maf-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: list) -> Future:
        """A future of this request's results; QueueFull when the queue is full."""
        request = Request(items)
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self.queue.maxsize} requests are waiting already") from None
        return request.future

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)

    def _group(self, first: Request) -> list[Request]:
        group, count = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_items:
            left = deadline - time.monotonic()
            try:
                nxt = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self.queue.put(None)  # closing: finish this group first
                break
            if count + len(nxt.items) > self.max_items:
                self._held = nxt
                break
            group.append(nxt)
            count += len(nxt.items)
        return group

    def _loop(self) -> None:
        while True:
            first, self._held = (self._held, None) if self._held else (self.queue.get(), None)
            if first is None:
                return
            group = self._group(first)
            self.busy = True
            self._run(group)
            self.busy = False

    def _run(self, group: list[Request]) -> None:
        items = [item for request in group for item in request.items]
        try:
            with self.lock:
                results = self.run(items)
        except Exception as err:  # noqa: BLE001 - the group failed: each request alone, so the error is its own
            if len(group) == 1:
                logger.debug("a request failed: %s", err)
                group[0].future.set_exception(err)
                return
            for request in group:
                self._run([request])
            return
        self.batches += 1
        self.batched_requests += len(group)
        start = 0
        for request in group:
            request.future.set_result(results[start:start + len(request.items)])
            start += len(request.items)
