"""Renderers of a Plan: `text` (Terraform-like), `markdown` (a pull-request comment), `json`.

They only read the Plan value. Text and Markdown share one list of lines (marker, depth,
text): the terminal shows markers indented like Terraform, the Markdown diff block puts
them in column 0 so GitHub colours additions, deletions and loosenings (`!`). Changes are
grouped by section; set members under their list; whole items as YAML-like blocks.
Secrets: the diff already replaced them with `(sensitive value)`; every renderer checks
again, by field name, so no reference target ever reaches the output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from engine.config.diagnostics import Diagnostic, Severity, to_json
from engine.config.secrets import REDACTED
from engine.plan.change import LOOSENING, TIGHTENING, Action, Change, Plan
from engine.plan.diff import ORDERED, SECRET_FIELDS, redact

FORMATS = ("text", "markdown", "json")
JSON_FORMAT_VERSION = 1
INLINE_WIDTH = 60
DRIFT_TITLE = "Drift: the running config is not what the last apply set"
REFUSAL = 'apply refuses this plan without --allow-downgrade --reason "…"'


@dataclass(frozen=True)
class Line:
    marker: str  # + - ~ ! or space; "#" for a section header
    depth: int
    text: str
    body: bool = False  # part of a value's block: the terminal shows the marker once, above it


def safe(change: Change) -> Change:
    """The change with every secret shown as `(sensitive value)`, whatever its shape."""
    if any(isinstance(p, str) and p in SECRET_FIELDS for p in change.path):
        hide = lambda v: None if v is None else REDACTED  # noqa: E731
        return replace(change, before=hide(change.before), after=hide(change.after))
    return replace(change, before=redact(change.before), after=redact(change.after))


def _fmt(value: Any) -> str:
    if value == REDACTED:
        return REDACTED
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _inline(value: Any) -> bool:
    return not isinstance(value, dict | list) or len(_fmt(value)) <= INLINE_WIDTH


def _block(value: Any, depth: int, marker: str) -> list[Line]:
    """A nested value as YAML-like lines, short parts kept on one line."""
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _inline(item):
                lines.append(Line(marker, depth, f"{key}: {_fmt(item)}", True))
            else:
                lines.append(Line(marker, depth, f"{key}:", True))
                lines.extend(_block(item, depth + 1, marker))
        return lines
    for item in value:
        if _inline(item):
            lines.append(Line(marker, depth, f"- {_fmt(item)}", True))
            continue
        inner = _block(item, depth + 1, marker)
        if isinstance(item, dict) and inner:
            inner[0] = Line(marker, depth, f"- {inner[0].text}", True)  # YAML's `- key: value`
        else:
            lines.append(Line(marker, depth, "-", True))
        lines.extend(inner)
    return lines


def _verdict(change: Change, depth: int) -> list[Line]:
    if change.effect == LOOSENING:
        return [Line("!", depth, f"loosening: {change.reason}")]
    if change.effect == TIGHTENING:
        return [Line(" ", depth, f"(tightening: {change.reason})")]
    return []


def _value_lines(change: Change) -> list[Line]:
    marker, addr = change.action.marker, change.address
    if change.kind == "order":
        why = ORDERED.get(tuple(p for p in change.path if isinstance(p, str)), "order matters")
        return [
            Line("~", 1, f"{addr}: order changed ({why})"),
            Line(" ", 3, f"before: {', '.join(map(str, change.before))}"),
            Line(" ", 3, f"after:  {', '.join(map(str, change.after))}"),
            *_verdict(change, 2),
        ]
    if change.action is Action.UPDATE:
        if _inline(change.before) and _inline(change.after):
            return [Line("~", 1, f"{addr}: {_fmt(change.before)} -> {_fmt(change.after)}"), *_verdict(change, 2)]
        return [
            Line("~", 1, addr),
            *_verdict(change, 2),
            *_block_or_line(change.before, "-"),
            *_block_or_line(change.after, "+"),
        ]
    value = change.after if change.action is Action.CREATE else change.before
    if _inline(value):
        return [Line(marker, 1, f"{addr} = {_fmt(value)}"), *_verdict(change, 2)]
    return [Line(marker, 1, addr), *_verdict(change, 2), *_block(value, 3, marker)]


def _at(change: Change, depth: int) -> list[Line]:
    """Where the desired config writes the change (locate.py), for the reviewer to open."""
    return [Line(" ", depth, f"at {change.at}")] if change.at else []


def _block_or_line(value: Any, marker: str) -> list[Line]:
    """One side of an update too long for one line: `- before` / `+ after`, then its block."""
    if _inline(value):
        return [Line(marker, 3, _fmt(value))]
    return [Line(marker, 3, "before:" if marker == "-" else "after:"), *_block(value, 4, marker)]


def change_lines(changes: Iterable[Change]) -> list[Line]:
    """Every change as lines, with a header per section and set members under their list."""
    lines: list[Line] = []
    section = group = None
    for change in map(safe, changes):
        if change.section != section:
            if section is not None:
                lines.append(Line(" ", 0, ""))
            section, group = change.section, None
            lines.append(Line("#", 1, section))
        if change.kind == "member":
            if group != change.path:
                group = change.path
                lines.append(Line("~", 1, change.address))
            value = change.after if change.action is Action.CREATE else change.before
            lines.append(Line(change.action.marker, 3, _fmt(value)))
            lines.extend(_at(change, 4))
            lines.extend(_verdict(change, 4))
            continue
        group = None
        first, *rest = _value_lines(change)
        lines.extend([first, *_at(change, 2), *rest])
    return lines


def label(change: Change) -> str:
    """`~ address`, and for a set member the member: `- domain_groups.partners "x.example"`."""
    text = f"{change.action.marker} {change.address}"
    if change.kind == "member":
        text += " " + _fmt(change.after if change.action is Action.CREATE else change.before)
    return text


def _terminal(lines: Iterable[Line]) -> str:
    return "\n".join(f"{'  ' * line.depth}{' ' if line.body else line.marker} {line.text}".rstrip() for line in lines)


def _title(plan: Plan) -> tuple[str, str]:
    desired = plan.desired_label or "the desired config"
    base = plan.base_label or ("the running config" if plan.base_version is not None else "nothing")
    return desired, base


def _provenance(plan: Plan) -> list[str]:
    out = []
    if plan.base_version is not None:
        out.append(f"base version {plan.base_version}")
    if plan.commit:
        out.append(f"commit {plan.commit[:12]}")
    return out


def render_text(plan: Plan) -> str:
    """The plan for a terminal, like `terraform plan`."""
    desired, base = _title(plan)
    out = [f"sealrelay plan: {desired} compared with {base}" + _paren(_provenance(plan))]
    if plan.drift:
        out += ["", f"{DRIFT_TITLE}:", "", _terminal(change_lines(plan.drift))]
    if not plan.has_changes:
        out += ["", f"No changes: {desired} matches {base}."]
    else:
        out += ["", "Changes (+ create, ~ update, - delete; ! loosening):", "", _terminal(change_lines(plan.changes))]
    summary = plan.summary
    out += [f"\nWarning: {warning}" for warning in plan.warnings]
    out += ["", f"Plan: {summary.line()}."]
    if summary.loosening:
        out.append(f"{REFUSAL}.")
    return "\n".join(out) + "\n"


def _paren(items: list[str]) -> str:
    return f" ({', '.join(items)})" if items else ""


def _code(text: str) -> str:
    """Inline code that survives backticks and pipes in the text (for tables)."""
    text = text.replace("|", "\\|")
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if ticks != "`" else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fence(lines: list[Line]) -> list[str]:
    body = []
    for line in lines:
        if line.marker == "#":
            body.append(f"# {line.text}")
        else:
            body.append(f"{line.marker} {'  ' * max(line.depth - 1, 0)}{line.text}".rstrip())
    longest = max((len(r) for text in body for r in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}diff", *body, fence]


def render_markdown(plan: Plan) -> str:
    """A ready pull-request comment: summary table, loosenings, the plan as a diff block."""
    desired, base = _title(plan)
    summary = plan.summary
    out = [f"### sealrelay plan: {_code(desired)} compared with {_code(base)}", ""]
    if plan.drift:
        out += [f"#### {DRIFT_TITLE}", "", *_fence(change_lines(plan.drift)), ""]
    if not plan.has_changes:
        out += [f"**No changes.** {_code(desired)} matches {_code(base)}.", ""]
    else:
        out += [
            "| to add | to change | to destroy | loosening | tightening |",
            "|---:|---:|---:|---:|---:|",
            f"| {summary.add} | {summary.change} | {summary.destroy} | {summary.loosening} | {summary.tightening} |",
            "",
        ]
        if summary.loosening:
            out += [
                "> [!WARNING]",
                f"> **{summary.loosening} loosening.** `sealrelay apply` refuses this plan without "
                '`--allow-downgrade --reason "…"`.',
                "",
                "| change | why it loosens |",
                "|---|---|",
                *(
                    f"| {_code(label(c))} | {c.reason.replace('|', chr(92) + '|')} |"
                    for c in map(safe, plan.loosenings)
                ),
                "",
            ]
        out += ["<details open><summary>Plan</summary>", "", *_fence(change_lines(plan.changes)), "", "</details>", ""]
    for warning in plan.warnings:
        out += ["> [!WARNING]", f"> {warning}", ""]
    facts = [*_provenance(plan), f"desired sha256 {plan.desired_hash[:12]}"]
    if plan.base_hash:
        facts.append(f"base sha256 {plan.base_hash[:12]}")
    out += [f"<sub>Plan: {summary.line()}. {' · '.join(facts)}</sub>"]
    return "\n".join(out) + "\n"


def plan_document(plan: Plan) -> dict[str, Any]:
    """The machine form: the Plan's fields, every change redacted, and the summary."""
    doc = plan.to_dict()
    doc["changes"] = [safe(c).to_dict() for c in plan.changes]
    doc["drift"] = [safe(c).to_dict() for c in plan.drift]
    return {
        "format_version": JSON_FORMAT_VERSION,
        **doc,
        "has_changes": plan.has_changes,
        "summary": asdict(plan.summary),
        "loosening": [c.address for c in plan.loosenings],
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_document(plan), indent=2, ensure_ascii=False) + "\n"


def render_failure(fmt: str, desired: str, problem: str, diagnostics: Sequence[Diagnostic] = ()) -> str:
    """When there is no plan: the same document a plan would have been, saying why not.

    `markdown` is the pull-request comment (each finding at its file:line:col, with its hint),
    `json` a document with `ok: false`; `text` is empty (the diagnostics went to stderr)."""
    if fmt == "json":
        doc = {"format_version": JSON_FORMAT_VERSION, "ok": False, "error": problem}
        doc["diagnostics"] = [to_json(d) for d in diagnostics]
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt != "markdown":
        return ""
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    counts = [
        f"{n} {word}{'s' if n != 1 else ''}"
        for n, word in ((errors, "error"), (len(diagnostics) - errors, "warning"))
        if n
    ]
    out = [f"### sealrelay plan: {_code(desired)}: no plan", "", "> [!CAUTION]", f"> {_escape(problem)}", ""]
    if diagnostics:
        out += [f"**{', '.join(counts)}:**", ""]
    for d in diagnostics:
        where = _code(str(d.mark)) if d.mark else "`<config>`"
        path = f" {_code(d.dotted)}" if d.path else ""
        out.append(f"- **{d.severity.value}** {where}{path}: {_escape(d.message)}")
        out += [f"  - also at {_code(str(mark))}" for mark in d.related]
        if d.hint:
            out.append(f"  - hint: {_escape(d.hint)}")
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    """Words for Markdown: one line, no HTML, no accidental emphasis or links (GitHub reads
    `data_dir` as a word, so underscores stay)."""
    text = " ".join(text.split())
    return re.sub(r"([\\*<>|\[\]])", r"\\\1", text)


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def render(plan: Plan, fmt: str) -> str:
    """The plan in `fmt` (text, markdown or json)."""
    try:
        return RENDERERS[fmt](plan)
    except KeyError:
        raise ValueError(f"unknown plan format {fmt!r}: use {', '.join(FORMATS)}") from None
