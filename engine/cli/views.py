"""How commands show results: renderers and the exit codes, in one place."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from engine.config.diagnostics import Diagnostic, Severity, render_text, to_json

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


def show_diagnostics(diags: Sequence[Diagnostic], fmt: str, *, valid: bool, path: str) -> int:
    """Print diagnostics as text (stderr) or JSON (stdout) and return the exit code."""
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
    return EXIT_OK if valid else EXIT_ERROR
