"""Every exit code of `sealrelay`, and the one place that decides which failure gets which.

Modelled on BSD's sysexits.h, so scripts and service managers can tell failures apart
without reading the message (docs/cli.md has the table):

    0   OK           done (a plan with changes, too, unless --detailed-exitcode)
    1   FAILED       the command ran and its answer is no: a check that fails (`cert show`
                     on an expired certificate, `schema export --check`), a refusal by a rule
                     (a loosening without --allow-downgrade, not approved), a relay that
                     could not take a change
    2   CHANGES      `plan`/`simulate --detailed-exitcode`, `migrate --check`: there are changes
    64  USAGE        a mistake in the command line (unknown option, bad value, missing --reason)
    65  DATAERR      an invalid config (any command, `serve` at start too), a failing policy
                     test, a saved plan that was edited, a config the relay calls invalid
    66  NOINPUT      a config, a saved plan, --messages or a git revision that does not exist
    69  UNAVAILABLE  a relay's admin API cannot be reached
    70  SOFTWARE     an internal error (a bug: the traceback is printed for the report)
    71  OSERR        a listener's port cannot be bound (in use, or not an address of this host)
    73  CANTCREAT    data_dir is not a directory or cannot be created; a file cannot be written
    74  IOERR        reading or writing failed on the way (disk full, I/O error)
    75  TEMPFAIL     the relay's config moved on since the plan (stale): plan again, then apply
    76  PROTOCOL     a relay answered something this CLI cannot read
    77  NOPERM       a relay refused the admin token (401/403); data_dir or a port is not
                     allowed to this user
    78  CONFIG       the CLI's own setup: no admin token found, a token map that cannot be
                     read, a token reference that does not resolve

`--detailed-exitcode` keeps Terraform's contract exactly (0 no changes, 2 changes, 1 any
error: CI scripts test `-eq 1`), so `detailed` folds every failure into 1 there.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from pathlib import Path

__all__ = ["Exit", "detailed", "for_admin_error", "for_config", "for_oserror", "for_start"]


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    CHANGES = 2
    USAGE = 64
    DATAERR = 65
    NOINPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    OSERR = 71
    CANTCREAT = 73
    IOERR = 74
    TEMPFAIL = 75
    PROTOCOL = 76
    NOPERM = 77
    CONFIG = 78


def detailed(code: int, detailed_exitcode: bool) -> int:
    """The code to exit with: as is, or with `--detailed-exitcode` every failure as 1."""
    if detailed_exitcode and code not in (Exit.OK, Exit.CHANGES):
        return Exit.FAILED
    return code


def for_config(path: Path | str) -> Exit:
    """An invalid config at `path`: NOINPUT when nothing is there to read, else DATAERR."""
    return Exit.DATAERR if Path(path).exists() else Exit.NOINPUT


_BY_ERRNO = {
    errno.EACCES: Exit.NOPERM,
    errno.EPERM: Exit.NOPERM,
    errno.ENOTDIR: Exit.CANTCREAT,
    errno.EISDIR: Exit.CANTCREAT,
    errno.EEXIST: Exit.CANTCREAT,
    errno.EROFS: Exit.CANTCREAT,
    errno.ENOENT: Exit.NOINPUT,
    errno.ENOSPC: Exit.IOERR,
    errno.EIO: Exit.IOERR,
    errno.EDQUOT: Exit.IOERR,
}


def for_oserror(exc: OSError) -> Exit:
    """An operating system error: by its errno (a port in use and the rest: OSERR)."""
    return _BY_ERRNO.get(exc.errno, Exit.OSERR) if exc.errno is not None else Exit.OSERR


# A StartupError is one line for the operator and carries no kind: these are the lines
# engine/relay/runtime raises (tests/cli/test_exit_codes.py holds each to its code).
_START_LINES = (
    ("--listen ", Exit.USAGE),  # an override that does not fit the config
    ("is not writable by this user", Exit.NOPERM),
    ("Permission denied", Exit.NOPERM),
    ("exists and is not a directory", Exit.CANTCREAT),
    ("cannot be created", Exit.CANTCREAT),
)


def for_start(exc: BaseException) -> Exit:
    """Why `serve` did not start: a bind error or another OSError by its errno, else its line."""
    if isinstance(exc, OSError):
        return for_oserror(exc)
    line = str(exc)
    return next((code for words, code in _START_LINES if words in line), Exit.OSERR)


def for_admin_error(exc: Exception) -> Exit:
    """A failed admin API call (engine.admin.client's hierarchy), by kind."""
    from engine.admin import client
    from engine.plan.planfile import StalePlanError

    kinds: tuple[tuple[type, Exit], ...] = (
        (client.TokenNotFound, Exit.CONFIG),
        (client.Unreachable, Exit.UNAVAILABLE),
        (client.Unauthorized, Exit.NOPERM),
        (client.BadResponse, Exit.PROTOCOL),
        (client.StaleBase, Exit.TEMPFAIL),
        (client.PlanMismatch, Exit.TEMPFAIL),
        (StalePlanError, Exit.TEMPFAIL),
        (client.Invalid, Exit.DATAERR),
    )
    return next((code for kind, code in kinds if isinstance(exc, kind)), Exit.FAILED)
