"""Micro-batching for `maf serve`: concurrent requests share one forward, and cheap requests
never wait behind an expensive one.

Requests wait in two bounded queues: light ones (text only, and the page's attention calls)
and heavy ones (with images). One worker thread serves light requests first: it takes the
first, then keeps taking more for up to `max_wait` seconds or until it holds `max_items`
tweets, runs them through the model as one call, and hands each request its own rows. Requests
with images are grouped the same way, but with at most `image_chunk` images per forward: a
request with 64 images runs as 16 forwards of 4, and the light requests that arrived meanwhile
run between two of them. So a text request or an attention call waits for one chunk at most,
not for the whole request. A full queue refuses at once (`QueueFull`: the server answers 503
with Retry-After) instead of growing without bound. A failing group is retried request by
request, so one request's error never becomes another's.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from maf_core.serve.limits import Limits

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queues hold `max_queue` requests already."""


@dataclass
class Request:
    items: list
    images: list[bool]                      # per item: does it cost a backbone forward
    call: Callable | None = None            # a job of its own (the page's attention), run alone
    future: Future = field(default_factory=Future)
    done: list = field(default_factory=list)  # the results of the items run so far, in order

    @property
    def heavy(self) -> bool:
        return any(self.images)


@dataclass
class Part:
    request: Request
    start: int
    end: int


class MicroBatcher:
    """`run(items) -> results` (one result per item, in order) applied to groups of requests.

    `max_items`: tweets per forward at most (a larger text request runs alone); `max_wait`:
    seconds the first request of a group waits for others; `max_queue`: requests waiting at
    most; `has_image(item)`: whether an item costs a backbone forward; `image_chunk`: such
    items per forward at most. `lock`: held around each call, so that other users of the model
    take turns with it.
    """

    def __init__(self, run: Callable[[list], list], max_items: int = Limits.batch_items,
                 max_wait: float = Limits.batch_wait, max_queue: int = Limits.queue,
                 lock: threading.Lock | None = None, has_image: Callable[[object], bool] | None = None,
                 image_chunk: int = Limits.image_chunk) -> None:
        self.run, self.max_items, self.max_wait, self.max_queue = run, max_items, max_wait, max_queue
        self.has_image, self.image_chunk = has_image or (lambda item: False), max(1, image_chunk)
        self.lock = lock or threading.Lock()
        self._light: deque[Request] = deque()
        self._heavy: deque[Request] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.batches = self.batched_requests = 0  # counters, for tests and the load benchmark
        self.busy = False  # holding a formed group (waiting for the lock, or running it)
        self._thread = threading.Thread(target=self._loop, name="maf-serve-batcher", daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        """Requests in the queues (a request with images counts until its last chunk has run)."""
        with self._changed:
            return len(self._light) + len(self._heavy)

    def submit(self, items: list) -> Future:
        """A future of this request's results; QueueFull when the queues are full."""
        return self._put(Request(items, [bool(self.has_image(item)) for item in items]))

    def call(self, job: Callable[[], object]) -> Future:
        """A future of `job()`, run alone by the worker under the lock, queued with the light
        requests (the page's attention: it never waits behind a whole request of images)."""
        return self._put(Request([], [], call=job))

    def _put(self, request: Request) -> Future:
        with self._changed:
            if len(self._light) + len(self._heavy) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} requests are waiting already")
            (self._heavy if request.heavy else self._light).append(request)
            self._changed.notify_all()
        return request.future

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout=30)

    # the worker

    def _next(self) -> list[Part] | Request | None:
        """The next thing to run: a call, or a group of parts of requests; None when closed."""
        with self._changed:
            while not (self._light or self._heavy):
                if self._closed:
                    return None
                self._changed.wait()
            deadline = time.monotonic() + self.max_wait
            group: list[Part] = []
            items = images = 0
            while True:
                if not group and self._light and self._light[0].call is not None:
                    return self._light.popleft()
                added = self._take_light(group, items) if self._light else None
                if added is None and not self._light:
                    added = self._take_heavy(group, items, images)
                if added is not None:
                    items += added[0]
                    images += added[1]
                    continue
                left = deadline - time.monotonic()
                if group and (left <= 0 or items >= self.max_items or self._closed or self._light):
                    break
                if not group and not (self._light or self._heavy):
                    if self._closed:
                        return None
                    self._changed.wait()
                    continue
                self._changed.wait(max(left, 0.001))
            return group

    def _take_light(self, group: list[Part], items: int) -> tuple[int, int] | None:
        first = self._light[0]
        if first.call is not None or (group and items + len(first.items) > self.max_items):
            return None
        self._light.popleft()
        group.append(Part(first, 0, len(first.items)))
        return len(first.items), 0

    def _take_heavy(self, group: list[Part], items: int, images: int) -> tuple[int, int] | None:
        """The head request's next items, up to `image_chunk` images and `max_items` tweets in
        the group; the request leaves the queue once its last item is taken."""
        if not self._heavy or images >= self.image_chunk or items >= self.max_items:
            return None
        request = self._heavy[0]
        start = len(request.done) + sum(p.end - p.start for p in group if p.request is request)
        end, taken = start, 0
        while end < len(request.items) and items + (end - start) < self.max_items:
            if request.images[end]:
                if images + taken >= self.image_chunk:
                    break
                taken += 1
            end += 1
        if end == start:
            return None
        group.append(Part(request, start, end))
        if end == len(request.items):
            self._heavy.popleft()
        return end - start, taken

    def _loop(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            self.busy = True
            if isinstance(work, Request):
                self._call(work)
            else:
                self._run(work)
            self.busy = False

    def _call(self, request: Request) -> None:
        try:
            with self.lock:
                result = request.call()
        except Exception as err:  # noqa: BLE001 - the job's error is its caller's
            request.future.set_exception(err)
            return
        request.future.set_result(result)

    def _run(self, group: list[Part]) -> None:
        items = [item for part in group for item in part.request.items[part.start:part.end]]
        try:
            with self.lock:
                results = self.run(items)
        except Exception as err:  # noqa: BLE001 - the group failed: each part alone, so the error is its own
            if len(group) == 1:
                logger.debug("a request failed: %s", err)
                self._fail(group[0].request, err)
                return
            for part in group:
                if not part.request.future.done():
                    self._run([part])
            return
        self.batches += 1
        self.batched_requests += len({id(part.request) for part in group})
        at = 0
        for part in group:
            request, count = part.request, part.end - part.start
            if not request.future.done():
                request.done.extend(results[at:at + count])
                if len(request.done) == len(request.items):
                    request.future.set_result(request.done)
            at += count

    def _fail(self, request: Request, err: Exception) -> None:
        with self._changed:
            if request in self._heavy:
                self._heavy.remove(request)
        request.future.set_exception(err)
