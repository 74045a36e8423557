"""keyward's KeyService for Python, sync (`Client`) and asyncio
(`AsyncClient`), on the stubs that generate.py makes from keyward.proto.

What it adds to the bare stubs: keyword arguments, `datetime` in and out
for every timestamp (timezone-aware, UTC), denial reasons as strings, a
denial as a value (`is_denied(answer)`) and an RPC error as `KeywardError`
naming the field, and `watch_revocations()`, which resumes by itself."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator, Dict, Iterator, List, Optional, Sequence, Union

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from keyward.v1 import keyward_pb2 as pb
from keyward.v1 import keyward_pb2_grpc as pb_grpc

#: The trailing metadata entry that names the `after_seq` to resume with.
RESUME_AFTER_SEQ = "keyward-resume-after-seq"

#: Denials that mean "no valid key" (HTTP 401 in most products).
UNAUTHENTICATED_REASONS = frozenset(
    {"MISSING_CREDENTIAL", "MALFORMED_CREDENTIAL", "UNKNOWN_KEY", "REVOKED", "EXPIRED"}
)

When = Union[datetime, str]


@dataclass(frozen=True)
class Denial:
    #: Exact, for the caller's logs: "INSUFFICIENT_SCOPE", "REVOKED", ...
    reason: str
    #: What the product shows its own user.
    code: str
    message: str
    http_status: int
    #: For INSUFFICIENT_SCOPE: the first missing scope.
    required_scope: Optional[str] = None
    #: For RATE_LIMITED and TOO_MANY_FAILED_ATTEMPTS.
    retry_after_ms: Optional[int] = None


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_seconds: int


@dataclass(frozen=True)
class RateLimitStatus:
    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True)
class Key:
    id: str
    account_id: str
    name: str
    start: str
    scopes: List[str]
    effective_scopes: List[str]
    created_at: datetime
    expires_at: Optional[datetime] = None
    revoked_at: Optional[datetime] = None
    last_used_at: Optional[datetime] = None
    rate_limit: Optional[RateLimit] = None
    rotated_from: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    allowed_networks: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class AuthenticateResult:
    allowed: bool
    #: Set when allowed, and on denials where the credential named a live key.
    key: Optional[Key] = None
    denial: Optional[Denial] = None
    rate_limit: Optional[RateLimitStatus] = None
    cacheable: bool = False


@dataclass(frozen=True)
class CheckScopeResult:
    allowed: bool
    #: When the key was identified: the asked scopes it lacks, in order.
    missing_scopes: List[str]
    denial: Optional[Denial] = None


@dataclass(frozen=True)
class CreatedKey:
    key: Key
    #: Shown here only; keyward keeps its SHA-256.
    secret: str
    revision: int


@dataclass(frozen=True)
class RevocationEvent:
    seq: int
    #: "revoked", "scopes_changed", ..., "checkpoint" (no key; `seq` is the
    #: position reached, `at` when the server last proved itself current),
    #: or "resync": this client's marker that the server could not resume
    #: (OUT_OF_RANGE) and everything kept from earlier events must go.
    kind: str
    key_id: Optional[str] = None
    account_id: Optional[str] = None
    at: Optional[datetime] = None


def is_denied(answer: Union[AuthenticateResult, CheckScopeResult], *reasons: str) -> bool:
    """Whether `answer` is a denial (for one of `reasons`, when given)."""
    if answer.allowed or answer.denial is None:
        return False
    return not reasons or answer.denial.reason in reasons


def is_unauthenticated(answer: Union[AuthenticateResult, CheckScopeResult]) -> bool:
    return is_denied(answer, *UNAUTHENTICATED_REASONS)


class KeywardError(Exception):
    """An RPC error: the request was wrong, or keyward (or the network) failed."""

    def __init__(self, error: grpc.RpcError):
        self.code: grpc.StatusCode = error.code()
        self.code_name: str = self.code.name
        self.details: str = error.details() or ""
        self.trailing_metadata = error.trailing_metadata() or ()
        #: For INVALID_ARGUMENT: the field the message names (`required_scopes[1]`).
        self.field: Optional[str] = None
        if self.code == grpc.StatusCode.INVALID_ARGUMENT and ":" in self.details:
            self.field = self.details.split(":", 1)[0]
        super().__init__(f"{self.code_name}: {self.details}")


def to_timestamp(name: str, when: When) -> timestamp_pb2.Timestamp:
    """A datetime (naive means UTC) or an ISO 8601 string as a Timestamp."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name}: not an ISO 8601 date: {when!r}") from None
    if not isinstance(when, datetime):
        raise TypeError(f"{name}: expected a datetime or an ISO 8601 string, got {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _when(message, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    return getattr(message, name).ToDatetime(tzinfo=timezone.utc)


def _reason(value: int) -> str:
    try:
        return pb.Denial.Reason.Name(value)
    except ValueError:
        return str(value)


def _key(raw: "pb.Key") -> Key:
    return Key(
        id=raw.id,
        account_id=raw.account_id,
        name=raw.name,
        start=raw.start,
        scopes=list(raw.scopes),
        effective_scopes=list(raw.effective_scopes),
        created_at=_when(raw, "created_at") or datetime.fromtimestamp(0, timezone.utc),
        expires_at=_when(raw, "expires_at"),
        revoked_at=_when(raw, "revoked_at"),
        last_used_at=_when(raw, "last_used_at"),
        rate_limit=RateLimit(raw.rate_limit.requests, raw.rate_limit.per_seconds)
        if raw.HasField("rate_limit")
        else None,
        rotated_from=raw.rotated_from or None,
        metadata=dict(raw.metadata),
        allowed_networks=list(raw.allowed_networks),
    )


def _denial(raw: "pb.Denial") -> Denial:
    return Denial(
        reason=_reason(raw.reason),
        code=raw.code,
        message=raw.message,
        http_status=raw.http_status,
        required_scope=raw.required_scope or None,
        retry_after_ms=raw.retry_after_ms or None,
    )


def _authenticated(raw: "pb.AuthenticateResponse") -> AuthenticateResult:
    return AuthenticateResult(
        allowed=raw.allowed,
        key=_key(raw.key) if raw.HasField("key") else None,
        denial=_denial(raw.denial) if raw.HasField("denial") else None,
        rate_limit=RateLimitStatus(raw.rate_limit.limit, raw.rate_limit.remaining, raw.rate_limit.reset_ms)
        if raw.HasField("rate_limit")
        else None,
        cacheable=raw.cacheable,
    )


def _checked(raw: "pb.CheckScopeResponse") -> CheckScopeResult:
    return CheckScopeResult(
        allowed=raw.allowed,
        missing_scopes=list(raw.missing_scopes),
        denial=_denial(raw.denial) if raw.HasField("denial") else None,
    )


def _event(raw: "pb.RevocationEvent") -> RevocationEvent:
    return RevocationEvent(
        seq=raw.seq,
        kind=raw.kind,
        key_id=raw.key_id or None,
        account_id=raw.account_id or None,
        at=_when(raw, "at"),
    )


class _Requests:
    """Builds requests from keyword arguments (shared by both clients)."""

    @staticmethod
    def authenticate(credential, required_scopes, client_ip, min_revision):
        return pb.AuthenticateRequest(
            credential=credential,
            required_scopes=list(required_scopes),
            client_ip=client_ip or "",
            min_revision=min_revision,
        )

    @staticmethod
    def check_scope(scopes, key_id, credential, client_ip, min_revision):
        return pb.CheckScopeRequest(
            key_id=key_id or "",
            credential=credential or "",
            scopes=list(scopes),
            client_ip=client_ip or "",
            min_revision=min_revision,
        )

    @staticmethod
    def create_key(account_id, name, scopes, preset, expires_at, rate_limit, metadata, allowed_networks):
        request = pb.CreateKeyRequest(
            account_id=account_id,
            name=name,
            scopes=list(scopes),
            preset=preset or "",
            metadata=dict(metadata or {}),
            allowed_networks=list(allowed_networks),
        )
        if expires_at is not None:
            request.expires_at.CopyFrom(to_timestamp("expires_at", expires_at))
        if rate_limit is not None:
            request.rate_limit.CopyFrom(pb.RateLimit(requests=rate_limit.requests, per_seconds=rate_limit.per_seconds))
        return request

    @staticmethod
    def update_key(account_id, key_id, fields):
        """`fields`: only what changes; `rate_limit=None` returns to the default."""
        request = pb.UpdateKeyRequest(account_id=account_id, key_id=key_id)
        paths = []
        for name, value in fields.items():
            paths.append(name)
            if name == "name":
                request.name = value
            elif name == "scopes":
                request.scopes.extend(value)
            elif name == "rate_limit":
                if value is not None:
                    request.rate_limit.CopyFrom(pb.RateLimit(requests=value.requests, per_seconds=value.per_seconds))
            elif name == "metadata":
                request.metadata.update(value)
            elif name == "allowed_networks":
                request.allowed_networks.extend(value)
            else:
                raise TypeError(f"update_key: unknown field {name!r}")
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return request

    @staticmethod
    def watch(after_seq, account_id, checkpoint_interval_ms):
        return pb.WatchRevocationsRequest(
            after_seq=after_seq, account_id=account_id or "", checkpoint_interval_ms=checkpoint_interval_ms
        )


def _metadata(service_token: Optional[str]):
    return (("authorization", f"Bearer {service_token}"),) if service_token else ()


def _resume_position(error: grpc.RpcError) -> Optional[int]:
    for key, value in error.trailing_metadata() or ():
        if key == RESUME_AFTER_SEQ:
            return int(value)
    return None


#: Codes after which reconnecting cannot help: the request itself is refused.
_FATAL = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class _WatchState:
    """Position, proof and reconnects, shared by both watches."""

    def __init__(self, after_seq: int, min_backoff: float, max_backoff: float):
        #: The last sequence received (what a reconnect resumes after).
        self.position = after_seq
        #: When the server last proved itself current (the last checkpoint's `at`).
        self.proven_at: Optional[datetime] = None
        #: How many times the stream was reopened.
        self.reconnects = 0
        self.closed = False
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.backoff = min_backoff

    @property
    def lag_seconds(self) -> Optional[float]:
        """How far behind this consumer's view may be: the age of the server's
        last proof that everything up to `position` was delivered."""
        if self.proven_at is None:
            return None
        return max(0.0, (datetime.now(timezone.utc) - self.proven_at).total_seconds())

    def received(self, raw) -> RevocationEvent:
        event = _event(raw)
        self.backoff = self._min_backoff
        self.position = event.seq
        if event.kind == "checkpoint":
            self.proven_at = event.at
        return event

    def ended(self, error: Optional[grpc.RpcError]) -> Optional[RevocationEvent]:
        """Decides after a stream ended: raises when retrying cannot help,
        returns a `resync` event after OUT_OF_RANGE, else None (reconnect)."""
        if error is not None and error.code() in _FATAL:
            raise KeywardError(error)
        if error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE:
            self.position = 0
            self.proven_at = None
            return RevocationEvent(seq=0, kind="resync")
        named = _resume_position(error) if error is not None else None
        if named is not None:
            self.position = named
        return None

    def next_backoff(self) -> float:
        wait = self.backoff
        self.backoff = min(self.backoff * 2, self._max_backoff)
        return wait


class RevocationWatch(_WatchState):
    """WatchRevocations that resumes by itself (blocking iterator).

    Reconnects after UNAVAILABLE, RESOURCE_EXHAUSTED or a lost connection
    from the position the server names (trailing metadata
    `keyward-resume-after-seq`) or the last sequence received; yields a
    `resync` event and starts over after OUT_OF_RANGE; raises KeywardError
    only when retrying cannot help. `close()` (from any thread) ends the
    iteration."""

    def __init__(self, client: "Client", after_seq, account_id, checkpoint_interval_ms, min_backoff, max_backoff):
        super().__init__(after_seq, min_backoff, max_backoff)
        self._client = client
        self._account_id = account_id
        self._interval = checkpoint_interval_ms
        self._call = None
        self._wake = threading.Event()

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        call = self._call
        if call is not None:
            call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def __iter__(self) -> Iterator[RevocationEvent]:
        first = True
        try:
            while not self.closed:
                if not first:
                    self.reconnects += 1
                first = False
                call = self._client.stub.WatchRevocations(
                    _Requests.watch(self.position, self._account_id, self._interval),
                    metadata=self._client.metadata,
                )
                self._call = call
                if self.closed:
                    call.cancel()
                error = None
                try:
                    for raw in call:
                        yield self.received(raw)
                        if self.closed:
                            return
                except grpc.RpcError as e:
                    error = e
                if self.closed:
                    return
                resync = self.ended(error)
                if resync is not None:
                    yield resync
                    continue
                self._wake.wait(self.next_backoff())
        finally:
            self.closed = True
            if self._call is not None:
                self._call.cancel()


class AsyncRevocationWatch(_WatchState):
    """RevocationWatch for asyncio: `async for event in watch`."""

    def __init__(self, client: "AsyncClient", after_seq, account_id, checkpoint_interval_ms, min_backoff, max_backoff):
        super().__init__(after_seq, min_backoff, max_backoff)
        self._client = client
        self._account_id = account_id
        self._interval = checkpoint_interval_ms
        self._call = None
        self._wake: Optional[asyncio.Event] = None

    def close(self) -> None:
        self.closed = True
        if self._wake is not None:
            self._wake.set()
        if self._call is not None:
            self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[RevocationEvent]:
        self._wake = asyncio.Event()
        first = True
        try:
            while not self.closed:
                if not first:
                    self.reconnects += 1
                first = False
                call = self._client.stub.WatchRevocations(
                    _Requests.watch(self.position, self._account_id, self._interval),
                    metadata=self._client.metadata,
                )
                self._call = call
                error = None
                try:
                    async for raw in call:
                        yield self.received(raw)
                        if self.closed:
                            return
                except grpc.RpcError as e:
                    error = e
                except asyncio.CancelledError:
                    if self.closed:
                        return
                    raise
                if self.closed:
                    return
                resync = self.ended(error)
                if resync is not None:
                    yield resync
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), self.next_backoff())
                except asyncio.TimeoutError:
                    pass
        finally:
            self.closed = True
            if self._call is not None:
                self._call.cancel()


class Client:
    """A blocking client of keyward.v1.KeyService.

    `target` is `host:port`; `credentials` (grpc.ChannelCredentials) for TLS,
    plaintext otherwise; `service_token` is sent as `authorization: Bearer`."""

    def __init__(
        self,
        target: str,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        service_token: Optional[str] = None,
        timeout: float = 10.0,
    ):
        self.channel = (
            grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
        )
        #: The generated stub, for RPCs this class does not wrap.
        self.stub = pb_grpc.KeyServiceStub(self.channel)
        self.metadata = _metadata(service_token)
        self.timeout = timeout

    def _call(self, method: str, request):
        try:
            return getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise KeywardError(error) from None

    def authenticate(
        self,
        credential: str,
        required_scopes: Sequence[str] = (),
        *,
        client_ip: Optional[str] = None,
        min_revision: int = 0,
    ) -> AuthenticateResult:
        """Who does `credential` belong to, and may it use `required_scopes`?
        A denial is a value: see `is_denied`."""
        request = _Requests.authenticate(credential, required_scopes, client_ip, min_revision)
        return _authenticated(self._call("Authenticate", request))

    def check_scope(self, scopes: Sequence[str], *, key_id=None, credential=None, client_ip=None, min_revision=0):
        request = _Requests.check_scope(scopes, key_id, credential, client_ip, min_revision)
        return _checked(self._call("CheckScope", request))

    def create_key(
        self,
        account_id: str,
        name: str,
        scopes: Sequence[str] = (),
        *,
        preset: Optional[str] = None,
        expires_at: Optional[When] = None,
        rate_limit: Optional[RateLimit] = None,
        metadata: Optional[Dict[str, str]] = None,
        allowed_networks: Sequence[str] = (),
    ) -> CreatedKey:
        """Creates a key. Without scopes or a preset it holds only the
        catalog's auto-granted scopes."""
        request = _Requests.create_key(
            account_id, name, scopes, preset, expires_at, rate_limit, metadata, allowed_networks
        )
        raw = self._call("CreateKey", request)
        return CreatedKey(key=_key(raw.key), secret=raw.secret, revision=raw.revision)

    def revoke_key(self, account_id: str, key_id: str) -> Key:
        return _key(self._call("RevokeKey", pb.RevokeKeyRequest(account_id=account_id, key_id=key_id)).key)

    def get_key(self, account_id: str, key_id: str) -> Key:
        return _key(self._call("GetKey", pb.GetKeyRequest(account_id=account_id, key_id=key_id)).key)

    def list_keys(self, account_id: str, *, include_revoked=False, page_size=0, page_token="") -> List[Key]:
        """One page (see `stub.ListKeys` for the token)."""
        request = pb.ListKeysRequest(
            account_id=account_id, include_revoked=include_revoked, page_size=page_size, page_token=page_token
        )
        return [_key(k) for k in self._call("ListKeys", request).keys]

    def update_key(self, account_id: str, key_id: str, **fields) -> Key:
        """Changes the fields given (name, scopes, rate_limit, metadata,
        allowed_networks); the update mask is built from them."""
        return _key(self._call("UpdateKey", _Requests.update_key(account_id, key_id, fields)).key)

    def rotate_key(self, account_id: str, key_id: str, *, grace_seconds: float = 0) -> CreatedKey:
        grace = duration_pb2.Duration()
        grace.FromMilliseconds(int(grace_seconds * 1000))
        raw = self._call("RotateKey", pb.RotateKeyRequest(account_id=account_id, key_id=key_id, grace_period=grace))
        return CreatedKey(key=_key(raw.key), secret=raw.secret, revision=raw.revision)

    def watch_revocations(
        self,
        after_seq: int = 0,
        *,
        account_id: Optional[str] = None,
        checkpoint_interval_ms: int = 0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> RevocationWatch:
        return RevocationWatch(self, after_seq, account_id, checkpoint_interval_ms, min_backoff, max_backoff)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


class AsyncClient:
    """Client for asyncio (grpc.aio). Create it inside the event loop that uses it."""

    def __init__(
        self,
        target: str,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        service_token: Optional[str] = None,
        timeout: float = 10.0,
    ):
        self.channel = (
            grpc.aio.secure_channel(target, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(target)
        )
        self.stub = pb_grpc.KeyServiceStub(self.channel)
        self.metadata = _metadata(service_token)
        self.timeout = timeout

    async def _call(self, method: str, request):
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise KeywardError(error) from None

    async def authenticate(
        self,
        credential: str,
        required_scopes: Sequence[str] = (),
        *,
        client_ip: Optional[str] = None,
        min_revision: int = 0,
    ) -> AuthenticateResult:
        request = _Requests.authenticate(credential, required_scopes, client_ip, min_revision)
        return _authenticated(await self._call("Authenticate", request))

    async def check_scope(self, scopes: Sequence[str], *, key_id=None, credential=None, client_ip=None, min_revision=0):
        request = _Requests.check_scope(scopes, key_id, credential, client_ip, min_revision)
        return _checked(await self._call("CheckScope", request))

    async def create_key(
        self,
        account_id: str,
        name: str,
        scopes: Sequence[str] = (),
        *,
        preset: Optional[str] = None,
        expires_at: Optional[When] = None,
        rate_limit: Optional[RateLimit] = None,
        metadata: Optional[Dict[str, str]] = None,
        allowed_networks: Sequence[str] = (),
    ) -> CreatedKey:
        request = _Requests.create_key(
            account_id, name, scopes, preset, expires_at, rate_limit, metadata, allowed_networks
        )
        raw = await self._call("CreateKey", request)
        return CreatedKey(key=_key(raw.key), secret=raw.secret, revision=raw.revision)

    async def revoke_key(self, account_id: str, key_id: str) -> Key:
        raw = await self._call("RevokeKey", pb.RevokeKeyRequest(account_id=account_id, key_id=key_id))
        return _key(raw.key)

    async def get_key(self, account_id: str, key_id: str) -> Key:
        return _key((await self._call("GetKey", pb.GetKeyRequest(account_id=account_id, key_id=key_id))).key)

    async def list_keys(self, account_id: str, *, include_revoked=False, page_size=0, page_token="") -> List[Key]:
        request = pb.ListKeysRequest(
            account_id=account_id, include_revoked=include_revoked, page_size=page_size, page_token=page_token
        )
        return [_key(k) for k in (await self._call("ListKeys", request)).keys]

    async def update_key(self, account_id: str, key_id: str, **fields) -> Key:
        return _key((await self._call("UpdateKey", _Requests.update_key(account_id, key_id, fields))).key)

    async def rotate_key(self, account_id: str, key_id: str, *, grace_seconds: float = 0) -> CreatedKey:
        grace = duration_pb2.Duration()
        grace.FromMilliseconds(int(grace_seconds * 1000))
        raw = await self._call(
            "RotateKey", pb.RotateKeyRequest(account_id=account_id, key_id=key_id, grace_period=grace)
        )
        return CreatedKey(key=_key(raw.key), secret=raw.secret, revision=raw.revision)

    def watch_revocations(
        self,
        after_seq: int = 0,
        *,
        account_id: Optional[str] = None,
        checkpoint_interval_ms: int = 0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> AsyncRevocationWatch:
        return AsyncRevocationWatch(self, after_seq, account_id, checkpoint_interval_ms, min_backoff, max_backoff)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *_):
        await self.close()


__all__ = [
    "AsyncClient",
    "AsyncRevocationWatch",
    "AuthenticateResult",
    "CheckScopeResult",
    "Client",
    "CreatedKey",
    "Denial",
    "Key",
    "KeywardError",
    "RESUME_AFTER_SEQ",
    "RateLimit",
    "RateLimitStatus",
    "RevocationEvent",
    "RevocationWatch",
    "UNAUTHENTICATED_REASONS",
    "is_denied",
    "is_unauthenticated",
    "to_timestamp",
]
