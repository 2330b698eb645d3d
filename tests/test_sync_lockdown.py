"""sync's local registry takes requests from this run only (issue 17, item 7): it refuses
every request without a token, and only the run's in-memory credential gets one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import requests

from sealpy.core.cache.localregistry import RegistryProcess
from sealpy.core.model import RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.testing.conformance import AMD64, Catalog, StrategyConformance, image_set
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.strategies.sync.localauth import RunTokens

UNAUTHENTICATED = {"Authorization": ""}


def _push_attempts(host: str) -> list[int]:
    """What an unauthenticated client gets: the API root, an upload, a manifest."""
    with requests.Session() as s:
        s.trust_env = False
        return [
            s.get(f"http://{host}/v2/", timeout=5).status_code,
            s.post(f"http://{host}/v2/library/injected/blobs/uploads/", timeout=5).status_code,
            s.put(
                f"http://{host}/v2/library/injected/manifests/evil",
                data=b"{}",
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                timeout=5,
            ).status_code,
        ]


def test_the_local_registry_refuses_everyone_but_the_run(tmp_path: Path) -> None:
    tokens = RunTokens(tmp_path).start()
    registry = RegistryProcess(tmp_path / "root", tmp_path, auth=tokens.auth_config()).start()
    try:
        assert _push_attempts(registry.host) == [401, 401, 401]
        realm = tokens.realm
        wrong = requests.get(realm, auth=("sealpy", "guess"), timeout=5)
        assert wrong.status_code == 401
        with tokens.client(RetryPolicy()) as client:
            local = client.repository(ImageReference(registry.host, "library/ok", "1"))
            assert local.head_manifest("1") is None  # authorised: an answer, not a 401
    finally:
        registry.stop()
        tokens.stop()


def _local_registry_hosts(root: Path) -> list[str]:
    """The addresses of the docker-registry processes this test process started on
    ``root`` (not the fixtures' source registries)."""
    hosts = []
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) >= 3 and argv[0].endswith(b"docker-registry"):
                config = json.loads(Path(argv[2].decode()).read_text())
                if config["storage"]["filesystem"]["rootdirectory"] == str(root.absolute()):
                    hosts.append(config["http"]["addr"])
    return hosts


class _Sync(StrategyConformance):
    strategy = "sync"


def test_an_unauthenticated_push_during_a_sync_is_refused(
    conformance_catalog: Catalog, tmp_path: Path
) -> None:
    c = conformance_catalog
    out = tmp_path / "registry"
    # A slow source (0.3 s per request) keeps the run going while we try to push.
    with FaultProxy(c.plain.host, FaultPlan(latency=0.3)) as proxy:
        images = image_set([ImageReference(proxy.host, "library/single", "1")])
        done: list[object] = []
        run = threading.Thread(
            target=lambda: done.append(_Sync().cache(images, out, platforms=(AMD64,)))
        )
        run.start()
        deadline = time.monotonic() + 30
        hosts: list[str] = []
        while not hosts and time.monotonic() < deadline and run.is_alive():
            hosts = _local_registry_hosts(out)
            time.sleep(0.05)
        assert hosts, "the sync run's local registry was not seen"
        assert _push_attempts(hosts[0]) == [401, 401, 401]
        run.join(timeout=120)
    assert done and not isinstance(done[0], Exception)
    assert not (out / "docker/registry/v2/repositories/library/injected").exists()
    assert (out / "docker/registry/v2/repositories/library/single").is_dir()
