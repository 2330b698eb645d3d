"""The test kit itself: the deterministic image factory and the real registry fixtures,
checked with skopeo (push from an OCI layout, pull back, same digests)."""

from __future__ import annotations

import gzip
import json
import tarfile

import pytest

from sealpy.core.containers import write_authfile
from sealpy.core.image import media
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import skopeo, skopeo_manifest_digest, skopeo_pull


def test_the_factory_is_deterministic(tmp_path):
    def make(directory):
        f = ImageFactory(directory)
        base = f.layer(5000, "base")
        return f.image("a", [base, 123]), f.multi_platform(
            "m", ["linux/amd64", "linux/arm64"], [base, 77]
        )

    (a1, m1), (a2, m2) = make(tmp_path / "one"), make(tmp_path / "two")
    assert (a1.digest, m1.digest) == (a2.digest, m2.digest)
    assert a1.layers[0].digest == m1.for_platform("linux/arm64").layers[0].digest  # shared base
    assert a1.digest != ImageFactory(tmp_path / "three").image("b", [123]).digest


def test_layers_hold_what_was_asked(image_factory, tmp_path):
    layer = image_factory.layer(4321, "kit/sized")
    with (
        image_factory.layout.open_blob(layer.digest) as raw,
        tarfile.open(fileobj=gzip.GzipFile(fileobj=raw)) as tar,
    ):
        members = tar.getmembers()
    assert [(m.name, m.size, m.mtime, m.uid) for m in members] == [
        ("data/kit/sized.bin", 4321, 0, 0)
    ]
    assert layer.descriptor.media_type == media.OCI_LAYER_GZIP
    plain = image_factory.layer(1000, "kit/plain", compression="none", docker=True)
    assert plain.digest == plain.diff_id and plain.tar_size == plain.descriptor.size


def test_docker_and_oci_media_types(image_factory):
    docker = image_factory.image("kit/docker", [10], docker=True)
    oci = image_factory.image("kit/oci", [10])
    assert docker.manifest.media_type == media.DOCKER_MANIFEST
    assert docker.layers[0].descriptor.media_type == media.DOCKER_LAYER_GZIP
    assert oci.manifest.media_type == media.OCI_MANIFEST
    index = image_factory.multi_platform(
        "kit/list", ["linux/amd64", "linux/arm/v7"], [10], docker=True
    )
    assert index.manifest.media_type == media.DOCKER_LIST
    platforms = [c.platform for c in index.manifest.children]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    config = json.loads(
        image_factory.layout.read_blob(index.for_platform("linux/arm/v7").config.digest)
    )
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")


@pytest.mark.parametrize("registry", ["plain_registry", "htpasswd_registry", "token_registry"])
def test_registry_fixtures_push_and_pull_with_skopeo(image_factory, request, tmp_path, registry):
    server = request.getfixturevalue(registry)
    image = image_factory.image(f"kit/skopeo-{registry}", [2048, 1024])
    source = image_factory.name(image, f"kit-{registry}")
    args = []
    if server.credential is not None:
        authfile = tmp_path / "auth.json"
        write_authfile(authfile, {server.host: server.credential})
        args = ["--authfile", str(authfile)]
    skopeo(
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        *args,
        source,
        f"docker://{server.host}/kit/app:1",
    )
    pulled = skopeo_pull(
        f"docker://{server.host}/kit/app:1",
        tmp_path / "pulled",
        authfile=tmp_path / "auth.json" if args else None,
    )
    assert pulled == image.digest
    if server.credential is not None:
        # Without credentials the registry refuses: the auth is real.
        result = skopeo(
            "inspect",
            "--tls-verify=false",
            f"docker://{server.host}/kit/app:1",
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "nohome")},
        )
        assert result.returncode != 0


def test_factory_push_keeps_the_index(image_factory, plain_registry):
    index = image_factory.multi_platform("kit/pushed-index", ["linux/amd64", "linux/arm64"], [100])
    image_factory.push(index, plain_registry.host, "kit/index", "1")
    assert skopeo_manifest_digest(f"docker://{plain_registry.host}/kit/index:1") == index.digest


def test_token_server_signs_tokens_the_registry_accepts(token_registry):
    import jwt

    tokens = token_registry.token_server
    token = tokens.issue("alice", ["repository:kit/app:pull"])
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "ES256" and header["x5c"]
    assert claims["aud"] == tokens.service and claims["iss"] == tokens.issuer
    assert claims["access"] == [{"type": "repository", "name": "kit/app", "actions": ["pull"]}]


def test_a_token_server_ttl_is_the_lifetime_the_registry_enforces(tmp_path):
    """distribution accepts tokens 60 s past ``exp``: the token server allows for that, so
    a one-second token works at once and is refused two seconds later."""
    import time
    import urllib.error
    import urllib.request

    from sealpy.core.testing.registry import RegistryServer, TokenServer

    def status(server: RegistryServer, token: str) -> int:
        request = urllib.request.Request(
            f"http://{server.host}/v2/kit/app/tags/list",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    with TokenServer(tmp_path / "token", {"alice": "secret"}, ttl=1) as tokens:
        auth = tokens.auth_config()
        with RegistryServer(tmp_path / "root", workdir=tmp_path / "work", auth=auth) as server:
            token = tokens.issue("alice", ["repository:kit/app:pull"])
            assert status(server, token) == 404  # accepted: the repository does not exist
            time.sleep(2.1)
            assert status(server, token) == 401


def test_a_fault_proxy_counts_requests_by_method_and_kind(image_factory, plain_registry, tmp_path):
    from sealpy.core.testing.faultproxy import FaultProxy

    image = image_factory.image("counted", [512])
    with FaultProxy(plain_registry.host) as proxy:
        image_factory.push(image, proxy.host, "library/counted", "1")
        pushed = proxy.count()
        proxy.seen.clear()
        target = tmp_path / "counted-pull"
        skopeo_pull(f"docker://{proxy.host}/library/counted:1", target)
    assert pushed > 0
    assert proxy.count("GET", "blob") == len(image.manifest.blobs)  # config + one layer
    assert proxy.count("GET", "manifest") >= 1
    assert proxy.count() == len(proxy.seen)
    assert proxy.count("GET") + proxy.count("HEAD") + proxy.count("PUT") + proxy.count(
        "POST"
    ) + proxy.count("PATCH") == len(proxy.seen)


def test_a_fault_proxy_cannot_be_started_twice(plain_registry):
    from sealpy.core.testing.faultproxy import FaultProxy

    with FaultProxy(plain_registry.host) as proxy:
        host = proxy.host
        with pytest.raises(RuntimeError, match="already serving"):
            proxy.start()
        assert proxy.host == host
    proxy.start().stop()  # stopped: it may serve again
