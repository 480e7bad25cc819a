"""API keys, request size limit and the generic error handler.

Keys come from ``Settings.api_keys``; none configured means an open API. A
client sends one as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
(WebSocket: ``?token=<key>``, since browsers cannot set headers there). No key
is 401, a wrong key 403.
"""

import hmac
import logging
from collections.abc import Mapping, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class AuthError(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail


HEADER_HOW = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def header_keys(headers: Mapping[str, str]) -> list[str | None]:
    """Keys presented in ``X-API-Key`` and ``Authorization``. An Authorization header of
    another scheme than Bearer still counts: it is a credential, and not an accepted one."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            authorization = value.strip()
    return [headers.get("x-api-key"), authorization]


def check_keys(presented: Sequence[str | None], accepted: Sequence[str], how: str = HEADER_HOW) -> None:
    """Raise AuthError unless a key is presented and every presented key is accepted
    (open when none are configured): 401 without a key, 403 with a wrong one."""
    if not accepted:
        return
    keys = [k for k in presented if k is not None]
    if not keys:
        raise AuthError(401, f"API key required: {how}")
    for key in keys:
        # compare against every accepted key, always: the time taken must not tell which matched
        matches = [hmac.compare_digest(key.encode(), k.encode()) for k in accepted]
        if not any(matches):
            raise AuthError(403, "API key not accepted")


def check_key(presented: str | None, accepted: Sequence[str], how: str = HEADER_HOW) -> None:
    """``check_keys`` for a single credential (None: none presented)."""
    check_keys([presented], accepted, how)


def auth_error_response(request: Request, exc: Exception) -> JSONResponse:  # noqa: ARG001
    assert isinstance(exc, AuthError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def internal_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Log the traceback, tell the client only that it failed."""
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``.

    A declared Content-Length is refused before anything is read; a chunked body
    is counted as it streams, so a missing or lying header does not get past. The
    overflow is raised as an HTTPException (answered by the app's exception
    handling) because FastAPI turns anything else raised while it reads a body
    into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body larger than {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counting_receive, send)
