"""Secure portal: mailbox and search latency over HTTPS, on SQLite and on PostgreSQL.

The issue's target: with 1,000 stored messages, the inbox and search answer with a p95
under 50 ms, on both backends. For each backend this benchmark

1. fills the portal's store (`engine.portal.store.Store` on `engine.portal.db.open_database`)
   the way the `secure_portal` method does (`mail.read(raw).head`, then `Store.put`), one
   message after another: 1,000 messages for the measured user (inbox 70%, sent 20%,
   trash 10%) and 1,000 for each of 9 other users, interleaved as mail arrives, so the
   tables (and the blind search index) are not trivially small. The messages are real
   RFC 5322 mail built with the stdlib `email` package from a fixed seed: varied subjects,
   text bodies of 1–20 KB (log-uniform: most mail is short) from a Zipf-distributed
   vocabulary, a third with an HTML alternative, a quarter with one or two attachments;
2. starts the real portal app (`engine.portal.web.make_app` on a `PortalService`, config
   provisioned by `engine.relay.runtime.live.provision`) in a separate process, served by
   uvicorn over HTTPS on loopback exactly as the relay's portal component serves it
   (`engine.admin.api.serve_admin`, the relay's self-signed certificate): the bench is the
   browser, the server has its own process and core;
3. signs the user in with a session made in the store (its cookie sent on every request)
   and times, on one keep-alive connection, request sent -> whole page received:
   `GET /inbox` (first page and a middle page), `GET /search?q=<a word in about 5% of the
   mailbox>`, `GET /search?q=<two words>` and `GET /message/<id>` (a different message each
   time: the first open of a message also marks it seen and writes an audit line), the
   kinds interleaved, after a warm-up;
4. times the store's own calls in-process (no HTTP, no template) for the same requests, to
   show what share of the page is the database and the decryption.

Every page is checked (status 200, the rows it must show, search hits equal to what the
corpus holds); a wrong page fails the run. The PostgreSQL cluster is private and throw-away
(tests/portal/infra.py: Debian's binaries, run as the `postgres` user, fsync off).

    python bench/bench_portal.py [--messages 1000] [--others 9] [--requests 200] [--backends sqlite,postgresql]
    python bench/bench_portal.py --smoke   # 50 messages, SQLite only, 20 requests each: a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import math
import os
import platform
import random
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.portal import mail  # noqa: E402
from engine.portal.crypto import PortalKey  # noqa: E402
from engine.portal.db import open_database  # noqa: E402
from engine.portal.store import PAGE, Store  # noqa: E402
from engine.portal.web import COOKIE  # noqa: E402

TARGET_MS = 50.0
OWNER = "alice@example.com"
OTHER_USERS = ("bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
FOLDER_SHARES = (("inbox", 0.7), ("sent", 0.2), ("trash", 0.1))
SEED = 20240611
RETENTION = 90 * 86400
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
KINDS = ("inbox, first page", "inbox, middle page", "search, one word", "search, two words", "open a message")
IN_TARGET = KINDS[:4]  # what the target is about; opening a message is reported beside it

# ---------------------------------------------------------------------------------------------
# The corpus: real mail from a fixed seed

COMMON = (
    "the of and to in is that for it as was with be by on not this are or from at which but have an they you "
    "were her she there been one all we their has would when if so no will more can out up about other into "
    "than them time only new some could these two may first then do any like now over such our even most made "
    "after also did many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long here get both between "
    "life being under never day same another know while last might great old year off come since against go"
).split()
BUSINESS = (
    "report meeting budget contract invoice review draft proposal schedule agenda quarterly customer project "
    "deadline update forecast payment order shipment account policy audit approval request team office client "
    "supplier delivery minutes summary figures estimate training release renewal migration incident ticket"
).split()
ACCENTED = "café résumé naïve Zürich straße señor façade über déjà Ångström".split()
SYLLABLES = (
    "ba be bo ka ke ko ra re ri ro ta te to la le lo ma me mi mo na ne no sa se so va ve vo "
    "dar den dor fin gal han kor len mar nor pel ran sel tan vin wel zor bri cla dre fro gri pla"
).split()
FIRST = "Anna Ben Chloe David Emma Felix Greta Hugo Iris Jonas Karin Lukas Maria Nils Olga Paul Rosa Sven".split()
LAST = "Berg Costa Dahl Engel Fischer Garcia Hansen Ivanova Jensen Keller Lind Moreau Novak Olsen Petit".split()
PARTNERS = ("partner.test", "supplier.example.net", "clinic.example.org", "lawfirm.example", "bank.example")
MONTHS = "January February March April May June July August September October November December".split()
SUBJECTS = (
    "{B} for {M}",
    "{b} {w} {w}",
    "Re: {b} {w}",
    "RE: {B} ({M} {n})",
    "Fwd: {b} from {p}",
    "Question about the {b} {w}",
    "{B} {n}: {w} {w} and {w}",
    "Urgent: {b} {w} due {M} {n}",
    "Minutes of the {w} {b}",
    "{B} — {w} {w}",
)


class Words:
    """A vocabulary with Zipf-like frequencies: English function words first, then business
    words, then 20,000 made-up words (which appear nowhere else: in addresses, subjects'
    templates or attachment names), so how many messages hold a made-up word is known exactly."""

    def __init__(self, rng: random.Random, size: int = 20_000) -> None:
        made: dict[str, None] = {}
        while len(made) < size:
            made.setdefault("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))), None)
        self.made = set(made)
        head = COMMON + BUSINESS + ACCENTED
        rng.shuffle(head)
        self.vocab = head + list(made)
        weights = [1.0 / (rank + 2.7) ** 1.05 for rank in range(len(self.vocab))]
        self.cum = list(itertools.accumulate(weights))

    def take(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self.vocab, cum_weights=self.cum, k=count)

    def text(self, rng: random.Random, size: int) -> str:
        """Paragraphs of sentences, about `size` characters."""
        out, length = [], 0
        while length < size:
            sentences = []
            for _ in range(rng.randint(2, 6)):
                words = self.take(rng, rng.randint(5, 22))
                if rng.random() < 0.15:
                    words.insert(rng.randrange(len(words)), str(rng.randint(1, 99_999)))
                sentence = " ".join(words)
                sentences.append(sentence[:1].upper() + sentence[1:] + rng.choice(".....?!"))
            paragraph = " ".join(sentences)
            out.append(paragraph)
            length += len(paragraph) + 2
        return "\n\n".join(out)


@dataclass
class Item:
    owner: str
    folder: str
    raw: bytes
    words: frozenset[str]  # the made-up words it holds (subject and body), case-folded
    attachments: int


@dataclass
class Corpus:
    items: list[Item]  # in arrival order (users interleaved)
    words: Words
    seconds: float

    def of(self, owner: str) -> list[Item]:
        return [item for item in self.items if item.owner == owner]


def person(rng: random.Random, domain: str | None = None) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last} <{first.lower()}.{last.lower()}@{domain or rng.choice(PARTNERS)}>"


def message(rng: random.Random, words: Words, owner: str, folder: str, when: float) -> Item:
    """One RFC 5322 message as the portal would store it for `owner` in `folder`."""
    fields = {
        "B": rng.choice(BUSINESS).capitalize(),
        "b": rng.choice(BUSINESS),
        "M": rng.choice(MONTHS),
        "n": rng.randint(1, 2_000),
        "p": rng.choice(PARTNERS),
    }
    subject = rng.choice(SUBJECTS)
    while "{w}" in subject:
        subject = subject.replace("{w}", words.take(rng, 1)[0], 1)
    subject = subject.format(**fields)
    body = words.text(rng, int(math.exp(rng.uniform(math.log(1_000), math.log(20_000)))))
    msg = EmailMessage()
    if folder == "sent":
        msg["From"] = owner
        msg["To"] = ", ".join(person(rng) for _ in range(rng.choice((1, 1, 1, 2, 3))))
    else:
        msg["From"] = person(rng)
        msg["To"] = owner if rng.random() < 0.8 else f"{owner}, {person(rng, 'example.com')}"
    if rng.random() < 0.2:
        msg["Cc"] = ", ".join(person(rng) for _ in range(rng.randint(1, 3)))
    msg["Subject"] = subject
    msg["Date"] = formatdate(when)
    msg["Message-ID"] = make_msgid(idstring=str(rng.getrandbits(40)), domain="mail.example.com")
    msg.set_content(body)
    if rng.random() < 0.3:  # an HTML alternative, as many mail clients send
        paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
        msg.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    attachments = 0
    if rng.random() < 0.25:
        for _ in range(rng.choice((1, 1, 2))):
            attachments += 1
            kind = rng.random()
            if kind < 0.5:
                data = rng.randbytes(rng.randint(2_000, 60_000))
                msg.add_attachment(
                    data, maintype="application", subtype="pdf", filename=f"scan-{rng.randint(1, 9999)}.pdf"
                )
            elif kind < 0.8:
                rows = "\n".join(
                    f"{rng.randint(1, 99999)},{rng.choice(BUSINESS)},{rng.random() * 1e4:.2f}"
                    for _ in range(rng.randint(20, 400))
                )
                msg.add_attachment(rows, subtype="csv", filename=f"figures-{rng.randint(1, 999)}.csv")
            else:
                data = rng.randbytes(rng.randint(5_000, 40_000))
                msg.add_attachment(data, maintype="image", subtype="jpeg", filename=f"photo-{rng.randint(1, 999)}.jpg")
    held = {w.casefold() for w in re.findall(r"\w+", subject + " " + body)} & words.made
    return Item(owner, folder, msg.as_bytes(), frozenset(held), attachments)


def make_corpus(owners: list[str], per_owner: int, seed: int = SEED) -> Corpus:
    started = time.perf_counter()
    rng = random.Random(seed)
    words = Words(rng)
    folders = [name for name, share in FOLDER_SHARES for _ in range(round(share * per_owner))]
    folders = (folders + ["inbox"] * per_owner)[:per_owner]
    plans = {owner: rng.sample(folders, len(folders)) for owner in owners}
    now = time.time()
    items = []
    for index in range(per_owner):  # mail arrives for everyone at once: the rows interleave
        for owner in owners:
            when = now - RETENTION + (index + rng.random()) * RETENTION / per_owner
            items.append(message(rng, words, owner, plans[owner][index], when))
    return Corpus(items, words, time.perf_counter() - started)


def document_frequency(items: list[Item]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for index, item in enumerate(items):
        for word in item.words:
            found.setdefault(word, set()).add(index)
    return found


def pick_queries(items: list[Item]) -> tuple[str, int, str, int]:
    """A made-up word in about 5% of `items`, and two words (each in 8–30%) that meet in about
    3%: the queries and how many messages hold them."""
    df = document_frequency(items)
    total = len(items)
    one = min(sorted(df), key=lambda w: (abs(len(df[w]) - 0.05 * total), w))
    middling = sorted(w for w in df if 0.08 * total <= len(df[w]) <= 0.30 * total)[:60]
    pairs = [(a, b) for a, b in itertools.combinations(middling, 2) if df[a] & df[b]]
    if not pairs:  # a tiny corpus (--smoke): any two words that meet
        common = sorted(df, key=lambda w: (-len(df[w]), w))[:40]
        pairs = [(a, b) for a, b in itertools.combinations(common, 2) if df[a] & df[b]] or [(one, one)]
    a, b = min(pairs, key=lambda p: (abs(len(df[p[0]] & df[p[1]]) - 0.03 * total), p))
    return one, len(df[one]), f"{a} {b}", len(df[a] & df[b])


# ---------------------------------------------------------------------------------------------
# Filling a store


@dataclass
class Filled:
    ids: dict[str, list[str]] = field(default_factory=dict)  # owner -> ids, in corpus order
    seconds: float = 0.0
    count: int = 0


def fill(store: Store, items: list[Item], progress: bool) -> Filled:
    """Store every item as the `secure_portal` method does: read the head, then `put`."""
    out = Filled()
    expires = time.time() + RETENTION
    started = time.perf_counter()
    for number, item in enumerate(items, 1):
        head = mail.read(item.raw).head
        msg_id, created = store.put(item.owner, item.folder, item.raw, head, expires=expires)
        assert created
        out.ids.setdefault(item.owner, []).append(msg_id)
        if progress and number % 1000 == 0:
            rate = number / (time.perf_counter() - started)
            print(f"    {number:,} stored ({rate:.0f} msg/s)", file=sys.stderr, flush=True)
    out.seconds = time.perf_counter() - started
    out.count = len(items)
    return out


def store_size(store: Store, data_dir: Path) -> tuple[int, int]:
    """(index terms, bytes on disk: database plus blob files)."""
    with store.db.transaction() as tx:
        terms = int(tx.value("SELECT COUNT(*) FROM terms"))
        if store.db.dialect == "postgresql":
            size = int(tx.value("SELECT pg_database_size(current_database())"))
        else:
            size = sum(p.stat().st_size for p in (data_dir / "portal").rglob("*") if p.is_file())
    return terms, size


# ---------------------------------------------------------------------------------------------
# The server: the portal app in its own process, as the relay's portal component serves it

CONFIG = """\
version: 1
system:
  fqdn: portal-bench.example.com
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: 2525}}
  data_dir: ./var
ip_groups:
  internal_servers: [127.0.0.0/8]
encryption:
  method: secure_portal
  secure_portal:
    url: https://127.0.0.1
{database}"""


def write_config(directory: Path, key: bytes, database: str | None) -> Path:
    """The relay config, and the portal key where the relay keeps it when the config names
    none (`data_dir/portal/portal.key`, read by `PortalKey.in_dir`)."""
    keys = directory / "var" / "portal"
    keys.mkdir(parents=True, mode=0o700)
    (keys / "portal.key").write_text(base64.b64encode(key).decode() + "\n")
    (keys / "portal.key").chmod(0o600)
    path = directory / "relay.yaml"
    path.write_text(CONFIG.format(database=f"    database: {database}\n" if database else ""))
    return path


def serve(config_path: Path) -> int:
    """The child process: serve the portal of `config_path` until stdin closes."""
    from engine.admin.api import serve_admin, stop_admin
    from engine.config.load import load_config
    from engine.portal.service import PortalService, Wiring
    from engine.portal.web import make_app
    from engine.relay.runtime.live import provision

    loaded = load_config(config_path)
    if loaded.config is None:
        print("\n".join(str(d) for d in loaded.diagnostics), file=sys.stderr)
        return 2
    live = provision(loaded.config, base_dir=loaded.base_dir, version=1)

    async def no_mail(*args, **kwargs):
        raise RuntimeError("the benchmark sends no mail")

    def open_store() -> Store:  # as the portal component opens it: the URL of the config, the key in data_dir
        database = live.config.encryption.secure_portal.database
        blobs = None if database else live.data_dir / "portal" / "blobs"
        return Store(open_database(database, live.data_dir), PortalKey.in_dir(live.data_dir / "portal"), blobs)

    async def run() -> None:
        store = await asyncio.to_thread(open_store)
        service = PortalService(
            store, Wiring(asyncio.get_running_loop(), no_mail, no_mail, lambda: live), live.data_dir
        )
        cert = live.certificate_dir
        server, task = await serve_admin(
            make_app(service), "127.0.0.1", 0, name="secure portal", tls=(cert / "cert.pem", cert / "key.pem")
        )
        print(f"port {server.config.port}", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
        await stop_admin(server, task)
        store.close()

    asyncio.run(run())
    return 0


class Server:
    def __init__(self, config_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        match = re.fullmatch(r"port (\d+)\n", found[0]) if found else None
        if match is None:
            self.stop()
            raise RuntimeError(f"the portal server did not start (said {found!r})")
        self.url = f"https://127.0.0.1:{match[1]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Plan:
    """What to ask for, and what each page must show."""

    inbox_pages: int
    middle: int
    inbox_total: int
    one: str
    one_hits: int
    two: str
    two_hits: int
    open_ids: list[str]
    subjects: dict[str, str]


def check(kind: str, body: str, plan: Plan, page: int = 0) -> None:
    rows = body.count('href="/message/')
    if kind.startswith("inbox"):
        want = min(PAGE, plan.inbox_total - page * PAGE)
        ok = rows == want and f"Page {page + 1} of {plan.inbox_pages}" in body if plan.inbox_pages > 1 else rows == want
    elif kind == "search, one word":
        ok = rows == min(PAGE, plan.one_hits)
    elif kind == "search, two words":
        ok = rows == min(PAGE, plan.two_hits)
    else:
        ok = "<h1" in body
    if not ok:
        raise AssertionError(f"{kind}: the page is not what the store holds ({rows} rows)\n{body[:2000]}")


def measure(url: str, token: str, plan: Plan, requests: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per request, per kind: one keep-alive HTTPS connection, kinds interleaved."""
    import httpx

    headers = {"cookie": f"{COOKIE}={token}"}  # set by hand: what the browser would send
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    opened = iter(plan.open_ids)
    with httpx.Client(base_url=url, verify=False, headers=headers, timeout=30) as client:
        for round_ in range(warmup + requests):
            for kind in KINDS:
                page = 0
                if kind == "inbox, first page":
                    path = "/inbox"
                elif kind == "inbox, middle page":
                    page = plan.middle
                    path = f"/inbox?page={page}"
                elif kind == "search, one word":
                    path = f"/search?q={plan.one}"
                elif kind == "search, two words":
                    path = f"/search?q={plan.two.replace(' ', '+')}"
                else:
                    msg_id = next(opened)
                    path = f"/message/{msg_id}"
                started = time.perf_counter()
                response = client.get(path)
                body = response.text
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise AssertionError(f"GET {path}: {response.status_code}\n{body[:1000]}")
                check(kind, body, plan, page)
                if kind == "open a message" and plan.subjects[msg_id] not in body:
                    raise AssertionError(f"GET {path}: the page does not show the message's subject")
                if round_ >= warmup:
                    times[kind].append(elapsed)
    return times


def store_times(store: Store, plan: Plan, requests: int) -> dict[str, list[float]]:
    """The store's own calls for each kind, in-process (no HTTP, no page): milliseconds."""
    calls = {
        "inbox, first page": lambda _: store.folder(OWNER, "inbox", page=0),
        "inbox, middle page": lambda _: store.folder(OWNER, "inbox", page=plan.middle),
        "search, one word": lambda _: store.search(OWNER, plan.one),
        "search, two words": lambda _: store.search(OWNER, plan.two),
        "open a message": lambda i: mail.read(store.get(OWNER, plan.open_ids[i % len(plan.open_ids)])[1]),
    }
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for i in range(requests):
        for kind, call in calls.items():
            started = time.perf_counter()
            call(i)
            times[kind].append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the two nearest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------------------------
# One backend, end to end


@dataclass
class Result:
    backend: str
    filled: Filled
    terms: int
    size: int
    plan: Plan
    http: dict[str, list[float]]
    store: dict[str, list[float]]


def run_backend(backend: str, corpus: Corpus, args, workdir: Path) -> Result:
    cluster = None
    database = None
    try:
        if backend == "postgresql":
            cluster, database = start_postgres()
        base = workdir / backend
        base.mkdir()
        key = os.urandom(32)
        config = write_config(base, key, database)
        data_dir = base / "var"
        print(f"{backend}: filling {len(corpus.items):,} messages...", file=sys.stderr, flush=True)
        store = Store(
            open_database(database, data_dir), PortalKey(key), None if database else data_dir / "portal" / "blobs"
        )
        try:
            filled = fill(store, corpus.items, progress=not args.smoke)
            terms, size = store_size(store, data_dir)
            plan = make_plan(corpus, filled, args.requests + args.warmup)
            token = secrets.token_urlsafe(32)
            store.new_session(token, OWNER, "full", secrets.token_urlsafe(24), "password")
        finally:
            store.close()
        print(f"{backend}: measuring over HTTPS...", file=sys.stderr, flush=True)
        server = Server(config)
        try:
            http = measure(server.url, token, plan, args.requests, args.warmup)
        finally:
            server.stop()
        store = Store(
            open_database(database, data_dir), PortalKey(key), None if database else data_dir / "portal" / "blobs"
        )
        try:
            parts = store_times(store, plan, args.requests)
        finally:
            store.close()
        return Result(backend, filled, terms, size, plan, http, parts)
    finally:
        if cluster is not None:
            cluster.stop()


def make_plan(corpus: Corpus, filled: Filled, opens: int) -> Plan:
    mine = corpus.of(OWNER)
    ids = filled.ids[OWNER]
    inbox_total = sum(1 for item in mine if item.folder == "inbox")
    pages = max(1, -(-inbox_total // PAGE))
    one, one_hits, two, two_hits = pick_queries(mine)
    rng = random.Random(SEED + 1)
    chosen = rng.sample(range(len(ids)), min(opens, len(ids)))
    while len(chosen) < opens:  # a small corpus (--smoke): messages opened again
        chosen.append(rng.randrange(len(ids)))
    subjects = {ids[i]: _subject(mine[i].raw) for i in chosen}
    return Plan(pages, pages // 2, inbox_total, one, one_hits, two, two_hits, [ids[i] for i in chosen], subjects)


def _subject(raw: bytes) -> str:
    from html import escape

    return escape(mail.read(raw).head.subject)


def start_postgres():
    """A private cluster (tests/portal/infra.py) and the URL of a new database in it."""
    from tests.portal.infra import PG_BIN_GLOB, create_database, find_pg_bin, start_cluster

    if find_pg_bin() is None:
        raise SystemExit(f"PostgreSQL is not installed (no {PG_BIN_GLOB}/initdb): apt-get install postgresql")
    cluster = start_cluster()
    try:
        create_database(cluster.url(), "portal_bench")
    except BaseException:
        cluster.stop()
        raise
    return cluster, cluster.url("portal_bench")


def postgres_version() -> str:
    from tests.portal.infra import find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        return "none"
    done = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True)
    found = re.search(r"\d+(?:\.\d+)+", done.stdout) if done.returncode == 0 else None
    return found[0] if found else "?"


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, load average {load:.1f}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def report(corpus: Corpus, results: list[Result], args) -> bool:
    mine = corpus.of(OWNER)
    folders = {name: sum(1 for i in mine if i.folder == name) for name, _ in FOLDER_SHARES}
    with_files = sum(1 for i in mine if i.attachments)
    megabytes = sum(len(i.raw) for i in corpus.items) / 1e6
    others = len(corpus.items) // len(mine) - 1
    print(
        f"corpus: {len(mine):,} messages for {OWNER} (inbox {folders['inbox']:,}, sent {folders['sent']:,}, "
        f"trash {folders['trash']:,}; {with_files:,} with attachments), {others} other mailboxes of {len(mine):,}; "
        f"{len(corpus.items):,} messages, {megabytes:.1f} MB, made in {corpus.seconds:.1f} s"
    )
    plan = results[0].plan
    print(
        f'queries: "{plan.one}" is in {plan.one_hits:,} of {len(mine):,} messages '
        f'({100 * plan.one_hits / len(mine):.1f}%); "{plan.two}" in {plan.two_hits:,} '
        f"({100 * plan.two_hits / len(mine):.1f}%); a page shows at most {PAGE}"
    )
    for r in results:
        f = r.filled
        print(
            f"fill {r.backend}: {f.count:,} messages in {f.seconds:.1f} s ({f.count / f.seconds:,.0f} msg/s), "
            f"{r.terms:,} index terms, {r.size / 1e6:,.0f} MB on disk"
        )
    print()
    print(f"HTTPS, {args.requests} requests of each kind after {args.warmup} of warm-up; milliseconds:")
    print()
    names = [BACKEND_NAMES[r.backend] for r in results]
    print("| request | " + " | ".join(f"{n} p50 | {n} p95 | {n} p99 | {n} p95 / 50 ms" for n in names) + " |")
    print("|---|" + "---:|---:|---:|---:|" * len(results))
    for kind in KINDS:
        cells = []
        for r in results:
            t = r.http[kind]
            p95 = percentile(t, 95)
            cells.append(f"{percentile(t, 50):.1f} | {p95:.1f} | {percentile(t, 99):.1f} | {p95 / TARGET_MS:.2f}x")
        print(f"| {_label(kind, plan)} | " + " | ".join(cells) + " |")
    print()
    print("the store's calls alone (in-process: no HTTP, no page), p50 / p95 in ms:")
    print()
    print("| request | " + " | ".join(f"{n} p50 | {n} p95" for n in names) + " |")
    print("|---|" + "---:|---:|" * len(results))
    for kind in KINDS:
        cells = [f"{percentile(r.store[kind], 50):.2f} | {percentile(r.store[kind], 95):.2f}" for r in results]
        print(f"| {_label(kind, plan)} | " + " | ".join(cells) + " |")
    print()
    worst = max((percentile(r.http[k], 95), BACKEND_NAMES[r.backend], k) for r in results for k in IN_TARGET)
    met = worst[0] < TARGET_MS
    print(
        f"target: inbox and search p95 < {TARGET_MS:.0f} ms on {', '.join(names)} -> "
        f"{'met' if met else 'NOT met'} (worst: {worst[2]} on {worst[1]}, p95 {worst[0]:.1f} ms)"
    )
    return met


def _label(kind: str, plan: Plan) -> str:
    return {
        "inbox, first page": f"GET /inbox (page 1 of {plan.inbox_pages})",
        "inbox, middle page": f"GET /inbox?page={plan.middle} (page {plan.middle + 1})",
        "search, one word": f"GET /search, 1 word ({plan.one_hits} hits)",
        "search, two words": f"GET /search, 2 words ({plan.two_hits} hits)",
        "open a message": "GET /message/<id>",
    }[kind]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per mailbox")
    parser.add_argument("--others", type=int, default=9, help="other users' mailboxes, as large")
    parser.add_argument("--requests", type=int, default=200, help="timed requests of each kind")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests of each kind first")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--smoke", action="store_true", help="50 messages, 2 other users, SQLite, 20 requests")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.smoke:
        args.messages, args.others, args.requests, args.warmup, args.backends = 50, 2, 20, 3, "sqlite"
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKEND_NAMES)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")

    owners = [OWNER] + [f"{name}@example.com" for name in OTHER_USERS[: args.others]]
    print(f"making {len(owners) * args.messages:,} messages...", file=sys.stderr, flush=True)
    corpus = make_corpus(owners, args.messages)
    print(machine() + (f"; PostgreSQL {postgres_version()}" if "postgresql" in backends else ""))
    workdir = Path(tempfile.mkdtemp(prefix="sealrelay-bench-portal-"))
    try:
        results = [run_backend(backend, corpus, args, workdir) for backend in backends]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(corpus, results, args)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
