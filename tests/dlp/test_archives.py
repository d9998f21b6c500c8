"""gzip, bzip2, xz and tar are opened under the same budgets as zip; what is not opened is
unscannable. Before: a `.gz` (or `.tar`, `.tar.gz`, ...) attachment was typed and left
unread, so a card number inside went out as `permit`."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import time
import tracemalloc
import zipfile
from email.message import EmailMessage

import pytest

from engine.relay.dlp.archives import inflate
from engine.relay.dlp.extract import Limits, extract, sniff

CARD = b"4111 1111 1111 1111"


def mail(*files: tuple[str, bytes]) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@corp.example", "b@partner.example", "files"
    message.set_content("see attached\n")
    for name, data in files:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def tar(*members: tuple[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def texts(raw: bytes, limits: Limits = Limits()) -> dict[str, str]:
    return {part.origin: part.text for part in extract(raw, limits).texts}


@pytest.mark.parametrize(
    ("name", "data", "inner"),
    [
        ("log.gz", gzip.compress(b"card " + CARD, mtime=0), "log"),
        ("log.bz2", bz2.compress(b"card " + CARD), "log"),
        ("log.xz", lzma.compress(b"card " + CARD), "log"),
        ("logs.tar", tar(("logs/app.log", b"card " + CARD)), "logs/app.log"),
    ],
)
def test_streams_and_tars_are_opened_and_their_text_scanned(name, data, inner):
    extracted = extract(mail((name, data)))
    assert texts(mail((name, data)))[f"attachment:{name}/{inner}"] == "card 4111 1111 1111 1111"
    assert extracted.unscanned == ()


def test_a_tar_gz_is_two_levels_and_a_gzip_names_its_member():
    archive = gzip.compress(tar(("a.csv", b"n," + CARD)), mtime=0)
    named = io.BytesIO()
    with gzip.GzipFile("report.csv", "wb", fileobj=named, mtime=0) as stream:
        stream.write(b"n," + CARD)
    extracted = extract(mail(("backup.tgz", archive), ("x.bin", named.getvalue())))
    assert [(a.name, a.true_type, a.depth) for a in extracted.attachments] == [
        ("backup.tgz", "gzip", 0),
        ("backup.tgz/backup.tar", "tar", 1),
        ("backup.tgz/backup.tar/a.csv", "text", 2),
        ("x.bin", "gzip", 0),
        ("x.bin/report.csv", "text", 1),
    ]
    assert extracted.unscanned == ()


def test_long_names_and_pax_paths_are_read():
    long = "d/" * 80 + "deep.txt"
    extracted = extract(mail(("a.tar", tar((long, CARD))), ("p.tar", tar(("pax/é.txt", CARD), fmt=tarfile.PAX_FORMAT))))
    assert {a.name for a in extracted.attachments} >= {f"a.tar/{long}", "p.tar/pax/é.txt"}


def test_a_tar_whose_first_member_is_a_pdf_is_a_tar():
    assert sniff(tar(("r.pdf", b"%PDF-1.7 ..."))) == "tar"


def test_a_gzip_bomb_is_refused_by_ratio_in_bounded_time_and_memory():
    """Inflated only to the ratio limit (100 x its packed size, at least 1 MiB), not to 256 MiB."""
    bomb = gzip.compress(bytes(256 * 2**20), mtime=0)  # 256 MiB of zeros in 255 KB
    raw = mail(("zeros.gz", bomb), ("note.txt", b"card " + CARD))
    tracemalloc.start()
    start = time.perf_counter()
    extracted = extract(raw)
    took = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 5.0 and peak < 100 * 2**20, (took, peak)
    assert extracted.unscanned == ("gzip bomb suspected in zeros.gz: ratio over 100:1 (zeros)",)
    assert "attachment:note.txt" in texts(raw)  # the neighbour is still read


def test_a_stream_past_the_total_budget_is_refused():
    data = gzip.compress(b"x" * 300_000, mtime=0)
    extracted = extract(mail(("a.gz", data)), Limits(max_total_bytes=100_000, max_ratio=10_000))
    assert extracted.unscanned == ("gzip bomb suspected in a.gz: a would pass the 100000-byte extraction budget",)


def test_tar_members_count_against_the_entry_limit_and_depth():
    many = tar(*[(f"f{i}.txt", b"x") for i in range(20)])
    assert extract(mail(("m.tar", many)), Limits(max_entries=10)).unscanned == (
        "too many archive entries in m.tar: limit 10 per message; not expanded",
    )
    nest = gzip.compress(gzip.compress(gzip.compress(b"card " + CARD, mtime=0), mtime=0), mtime=0)
    extracted = extract(mail(("n.gz", nest)), Limits(max_depth=2))
    assert extracted.unscanned == ("nesting too deep at n.gz/n/n.content: depth 3 > 2",)


def test_damaged_encrypted_unopenable_and_sparse_are_unscannable():
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.txt", CARD)
    locked = bytearray(zipped.getvalue())
    locked[locked.index(b"PK\x01\x02") + 8] |= 1
    sparse = bytearray(tar(("holes.bin", b"x" * 512)))
    sparse[156] = ord("S")
    sparse[148:156] = b"%06o\x00 " % (sum(sparse[:148]) + 256 + sum(sparse[156:512]))
    cut = gzip.compress(b"x" * 1000, mtime=0)[:12]
    files = [
        ("locked.zip", bytes(locked)),
        ("bad.gz", b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 40),
        ("cut.gz", cut),
        ("a.7z", b"7z\xbc\xaf\x27\x1c" + bytes(30)),
        ("a.rar", b"Rar!\x1a\x07\x00" + bytes(30)),
        ("holes.tar", bytes(sparse)),
    ]
    problems = extract(mail(*files)).unscanned
    assert problems[0] == "encrypted archive member locked.zip/a.txt: not scanned"
    assert problems[1].startswith("unreadable gzip bad.gz: ")
    assert problems[2:] == (
        "attachment:a.7z: a 7z archive, which DLP cannot open",
        "attachment:a.rar: a rar archive, which DLP cannot open",
        "sparse file in holes.tar: holes.bin not scanned",
    )  # a cut stream is read as far as it goes: nothing beyond it leaves either


def test_inflate_never_returns_more_than_asked():
    data = gzip.compress(b"a" * 100_000, mtime=0) * 3  # concatenated members
    assert inflate("gzip", data, 250_000) == b"a" * 250_000
    assert inflate("gzip", data, 10**9) == b"a" * 300_000
    assert inflate("xz", lzma.compress(b"b" * 5000), 100) == b"b" * 100
    assert inflate("bzip2", bz2.compress(b"c" * 5000) * 2, 10_001) == b"c" * 10_000
