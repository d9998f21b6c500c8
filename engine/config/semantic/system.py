"""`system.data_dir` can be a directory: what `validate` can see before a start.

What only the start can see (a directory that cannot be created, a port another process
holds) `serve` reports as one line. Ports used twice in one config: `transport.system`.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.config.diagnostics import Diagnostic, error
from engine.config.semantic import Context, check


@check
def data_dir(ctx: Context) -> Iterator[Diagnostic]:
    if not ctx.check_files:
        return
    where = ctx.file(ctx.config.system.data_dir)
    if where.exists() and not where.is_dir():
        yield error(
            ("system", "data_dir"),
            f"data_dir {ctx.config.system.data_dir} exists and is not a directory: the queue, the "
            "certificate and the state cannot be kept there",
            "point data_dir at a directory (it is created at first start), or move the file away",
        )
