"""The Control contract's values: JSON round trips and strict reading of requests."""

from __future__ import annotations

import pytest

from engine.admin.contract import (
    HTTP_STATUS,
    ApplyRequest,
    ApplyResult,
    ChangeCounts,
    Control,
    ErrorCode,
    PlanResult,
    Reload,
    RunningConfig,
    Status,
    WireError,
)
from tests.admin.fake_control import FakeControl, config_hash

VALUES = [
    ChangeCounts(1, 2, 3, 1),
    RunningConfig(3, {"version": 1}, config_hash({"version": 1}), "abc", 1.5, "api"),
    RunningConfig(1, {}, config_hash({}), None, 0.0, "file:relay.yaml"),
    Reload(1.0, False, "file:relay.yaml", "bad"),
    Status(2, Reload(1.0, True, "api"), 3.5, {"active": 1}, [{"name": "mx"}]),
    Status(1, None, 0.0),
    PlanResult(True, 4, {"changes": []}, ChangeCounts(add=1)),
    PlanResult(False, 4, error=ErrorCode.INVALID, detail="x", diagnostics=[{"path": "a", "message": "m"}]),
    ApplyRequest({"version": 1}, 2, "abc", "because", True, "sha256:00"),
    ApplyResult(True, 3, 2, True, summary=ChangeCounts(change=1)),
    ApplyResult.refused(ErrorCode.DOWNGRADE_REFUSED, "loosening", version=2, summary=ChangeCounts(loosening=1)),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_json_round_trip(value) -> None:
    assert type(value).from_json(value.to_json()) == value


def test_the_fake_is_a_control() -> None:
    assert isinstance(FakeControl(), Control)


def test_every_error_code_has_a_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert HTTP_STATUS[ErrorCode.STALE_BASE] == 409
    assert HTTP_STATUS["downgrade_refused"] == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "expected an object"),
        ({"base_version": 1}, "missing `config`"),
        ({"config": [], "base_version": 1}, "config: expected an object"),
        ({"config": {}, "base_version": True}, "got a boolean"),
        ({"config": {}, "base_version": -1}, ">= 0"),
        ({"config": {}, "base_version": 1, "allow_downgrade": "yes"}, "allow_downgrade"),
        ({"config": {}, "base_version": 1, "allow_downgrade": True}, "needs a reason"),
        ({"config": {}, "base_version": 1, "allow_downgrade": True, "reason": " "}, "needs a reason"),
        ({"config": {}, "base_version": 1, "extra": 1}, "unknown field"),
    ],
)
def test_apply_requests_are_read_strictly(body, message) -> None:
    with pytest.raises(WireError, match=message):
        ApplyRequest.from_json(body)
