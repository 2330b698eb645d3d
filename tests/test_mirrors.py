"""Mirrors: path prefixes (a Harbor proxy-cache project), credentials for them, the
fallback rule (a dead mirror is tried once per run, a 404 moves only that image on, 5xx
gets one more try), ``--registry-mirror`` before registries.conf, and which endpoint
served each image (the report, ``--debug``)."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest

from sealpy.core import pipeline
from sealpy.core.auth import ConfiguredCredentials
from sealpy.core.cli import main
from sealpy.core.errors import UsageError
from sealpy.core.hosts import HostPolicy, TransportOptions
from sealpy.core.model import CacheOptions, ImageSet, RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import RegistriesConfig
from sealpy.core.testing.conformance import AMD64, Catalog
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy
from sealpy.core.transport.http.retry import Retrier, RetriesExhausted, TransientError

NGINX = ImageReference.parse("docker.io/library/nginx:1.25")


def _conf(tmp_path: Path, text: str) -> RegistriesConfig:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return RegistriesConfig.load(environ={"CONTAINERS_REGISTRIES_CONF": str(path)})


def _dead_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fleet(c: Catalog, n: int) -> list[ImageReference]:
    return [c.ref(c.plain, f"fleet/app{i}") for i in range(n)]


def _cache(refs, out: Path, registries: RegistriesConfig, **options):
    options.setdefault("platforms", (AMD64,))
    cache_options = CacheOptions(registries=registries, **options)
    report = pipeline.cache(ImageSet.of(refs), out, strategy="proxy", options=cache_options)
    return report, cache_options.transport.endpoints


# --- path prefixes and credentials ----------------------------------------------------------


def test_a_mirror_with_a_path_prefix_puts_it_in_front_of_the_repository(tmp_path):
    flags = RegistriesConfig.load(
        mirrors=["docker.io=https://harbor.example.com/dockerhub-proxy/"], paths=[]
    )
    conf = _conf(
        tmp_path,
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        '[[registry.mirror]]\nlocation = "harbor.example.com/dockerhub-proxy"\n',
    )
    for registries in (flags, conf):
        mirror, upstream = registries.endpoints(NGINX)
        assert (mirror.host, mirror.repository) == (
            "harbor.example.com",
            "dockerhub-proxy/library/nginx",
        )
        assert mirror.label == "harbor.example.com/dockerhub-proxy"
        assert (upstream.host, upstream.repository, upstream.label) == (
            "docker.io",
            "library/nginx",
            "docker.io",
        )


def test_credentials_for_a_mirror_with_a_path_take_the_most_specific_key(tmp_path):
    def auth(user: str) -> dict:
        return {"auth": base64.b64encode(f"{user}:pw-{user}".encode()).decode()}

    authfile = tmp_path / "auth.json"
    authfile.write_text(
        json.dumps(
            {
                "auths": {
                    "harbor.example.com": auth("host"),
                    "harbor.example.com/dockerhub-proxy": auth("project"),
                    "harbor.example.com/quay-proxy": auth("other"),
                }
            }
        )
    )
    registries = RegistriesConfig.load(
        mirrors=["docker.io=harbor.example.com/dockerhub-proxy", "quay.io=harbor.example.com"],
        paths=[],
    )
    policy = HostPolicy(registries, credentials=ConfiguredCredentials(authfile=authfile))
    mirror = policy.endpoints(NGINX)[0]
    assert policy.credentials_for(mirror.host, mirror.repository).username == "project"
    quay = policy.endpoints(ImageReference.parse("quay.io/org/app:1"))[0]
    assert policy.credentials_for(quay.host, quay.repository).username == "host"


@pytest.mark.parametrize("where", ["flag", "conf"])
def test_a_mirror_location_with_credentials_is_refused(tmp_path, where):
    with pytest.raises(UsageError, match="must not carry credentials") as refused:
        if where == "flag":
            RegistriesConfig.load(mirrors=["docker.io=http://me:s3cret@mirror.example"], paths=[])
        else:
            _conf(
                tmp_path,
                '[[registry]]\nlocation = "docker.io"\n'
                '[[registry.mirror]]\nlocation = "me:s3cret@mirror.example/p"\n',
            )
    assert "s3cret" not in str(refused.value)


# --- the retry rule for mirrors ---------------------------------------------------------------


def _failing(error: TransientError) -> tuple[list[int], object]:
    calls: list[int] = []

    def operation() -> None:
        calls.append(1)
        raise error

    return calls, operation


@pytest.mark.parametrize(("kind", "mirror_tries"), [("refused", 1), ("timeout", 1), ("503", 2)])
def test_a_mirror_retrier_gives_up_at_once_on_a_dead_host_and_after_one_retry_on_5xx(
    kind, mirror_tries
):
    from sealpy.core.mirrors import mirror_policy

    error = {
        "refused": lambda: TransientError("cannot reach m: connection refused", unreachable=True),
        "timeout": lambda: TransientError("timed out talking to m", timed_out=True),
        "503": lambda: TransientError("503 injected"),
    }[kind]()

    policy = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.01)
    calls, operation = _failing(error)
    with pytest.raises(RetriesExhausted) as gave_up:
        Retrier(mirror_policy(policy), for_mirror=True).call("manifest 1", operation)
    assert len(calls) == mirror_tries
    assert gave_up.value.unreachable == error.unreachable
    calls, operation = _failing(error)
    with pytest.raises(RetriesExhausted):
        Retrier(policy).call("manifest 1", operation)
    assert len(calls) == 4  # the registry's own endpoint keeps every retry


# --- fallback against real registries ---------------------------------------------------------


def test_a_dead_mirror_is_tried_once_per_run_and_every_image_falls_through(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    refs = _fleet(c, 6)
    dead = f"127.0.0.1:{_dead_port()}"
    baseline, _ = _cache(refs, tmp_path / "direct", RegistriesConfig())
    started = time.monotonic()
    report, log = _cache(
        refs,
        tmp_path / "mirrored",
        RegistriesConfig.load(mirrors=[f"{c.plain.host}={dead}"], paths=[]),
    )
    took = time.monotonic() - started
    print(f"{len(refs)} images through a dead mirror: {took:.3f} s")
    assert {i.served_by for i in report.images} == {c.plain.host}
    assert {i.digest for i in report.images} == {i.digest for i in baseline.images}
    # The dead mirror cost one failed request for the whole run (plus the two scheme probes
    # of a loopback host), not a retry loop per image.
    assert report.requests is not None and baseline.requests is not None
    assert report.requests - baseline.requests <= 3
    assert [f.label for f in log.failures()] == [dead]


def test_a_mirror_answering_404_for_one_image_moves_only_that_image_on(
    conformance_catalog: Catalog, image_factory, tmp_path, start_registry
):
    c = conformance_catalog
    mirror = start_registry(tmp_path / "mirror-root")
    have, missing = c.fleet["fleet/app0"], c.fleet["fleet/app2"]
    image_factory.push(have, mirror.host, "fleet/app0", "1")
    image_factory.push(c.fleet["fleet/app1"], mirror.host, "fleet/app1", "1")
    registries = RegistriesConfig.load(mirrors=[f"{c.plain.host}={mirror.host}"], paths=[])
    report, log = _cache(_fleet(c, 3), tmp_path / "out", registries, max_parallel=1)
    served = {i.repository: i.served_by for i in report.images}
    assert served == {
        "fleet/app0": mirror.host,
        "fleet/app1": mirror.host,
        "fleet/app2": c.plain.host,
    }
    assert {i.repository: i.digest for i in report.images}["fleet/app2"] == missing.digest
    assert log.failures() == []  # a 404 is about the image, not the mirror


def test_a_mirror_head_404_falls_through_to_the_registry(
    conformance_catalog: Catalog, tmp_path, start_registry
):
    c = conformance_catalog
    empty = start_registry(tmp_path / "empty-root")
    registries = RegistriesConfig.load(mirrors=[f"{c.plain.host}={empty.host}"], paths=[])
    with TransportOptions(HostPolicy(registries)).client() as client:
        head = client.repository(c.ref(c.plain, "library/single")).head_manifest("1")
    assert head is not None and head.digest == c.single.digest


def test_a_mirror_failing_with_5xx_gets_one_retry_then_is_left_out_of_the_run(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    plan = FaultPlan(rate=1.0, kinds=["503"], paths=r"/manifests/")
    with FaultProxy(c.plain.host, plan) as broken:
        registries = RegistriesConfig.load(mirrors=[f"{c.plain.host}={broken.host}"], paths=[])
        report, log = _cache(_fleet(c, 5), tmp_path / "out", registries, max_parallel=1)
    assert {i.served_by for i in report.images} == {c.plain.host}
    assert broken.count(kind="manifest") == 2
    (failure,) = log.failures()
    assert failure.label == broken.host and "503" in failure.reason


def test_a_mirror_that_never_answers_is_left_out_after_one_timeout(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        registries = RegistriesConfig.load(mirrors=[f"{c.plain.host}={host}"], paths=[])
        retry = RetryPolicy(read_timeout=0.3, connect_timeout=0.3)
        report, log = _cache(_fleet(c, 4), tmp_path / "out", registries, retry=retry)
    assert {i.served_by for i in report.images} == {c.plain.host}
    (failure,) = log.failures()
    assert failure.label == host and "timed out" in failure.reason


def test_a_path_prefix_mirror_serves_the_images_under_its_prefix(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    with FaultProxy(c.plain.host, strip_prefix="dockerhub-proxy") as harbor:
        registries = _conf(
            tmp_path,
            f'[[registry]]\nlocation = "{c.plain.host}"\n'
            f'[[registry.mirror]]\nlocation = "{harbor.host}/dockerhub-proxy"\ninsecure = true\n',
        )
        report, log = _cache(_fleet(c, 3), tmp_path / "out", registries)
    assert {i.served_by for i in report.images} == {f"{harbor.host}/dockerhub-proxy"}
    assert harbor.count("GET", "blob") > 0
    paths = [s.path for s in harbor.seen if s.kind != "ping"]
    assert paths and all(p.startswith("/v2/dockerhub-proxy/fleet/app") for p in paths)
    assert log.failures() == []


def test_registry_mirror_flags_come_before_registries_conf_mirrors(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    with FaultProxy(c.plain.host) as from_conf, FaultProxy(c.plain.host) as from_flag:
        conf = tmp_path / "registries.conf"
        conf.write_text(
            f'[[registry]]\nlocation = "{c.plain.host}"\n'
            f'[[registry.mirror]]\nlocation = "{from_conf.host}"\n'
        )
        registries = RegistriesConfig.load(
            mirrors=[f"{c.plain.host}=http://{from_flag.host}"],
            environ={"CONTAINERS_REGISTRIES_CONF": str(conf)},
        )
        report, _ = _cache(_fleet(c, 2), tmp_path / "out", registries)
    assert {i.served_by for i in report.images} == {from_flag.host}
    assert from_conf.count() == 0 and from_flag.count("GET", "blob") > 0


# --- the report and --debug ---------------------------------------------------------------------


def test_save_json_and_debug_say_which_endpoint_served_each_image(
    conformance_catalog: Catalog, tmp_path, capfd: pytest.CaptureFixture[str]
):
    c = conformance_catalog
    dead = f"127.0.0.1:{_dead_port()}"
    with FaultProxy(c.plain.host, strip_prefix="proxy-cache") as mirror:
        context = tmp_path / "ctx"
        context.mkdir()
        code = main(
            [
                "--debug",
                "registry",
                "save",
                "--json",
                "--strategy",
                "proxy",
                "--platform",
                "linux/amd64",
                "--registry-mirror",
                f"{c.plain.host}=http://{dead}",
                "--registry-mirror",
                f"{c.plain.host}=http://{mirror.host}/proxy-cache",
                "--images",
                ",".join(str(r) for r in _fleet(c, 2)),
                str(context),
            ]
        )
    out, err = capfd.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert {i["served_by"] for i in data["images"]} == {f"{mirror.host}/proxy-cache"}
    for ref in _fleet(c, 2):
        assert f"debug {ref}: served by {mirror.host}/proxy-cache" in err
    warning = f"warn mirror {dead} left out of this run: manifest 1: cannot reach {dead}: "
    assert warning + "connection refused (gave up after 1 attempt)" in err


def test_sync_says_which_endpoint_only_where_skopeo_had_no_mirror_to_choose(
    conformance_catalog: Catalog, tmp_path
):
    c = conformance_catalog
    with FaultProxy(c.plain.host) as mirror:
        registries = RegistriesConfig.load(
            mirrors=[f"{c.plain.host}/fleet/app0=http://{mirror.host}/fleet/app0"], paths=[]
        )
        options = CacheOptions(registries=registries, platforms=(AMD64,))
        report = pipeline.cache(
            ImageSet.of(_fleet(c, 2)), tmp_path / "out", strategy="sync", options=options
        )
    served = {i.repository: i.served_by for i in report.images}
    # skopeo picks among app0's mirror and its registry itself and does not say which.
    assert served == {"fleet/app0": None, "fleet/app1": c.plain.host}
