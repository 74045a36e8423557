"""A Starlette (and FastAPI) dependency that authenticates a request with
keyward, and the exception handler that answers a denial with the status,
code and message keyward chose for the product.

    from keyward.starlette import KeywardAuth, install
    auth = KeywardAuth(lambda: app.state.keyward, scopes=["orders:read"])
    install(app)                       # renders KeywardDenied
    # FastAPI:   def orders(key: Key = Depends(auth)): ...
    # Starlette: key = await auth(request)
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, Callable, Optional, Sequence, Union

from starlette.requests import Request
from starlette.responses import JSONResponse

from keyward.client import AsyncClient, Denial, Key, is_denied


def _address(text: Optional[str]) -> Optional[str]:
    """An IP address, or None (test clients and unix sockets report names)."""
    try:
        return str(ipaddress.ip_address(text)) if text else None
    except ValueError:
        return None


class KeywardDenied(Exception):
    """Raised by KeywardAuth on a denial; `install(app)` renders it."""

    def __init__(self, denial: Denial, body: Any):
        super().__init__(denial.reason)
        self.denial = denial
        self.body = body

    def response(self) -> JSONResponse:
        headers = {}
        if self.denial.retry_after_ms:
            headers["Retry-After"] = str(math.ceil(self.denial.retry_after_ms / 1000))
        return JSONResponse(self.body, status_code=self.denial.http_status or 401, headers=headers)


def default_body(denial: Denial) -> Any:
    return {"error": {"code": denial.code, "message": denial.message}}


class KeywardAuth:
    """Callable dependency: returns the request's `Key`, or raises
    `KeywardDenied`. An RPC error (keyward unreachable) propagates as
    KeywardError, so the app answers 500: the route fails closed.

    `client` is an AsyncClient or a function returning one (create the
    client inside the app's event loop, e.g. in its lifespan)."""

    def __init__(
        self,
        client: Union[AsyncClient, Callable[[], AsyncClient]],
        scopes: Union[Sequence[str], Callable[[Request], Sequence[str]]] = (),
        *,
        credential: Optional[Callable[[Request], Optional[str]]] = None,
        client_ip: Optional[Callable[[Request], Optional[str]]] = None,
        denied_body: Callable[[Denial], Any] = default_body,
    ):
        self._client = client
        self._scopes = scopes
        self._credential = credential or (lambda request: request.headers.get("authorization"))
        self._client_ip = client_ip or (lambda request: request.client.host if request.client else None)
        self._denied_body = denied_body

    async def __call__(self, request: Request) -> Key:
        client = self._client if isinstance(self._client, AsyncClient) else self._client()
        scopes = self._scopes(request) if callable(self._scopes) else self._scopes
        answer = await client.authenticate(
            self._credential(request) or "",
            list(scopes),
            client_ip=_address(self._client_ip(request)),
        )
        if is_denied(answer):
            raise KeywardDenied(answer.denial, self._denied_body(answer.denial))
        request.state.keyward_key = answer.key
        return answer.key


async def _render(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, KeywardDenied)
    return error.response()


def install(app) -> None:
    """Registers the handler that turns KeywardDenied into the denial's response."""
    app.add_exception_handler(KeywardDenied, _render)


__all__ = ["KeywardAuth", "KeywardDenied", "default_body", "install"]
