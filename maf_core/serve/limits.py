"""What one request to `maf serve` may hold and cost, and how requests are grouped: `maf
serve`'s options read their defaults here. (No import beyond the standard library, so that the
command line reads them without loading the server.)"""
from __future__ import annotations

from dataclasses import dataclass

HOST, PORT = "127.0.0.1", 7860  # where the server listens unless told otherwise: loopback only
SPLIT = "test"                   # the split the page browses (its predictions/<split>.jsonl)
DEVICE = "auto"                  # where the models run: CUDA when there is one (inference.resolve_device)


@dataclass
class Limits:
    """What one request may hold, and how requests are grouped (`maf serve`'s options)."""

    max_upload_bytes: int = 10 * 2**20   # a request body, and an image; over it: 413
    max_text_chars: int = 2000           # per tweet; over it: 422 naming the limit
    max_items: int = 64                  # tweets per request
    batch_items: int = 32                # tweets per forward, over all requests grouped
    batch_wait: float = 0.01             # seconds the first request waits for others
    queue: int = 64                      # requests waiting; over it: 503 with Retry-After
    image_chunk: int = 4                 # images per forward; text-only requests and attention go in between
    max_image_pixels: int = 25_000_000   # one upload, from its header (a 6000x4000 photo fits); over it: 422
    request_pixels: int = 100_000_000    # decoded pixels per request (a JPEG counts at its draft size)
    server_pixels: int = 200_000_000     # decoded pixels held by all requests at once
    pixel_wait: float = 30.0             # seconds a request waits for its pixels; then 503
    body_timeout: float = 30.0           # seconds the server waits for the next part of a body; then 408
