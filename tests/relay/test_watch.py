"""`serve --watch` follows what the config's files hold, wherever they really are: a Kubernetes
ConfigMap's atomic `..data` link swap, a node file's shared base, a config linked to a file in
another directory. Each is reproduced on disk as the real thing does it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.relay.peers import eventually, free_port
from tests.relay.test_reload import admin_line, service_for  # noqa: F401  (a fixture)

CONFIG = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: {port}}}
{admin}  data_dir: {data_dir}
ip_groups:
  internal_servers: [127.0.0.0/8]
delivery:
  retry_interval: {retry}
  max_retry_interval: 1h
"""


def config(retry: str = "1m", data_dir: str = "./var") -> str:
    return CONFIG.format(port=free_port(), admin=admin_line(), data_dir=data_dir, retry=retry)


async def version(service, expected: int) -> None:
    async def reached():
        return service.relay.live.version == expected

    await eventually(reached, what=f"config version {expected}")


def retry_interval(service) -> float:
    return float(service.relay.live.config.delivery.retry_interval)


async def test_a_configmap_swap_of_the_data_link_is_reloaded(tmp_path: Path, service_for) -> None:  # noqa: F811
    # what the kubelet mounts: /etc/sealrelay/relay.yaml -> ..data/relay.yaml, ..data -> ..<timestamp>
    mount = tmp_path / "etc-sealrelay"
    (mount / "..2024_01_01_00_00_00.1").mkdir(parents=True)
    text = config(retry="1m", data_dir=str(tmp_path / "var"))
    (mount / "..2024_01_01_00_00_00.1" / "relay.yaml").write_text(text)
    (mount / "..data").symlink_to("..2024_01_01_00_00_00.1")
    (mount / "relay.yaml").symlink_to("..data/relay.yaml")
    service = await service_for(mount, watch=True)
    assert retry_interval(service) == 60

    # an update: a new timestamped directory, a new link renamed over ..data, the old directory removed
    (mount / "..2024_01_01_00_05_00.2").mkdir()
    (mount / "..2024_01_01_00_05_00.2" / "relay.yaml").write_text(
        text.replace("retry_interval: 1m", "retry_interval: 2m")
    )
    (mount / "..data_tmp").symlink_to("..2024_01_01_00_05_00.2")
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(mount / "..2024_01_01_00_00_00.1")
    await version(service, 2)
    assert retry_interval(service) == 120

    # and the next one: the watch still follows after the directory it read from went away
    (mount / "..2024_01_01_00_10_00.3").mkdir()
    (mount / "..2024_01_01_00_10_00.3" / "relay.yaml").write_text(
        text.replace("retry_interval: 1m", "retry_interval: 3m")
    )
    (mount / "..data_tmp").symlink_to("..2024_01_01_00_10_00.3")
    os.replace(mount / "..data_tmp", mount / "..data")
    await version(service, 3)
    assert retry_interval(service) == 180


async def test_a_node_file_reloads_when_its_shared_base_changes(tmp_path: Path, service_for) -> None:  # noqa: F811
    (tmp_path / "base").mkdir()
    (tmp_path / "nodes").mkdir()
    base = tmp_path / "base" / "relay.yaml"
    base.write_text(config(retry="1m"))
    node = tmp_path / "nodes" / "relay-0.yaml"
    node.write_text(
        f"extends: ../base/relay.yaml\nsystem:\n  fqdn: relay-0.test.example\n  data_dir: {tmp_path / 'var0'}\n"
    )
    service = await service_for(node, watch=True)
    assert service.relay.live.config.system.fqdn == "relay-0.test.example"

    base.write_text(base.read_text().replace("retry_interval: 1m", "retry_interval: 2m"))  # a shared edit
    await version(service, 2)
    assert retry_interval(service) == 120 and service.relay.live.config.system.fqdn == "relay-0.test.example"

    node.write_text(node.read_text().replace("relay-0.test.example", "mx0.test.example"))  # the node's own
    await version(service, 3)
    assert service.relay.live.config.system.fqdn == "mx0.test.example"


async def test_a_config_linked_from_another_directory_is_followed(tmp_path: Path, service_for) -> None:  # noqa: F811
    shared = tmp_path / "checkout" / "relay.yaml"
    shared.parent.mkdir()
    shared.write_text(config(retry="1m", data_dir=str(tmp_path / "var")))
    (tmp_path / "etc").mkdir()
    link = tmp_path / "etc" / "relay.yaml"
    link.symlink_to(shared)
    service = await service_for(link, watch=True)
    shared.write_text(shared.read_text().replace("retry_interval: 1m", "retry_interval: 2m"))  # edited in place
    await version(service, 2)
    assert retry_interval(service) == 120


def test_follow_reads_a_files_extends_again_only_when_the_file_changed(tmp_path: Path, monkeypatch) -> None:
    # the watcher looks after every change in the directory (a log written beside the config)
    # and every quiet second: an unchanged file is not composed again to find its `extends`
    from engine.relay.runtime import watch

    base = tmp_path / "base"
    base.mkdir()
    (base / "shared.yaml").write_text(config())
    node = tmp_path / "node.yaml"
    node.write_text("# not a node.\nsystem: {fqdn: relay-0.test.example}\n")
    reads = []
    real_extends_of = watch.extends_of
    monkeypatch.setattr(watch, "extends_of", lambda file: reads.append(file) or real_extends_of(file))

    first = watch.follow(node)
    assert [Path(f).name for f, *_ in first.snapshot] == ["node.yaml"] and len(reads) == 1
    (tmp_path / "relay.log").write_text("a line\n")
    assert watch.follow(node) == first and len(reads) == 1  # nothing the config is read from changed

    # the same size and modification time, other content: the inode and ctime still tell
    text = "extends: base\nsystem: {fqdn: relay-0.test.example}\n"
    replacement = tmp_path / ".node.yaml.tmp"
    replacement.write_text(text)
    assert replacement.stat().st_size == node.stat().st_size
    os.utime(replacement, ns=(node.stat().st_atime_ns, node.stat().st_mtime_ns))
    os.replace(replacement, node)
    now = watch.follow(node)
    assert len(reads) == 2 and [Path(f).name for f, *_ in now.snapshot] == ["node.yaml", "shared.yaml"]
