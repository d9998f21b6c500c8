"""How commands show results: renderers, and the exit codes (engine/cli/exits.py) they end with."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from engine.cli import exits
from engine.cli.exits import Exit
from engine.config.diagnostics import Diagnostic, Severity, render_text, to_json

EXIT_OK = Exit.OK  # the names commands used before exits.py; new code names an Exit
EXIT_ERROR = Exit.FAILED
EXIT_CHANGES = Exit.CHANGES


def show_diagnostics(diags: Sequence[Diagnostic], fmt: str, *, valid: bool, path: str) -> int:
    """Print diagnostics as text (stderr) or JSON (stdout) and return the exit code
    (0, or for an invalid config 65; 66 when `path` does not exist)."""
    errors = sum(d.severity is Severity.ERROR for d in diags)
    warnings = len(diags) - errors
    if fmt == "json":
        doc = {
            "valid": valid,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": [to_json(d) for d in diags],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        if diags:
            sys.stderr.write(render_text(diags) + "\n")
        summary = f"{path}: valid" if valid else f"{path}: invalid"
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((errors, "error"), (warnings, "warning")) if n]
        sys.stdout.write(summary + (f" ({', '.join(counts)})" if counts else "") + "\n")
    return Exit.OK if valid else exits.for_config(path)
