"""The host policy (scheme, TLS verification, mirrors, credentials per host) and the
transport options every registry user receives. No registry process: the policy decides
without a request wherever it can, and these tests check that it does."""

from __future__ import annotations

import base64
import json
import time

import pytest

from sealpy.core.auth import ConfiguredCredentials, Credential
from sealpy.core.errors import RegistryError
from sealpy.core.hosts import HostPolicy, TransportOptions, is_loopback
from sealpy.core.model import CacheOptions, RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import Endpoint, RegistriesConfig
from sealpy.core.transport.http.retry import Retrier
from sealpy.core.transport.remote import RegistryClient
from sealpy.strategies.sync.skopeo import MemoryAuthFile, SkopeoRunner, registry_tables

CONF = """
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000"
[[registry.mirror]]
location = "plain-mirror.example"
insecure = true

[[registry]]
location = "lab.example:8443"
insecure = true
"""


def _registries(tmp_path, conf: str = CONF, mirrors: tuple[str, ...] = ()) -> RegistriesConfig:
    path = tmp_path / "registries.conf"
    path.write_text(conf)
    return RegistriesConfig.load(mirrors=mirrors, environ={}, paths=[path])


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "127.1.2.3:80", "[::1]:5000"],
)
def test_loopback_hosts_in_every_form(host):
    assert is_loopback(host)
    endpoint = Endpoint(host, "library/x")
    policy = HostPolicy()
    # Plain HTTP allowed (the host's answer decides), certificates verified if it speaks TLS.
    assert policy.plain_http_allowed(host)
    assert policy.scheme(endpoint) is None
    assert policy.verifies_tls(endpoint)


@pytest.mark.parametrize(
    "host", ["registry.example", "128.0.0.1:5000", "[::2]:5000", "localhost.example"]
)
def test_other_hosts_get_verified_https_without_a_request(host):
    assert not is_loopback(host)
    policy = HostPolicy()
    endpoint = Endpoint(host, "library/x")
    assert not policy.plain_http_allowed(host)
    assert policy.scheme(endpoint) == "https"
    assert policy.verifies_tls(endpoint)
    with TransportOptions(hosts=policy).client() as client:
        resolved = client.resolve(endpoint)
        assert resolved.url == f"https://{host}" and resolved.verify
        assert client.requests_sent == 0


def test_a_host_marked_insecure_may_use_plain_http_and_unverified_tls(tmp_path):
    policy = HostPolicy(registries=_registries(tmp_path))
    endpoint = Endpoint("lab.example:8443", "team/app")
    assert policy.marked_insecure("lab.example:8443")
    assert policy.plain_http_allowed("lab.example:8443")
    assert not policy.verifies_tls(endpoint)
    assert policy.scheme(endpoint) is None  # probed: HTTPS if it speaks it, else HTTP
    # Its own entry's flag is what a containers/image file says for it.
    assert not policy.plain_http_allowed("lab.example:8443", marked=False)


def test_mirrors_come_first_and_keep_their_own_insecure_mark(tmp_path):
    policy = HostPolicy(registries=_registries(tmp_path))
    endpoints = policy.endpoints(ImageReference.parse("nginx:1"))
    assert [(e.host, e.repository, e.mirror) for e in endpoints] == [
        ("mirror.example:5000", "library/nginx", True),
        ("plain-mirror.example", "library/nginx", True),
        ("docker.io", "library/nginx", False),
    ]
    secure, plain, registry = endpoints
    assert policy.scheme(secure) == "https" and policy.verifies_tls(secure)
    assert policy.scheme(plain) is None and not policy.verifies_tls(plain)
    assert policy.scheme(registry) == "https" and policy.verifies_tls(registry)


def test_a_mirror_given_with_http_is_reached_over_plain_http(tmp_path):
    policy = HostPolicy(
        registries=_registries(tmp_path, mirrors=("docker.io=http://cache.example:5000",))
    )
    first = policy.endpoints(ImageReference.parse("nginx:1"))[0]
    assert (first.host, first.scheme) == ("cache.example:5000", "http")
    assert policy.scheme(first) == "http"
    assert policy.marked_insecure("cache.example:5000")
    with TransportOptions(hosts=policy).client() as client:
        assert client.resolve(first).url == "http://cache.example:5000"
        assert client.requests_sent == 0


def test_tls_verify_off_allows_plain_http_everywhere_and_verifies_nothing(tmp_path):
    policy = HostPolicy(registries=_registries(tmp_path), tls_verify=False)
    for host in ("registry.example", "mirror.example:5000", "127.0.0.1:5000"):
        endpoint = Endpoint(host, "x")
        assert policy.plain_http_allowed(host)
        assert not policy.verifies_tls(endpoint)
        assert policy.scheme(endpoint) is None
    # A scheme the user wrote still wins.
    assert policy.scheme(Endpoint("registry.example", "x", scheme="https")) == "https"


def _authfile(tmp_path, auths: dict[str, tuple[str, str]]):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    key: {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}
                    for key, (user, pw) in auths.items()
                }
            }
        )
    )
    return path


def test_credentials_per_host_and_repository_with_docker_hub_aliases(tmp_path):
    path = _authfile(
        tmp_path,
        {
            "https://index.docker.io/v1/": ("hub", "h"),
            "lab.example:8443": ("lab", "l"),
            "lab.example:8443/team/secret": ("team", "t"),
        },
    )
    policy = HostPolicy(credentials=ConfiguredCredentials(authfile=path, environ={}))
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert policy.credentials_for(alias, "library/nginx") == Credential("hub", "h")
    assert policy.credentials_for("lab.example:8443", "other/app") == Credential("lab", "l")
    assert policy.credentials_for("lab.example:8443", "team/secret") == Credential("team", "t")
    assert policy.credentials_for("quay.io", "x/y") is None
    # The client asks the policy, not a provider of its own.
    with TransportOptions(hosts=policy).client() as client:
        assert client.hosts is policy


def test_cache_options_carry_one_transport_value(tmp_path):
    registries = _registries(tmp_path)
    retry = RetryPolicy(attempts=2)
    options = CacheOptions(tls_verify=False, registries=registries, retry=retry, max_parallel=3)
    transport = options.transport
    assert transport is options.transport  # built once per options value
    assert transport.hosts == HostPolicy(registries, False, options.credentials)
    assert (transport.retry, transport.max_parallel) == (retry, 3)
    assert transport.progress is options.progress
    rebuilt = CacheOptions.of(transport, all_platforms=True)
    assert rebuilt.transport.hosts == transport.hosts and rebuilt.all_platforms
    with transport.client(max_connections=2) as client:
        assert client.hosts == transport.hosts and client.retrier.policy == retry


def test_a_client_takes_a_policy_or_its_parts_never_both():
    with pytest.raises(TypeError):
        RegistryClient(hosts=HostPolicy(), tls_verify=False)


def test_skopeo_is_told_insecure_exactly_where_the_policy_allows_plain_http(tmp_path):
    policy = HostPolicy(registries=_registries(tmp_path))
    extra = {
        h: Endpoint(h, "x") for h in ("127.0.0.1:5000", "registry.example", "lab.example:8443")
    }
    tables = {t.location: t for t in registry_tables(policy, extra)}
    hub = tables["docker.io"]
    assert not hub.insecure
    assert [(m.location, m.insecure) for m in hub.mirrors] == [
        ("mirror.example:5000", False),
        ("plain-mirror.example", True),
    ]
    assert tables["lab.example:8443"].insecure
    assert tables["127.0.0.1:5000"].insecure  # containers/image has no loopback rule
    assert "registry.example" not in tables  # verified HTTPS: nothing to say
    relaxed = HostPolicy(registries=policy.registries, tls_verify=False)
    tables = {t.location: t for t in registry_tables(relaxed, extra)}
    assert tables["registry.example"].insecure and tables["docker.io"].insecure
    assert all(m.insecure for m in tables["docker.io"].mirrors)


class _CountingRetrier(Retrier):
    """The shared retry policy, with no pause and a record of what was asked."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self.delays: list[int] = []
        self.budgets = 0

    def delay(self, error, attempt):
        self.delays.append(attempt)
        return 0.0

    def budget(self):
        self.budgets += 1
        return super().budget()


def test_sync_retries_skopeo_runs_with_the_retrier_it_is_given(tmp_path, monkeypatch):
    policy = RetryPolicy(attempts=3)
    retrier = _CountingRetrier(policy)
    authfile = MemoryAuthFile({})
    runner = SkopeoRunner(
        {"CONTAINERS_REGISTRIES_CONF": "/dev/null"},
        authfile,
        CacheOptions(retry=RetryPolicy(attempts=9)),  # the retrier's policy wins
        tmp_path,
        retrier,
    )
    monkeypatch.setattr(
        runner,
        "attempt",
        lambda label, command, bound=None: (1, "connection reset", time.monotonic()),
    )
    try:
        with pytest.raises(RegistryError, match="connection reset"):
            runner.run("img", [], "copy", [], [])
    finally:
        authfile.close()
    assert retrier.budgets == 1
    assert retrier.delays == [1, 2]  # after failed attempts 1 and 2; none after the last
    command = runner.command([], "copy", [], [])
    assert command[command.index("--retry-times") + 1] == "2"  # attempts - 1, at most 3


def test_by_default_a_runner_follows_the_options_retry_policy(tmp_path):
    authfile = MemoryAuthFile({})
    try:
        policy = RetryPolicy(attempts=4, max_seconds=7)
        runner = SkopeoRunner({}, authfile, CacheOptions(retry=policy), tmp_path)
        assert runner.retrier.policy == policy
    finally:
        authfile.close()
