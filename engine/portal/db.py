"""One small SQL layer over the portal's two backends: SQLite (default) and PostgreSQL.

Statements are written once, with `?` placeholders and portable types; `Database` turns
them into each backend's dialect. Every call is one transaction (`with db.transaction()
as tx:`), run in the caller's thread: the web app's handlers run in Starlette's thread
pool and the relay calls through `asyncio.to_thread`, so nothing here blocks an event loop.

- SQLite: one file in `data_dir/portal/portal.db`, WAL, one connection per thread.
- PostgreSQL (psycopg 3): a connection pool; several relays share the database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.fsutil import private_dir


class DatabaseError(Exception):
    """The portal's database cannot be opened or used; the message says which and why."""


class Tx:
    """One transaction: `run` a statement, `rows`/`row`/`value` to read."""

    def __init__(self, cursor, dialect: str) -> None:
        self._cur = cursor
        self.dialect = dialect

    def run(self, sql: str, params: tuple | list = ()) -> int:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur.rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._cur.executemany(self._sql(sql), rows)

    def rows(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        self._cur.execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in self._cur.fetchall()]

    def row(self, sql: str, params: tuple | list = ()) -> tuple | None:
        self._cur.execute(self._sql(sql), tuple(params))
        found = self._cur.fetchone()
        return tuple(found) if found is not None else None

    def value(self, sql: str, params: tuple | list = (), default: Any = None) -> Any:
        found = self.row(sql, params)
        return default if found is None else found[0]

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql


class Database:
    dialect = "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:  # pragma: no cover - each backend has its own
        raise NotImplementedError
        yield

    def close(self) -> None:  # pragma: no cover
        pass

    def blob_type(self) -> str:
        return "BLOB"


class SQLite(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn()  # fail now, with the path, when it cannot be opened

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot open the portal database {self.path}: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self._conn()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield Tx(cur, self.dialect)
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


class PostgreSQL(Database):
    dialect = "postgresql"

    def __init__(self, url: str, password: str | None = None, *, max_size: int = 8) -> None:
        try:
            import psycopg  # noqa: F401 - the driver; the pool below needs it
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise DatabaseError("PostgreSQL needs the psycopg package: pip install 'psycopg[binary,pool]'") from None
        kwargs = {"password": password} if password else {}
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs=kwargs,
            open=False,
            timeout=30,
            check=ConnectionPool.check_connection,  # after a database restart: no dead connection handed out
        )
        try:
            self._pool.open(wait=True, timeout=15)
        except Exception as exc:  # psycopg's PoolTimeout names no cause; the URL and the cause do
            self._pool.close()
            raise DatabaseError(f"cannot connect to the portal database {_safe(url)}: {exc}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield Tx(cur, self.dialect)

    def close(self) -> None:
        self._pool.close()

    def blob_type(self) -> str:
        return "BYTEA"


def open_database(url: str | None, data_dir: Path, password: str | None = None) -> Database:
    """The portal's database: PostgreSQL at `url`, else SQLite in `data_dir/portal`."""
    if url:
        return PostgreSQL(url, password)
    return SQLite(data_dir / "portal" / "portal.db")


def _safe(url: str) -> str:
    """The URL without a password, should one have been written into it."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':', 1)[0]}{at}{host}" if at else url
