"""Benchmark: DLP scanning throughput, hyperscan against Python ``re``, in one run.

Builds two 5 MB mixed corpora in memory (prose with accented and CJK words, CSV rows, log
lines, HTML-ish text; card numbers, SSNs, IBANs, emails and sensitive phrases planted at
two densities: "dense", about 2,000 matches per MB, and "sparse", about 550), compiles 50
regexes (some starting with ``\\b``) and 200 phrases into one ``Matcher`` per backend, and
prints MB/s for each, the hyperscan database alone (the ceiling, no Python per match) and
the ratio. Python ``re`` is measured on a prefix of the dense corpus for a bounded time,
so the whole run takes well under a minute. Both backends must agree on the part they
both scanned, or the run fails; so does a corpus in which nothing matched (the planted
values are what the benchmark is about).

    python bench/bench_dlp_scan.py [--mb 5] [--python-seconds 20]
    python bench/bench_dlp_scan.py --smoke   # 0.3 MB corpora, one pass, about 5 s
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.relay.dlp.matcher import Matcher, hyperscan_available  # noqa: E402

COMMON = (
    "the of and to in is that for it as was with be by on not this are or from at which but have an they you "
    "were her she there been one all we their has would when if so no will more can out up about other into "
    "than them time only new some could these two may first then do any like now over such our even most made "
    "after also did many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long here get both between "
    "life being under never day same another know while last might great old year off come since against go"
).split()
FOREIGN = "résumé naïve café Zürich straße données señor 東京 日本語 프로젝트 façade über".split()
ADJECTIVES = "confidential internal restricted quarterly patient merger salary customer source board".split()
NOUNS = (
    "report data record plan agreement list code minutes forecast review file roadmap budget contract "
    "statement invoice draft strategy design credentials"
).split()
PHRASES = [f"{adjective} {noun}" for adjective in ADJECTIVES for noun in NOUNS]  # 200 phrases

REGEXES = [
    r"\b\d{3}-\d{2}-\d{4}\b",
    r"\b(?:\d[ -]?){13,16}\b",
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b",
    r"[\w.+-]+@[\w-]+\.[\w.]+",
    r"\bINV-\d{6}\b",
    r"\bPO\d{8}\b",
    r"(?i)passw(?:or)?d\s*[:=]\s*\S+",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"-----BEGIN [A-Z ]+PRIVATE KEY-----",
    r"\b\d{4}-\d{2}-\d{2}\b",
    r"(?i)\bapi[_-]?key\b",
    r"\bghp_[A-Za-z0-9]{36}\b",
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    r"(?i)\bconfidential\b.{0,40}\bproject\b",
    r"\$\d{1,3}(?:,\d{3})+(?:\.\d\d)?",
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    r"(?i)\bdate of birth\b",
    r"\bMRN[- ]?\d{7}\b",
    r"\b[A-Z]{3}\d{6}[A-Z]\b",
    r"(?i)\bswift\b\W+[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b",
]
REGEXES += [rf"\bACCT-{number:02d}\d{{5}}\b" for number in range(15)]
REGEXES += [rf"(?i)\bproj(?:ect)?[-_ ]code[-_ ]{number}\d\b" for number in range(15)]
assert len(REGEXES) == 50 and len(PHRASES) == 200


PLANTED = {"ssn": "regex-0", "card": "regex-1", "iban": "regex-2", "email": "regex-3"}  # what _prose plants


def entries() -> list[tuple[str, str, str]]:
    return [(f"regex-{i}", "regex", p) for i, p in enumerate(REGEXES)] + [
        (f"phrase-{i}", "phrase", p) for i, p in enumerate(PHRASES)
    ]


def make_corpus(megabytes: float, density: float = 1.0, seed: int = 20240611) -> list[str]:
    """Documents of 2–40 KB until ``megabytes`` of UTF-8 are reached.

    ``density`` scales how often sensitive values, addresses and phrases are planted in
    the prose (1.0: about one every 60 words; log lines always carry a date).
    """
    rng = random.Random(seed)
    documents, total = [], 0
    while total < megabytes * 1_000_000:
        document = _document(rng, rng.randint(2_000, 40_000), density)
        documents.append(document)
        total += len(document.encode())
    return documents


def _document(rng: random.Random, size: int, density: float) -> str:
    pieces, length = [], 0
    while length < size:
        kind = rng.random()
        if kind < 0.82:
            piece = _prose(rng, density)
        elif kind < 0.92:
            piece = ",".join([str(rng.randint(1, 99999)), rng.choice(COMMON), f"{rng.random() * 1000:.2f}"]) + "\n"
        elif kind < 0.95:  # log lines: each carries a date, a true hit for the date pattern
            piece = f"2024-05-{rng.randint(10, 28)} 12:{rng.randint(10, 59)}:00 INFO host{rng.randint(1, 9)} {_prose(rng, density)}"
        else:
            piece = f"<p>{_prose(rng, density)}</p><td>{rng.randint(0, 10**9)}</td>\n"
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)


def _prose(rng: random.Random, density: float) -> str:
    words = []
    for _ in range(rng.randint(8, 30)):
        roll = rng.random()
        if roll < 0.003 * density:
            words.append(rng.choice(["4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "078-05-1120"]))
        elif roll < 0.006 * density:
            words.append(f"user{rng.randint(1, 999)}@example.com")
        elif roll < 0.009 * density:
            words.append(rng.choice(PHRASES))
        elif roll < 0.03:
            words.append(rng.choice(ADJECTIVES + NOUNS))
        elif roll < 0.04:
            words.append(rng.choice(FOREIGN))
        elif roll < 0.06:
            words.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        else:
            words.append(rng.choice(COMMON))
    text = " ".join(words)
    return text[:1].upper() + text[1:] + ". "  # str.capitalize() would lowercase the planted IBANs


def measure(matcher: Matcher, documents: list[str], seconds: float, passes: int) -> tuple[float, float, int, int, list]:
    """(MB/s per CPU second, MB/s wall clock, bytes scanned, hits, first-pass results).

    Runs whole passes, or stops when ``seconds`` of wall clock run out. CPU time is the
    fair figure on a shared machine; wall clock is printed beside it. Only ``scan`` is
    inside the timed loop.
    """
    sizes = [len(document.encode()) for document in documents]
    scanned = hits = 0
    results = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for number in range(passes):
        for document, size in zip(documents, sizes, strict=True):
            found = matcher.scan(document)
            scanned += size
            if number == 0:
                results.append(found)
            if time.perf_counter() - started > seconds:
                break
        else:
            continue
        break
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
    hits = sum(len(spans) for found in results for spans in found.values())
    first_pass = sum(sizes[: len(results)])
    return scanned / cpu / 1e6, scanned / wall / 1e6, first_pass, hits, results


def engine_only(matcher: Matcher, documents: list[str]) -> float:
    """MB/s (CPU) of the hyperscan database alone, no Python per match: the ceiling."""
    databases = [layer.database for layer, *_ in matcher._prefilter._layers]  # one after a full compile
    data = [document.encode("latin-1", errors="replace")[::-1] for document in documents]
    started = time.process_time()
    for block in data:
        for database in databases:
            database.scan(block)
    return sum(len(document.encode()) for document in documents) / (time.process_time() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--python-seconds", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true", help="0.3 MB corpora, one pass, 1 s of python re")
    arguments = parser.parse_args()
    passes, fast_seconds = 3, 15.0
    if arguments.smoke:
        arguments.mb, arguments.python_seconds, passes, fast_seconds = 0.3, 1.0, 1, 2.0

    corpora = {name: make_corpus(arguments.mb, density) for name, density in (("dense", 1.0), ("sparse", 0.1))}
    for name, documents in corpora.items():
        size = sum(len(document.encode()) for document in documents)
        print(f"corpus {name}: {len(documents)} documents, {size / 1e6:.2f} MB")
    print(f"patterns: {len(REGEXES)} regexes + {len(PHRASES)} phrases\n")
    print("| backend | corpus | compile (s) | MB/s (CPU) | MB/s (wall) | MB per pass | hits per MB |")
    print("|---|---|---:|---:|---:|---:|---:|")

    empty = []

    def row(name: str, corpus: str, compile_time: float, result) -> None:
        rate, wall, scanned, hits, _ = result
        megabytes = scanned / 1e6
        print(
            f"| {name} | {corpus} | {compile_time:.2f} | {rate:.1f} | {wall:.1f} | {megabytes:.2f} | {hits / megabytes:.0f} |"
        )
        if not hits:
            empty.append(f"{name} on {corpus}")

    fast_results = None
    if hyperscan_available():
        started = time.perf_counter()
        fast = Matcher.compile(entries(), backend="hyperscan")
        compile_seconds = time.perf_counter() - started
        for corpus, documents in corpora.items():
            result = measure(fast, documents, fast_seconds, passes=passes)
            row("hyperscan", corpus, compile_seconds, result)
            fast_results = result if corpus == "dense" else fast_results
        ceiling = engine_only(fast, corpora["dense"])
    started = time.perf_counter()
    slow = Matcher.compile(entries(), backend="python")
    compile_seconds = time.perf_counter() - started
    slow_result = measure(slow, corpora["dense"], arguments.python_seconds, passes=1)
    row("python re", "dense", compile_seconds, slow_result)

    if fast_results is None:
        print("\nhyperscan is not installed: only python re was measured")
    else:
        print(f"\nhyperscan database alone (no per-match Python), dense corpus: {ceiling:.0f} MB/s (CPU)")
        print(f"speed-up hyperscan / re on the dense corpus (CPU): {fast_results[0] / slow_result[0]:.0f}x")
        compared = len(slow_result[4])
        agree = fast_results[4][:compared] == slow_result[4]
        print(f"results identical on the {compared} documents both backends scanned: {agree}")
        if not agree:
            return 1
    found = planted_found((fast_results or slow_result)[4])
    print("planted values found in the dense corpus:", ", ".join(f"{kind} {n}" for kind, n in found.items()))
    missing = [kind for kind, n in found.items() if not n]
    if empty or missing:
        print(f"error: the corpus lost its planted values (nothing matched: {', '.join(empty + missing)})")
        return 1
    return 0


def planted_found(results: list[dict]) -> dict[str, int]:
    """Matches per kind of planted value (and phrases) in one backend's per-document results."""
    found = {kind: sum(len(r.get(entry, ())) for r in results) for kind, entry in PLANTED.items()}
    found["phrase"] = sum(len(spans) for r in results for entry, spans in r.items() if entry.startswith("phrase-"))
    return found


if __name__ == "__main__":
    sys.exit(main())
