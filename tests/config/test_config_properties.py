"""Properties of the config loader: whatever the input, a result, and every finding located.

For arbitrary text and bytes, for YAML made from a soup of its own punctuation (anchors,
aliases, merge keys, tags, brackets, indentation), for the examples after random edits and
for a directory of such files, `load_config` returns (it never raises) and every diagnostic
names a file it was given, at a line and column inside it. Data written as JSON (YAML
1.2 reads JSON) or dumped by ruamel (which writes shared values once, as anchors and
aliases) reads back equal.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from engine.config.diagnostics import render_text, to_json
from engine.config.load import load_config
from engine.config.source import load_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "[", "]", "{", "}", ", ", ": ", ":", "- ", "? ", "\n", "\n  ", "\n    ", "  ", "\t", "#", "'", '"', "|", ">",
    "&a ", "&b ", "*a", "*b", "<<: ", "<<: *a", "!!int ", "!!str ", "!x ", "! ", "---\n", "...\n", "%YAML 1.2\n",
    "~", "null", "true", "0x1F", "0o17", "1_000", "1e999", ".nan", "-.inf", "version", "version: 1\n", "system",
    "fqdn", "routes", "é", "\ufeff", "\x00", "\x85", "\u2028", "\\", "%", "@", "`",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_located(path: Path, content: bytes) -> None:
    """`load_config` returns, and each finding is at a place inside one of the files given."""
    result = load_config(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    lines = {str(f): line_count(f.read_bytes()) for f in files}
    assert result.ok == (result.config is not None)
    for diag in result.diagnostics:
        for mark in (diag.mark, *diag.related):
            assert mark is not None, f"not located: {diag}"
            assert mark.file in lines, f"{mark.file} is not a file of the config"
            assert 1 <= mark.line <= lines[mark.file] + 1 and mark.column >= 1, f"{mark} is outside the file"
    render_text(result.diagnostics)
    json.dumps([to_json(d) for d in result.diagnostics])


def line_count(content: bytes) -> int:
    """Lines as YAML counts them: CR, NEL, LS and PS break lines too (editors differ on the last three)."""
    try:
        text = content.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        return content.count(b"\n") + 1
    return sum(text.count(c) for c in "\n\r\x85\u2028\u2029") + 1


def write_and_check(workdir: Path, content: bytes) -> None:
    path = workdir / "relay.yaml"
    path.write_bytes(content)
    assert_located(path, content)


@FAST
@given(st.text())
def test_any_text(workdir: Path, text: str) -> None:
    write_and_check(workdir, text.encode("utf-8", "surrogatepass"))


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes(workdir: Path, data: bytes) -> None:
    write_and_check(workdir, data)


yaml_soup = st.lists(st.sampled_from(TOKENS) | st.text(string.ascii_letters + "0123456789", max_size=6), max_size=120)


@FAST
@given(yaml_soup, st.booleans())
def test_yaml_soup(workdir: Path, tokens: list[str], versioned: bool) -> None:
    text = ("version: 1\n" if versioned else "") + "".join(tokens)
    write_and_check(workdir, text.encode("utf-8", "surrogatepass"))


@st.composite
def edited_example(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES)).read_text(encoding="utf-8")
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "duplicate-line", "indent"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif edit == "duplicate-line":
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at) + 1 or len(text)
            text = text[:end] + text[start:end] + text[end:]
        else:
            start = text.rfind("\n", 0, at) + 1
            text = text[:start] + draw(st.sampled_from([" ", "  ", "\t"])) + text[start:]
    return text


@FAST
@given(edited_example())
def test_edited_examples(workdir: Path, text: str) -> None:
    write_and_check(workdir, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=60, deadline=None)
@given(st.lists(yaml_soup.map("".join), min_size=1, max_size=4))
def test_directories_of_broken_files(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> None:
    conf = tmp_path_factory.mktemp("dir")
    for i, text in enumerate(texts):
        (conf / f"{i:02d}.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_located(conf, b"")


# -- what is written is what is read -----------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=20)
)  # JSON escapes astral characters as surrogate pairs, which YAML's \u escapes do not combine
keys = st.text(st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF), max_size=10)
# `extends:` at the top of a file names a shared config (fleet node files): not plain data
top_keys = keys.filter(lambda key: key != "extends")
documents = st.dictionaries(
    top_keys,
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)),
)


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@FAST
@given(documents, st.sampled_from([None, 2]))
def test_json_reads_back_equal(workdir: Path, data: dict, indent: int | None) -> None:
    assume(depth(data) <= 32)
    path = workdir / "relay.yaml"
    path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    loaded = load_path(path)
    assert loaded.diagnostics == [] and loaded.data == data


words = st.text(string.ascii_letters + " ", min_size=1, max_size=8)
plain = st.none() | st.booleans() | st.integers(-1000, 1000) | words


@st.composite
def shared_document(draw: st.DrawFn) -> dict:
    """A document in which one list or mapping appears several times (dumped as &id001/*id001)."""
    shared = draw(st.lists(plain, min_size=1, max_size=3) | st.dictionaries(words, plain, min_size=1, max_size=3))
    out: dict = {}
    for key in draw(st.lists(words.filter(lambda key: key != "extends"), min_size=1, max_size=6, unique=True)):
        out[key] = draw(st.sampled_from([shared, [shared, shared], {"inner": shared}])) if draw(st.booleans()) else key
    return out


@FAST
@given(shared_document())
def test_anchors_and_aliases_read_back_equal(workdir: Path, data: dict) -> None:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    path = workdir / "relay.yaml"
    path.write_text(out.getvalue(), encoding="utf-8")
    loaded = load_path(path)
    assert loaded.diagnostics == [] and loaded.data == data
