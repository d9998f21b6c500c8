"""What `serve` writes to its log: with `--log-format json` every line is one JSON object
(decisions with their fields at the top level); a refused reload is one line in either format."""

from __future__ import annotations

import json
import logging
import os
import signal
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

from tests.relay.peers import Sink, eventually, wait_for
from tests.relay.test_edge import route_to
from tests.relay.test_reload import admin_line, rewrite, send, service_for  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]


class Lines:
    """A process's stderr, read line by line in a thread, so a test can wait on what it says."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait(self, predicate, what: str, timeout: float = 30) -> dict:
        def found():
            return next((doc for doc in map(json.loads, list(self.lines)) if predicate(doc)), None)

        return wait_for(found, timeout, what)

    def done(self) -> list[str]:
        self._thread.join(10)
        return self.lines


def test_json_logs_are_one_object_per_line_for_every_record(write_config) -> None:
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        port = int(config.read_text().split("port: ", 1)[1].split("}", 1)[0])
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.app", "serve", str(config), "--watch", "--log-format", "json"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "SEALRELAY_LISTEN"},
        )
        lines = Lines(proc)
        try:
            lines.wait(lambda d: "serving (start" in d.get("message", ""), "the relay to start")
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("alice@example.com", ["bob@partner.example"], b"Subject: hi\r\n\r\nhello\r\n")
            sink.wait(1)
            received = lines.wait(lambda d: d.get("event") == "received", "the decision line")
            delivered = lines.wait(lambda d: d.get("event") == "delivery", "the delivery line")
            rewrite(config, "tls: none", "tls: sometimes")  # a broken save: refused, the relay serves on
            refused = lines.wait(lambda d: "reload refused" in d.get("message", ""), "the refused reload")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        every = lines.done()
    assert code == 0
    docs = [json.loads(line) for line in every]  # every line parses: nothing is printed beside the log
    assert all({"ts", "level", "logger"} <= doc.keys() for doc in docs)
    assert docs[0]["logger"] == "sealrelay.serve" and docs[0]["message"].startswith("sealrelay serving")
    assert received["logger"] == "sealrelay.decisions" and received["direction"] == "outbound"
    assert received["sender"] == "alice@example.com" and "message" not in received  # fields, not a string
    assert delivered["result"] == "delivered" and delivered["recipient"] == "bob@partner.example"
    assert refused["level"] == "ERROR" and f"{config}:" in refused["message"] and "sometimes" in refused["message"]


async def test_a_refused_reload_is_one_line_in_text_logs(write_config, service_for, caplog) -> None:  # noqa: F811
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        service = await service_for(config, watch=True)
        await send(service)
        caplog.set_level(logging.ERROR, logger="engine.relay.runtime.service")
        rewrite(config, "tls: none", "tls: sometimes")

        async def refused():
            return [r for r in caplog.records if "reload refused" in r.getMessage()]

        [record] = await eventually(refused, what="the refused reload in the log")
    message = record.getMessage()
    assert "\n" not in message and f"{config}:" in message and "'sometimes' is not allowed" in message
