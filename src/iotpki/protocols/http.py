"""HTTP helpers every adapter shares, and the one way they run blocking work."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread
from starlette.requests import Request

from iotpki.errors import MalformedInput, RequestError

__all__ = ["BodyTooLarge", "blocking", "read_body"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def blocking(work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run blocking work (a store transaction, a signature) in a worker thread.

    Every adapter calls the core through this, so that a transaction waiting on a lock never
    holds the event loop. The threads are bounded by the serving loop's capacity limiter
    (anyio's default, shared by every route of the server).
    """
    return await anyio.to_thread.run_sync(functools.partial(work, *args, **kwargs))


class BodyTooLarge(RequestError):
    """The request body exceeds the endpoint's limit."""

    status = 413
    code = "too_large"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused once it grows past ``limit`` bytes (also when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedInput("bad Content-Length")
        if int(declared) > limit:
            raise BodyTooLarge(
                f"body of {declared} bytes exceeds the limit of {limit}", limit=limit
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
