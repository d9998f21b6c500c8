"""The queue's side of the scheduler: leases without bodies, bodies read once and checked,
deferrals without an attempt, lease-aware due times, and listing a page at a time."""

from __future__ import annotations

import sqlite3

import pytest

from engine.relay.queue import NotQueued, Queue

T0 = 1_700_000_000.0


@pytest.fixture
def q(tmp_path):
    queue = Queue.open(tmp_path / "queue")
    yield queue
    queue.close()


async def test_lease_hands_out_entries_without_bodies_and_load_reads_them(q: Queue) -> None:
    body = b"Subject: s\r\n\r\nhello\r\n"
    msg_id = await q.enqueue("a@x.net", ["b@y.net", "c@z.net"], body, meta={"k": 1}, now=T0)
    [leased] = await q.lease(T0, 10, lease_s=60)
    assert (leased.id, leased.size, leased.meta, leased.lease_until) == (msg_id, len(body), {"k": 1}, T0 + 60)
    assert [r.address for r in leased.recipients] == ["b@y.net", "c@z.net"]
    assert leased.body is None
    entry = await q.load(leased)
    assert entry.body == b"Subject: s\r\n\r\nhello\r\n" and entry.recipients == leased.recipients
    assert await q.lease(T0 + 59, 10) == []  # leased: not handed out twice


async def test_the_first_entries_of_a_lease_can_bring_their_bodies(q: Queue) -> None:
    for n in range(3):
        await q.enqueue("a@x.net", ["b@y.net"], f"body {n}".encode(), meta={}, now=T0 + n)
    leased = await q.lease(T0 + 10, 10, bodies=2)  # two start at once; the third waits
    assert [e.body for e in leased] == [b"body 0", b"body 1", None]
    assert (await q.load(leased[0])).body == b"body 0"  # no second trip
    assert (await q.load(leased[2])).body == b"body 2"


async def test_a_lease_takes_the_entry_out_of_the_due_scan_until_it_ends(q: Queue, tmp_path) -> None:
    msg_id = await q.enqueue("a@x.net", ["b@y.net"], b"x", meta={}, now=T0)
    await q.lease(T0, 10, lease_s=600)
    with sqlite3.connect(tmp_path / "queue" / "queue.db") as conn:
        assert conn.execute("SELECT next_due FROM messages WHERE id = ?", (msg_id,)).fetchone()[0] == T0 + 600
    await q.release(msg_id)  # given back: due again at once
    assert [e.id for e in await q.lease(T0 + 1, 10)] == [msg_id]


async def test_a_damaged_body_is_set_aside_when_it_is_loaded(q: Queue, tmp_path) -> None:
    msg_id = await q.enqueue("a@x.net", ["b@y.net"], b"original", meta={}, now=T0)
    [leased] = await q.lease(T0, 10)
    with sqlite3.connect(tmp_path / "queue" / "queue.db") as conn:
        conn.execute("UPDATE bodies SET data = ? WHERE msg_id = ?", (b"tampered", msg_id))
    with pytest.raises(NotQueued):
        await q.load(leased)
    [corrupt] = await q.corrupt()
    assert (corrupt.id, corrupt.reason) == (msg_id, "body checksum mismatch")


async def test_postpone_defers_without_counting_an_attempt(q: Queue) -> None:
    msg_id = await q.enqueue("a@x.net", ["b@y.net", "c@z.net"], b"x", meta={}, now=T0)
    await q.lease(T0, 10)
    assert await q.postpone([(msg_id, ["b@y.net", "nobody@y.net"])], "destination dead", T0 + 900) == 1
    detail = await q.show(msg_id)
    b, c = detail.recipients
    assert (b.state, b.attempts, b.next_attempt_at, b.last_error) == ("deferred", 0, T0 + 900, "destination dead")
    assert (c.state, c.attempts) == ("pending", 0)
    assert detail.lease_until is not None  # c is still leased
    await q.mark_delivered(msg_id, ["c@z.net"], "250 ok")
    assert (await q.show(msg_id)).next_due == T0 + 900
    assert await q.postpone([("gone", ["b@y.net"])], "x", T0) == 0


async def test_list_pages_through_the_queue_oldest_first(q: Queue) -> None:
    ids = [await q.enqueue("a@x.net", [f"r{n}@y.net"], b"x", meta={}, now=T0 + n // 2) for n in range(7)]
    assert ids == sorted(ids)  # ids follow arrival
    first = await q.list(3)
    assert [e.id for e in first] == ids[:3]
    second = await q.list(3, after=first[-1].id)
    third = await q.list(3, after=second[-1].id)
    assert [e.id for e in first + second + third] == ids
    assert await q.list(3, after=third[-1].id) == []
    await q.delete(second[-1].id)
    assert [e.id for e in await q.list(3, after=second[-1].id)] == [third[0].id]  # a cursor that left still works


async def test_list_by_state_and_the_next_retry(q: Queue) -> None:
    a = await q.enqueue("a@x.net", ["r@y.net"], b"x", meta={}, now=T0)
    b = await q.enqueue("a@x.net", ["r@y.net", "s@y.net"], b"x", meta={}, now=T0 + 1)
    await q.lease(T0 + 1, 10)
    await q.mark_deferred(b, ["r@y.net"], "451 later", T0 + 600)
    [deferred] = await q.list(10, "deferred")
    assert deferred.id == b and deferred.states == {"deferred": 1, "pending": 1}
    assert deferred.next_due == T0 + 1  # s is still due now (its lease aside)
    assert [e.id for e in await q.list(10, "pending")] == [a, b]


async def test_open_recipients_by_domain(q: Queue) -> None:
    msg_id = await q.enqueue("a@x.net", ["r@y.net", "s@Y.net", "t@z.net"], b"x", meta={}, now=T0)
    await q.lease(T0, 10)
    await q.mark_delivered(msg_id, ["t@z.net"], "250")
    assert await q.open_by_domain() == {"y.net": 2}
