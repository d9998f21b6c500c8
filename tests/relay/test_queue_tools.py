"""The queue tools an operator coming from Postfix reaches for, beside a running relay:
`flush` (postqueue -f), `purge` (postsuper -d), `show --body` (postcat), YAML output."""

from __future__ import annotations

from io import StringIO

from ruamel.yaml import YAML

from tests.relay.peers import Sink, eventually, free_port
from tests.relay.test_edge import route_to
from tests.relay.test_queue_cli import cli
from tests.relay.test_relay_flow import message, send

SLOW = "delivery:\n  retry_interval: 1h\n  max_retry_interval: 2h\n  max_queue_lifetime: 1d\n"


async def deferred_queue(write_config, start_relay):
    """A relay whose next hop is down (every attempt deferred for an hour), three messages waiting."""
    port = free_port()
    config = write_config(route_to(port), delivery=SLOW)
    relay = await start_relay(config)
    ids = []
    for to, sender in (
        ("bob@partner.example", "alice@example.com"),
        ("carol@partner.example", "alice@example.com"),
        ("dan@other.example", "erin@example.com"),
    ):
        ids.append((await send(relay, message(to=to, sender=sender, body=f"for {to}\n")))[1].split()[-1])

    async def all_deferred():
        details = [await relay.queue.show(i) for i in ids]
        return all(d.recipients[0].state == "deferred" for d in details)

    await eventually(all_deferred, what="the three messages deferred")
    return config, relay, port, ids


async def test_yaml_output_and_the_body_as_queued(write_config, start_relay) -> None:
    config, _, _, ids = await deferred_queue(write_config, start_relay)
    listed = await cli("list", "--config", str(config), "--format", "yaml")
    assert listed.returncode == 0, listed.stderr
    entries = YAML(typ="safe").load(StringIO(listed.stdout))
    assert [e["id"] for e in entries] == ids and entries[0]["states"] == {"deferred": 1}
    shown = await cli("show", ids[2], "--config", str(config), "--format", "yaml")
    detail = YAML(typ="safe").load(StringIO(shown.stdout))
    assert detail["sender"] == "erin@example.com" and detail["recipients"][0]["address"] == "dan@other.example"
    body = await cli("show", ids[2], "--config", str(config), "--body")
    assert body.returncode == 0 and body.stdout.startswith("Received: ")  # the relay's own trace header first
    assert "To: dan@other.example" in body.stdout and "for dan@other.example" in body.stdout
    bad = await cli("list", "--config", str(config), "--format", "xml")
    assert bad.returncode == 64 and "Invalid value for '--format'" in bad.stderr  # EX_USAGE


async def test_purge_deletes_what_matches_and_only_with_yes(write_config, start_relay) -> None:
    config, relay, _, ids = await deferred_queue(write_config, start_relay)
    unfiltered = await cli("purge", "--config", str(config))
    assert unfiltered.returncode == 1 and "--all" in unfiltered.stderr
    dry = await cli("purge", "--config", str(config), "--recipient", "*@OTHER.example")
    assert dry.returncode == 0 and f"{ids[2]}: would be deleted" in dry.stdout
    assert await relay.queue.count() == 3  # nothing without --yes
    by_sender = await cli("purge", "--config", str(config), "--sender", "alice@*", "--state", "deferred", "--yes")
    assert by_sender.returncode == 0 and "2 message(s) deleted" in by_sender.stdout
    assert [e.id for e in await relay.queue.list()] == [ids[2]]


async def test_flush_makes_every_deferred_recipient_due_now(write_config, start_relay) -> None:
    config, relay, port, _ = await deferred_queue(write_config, start_relay)
    with Sink(port=port) as sink:  # the next hop is back; the schedule would wait an hour
        flushed = await cli("flush", "--config", str(config))
        assert flushed.returncode == 0 and "3 recipient(s) of 3 message(s) due now" in flushed.stdout
        relay.deliverer.kick()
        got = await sink.received(3)
    assert sorted(r for m in got for r in m.recipients) == [
        "bob@partner.example",
        "carol@partner.example",
        "dan@other.example",
    ]
