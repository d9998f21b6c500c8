"""examples/deploy/kubernetes/: valid manifests that fit the relay they run.

- Every manifest passes `kubernetes-validate` in strict mode (unknown fields refused) for the
  oldest and the newest Kubernetes it knows of here (1.28, its latest).
- They fit together and fit the engine: the pod's ports, data volume and probes are those of
  the config in the ConfigMap; the probes ask an endpoint the admin API answers without a
  token; the Services aim at ports the pod names; a node file exists for every replica.
- The ConfigMap works as the kubelet mounts it (`..<timestamp>` directory, `..data` link,
  one link per key): each node file validates without a finding, and a relay served from
  `sealrelay-0.yaml` with `--watch` answers its readiness probe and follows an update of the
  shared base done as the kubelet does it (a new `..data` renamed over the old). The same
  swap for a plain config directory: tests/relay/test_watch.py.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path, PurePosixPath

import httpx
import kubernetes_validate
import pytest

from engine.admin.api import OPEN_PATHS
from engine.config.diagnostics import render_text
from engine.config.load import load_config
from engine.relay.delivery.deliver import STOP_GRACE
from engine.relay.runtime.listen import parse
from engine.relay.runtime.service import Service
from tests.conftest import EXAMPLES
from tests.deploy.helpers import yaml_documents
from tests.relay.peers import eventually

KUBERNETES = EXAMPLES / "deploy" / "kubernetes"
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def documents(name: str) -> list[dict]:
    return yaml_documents((KUBERNETES / name).read_text())


def manifests() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(KUBERNETES.glob("*.yaml")) for doc in documents(path.name)]


def statefulset() -> dict:
    [sts] = documents("statefulset.yaml")
    return sts


def configmap() -> dict:
    [cm] = documents("configmap.yaml")
    return cm


def relay_container(sts: dict) -> dict:
    [container] = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "sealrelay"]
    return container


def mount_configmap(target: Path, data: dict[str, str], stamp: str = "..2026_01_01_00_00_00.1") -> Path:
    """Write `data` as the kubelet does: files in a timestamped directory, `..data` linking to
    it, a link per key through `..data`; an update renames a new `..data` over the old one."""
    target.mkdir(parents=True, exist_ok=True)
    (target / stamp).mkdir()
    for key, text in data.items():
        (target / stamp / key).write_text(text)
    old = (target / "..data").resolve() if (target / "..data").is_symlink() else None
    (target / "..data_tmp").symlink_to(stamp)
    os.replace(target / "..data_tmp", target / "..data")
    for key in data:
        if not (target / key).is_symlink():
            (target / key).symlink_to(f"..data/{key}")
    if old is not None:
        shutil.rmtree(old)
    return target


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    found = manifests()
    assert {doc["kind"] for _, doc in found} == {"ConfigMap", "StatefulSet", "Service", "NetworkPolicy"}
    for name, doc in found:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")

    # strict: a misspelt field is refused, not ignored
    typo = copy.deepcopy(statefulset())
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, version, strict=True)


def test_the_statefulset_fits_the_config_it_serves(tmp_path: Path) -> None:
    sts, cm = statefulset(), configmap()
    pod = sts["spec"]["template"]["spec"]
    container = relay_container(sts)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    # the config: the ConfigMap as a directory (a subPath mount is never updated), a node file per pod, --watch
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert "subPath" not in mounts["config"] and mounts["config"]["readOnly"] is True
    config_dir = mounts["config"]["mountPath"]
    assert container["args"] == ["serve", f"{config_dir}/$(POD_NAME).yaml", "--watch", "--log-format", "json"]
    [pod_name] = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    name = sts["metadata"]["name"]
    replicas = sts["spec"]["replicas"]
    assert {f"{name}-{i}.yaml" for i in range(replicas)} <= set(cm["data"])

    mount = mount_configmap(tmp_path / "etc-sealrelay", cm["data"])
    for i in range(replicas):
        result = load_config(mount / f"{name}-{i}.yaml")
        assert result.ok and render_text(result.diagnostics) == "", render_text(result.diagnostics)
        system = result.config.system
        assert system.fqdn.startswith(f"{name}-{i}.")  # each relay its own name

        # the queue: data_dir is the pod's own volume, from the claim template
        [claim] = sts["spec"]["volumeClaimTemplates"]
        assert "data" not in volumes and claim["metadata"]["name"] == "data"
        assert mounts["data"]["mountPath"] == str(
            PurePosixPath(system.data_dir).parent
        )  # not its root: a restore renames it

        # the ports the pod declares are those the config binds, by name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"smtp": system.listeners[0].port, "admin": system.admin.port, "metrics": system.metrics.port}
        assert len(system.listeners) == 1
        assert {system.listeners[0].address, system.admin.address, system.metrics.address} == {"0.0.0.0"}

    # the probes ask the admin API for /healthz, which needs no token
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "admin"}, probe
    assert "/healthz" in OPEN_PATHS

    # a stop gives deliveries in flight their grace before the kubelet kills the pod
    assert pod["terminationGracePeriodSeconds"] > STOP_GRACE
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    # the kubelet must not re-open the relay's owner-only files to the fsGroup at every mount
    assert security["fsGroupChangePolicy"] == "OnRootMismatch"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    # the Services aim at ports the pod names; the headless one is the StatefulSet's
    services = {doc["metadata"]["name"]: doc for doc in documents("service.yaml")}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, port
    [policy] = documents("networkpolicy.yaml")
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == set(ports)


async def test_a_relay_serves_its_node_file_from_the_mounted_configmap_and_follows_an_update(
    tmp_path: Path,
) -> None:
    cm = configmap()
    data = dict(cm["data"])
    # the one change for a test machine: the data directory (the pod's volume) under tmp_path
    [mount_path] = [m["mountPath"] for m in relay_container(statefulset())["volumeMounts"] if m["name"] == "data"]
    assert data["relay.yaml"].count(f"data_dir: {mount_path}/") == 1
    data["relay.yaml"] = data["relay.yaml"].replace(f"data_dir: {mount_path}/", f"data_dir: {tmp_path}/")
    mount = mount_configmap(tmp_path / "etc-sealrelay", data)

    # ports moved to free ones on loopback, as `serve --listen` does
    overrides = parse(["mx=127.0.0.1:0", "admin=127.0.0.1:0", "metrics=127.0.0.1:0"], environ={})
    service = Service(mount / "sealrelay-0.yaml", watch=True, overrides=overrides)
    await service.start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            ready = await http.get(f"http://127.0.0.1:{service.admin_port}/healthz")  # the readiness probe
        assert ready.status_code == 200
        live = service.relay.live
        assert live.config.system.fqdn == "sealrelay-0.mail.example.com"
        assert live.config.delivery.retry_interval == 300 and live.version == 1

        # `kubectl apply` of an edited ConfigMap: the shared base changes, the node file does not
        data["relay.yaml"] = data["relay.yaml"].replace("retry_interval: 5m", "retry_interval: 2m")
        mount_configmap(mount, data, stamp="..2026_01_01_00_05_00.2")

        async def reloaded():
            return service.relay.live.version == 2

        await eventually(reloaded, what="the ConfigMap update to be served")
        assert service.relay.live.config.delivery.retry_interval == 120
        assert service.relay.live.config.system.fqdn == "sealrelay-0.mail.example.com"  # still the node's
    finally:
        await service.stop()
