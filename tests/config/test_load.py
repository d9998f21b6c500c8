"""The load pipeline: version dispatch, the gates in order, the typed result."""

from __future__ import annotations

from pathlib import Path

from engine.config.load import load_config, validate_data
from engine.config.model import RelayConfig
from engine.config.units import ByteSize, Duration

MINIMAL = {
    "version": 1,
    "system": {"fqdn": "a.example.com", "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
}


def test_minimal_config_gets_documented_defaults() -> None:
    config, diags = validate_data(MINIMAL)
    assert diags == [] and isinstance(config, RelayConfig)
    assert config.delivery.retry_interval == Duration(900)
    assert config.system.message_size_limit == ByteSize(50_000_000)
    assert config.encryption.method == "tls" and config.encryption.backup == "none"
    assert config.tls.certificate.self_signed.key == "ecdsa-p256"
    assert config.system.admin.port == 8025 and config.system.admin.address == "127.0.0.1"


def test_models_are_frozen() -> None:
    config, _ = validate_data(MINIMAL)
    try:
        config.system.fqdn = "b.example.com"  # type: ignore[misc]
    except Exception as exc:  # pydantic raises ValidationError for frozen instances
        assert "frozen" in str(exc)
    else:
        raise AssertionError("config models must be immutable")


def test_canonical_json_round_trips() -> None:
    """The admin API speaks the canonical JSON: dumping and reading back is the identity."""
    config, _ = validate_data(MINIMAL | {"delivery": {"retry_interval": "90m"}})
    dumped = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["delivery"]["retry_interval"] == "90m"
    again, diags = validate_data(dumped)
    assert diags == [] and again == config


def test_version_dispatch() -> None:
    for bad, fragment in [
        (None, "missing `version`"),
        (7, "unsupported config version 7"),
        ("one", "unsupported config version 'one'"),
    ]:
        data = dict(MINIMAL)
        if bad is None:
            del data["version"]
        else:
            data["version"] = bad
        config, diags = validate_data(data)
        assert config is None and fragment in diags[0].message


def test_pydantic_errors_point_into_the_data_not_at_union_tags() -> None:
    data = {**MINIMAL, "ip_groups": {"g": ["10.0.0.1/8"]}}
    config, [diag] = validate_data(data)
    assert config is None
    assert diag.path == ("ip_groups", "g", 0)
    assert diag.hint == "did you mean 10.0.0.0/8?"


def test_semantic_checks_run_only_after_schema_passes(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("version: 1\nsystem: {fqdn: mailhost, listeners: []}\n", encoding="utf-8")
    result = load_config(f)
    assert [d.message for d in result.diagnostics] == ["must have at least 1 entry"]


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nsystem:\n  fqdn: a.example.com\n  listeners: [{name: mx, address: 127.0.0.1, port: 25}]\n"
        "routes:\n  - {name: a, recipients: {domain_group: nope}}\n  - {name: b, recipients: {domain_group: nada}}\n",
        encoding="utf-8",
    )
    result = load_config(f)
    assert not result.ok
    assert [(d.mark.line, d.dotted) for d in result.diagnostics] == [
        (6, "routes[0].recipients.domain_group"),
        (7, "routes[1].recipients.domain_group"),
    ]
