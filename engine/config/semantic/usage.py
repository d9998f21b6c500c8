"""Policy tests refer to messages that exist and to names the config defines."""

from __future__ import annotations

from collections.abc import Iterator

from engine.config.diagnostics import Diagnostic, error
from engine.config.semantic import Context, check
from engine.config.semantic.names import unknown


@check
def policy_tests(ctx: Context) -> Iterator[Diagnostic]:
    c = ctx.config
    policies = [p.name for p in c.dlp.policies]
    routes = [r.name for r in c.routes]
    for i, test in enumerate(c.tests):
        base = ("tests", i)
        if ctx.check_files and not ctx.file(test.message).is_file():
            yield error((*base, "message"), f"message file {test.message} does not exist")
        expect = test.expect
        if all(getattr(expect, f) is None for f in type(expect).model_fields):
            yield error(
                (*base, "expect"),
                "the test expects nothing",
                "say at least one of direction, action, method, policies",
            )
        for p, name in enumerate(expect.policies or []):
            if name not in policies:
                yield unknown((*base, "expect", "policies", p), "policy", name, policies, "dlp.policies")
        if expect.route is not None and expect.route not in routes and expect.route != "default":
            yield unknown((*base, "expect", "route"), "route", expect.route, routes, "routes")
