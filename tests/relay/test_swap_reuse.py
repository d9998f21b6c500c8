"""An apply builds only what its change touches (live.provision's `previous`), and records
the config without serialising it again (state.record with the document's bytes).

Every test applies through the relay's own `RelayControl` and checks the running `Live`
that results: what was reused is the very object of the version before; what changed is
new and behaves as the new config says.
"""

from __future__ import annotations

import json
import os

from engine.admin.contract import ApplyRequest
from engine.plan.diff import canonical, canonical_bytes, config_hash, document
from engine.relay.runtime import state as relay_state
from engine.relay.runtime.control import RelayControl
from engine.relay.runtime.live import provision

DLP = """
domain_groups:
  partners: [partner.example]
dlp:
  action_plans:
    - {name: stop, email: block}
  policies:
    - name: cards
      rules:
        - {name: card, conditions: {pattern: '\\bACCT-\\d{8}\\b'}, action_plan: stop}
"""


def received(config) -> dict:
    """The running config as a client sends it back: JSON text, parsed."""
    return json.loads(json.dumps(canonical(config)))


async def apply(control: RelayControl, desired: dict):
    result = await control.apply(ApplyRequest(desired, base_version=control.relay.live.version), "test")
    assert result.ok and result.changed, result
    return control.relay.live


async def test_a_change_outside_dlp_and_the_groups_keeps_their_compiled_forms(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    old = relay.live
    desired = received(old.config)
    desired["delivery"]["retry_interval"] = "2s"
    new = await apply(control, desired)
    assert new.version == old.version + 1 and str(new.config.delivery.retry_interval) == "2s"
    assert new.policies is old.policies
    assert new.ip_groups is old.ip_groups and new.domain_groups is old.domain_groups
    again = received(new.config)
    again["delivery"]["retry_interval"] = "1s"
    newer = await apply(control, again)
    assert newer.config.dlp is new.config.dlp  # the same dlp data, received twice: validated once
    assert newer.policies is old.policies


async def test_a_dlp_change_builds_new_policies_on_the_same_groups(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    old = relay.live
    desired = received(old.config)
    desired["dlp"]["policies"][0]["rules"][0]["conditions"] = {"phrases": ["project falcon"]}
    new = await apply(control, desired)
    assert new.policies is not old.policies and new.config.dlp is not old.config.dlp
    assert new.ip_groups is old.ip_groups and new.domain_groups is old.domain_groups
    assert new.policies._matcher.scan("about project falcon") and not new.policies._matcher.scan("ACCT-12345678")


async def test_a_group_change_rebuilds_the_groups_and_the_policies_that_read_them(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    old = relay.live
    desired = received(old.config)
    desired["domain_groups"]["partners"].append("other.example")
    new = await apply(control, desired)
    assert new.domain_groups is not old.domain_groups and new.domain_groups["partners"].contains("other.example")
    assert new.ip_groups is not old.ip_groups
    assert new.policies is not old.policies and new.policies._domain_groups is new.domain_groups


async def test_nothing_is_reused_without_a_previous_version_or_for_a_policy_view(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    old = relay.live
    fresh = provision(old.config, base_dir=old.base_dir, version=9)
    assert fresh.policies is not old.policies and fresh.ip_groups is not old.ip_groups
    view = provision(old.config, base_dir=old.base_dir, version=9, tls=False, previous=old)
    assert view.policies is not old.policies  # no file access: its matcher keeps no database


async def test_the_running_and_applied_files_hold_the_hashed_bytes(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    desired = received(relay.live.config)
    desired["delivery"]["retry_interval"] = "2s"
    live = await apply(control, desired)
    data_dir = live.data_dir
    running = (data_dir / relay_state.RUNNING_FILE).read_bytes()
    assert running == document(live.config).text == canonical_bytes(canonical(live.config))
    assert relay_state.load(data_dir).running.hash == config_hash(live.config)
    applied = data_dir / relay_state.APPLIED_FILE
    assert applied.read_bytes() == running
    assert os.stat(applied).st_ino == os.stat(data_dir / relay_state.RUNNING_FILE).st_ino  # written once
    assert relay_state.load_running(data_dir) == relay_state.load_applied(data_dir) == canonical(live.config)
    # a file reload changes running.json only: the applied config (the drift base) stays
    reloaded = received(live.config)
    reloaded["delivery"]["retry_interval"] = "1s"
    from engine.config.load import validate_data

    config, diagnostics = validate_data(reloaded)
    assert config is not None, diagnostics
    assert await control.swap(config, source="file-watch") is None
    assert relay_state.load_running(data_dir) == canonical(config)
    assert relay_state.load_applied(data_dir) == canonical(live.config)
    assert control.drift() and control.running().last_applied == canonical(live.config)


async def test_the_snapshot_is_the_running_config(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    desired = received(relay.live.config)
    desired["delivery"]["retry_interval"] = "2s"
    live = await apply(control, desired)
    running = control.running()
    assert running.config == canonical(live.config) and running.hash == config_hash(live.config)
    assert running.version == live.version


async def test_the_listeners_context_is_kept_until_the_certificate_or_the_ciphers_change(write_config, start_relay):
    relay = await start_relay(write_config(DLP))
    control = RelayControl(relay)
    old = relay.live
    desired = received(old.config)
    desired["delivery"]["retry_interval"] = "2s"
    new = await apply(control, desired)
    assert new.server_tls is old.server_tls is not None
    desired = received(new.config)
    desired["tls"]["server_ciphers"] = "compatible"
    result = await control.apply(
        ApplyRequest(desired, base_version=new.version, allow_downgrade=True, reason="older peers"), "test"
    )
    assert result.ok and result.changed, result
    other = relay.live
    assert other.server_tls is not new.server_tls
    # a renewed certificate is a new file: the next version loads it
    cert = other.certificate_dir / "cert.pem"
    renewed = cert.with_name("cert.pem.new")
    renewed.write_bytes(cert.read_bytes())
    os.replace(renewed, cert)
    desired = received(other.config)
    desired["delivery"]["retry_interval"] = "1s"
    assert (await apply(control, desired)).server_tls is not other.server_tls
