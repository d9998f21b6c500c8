"""The CLI side of the admin API: a small synchronous client that returns values or raises typed errors.

Exceptions (all carry words a person can act on)::

    AdminError
    ├── TokenNotFound        no token in $SEALRELAY_TOKEN, --token-file or <data_dir>/admin.token
    ├── Unreachable          connection refused, DNS, timeout: the relay was not asked
    ├── Unauthorized         401 (no token) or 403 `forbidden` (wrong token)
    ├── BadResponse          the relay answered something this client cannot read
    └── Refused              the relay read the request and said no (status, error, detail, body)
        ├── StaleBase        409 `stale_base` / 412: `.running_version` moved on; plan again
        ├── PlanMismatch     409 `plan_mismatch`: the saved plan is not what the relay computes now
        ├── Invalid          422: `.diagnostics` (dicts, as engine.config.diagnostics.to_json)
        ├── DowngradeRefused 403 `downgrade_refused`: a loosening without allow_downgrade
        └── ApplyFailed      500 `apply_failed`: the new config failed to build; the old one serves

The client never reads proxy settings from the environment (`trust_env=False`): a token for a
loopback API must not be sent through an HTTP proxy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from engine.admin.audit import AuditRecord
from engine.admin.contract import ApplyRequest, ApplyResult, PlanResult, RunningConfig, Status, WireError
from engine.admin.token import TOKEN_FILE, TokenError, read_token

__all__ = [
    "TOKEN_ENV",
    "AdminError",
    "ApplyFailed",
    "BadResponse",
    "DowngradeRefused",
    "Invalid",
    "PlanMismatch",
    "Refused",
    "RelayClient",
    "StaleBase",
    "TokenNotFound",
    "Unauthorized",
    "Unreachable",
    "fetch_running",
    "token_from",
]

TOKEN_ENV = "SEALRELAY_TOKEN"


class AdminError(Exception):
    """Anything that kept an admin request from succeeding."""


class TokenNotFound(AdminError):
    pass


class Unreachable(AdminError):
    pass


class Unauthorized(AdminError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BadResponse(AdminError):
    pass


class Refused(AdminError):
    """The relay refused; `body` is its JSON error (`error`, `detail`, and per code more)."""

    def __init__(self, status: int, error: str, detail: str, body: Mapping[str, Any]) -> None:
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail, self.body = status, error, detail, dict(body)
        self.running_version: int | None = body.get("running_version")

    @property
    def result(self) -> ApplyResult | None:
        """The relay's ApplyResult, when the refusal came from /v1/apply."""
        try:
            return ApplyResult.from_json(self.body["result"])
        except (KeyError, WireError):
            return None


class StaleBase(Refused):
    pass


class PlanMismatch(Refused):
    pass


class Invalid(Refused):
    @property
    def diagnostics(self) -> list[dict]:
        return list(self.body.get("diagnostics") or [])


class DowngradeRefused(Refused):
    pass


class ApplyFailed(Refused):
    pass


_BY_CODE: dict[str, type[Refused]] = {
    "stale_base": StaleBase,
    "precondition_failed": StaleBase,
    "plan_mismatch": PlanMismatch,
    "invalid": Invalid,
    "downgrade_refused": DowngradeRefused,
    "apply_failed": ApplyFailed,
}


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


class RelayClient:
    """One relay's admin API at `url` (`http://127.0.0.1:8025`; a bare `host:port` works too)."""

    def __init__(
        self, url: str, token: str, timeout: float = 10.0, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = _base_url(url)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def healthz(self) -> bool:
        """True when the API answers /healthz (no token needed); False when it cannot be reached."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def fetch_running(self) -> RunningConfig:
        return self._read(RunningConfig, self._call("GET", "/v1/config"))

    def plan(self, desired: dict) -> PlanResult:
        """The relay's plan of `desired` against its running config (`Invalid` if it has errors)."""
        return self._read(PlanResult, self._call("POST", "/v1/plan", json={"config": desired}))

    def apply(self, request: ApplyRequest, *, if_match: str | None = None) -> ApplyResult:
        """Apply; `if_match` (a config hash) additionally refuses unless that config is running."""
        headers = {"If-Match": f'"{if_match}"'} if if_match else None
        return self._read(ApplyResult, self._call("POST", "/v1/apply", json=request.to_json(), headers=headers))

    def status(self) -> Status:
        return self._read(Status, self._call("GET", "/v1/status"))

    def audit(self, limit: int = 100, since: str | None = None) -> list[AuditRecord]:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        body = self._call("GET", "/v1/audit", params=params)
        try:
            return [AuditRecord.from_json(item) for item in body["records"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse(f"{self.url}/v1/audit: unreadable records: {exc}") from None

    # --- plumbing ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to {self.url}: {exc or 'connection refused'}") from None
        except httpx.TimeoutException:
            raise Unreachable(f"{self.url} did not answer {method} {path} in time") from None
        except httpx.NetworkError as exc:
            raise Unreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        except httpx.RemoteProtocolError as exc:
            raise BadResponse(f"{self.url}: not an HTTP answer: {exc}") from None
        except httpx.HTTPError as exc:
            raise AdminError(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None:
                raise BadResponse(f"{method} {self.url}{path}: the answer is not JSON")
            return body
        raise _error_for(response.status_code, body if isinstance(body, dict) else {}, f"{method} {self.url}{path}")

    def _read(self, kind: Any, body: Any) -> Any:
        try:
            return kind.from_json(body)
        except WireError as exc:
            raise BadResponse(f"{self.url}: unreadable {kind.__name__}: {exc}") from None


def _error_for(status: int, body: dict, what: str) -> AdminError:
    error = str(body.get("error") or f"http_{status}")
    detail = str(body.get("detail") or "")
    if status == 401 or (status == 403 and error == "forbidden"):
        return Unauthorized(f"{what}: {status} {error}: {detail}", status)
    kind = _BY_CODE.get(error, Refused)
    return kind(status, error, detail or f"{what} answered {status}", body)


def fetch_running(url: str, token: str, timeout: float = 10.0) -> RunningConfig:
    """The running config of the relay at `url` (what `sealrelay plan --relay URL` compares against)."""
    with RelayClient(url, token, timeout) as client:
        return client.fetch_running()


def token_from(
    token_file: Path | None = None, data_dir: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> str:
    """The admin token: `$SEALRELAY_TOKEN`, else `--token-file`, else `<data_dir>/admin.token`.

    An explicit `token_file` that cannot be read is an error (no silent fallback).
    `TokenNotFound` says everywhere it looked.
    """
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_ENV, "").strip()
    if value:
        return value
    looked = [f"${TOKEN_ENV} (not set)"]
    if token_file is not None:
        try:
            return read_token(token_file)
        except TokenError as exc:
            raise TokenNotFound(f"no admin token: {exc} (given by --token-file; ${TOKEN_ENV} is not set)") from None
    looked.append("--token-file (not given)")
    if data_dir is not None:
        path = Path(data_dir) / TOKEN_FILE
        try:
            return read_token(path)
        except TokenError as exc:
            looked.append(f"{path} ({exc})")
    else:
        looked.append(f"<data_dir>/{TOKEN_FILE} (no data_dir known)")
    raise TokenNotFound("no admin token; looked in: " + "; ".join(looked))
