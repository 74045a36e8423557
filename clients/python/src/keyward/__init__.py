"""keyward-client: keyward's gRPC API for Python services.

    from keyward import Client, is_denied
    keyward = Client("127.0.0.1:50051")
    answer = keyward.authenticate(request_header, ["orders:read"])
    if is_denied(answer): ...  # answer.denial.http_status, .code, .message

The generated stubs are `keyward.v1.keyward_pb2` and `keyward_pb2_grpc`
(made by generate.py)."""

from keyward.client import (
    RESUME_AFTER_SEQ,
    UNAUTHENTICATED_REASONS,
    AsyncClient,
    AsyncRevocationWatch,
    AuthenticateResult,
    CheckScopeResult,
    Client,
    CreatedKey,
    Denial,
    Key,
    KeywardError,
    RateLimit,
    RateLimitStatus,
    RevocationEvent,
    RevocationWatch,
    is_denied,
    is_unauthenticated,
    to_timestamp,
)

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
