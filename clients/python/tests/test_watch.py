"""WatchRevocations, sync and asyncio: checkpoints, events, lag, close,
and resuming across a server restart."""

import asyncio
import threading

from conftest import eventually
from keyward import AsyncClient, Client


def consume(watch, events):
    thread = threading.Thread(target=lambda: events.extend_from(watch), daemon=True)
    return thread


class Events(list):
    def extend_from(self, watch):
        for event in watch:
            self.append(event)


def test_sync_watch_checkpoint_event_lag_and_close(keyward):
    with Client(keyward.address) as client:
        created = client.create_key("acct_w", "watched")
        watch = client.watch_revocations(checkpoint_interval_ms=200)
        events = Events()
        thread = consume(watch, events)
        thread.start()
        eventually("the first checkpoint", lambda: len(events) > 0)
        assert events[0].kind == "checkpoint" and events[0].seq == 0, "seq 0 is there, as an int"
        assert watch.lag_seconds is not None and watch.lag_seconds < 10

        client.revoke_key("acct_w", created.key.id)
        eventually("the revocation", lambda: any(e.kind == "revoked" for e in events))
        revoked = next(e for e in events if e.kind == "revoked")
        assert revoked.key_id == created.key.id and revoked.account_id == "acct_w"
        assert revoked.at is not None and watch.position >= revoked.seq

        watch.close()
        thread.join(5)
        assert not thread.is_alive(), "close() ends the iteration"


def test_sync_watch_resumes_after_its_server_restarts(start_keyward, tmp_path):
    database = tmp_path / "restart.db"
    server = start_keyward(database)
    address = server.address
    client = Client(address)
    keys = [client.create_key("acct_r", f"k{i}").key for i in range(3)]
    watch = client.watch_revocations(min_backoff=0.05, max_backoff=0.2)
    events = Events()
    thread = consume(watch, events)
    thread.start()
    eventually("the first checkpoint", lambda: len(events) > 0)
    client.revoke_key("acct_r", keys[0].id)
    eventually("the first revocation", lambda: any(e.key_id == keys[0].id for e in events))

    server.stop()
    # While it is down, another server on the same database revokes a key:
    # only a resume from the watch's position (not "start now") sees it.
    other = start_keyward(database)
    with Client(other.address) as other_client:
        other_client.revoke_key("acct_r", keys[1].id)
    other.stop()
    start_keyward(database, server.port)
    eventually("the revocation made while it was down", lambda: any(e.key_id == keys[1].id for e in events), 20)
    client.revoke_key("acct_r", keys[2].id)
    eventually("every revocation", lambda: any(e.key_id == keys[2].id for e in events), 20)

    assert watch.reconnects >= 1
    revoked = [e.key_id for e in events if e.kind == "revoked"]
    assert revoked == [k.id for k in keys], "each once, in order"
    watch.close()
    thread.join(5)
    client.close()


def test_async_watch_with_resume_and_close(keyward):
    async def scenario():
        async with AsyncClient(keyward.address) as client:
            created = await client.create_key("acct_a", "watched")
            watch = client.watch_revocations(checkpoint_interval_ms=200)
            seen = []

            async def consume():
                async for event in watch:
                    seen.append(event)

            task = asyncio.create_task(consume())
            while not seen:
                await asyncio.sleep(0.02)
            assert seen[0].kind == "checkpoint"
            await client.revoke_key("acct_a", created.key.id)
            for _ in range(500):
                if any(e.kind == "revoked" for e in seen):
                    break
                await asyncio.sleep(0.02)
            assert [e.key_id for e in seen if e.kind == "revoked"] == [created.key.id]
            assert watch.lag_seconds is not None
            watch.close()
            await asyncio.wait_for(task, 5)

            # A new watch from the position reached sees nothing again.
            again = client.watch_revocations(after_seq=watch.position, checkpoint_interval_ms=200)
            async for event in again:
                assert event.kind == "checkpoint", event
                again.close()

    asyncio.run(scenario())
