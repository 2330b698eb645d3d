"""Credentials: auth files, credential helpers, --creds, and the Bearer token flow against
the real token-auth registry."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from sealpy.core.auth import (
    ConfiguredCredentials,
    Credential,
    default_authfile_paths,
    normalize_registry,
)
from sealpy.core.containers import authfile_document, write_authfile
from sealpy.core.errors import AuthenticationError, CredentialsError, UsageError
from sealpy.core.reference import ImageReference
from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER
from sealpy.core.transport.http.auth import Challenge
from sealpy.core.transport.remote import RegistryClient


def auth_entry(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def fake_helper(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    helper = bindir / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(0o755)


def test_credential_never_shows_its_secret():
    credential = Credential("bob", "hunter2-secret", identity_token="tok-secret")
    for text in (repr(credential), str(credential), f"{credential}", repr([credential])):
        assert "hunter2" not in text and "tok-secret" not in text


def test_creds_flag_parsing():
    assert Credential.parse("bob:pa:ss") == Credential("bob", "pa:ss")
    for bad in ("bob", ":pass", ""):
        with pytest.raises(UsageError):
            Credential.parse(bad)


@pytest.mark.parametrize(
    ("key", "normal"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("http://host:5000/", "host:5000"),
        ("quay.io/team", "quay.io/team"),
    ],
)
def test_registry_keys_are_normalised(key, normal):
    assert normalize_registry(key) == normal


def test_authfile_entries_most_specific_wins(tmp_path):
    authfile = write_json(
        tmp_path / "auth.json",
        {
            "auths": {
                "quay.io": auth_entry("general", "p1"),
                "quay.io/team": auth_entry("team", "p2"),
                "https://index.docker.io/v1/": auth_entry("hub", "p3"),
            }
        },
    )
    creds = ConfiguredCredentials(authfile=authfile, environ={})
    assert creds.credentials_for("quay.io", "other/app").username == "general"
    assert creds.credentials_for("quay.io", "team/app").username == "team"
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert creds.credentials_for(hub, "library/nginx") == Credential("hub", "p3")
    assert creds.credentials_for("ghcr.io", "x/y") is None


def test_default_authfile_order(tmp_path):
    env = {
        "REGISTRY_AUTH_FILE": str(tmp_path / "env.json"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "HOME": str(tmp_path / "home"),
    }
    assert default_authfile_paths(env) == [
        tmp_path / "env.json",
        tmp_path / "run/containers/auth.json",
        tmp_path / "home/.config/containers/auth.json",
        tmp_path / "home/.docker/config.json",
    ]
    (tmp_path / "run/containers").mkdir(parents=True)
    write_json(tmp_path / "run/containers/auth.json", {"auths": {"a.io": auth_entry("xdg", "1")}})
    (tmp_path / "home/.docker").mkdir(parents=True)
    write_json(
        tmp_path / "home/.docker/config.json",
        {"auths": {"a.io": auth_entry("docker", "2"), "b.io": auth_entry("docker-b", "3")}},
    )
    creds = ConfiguredCredentials(environ=env)
    assert creds.credentials_for("a.io").username == "xdg"  # the first file with an entry wins
    assert creds.credentials_for("b.io").username == "docker-b"


def test_creds_flag_overrides_files(tmp_path):
    authfile = write_json(tmp_path / "auth.json", {"auths": {"a.io": auth_entry("file", "x")}})
    creds = ConfiguredCredentials(creds=Credential("flag", "y"), authfile=authfile, environ={})
    assert creds.credentials_for("a.io").username == "flag"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"auths": {"a.io": {"auth": "!!!"}}}', "not valid base64"),
        (
            '{"auths": {"a.io": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
            "not user:password",
        ),
        ("[1]", "not a JSON object"),
    ],
)
def test_invalid_authfile_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "auth.json"
    path.write_text(content)
    creds = ConfiguredCredentials(authfile=path, environ={})
    with pytest.raises(CredentialsError) as failure:
        creds.check()
    assert message in str(failure.value) and str(path) in str(failure.value)


def test_missing_or_unreadable_authfile(tmp_path):
    with pytest.raises(CredentialsError, match="does not exist"):
        ConfiguredCredentials(authfile=tmp_path / "nope.json", environ={}).check()
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    with pytest.raises(CredentialsError, match="unreadable"):
        ConfiguredCredentials(authfile=unreadable, environ={}).check()


def test_credential_helpers(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    fake_helper(
        bindir,
        "good",
        "read server\n"
        'echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"helper-user\\",\\"Secret\\":\\"helper-secret\\"}"\n',
    )
    fake_helper(bindir, "token", 'echo \'{"Username":"<token>","Secret":"refresh-123"}\'\n')
    fake_helper(bindir, "empty", 'echo "credentials not found in native keychain"; exit 1\n')
    fake_helper(bindir, "broken", 'echo "keychain locked" >&2; exit 3\n')
    fake_helper(
        bindir,
        "hub",
        'read server\n[ "$server" = "https://index.docker.io/v1/" ] || exit 9\n'
        'echo \'{"Username":"hubuser","Secret":"s"}\'\n',
    )
    monkeypatch.setenv("PATH", f"{bindir}:{'/usr/bin:/bin'}")
    authfile = write_json(
        tmp_path / "config.json",
        {
            "credHelpers": {
                "good.io": "good",
                "tok.io": "token",
                "none.io": "empty",
                "bad.io": "broken",
                "docker.io": "hub",
                "gone.io": "missing",
            },
            "credsStore": "good",
        },
    )
    creds = ConfiguredCredentials(authfile=authfile, environ={})
    assert creds.credentials_for("good.io") == Credential("helper-user", "helper-secret")
    assert creds.credentials_for("tok.io").identity_token == "refresh-123"
    assert creds.credentials_for("none.io") is None
    assert creds.credentials_for("index.docker.io").username == "hubuser"
    assert creds.credentials_for("other.io").username == "helper-user"  # credsStore
    with pytest.raises(
        CredentialsError,
        match=r"docker-credential-broken failed for bad\.io.*exit 3.*keychain locked",
    ):
        creds.credentials_for("bad.io")
    with pytest.raises(CredentialsError, match=r"docker-credential-missing .*not found"):
        creds.credentials_for("gone.io")


def test_written_authfile_is_private(tmp_path):
    path = tmp_path / "auth.json"
    write_authfile(
        path, {"a.io": Credential("u", "p"), "b.io": Credential("<token>", identity_token="t")}
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = ConfiguredCredentials(authfile=path, environ={})
    assert creds.credentials_for("a.io") == Credential("u", "p")
    assert creds.credentials_for("b.io").identity_token == "t"


def test_challenge_parsing():
    c = Challenge.parse(
        'Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.io/token",
        "service": "registry.io",
        "scope": "repository:a/b:pull,push",
    }
    assert Challenge.parse('Basic realm="x"').scheme == "basic"


# --- against the real token-auth registry -------------------------------------------------


def test_token_flow_sends_account_and_the_narrowest_scope(conformance_catalog, token_registry):
    tokens = token_registry.token_server
    tokens.requests.clear()
    creds = ConfiguredCredentials(creds=Credential(TEST_USER, TEST_PASSWORD))
    with RegistryClient(credentials=creds) as client:
        repo = client.repository(ImageReference(token_registry.host, "private/app", "1"))
        manifest = repo.get_manifest("1")
        repo.get_manifest(manifest.digest)
        repo.blob_exists(manifest.config.digest)
    assert len(tokens.requests) == 1, "the token is cached per registry and scope"
    query = tokens.requests[0].query
    assert query["account"] == TEST_USER
    assert query["scope"] == "repository:private/app:pull"
    assert query["service"] == tokens.service


def test_an_expired_token_is_renewed(conformance_catalog, token_registry, monkeypatch):
    import time as real_time

    tokens = token_registry.token_server
    creds = ConfiguredCredentials(creds=Credential(TEST_USER, TEST_PASSWORD))
    with RegistryClient(credentials=creds) as client:
        repo = client.repository(ImageReference(token_registry.host, "private/app", "1"))
        repo.get_manifest("1")
        first = len(tokens.requests)
        # Ten minutes later (the server's tokens live five): the cached token has expired.
        later = real_time.monotonic() + 600
        monkeypatch.setattr("sealpy.core.transport.http.auth.time.monotonic", lambda: later)
        repo.get_manifest("1")
    assert len(tokens.requests) == first + 1


def test_a_token_refused_by_the_registry_is_fetched_again_once(conformance_catalog, token_registry):
    """A 401 with a cached token (revoked, expired early) re-authenticates once."""
    tokens = token_registry.token_server
    creds = ConfiguredCredentials(creds=Credential(TEST_USER, TEST_PASSWORD))
    with RegistryClient(credentials=creds) as client:
        repo = client.repository(ImageReference(token_registry.host, "private/app", "1"))
        repo.get_manifest("1")
        for key in client.tokens.cached():
            client.tokens.put(key, "not-a-valid-token", lifetime=300)
        before = len(tokens.requests)
        repo.get_manifest("1")
    assert len(tokens.requests) == before + 1


def test_identity_token_uses_the_refresh_token_grant(conformance_catalog, token_registry):
    tokens = token_registry.token_server
    refresh = tokens._refresh_for(TEST_USER)
    creds = ConfiguredCredentials(creds=Credential("<token>", "", identity_token=refresh))
    with RegistryClient(credentials=creds) as client:
        client.repository(ImageReference(token_registry.host, "private/app", "1")).get_manifest("1")
    last = tokens.requests[-1]
    assert last.method == "POST" and last.query["grant_type"] == "refresh_token"


@pytest.mark.parametrize("registry", ["htpasswd_registry", "token_registry"])
def test_wrong_or_missing_credentials(conformance_catalog, registry, request):
    server = request.getfixturevalue(registry)
    ref = ImageReference(server.host, "private/app", "1")
    for creds in (ConfiguredCredentials(creds=Credential(TEST_USER, "nope-wrong")), None):
        with (
            RegistryClient(credentials=creds) as client,
            pytest.raises(AuthenticationError) as failure,
        ):
            client.repository(ref).get_manifest("1")
        assert server.host in str(failure.value)
        assert "nope-wrong" not in str(failure.value)


def test_token_endpoint_failing_once_is_retried(conformance_catalog, token_registry):
    from sealpy.core.model import RetryPolicy

    tokens = token_registry.token_server
    tokens.fail_next.append(503)
    creds = ConfiguredCredentials(creds=Credential(TEST_USER, TEST_PASSWORD))
    with RegistryClient(credentials=creds, retry=RetryPolicy(initial_backoff=0.01)) as client:
        manifest = client.repository(
            ImageReference(token_registry.host, "private/app", "1")
        ).get_manifest("1")
    assert manifest.digest == conformance_catalog.private.digest


def test_netrc_is_never_a_credential_source(conformance_catalog, tmp_path, monkeypatch):
    """requests reads ~/.netrc by default; sealpy's credentials come only from its own
    sources, so a plain registry gets no Authorization header at all."""
    from sealpy.core.testing.faultproxy import FaultProxy

    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    with FaultProxy(conformance_catalog.plain.host) as proxy, RegistryClient() as client:
        repo = client.repository(ImageReference(proxy.host, "library/single", "1"))
        manifest = repo.get_manifest("1")
        assert repo.blob_exists(manifest.config.digest)
    assert proxy.seen and not any(s.authorization for s in proxy.seen)


def test_credential_helpers_do_not_see_sealpy_creds(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    seen = tmp_path / "seen-env"
    fake_helper(bindir, "spy", f'env > "{seen}"\necho \'{{"Username":"u","Secret":"s"}}\'\n')
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setenv("SEALPY_CREDS", "alice:do-not-pass-me-on")
    authfile = write_json(tmp_path / "config.json", {"credHelpers": {"spy.io": "spy"}})
    creds = ConfiguredCredentials(authfile=authfile, environ={})
    assert creds.credentials_for("spy.io") == Credential("u", "s")
    env = seen.read_text()
    assert "PATH=" in env  # the helper ran with an environment
    assert "do-not-pass-me-on" not in env and "SEALPY_CREDS" not in env


@pytest.mark.parametrize("strategy", ["proxy", "sync"])
def test_an_identity_token_logs_in_with_either_strategy(
    strategy, conformance_catalog, token_registry, tmp_path
):
    """skopeo skips an auth.json entry without `auth` before it reads `identitytoken`, so
    the auth file sync hands it carries both (as `docker login` writes them)."""
    from sealpy.core import pipeline
    from sealpy.core.model import CacheOptions, ImageSet
    from sealpy.core.testing.conformance import AMD64

    tokens = token_registry.token_server
    refresh = tokens._refresh_for(TEST_USER)
    creds = ConfiguredCredentials(creds=Credential("<token>", "", identity_token=refresh))
    asked = len(tokens.requests)
    ref = ImageReference(token_registry.host, "private/app", "1")
    report = pipeline.cache(
        ImageSet.of([str(ref)]),
        tmp_path / "registry",
        strategy=strategy,
        options=CacheOptions(platforms=(AMD64,), credentials=creds),
    )
    assert [i.repository for i in report.images] == ["private/app"]
    grants = {r.query.get("grant_type") for r in tokens.requests[asked:]}
    assert "refresh_token" in grants, grants


def test_authfile_document_gives_identity_tokens_an_auth_field():
    document = json.loads(
        authfile_document({"r.io": Credential("<token>", "", identity_token="refresh-1")})
    )
    entry = document["auths"]["r.io"]
    assert entry["identitytoken"] == "refresh-1"
    assert base64.b64decode(entry["auth"]) == b"<token>:"
