"""HTTP helpers every adapter shares."""

from __future__ import annotations

from starlette.requests import Request

from iotpki.errors import MalformedInput, RequestError

__all__ = ["BodyTooLarge", "read_body"]


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
