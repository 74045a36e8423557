"""The whole flow a Python service meets, against a real keyward."""

from datetime import datetime, timedelta, timezone

import pytest

from keyward import Client, KeywardError, is_denied, is_unauthenticated


@pytest.fixture
def client(keyward):
    with Client(keyward.address) as client:
        yield client


def test_create_authenticate_scope_denial_revoke(client):
    expires_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    created = client.create_key(
        "acct_42", "portfolio bot", ["portfolio:read", "traders:write"], expires_at=expires_at
    )
    assert created.secret.startswith("cc_")
    assert created.key.expires_at == expires_at, "a datetime goes in and comes out"
    assert created.key.created_at.tzinfo is not None

    allowed = client.authenticate(f"Bearer {created.secret}", ["traders:read"])
    assert allowed.allowed and not is_denied(allowed)
    assert allowed.key.effective_scopes == ["portfolio:read", "traders:read", "traders:write"]

    lacking = client.authenticate(created.secret, ["orders:read"])
    assert lacking.allowed is False
    assert is_denied(lacking, "INSUFFICIENT_SCOPE")
    assert lacking.denial.reason == "INSUFFICIENT_SCOPE", "a string, not 6"
    assert lacking.denial.http_status == 403
    assert lacking.denial.required_scope == "orders:read"
    assert lacking.key.id == created.key.id

    revoked = client.revoke_key("acct_42", created.key.id)
    assert revoked.revoked_at is not None
    after = client.authenticate(f"Bearer {created.secret}")
    assert is_denied(after, "REVOKED") and is_unauthenticated(after)
    assert after.denial.http_status == 401 and after.key is None


def test_an_unknown_required_scope_is_a_denial_naming_it(client):
    created = client.create_key("acct_1", "k", ["orders:read"])
    answer = client.authenticate(created.secret, ["orders:read", "orders:refund"])
    assert is_denied(answer, "INSUFFICIENT_SCOPE")
    assert answer.denial.required_scope == "orders:refund"
    checked = client.check_scope(["orders:refund", "orders:read"], key_id=created.key.id)
    assert not checked.allowed and checked.missing_scopes == ["orders:refund"]


def test_rpc_errors_name_the_field_and_quote_timestamps(client):
    with pytest.raises(KeywardError) as missing:
        client.create_key("", "k")
    assert missing.value.code_name == "INVALID_ARGUMENT" and missing.value.field == "account_id"

    with pytest.raises(KeywardError) as past:
        client.create_key("acct_1", "k", expires_at="2001-02-03T04:05:06Z")
    assert past.value.field == "expires_at"
    assert "got 2001-02-03T04:05:06Z" in past.value.details

    with pytest.raises(ValueError):
        client.create_key("acct_1", "k", expires_at="next tuesday")
    with pytest.raises(KeywardError) as bad_name:
        client.authenticate("x", ["Not A Scope"])
    assert bad_name.value.field == "required_scopes[0]"
    assert client.list_keys("acct_1", include_revoked=True) == [], "nothing written"


def test_update_key_builds_its_mask_from_the_fields_given(client):
    created = client.create_key("acct_up", "before", ["orders:read"])
    updated = client.update_key("acct_up", created.key.id, scopes=["orders:write"])
    assert updated.name == "before" and updated.scopes == ["orders:write"]
    assert client.authenticate(created.secret, ["orders:write"]).allowed


def test_a_key_without_scopes_holds_only_the_auto_granted_ones(client):
    created = client.create_key("acct_1", "identity only")
    assert created.key.scopes == [] and created.key.effective_scopes == []
    assert client.authenticate(created.secret).allowed


def test_rotate_key_keeps_the_old_key_for_its_grace_period(client):
    created = client.create_key("acct_rot", "rotating", ["orders:read"])
    rotated = client.rotate_key("acct_rot", created.key.id, grace_seconds=3600)
    assert rotated.key.rotated_from == created.key.id and rotated.secret != created.secret
    assert client.authenticate(created.secret).allowed and client.authenticate(rotated.secret).allowed


def test_the_async_client_answers_alike(keyward):
    import asyncio

    from keyward import AsyncClient

    async def scenario():
        async with AsyncClient(keyward.address) as client:
            created = await client.create_key("acct_async", "k", ["orders:read"])
            assert (await client.authenticate(created.secret, ["orders:read"])).allowed
            denied = await client.authenticate(created.secret, ["orders:write"])
            assert is_denied(denied, "INSUFFICIENT_SCOPE")
            assert [k.id for k in await client.list_keys("acct_async")] == [created.key.id]
            rotated = await client.rotate_key("acct_async", created.key.id)
            assert (await client.get_key("acct_async", created.key.id)).revoked_at is not None
            assert rotated.key.rotated_from == created.key.id
            with pytest.raises(KeywardError) as error:
                await client.create_key("acct_async", "")
            assert error.value.field == "name"

    asyncio.run(scenario())
