"""What sealpy bounds whatever a server sends: bodies read whole are capped (1 MiB; a
manifest 4 MiB), JSON is limited in depth, indexes in nesting, and a redirect goes to
http(s) only. Each answer a hostile server can give ends in one clear error naming the
host or the image, quickly and in little memory — never in an internal error."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _hostile import (
    REGISTRY_HEADERS,
    HostileServer,
    MiB,
    Reply,
    Request,
    endless,
    gzip_bomb,
    json_reply,
    nested,
    registry_ping,
    sized,
)

from sealpy.core.cli import main
from sealpy.core.errors import AuthenticationError, ContextError, ManifestError, RegistryError
from sealpy.core.image.media import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest
from sealpy.core.image.walk import MAX_DEPTH
from sealpy.core.model import RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import Endpoint
from sealpy.core.transport.archive import DockerArchiveSource, OCIArchiveSource, _LayoutSink
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.distribution import DistributionLayout
from sealpy.core.transport.remote import RegistryClient

# What a client that stopped reading may still have been sent: its cap plus what the two
# sockets buffer (loopback buffers grow to a few MiB each).
SLACK = 20 * MiB
BIG = 96 * MiB  # sent only to a client that reads it all: the bug these tests catch


def fast_retry() -> RetryPolicy:
    return RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.02, max_seconds=10.0)


def client() -> RegistryClient:
    return RegistryClient(retry=fast_retry())


def repo(c: RegistryClient, server: HostileServer):
    return c.repository(ImageReference(server.host, "library/app", "1"))


def writer_for(tmp_path: Path, digest: str, size: int) -> BlobWriter:
    return BlobWriter(
        tmp_path / "partial" / "data",
        lambda d: tmp_path / "blobs" / d.split(":")[1],
        digest=digest,
        size=size,
        durable=False,
    )


def answering(handler: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
    """``handler`` behind a registry's /v2/ answer."""
    return lambda request: registry_ping(request) or handler(request)


def bearer(server_host: Callable[[], str]) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="http://{server_host()}/token",service="s"'}


# --- 1. bodies read whole are capped --------------------------------------------------------


def test_the_v2_probe_reads_no_more_than_a_little_of_its_body():
    def script(request: Request) -> Reply:
        return Reply(200, dict(REGISTRY_HEADERS), sized(BIG))

    with HostileServer(script) as server, client() as c:
        resolved = c.resolve(Endpoint(server.host, "library/app"))
        assert resolved.url == f"http://{server.host}"
        time.sleep(0.2)  # let the server's writes run into the closed connection
        assert server.sent < SLACK, f"{server.sent} bytes sent"


@pytest.mark.parametrize(("status", "bomb"), [(404, False), (500, False), (404, True)])
def test_an_error_body_past_the_cap_is_an_error_naming_the_host(status: int, bomb: bool):
    """A gzip bomb counts by what it inflates to: 64 MiB from 64 KiB on the wire."""
    compressed = gzip_bomb(64 * MiB) if bomb else b""

    def script(request: Request) -> Reply:
        if bomb:
            return Reply(status, {"Content-Encoding": "gzip"}, compressed)
        return Reply(status, {}, sized(BIG))

    with HostileServer(answering(script)) as server, client() as c:
        started = time.monotonic()
        with pytest.raises(RegistryError) as failure:
            repo(c, server).get_manifest("1")
        assert time.monotonic() - started < 10
        message = str(failure.value)
        assert server.host in message and "1 MiB" in message, message
        assert server.sent < SLACK, f"{server.sent} bytes sent"
        assert len(server.requests) <= 3, "not retried: it cannot get better"


def test_a_token_answer_past_the_cap_is_an_error_naming_the_token_server():
    def script(request: Request) -> Reply:
        if request.path.startswith("/token"):
            return Reply(200, {"Content-Type": "application/json"}, sized(BIG))
        return Reply(401, bearer(lambda: server.host))

    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(AuthenticationError) as failure:
            repo(c, server).get_manifest("1")
        message = str(failure.value)
        assert "token server" in message and "1 MiB" in message, message
        assert server.host in message
        assert server.sent < SLACK, f"{server.sent} bytes sent"


@pytest.mark.parametrize("operation", ["manifest", "blob"])
def test_a_redirect_body_past_the_cap_is_an_error_naming_the_host(operation, tmp_path):
    """requests reads a redirect's whole body, even one it does not follow."""

    def script(request: Request) -> Reply:
        return Reply(302, {"Location": "/elsewhere"}, sized(BIG))

    digest = "sha256:" + "0" * 64
    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            if operation == "manifest":
                repo(c, server).get_manifest("1")
            else:
                source = repo(c, server)
                source.fetch_blob(Descriptor("x", digest, 10), writer_for(tmp_path, digest, 10))
        message = str(failure.value)
        assert server.host in message and "1 MiB" in message, message
        assert server.sent < SLACK, f"{server.sent} bytes sent"


def test_the_answer_to_an_upload_past_the_cap_is_an_error_naming_the_host(tmp_path):
    def script(request: Request) -> Reply:
        if request.method == "HEAD":
            return Reply(404)
        return Reply(202, {"Location": "/v2/library/app/blobs/uploads/1"}, sized(BIG))

    blob = tmp_path / "blob"
    blob.write_bytes(b"data")
    digest = "sha256:" + hashlib.sha256(b"data").hexdigest()
    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            repo(c, server).push_blob(Descriptor("x", digest, 4), lambda: blob.open("rb"))
        message = str(failure.value)
        assert server.host in message and "1 MiB" in message, message
        assert server.sent < SLACK, f"{server.sent} bytes sent"


def test_a_manifest_past_its_cap_is_an_error_naming_the_host():
    def script(request: Request) -> Reply:
        return Reply(200, {"Content-Type": OCI_MANIFEST}, endless())

    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(ManifestError) as failure:
            repo(c, server).get_manifest("1")
        message = str(failure.value)
        assert server.host in message and "4 MiB" in message, message
        assert server.sent < 4 * MiB + SLACK


# --- 2. what a bounded body holds is checked -------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"errors": [{"code": "X", "message": "line one\nline two " + "y" * 5000}]}),
        json.dumps({"errors": 5}),
        json.dumps({"errors": [5]}),
        json.dumps({"errors": [{"code": [1], "message": {"a": 1}}]}),
        nested(200_000).decode(),
        "\x1b[31mred\r\n" * 100,
    ],
    ids=["long-multiline", "errors-int", "error-int", "wrong-types", "nested", "control-chars"],
)
def test_an_error_body_becomes_one_short_line(body: str):
    def script(request: Request) -> Reply:
        return Reply(400, {"Content-Type": "application/json"}, body.encode())

    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            repo(c, server).get_manifest("1")
        message = str(failure.value)
        assert server.host in message
        assert message.isprintable() and len(message) < 400, message


@pytest.mark.parametrize(
    "answer",
    [
        nested(200_000),
        b"[]",
        b'{"token": 5}',
        b'{"token": ["a"]}',
        b'{"token": "abc\\r\\nX-Injected: 1"}',
    ],
    ids=["nested", "list", "int", "list-token", "header-injection"],
)
def test_a_malformed_token_answer_is_an_authentication_error(answer: bytes):
    def script(request: Request) -> Reply:
        if request.path.startswith("/token"):
            return Reply(200, {"Content-Type": "application/json"}, answer)
        if request.headers.get("Authorization") == "Bearer abc":
            return Reply(200, {"Content-Type": OCI_MANIFEST}, b"{}")
        return Reply(401, bearer(lambda: server.host))

    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            repo(c, server).get_manifest("1")
        message = str(failure.value)
        assert isinstance(failure.value, AuthenticationError), message
        assert "token server" in message, message


# --- 3. redirects go to http(s) only -----------------------------------------------------


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://files.example/x", "gopher://x"])
def test_a_redirect_to_an_unsupported_url_says_so(location: str, tmp_path):
    def script(request: Request) -> Reply:
        return Reply(307, {"Location": location})

    digest = "sha256:" + "0" * 64
    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            source = repo(c, server)
            source.fetch_blob(Descriptor("x", digest, 10), writer_for(tmp_path, digest, 10))
        message = str(failure.value)
        assert "redirected to an unsupported URL" in message, message
        assert server.host in message and location.split(":")[0] in message, message
        assert "No connection adapters" not in message


def test_a_token_realm_redirecting_to_an_unsupported_url_says_so():
    def script(request: Request) -> Reply:
        if request.path.startswith("/token"):
            return Reply(302, {"Location": "file:///etc/passwd"})
        return Reply(401, bearer(lambda: server.host))

    with HostileServer(answering(script)) as server, client() as c:
        with pytest.raises(RegistryError) as failure:
            repo(c, server).get_manifest("1")
        assert "redirected to an unsupported URL" in str(failure.value), str(failure.value)


# --- 4. JSON: depth, types -------------------------------------------------------------------


CONFIG = b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest(**extra: object) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json"}
    config |= {"digest": digest_of(CONFIG), "size": len(CONFIG)}
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [], **extra}
    ).encode()


@pytest.mark.parametrize(
    "data",
    [
        nested(200_000),
        b'{"a":' * 200_000 + b"1" + b"}" * 200_000,
        image_manifest(annotations=json.loads(nested(100))),
        image_manifest(config=json.loads(b'{"a":' * 50 + b"1" + b"}" * 50)),
    ],
    ids=["brackets", "objects", "deep-annotations", "deep-config"],
)
def test_deeply_nested_json_is_a_manifest_error(data: bytes):
    with pytest.raises(ManifestError, match="nested"):
        Manifest.parse(data, what="manifest 1")


def test_a_real_manifest_is_not_too_deep():
    platform = {"os": "linux", "architecture": "arm64", "variant": "v8", "os.features": ["a"]}
    child = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 3}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child | {"platform": platform, "annotations": {"k": "v"}}],
        "annotations": {"a": "b"},
    }
    assert Manifest.parse(json.dumps(index).encode()).children[0].platform == platform


def archive(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize("kind", ["docker-archive", "oci-archive"])
def test_a_deeply_nested_archive_index_is_a_context_error(kind: str, tmp_path: Path):
    name = "manifest.json" if kind == "docker-archive" else "index.json"
    path = tmp_path / "image.tar"
    path.write_bytes(archive({name: nested(200_000), "oci-layout": b"{}"}))
    with pytest.raises(ContextError):
        if kind == "docker-archive":
            layout = DistributionLayout(tmp_path / "registry", durable=False)
            DockerArchiveSource(path, _LayoutSink(layout, "x/app")).get_manifest("")
        else:
            OCIArchiveSource(path).get_manifest("")


@pytest.mark.parametrize("tags", ['"app:1"', "5", "[1]", '{"a": 1}'])
def test_load_refuses_repo_tags_of_the_wrong_type(tags: str, tmp_path: Path, capsys):
    manifest_json = f'[{{"Config": "config.json", "Layers": [], "RepoTags": {tags}}}]'
    path = tmp_path / "image.tar"
    path.write_bytes(archive({"manifest.json": manifest_json.encode(), "config.json": CONFIG}))
    code = main(["load", "-i", str(path), "--root", str(tmp_path / "store"), "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "RepoTags" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "manifest_json", [nested(200_000), b"{not json", b'{"Config": "config.json"}', b"[5]"]
)
def test_load_refuses_a_malformed_manifest_json_in_one_line(
    manifest_json: bytes, tmp_path: Path, capsys
):
    path = tmp_path / "image.tar"
    path.write_bytes(archive({"manifest.json": manifest_json, "config.json": CONFIG}))
    code = main(["load", "-i", str(path), "--root", str(tmp_path / "store"), "-q"])
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


# --- 5. end to end: one line, naming the image -----------------------------------------------


class Images:
    """Documents a scripted registry serves by tag or digest, plus a per-path override."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[str, bytes]] = {}

    def add(self, data: bytes, media_type: str, tag: str | None = None) -> dict:
        self.docs[digest_of(data)] = (media_type, data)
        if tag:
            self.docs[tag] = (media_type, data)
        return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}

    def script(self, request: Request) -> Reply:
        found = self.docs.get(request.path.rsplit("/", 1)[-1])
        if found is None:
            return json_reply(404, {"errors": [{"code": "NOT_FOUND", "message": "unknown"}]})
        return Reply(
            200, {"Content-Type": found[0], "Docker-Content-Digest": digest_of(found[1])}, found[1]
        )


def save(capsys, context: Path, image: str, *extra: str) -> tuple[int, list[str]]:
    (context / "Kubefile").parent.mkdir(parents=True, exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    code = main(["registry", "save", str(context), "--images", image, "--retry-times", "0", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    return code, errors


def test_an_index_chain_3000_deep_is_one_error_naming_the_image(capsys, tmp_path):
    images = Images()
    below = images.add(image_manifest(), OCI_MANIFEST)
    images.add(CONFIG, "application/vnd.oci.image.config.v1+json")
    platform = {"os": "linux", "architecture": "amd64"}
    for _ in range(3000):
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [below | {"platform": platform}],
        }
        below = images.add(json.dumps(body).encode(), OCI_INDEX)
    images.docs["1"] = images.docs[below["digest"]]
    with HostileServer(answering(images.script)) as server:
        code, errors = save(
            capsys, tmp_path / "ctx", f"{server.host}/library/app:1", "--platform", "linux/amd64"
        )
        fetched = [r for r in server.requests if "/manifests/" in r.path]
    assert code == 1 and len(errors) == 1, errors
    assert f"{server.host}/library/app:1" in errors[0]
    assert f"more than {MAX_DEPTH} deep" in errors[0], errors
    assert len(fetched) <= MAX_DEPTH + 2, "stopped at the limit"
    assert MAX_DEPTH == 4


@pytest.mark.parametrize(
    "platform",
    ["linux/amd64", ["linux", "amd64"], json.loads(nested(900))],
    ids=["string", "list", "deep"],
)
def test_a_platform_of_the_wrong_type_is_one_error_naming_the_image(platform, capsys, tmp_path):
    images = Images()
    child = images.add(image_manifest(), OCI_MANIFEST)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child | {"platform": platform}],
    }
    images.add(json.dumps(body).encode(), OCI_INDEX, tag="1")
    with HostileServer(answering(images.script)) as server:
        code, errors = save(capsys, tmp_path / "ctx", f"{server.host}/library/app:1")
    assert code == 1 and len(errors) == 1, errors
    assert f"{server.host}/library/app:1" in errors[0], errors
    assert "platform" in errors[0] or "nested more than" in errors[0], errors
    assert len(errors[0]) < 400, errors


def test_a_manifest_of_200k_brackets_is_one_error_naming_the_image(capsys, tmp_path):
    def script(request: Request) -> Reply:
        return Reply(200, {"Content-Type": OCI_MANIFEST}, nested(200_000))

    with HostileServer(answering(script)) as server:
        code, errors = save(capsys, tmp_path / "ctx", f"{server.host}/library/app:1")
    assert code == 1 and len(errors) == 1, errors
    assert f"{server.host}/library/app:1" in errors[0] and "nested" in errors[0], errors


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://files.example/x"])
def test_a_blob_redirected_to_an_unsupported_url_is_one_error(location, capsys, tmp_path):
    images = Images()
    images.add(image_manifest(), OCI_MANIFEST, tag="1")

    def script(request: Request) -> Reply:
        if "/blobs/" in request.path:
            return Reply(307, {"Location": location})
        return images.script(request)

    with HostileServer(answering(script)) as server:
        code, errors = save(capsys, tmp_path / "ctx", f"{server.host}/library/app:1")
    assert code == 1 and len(errors) == 1, errors
    assert "redirected to an unsupported URL" in errors[0], errors
    assert "writing failed" not in errors[0]


# --- 6. end to end, endless bodies: fast, one line, little memory ---------------------------

MEMORY_CEILING = 1 << 30  # RLIMIT_DATA of the child: a regression fails, not the machine


def run_measured(args: list[str], timeout: float = 60) -> tuple[int, str, float, int]:
    """Run sealpy in a child; its exit code, stderr, seconds and peak RSS in bytes."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_CEILING, MEMORY_CEILING))

    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealpy.core", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
        env={**os.environ, "NO_COLOR": "1"},
    )
    timer = threading.Timer(timeout, lambda: proc.send_signal(signal.SIGKILL))
    timer.start()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, time.monotonic() - started, usage.ru_maxrss * 1024


def endless_probe(request: Request) -> Reply:
    return Reply(200, dict(REGISTRY_HEADERS), endless())


def endless_404(request: Request) -> Reply:
    return registry_ping(request) or Reply(404, {}, endless())


def endless_token(server: list[HostileServer]) -> Callable[[Request], Reply]:
    def script(request: Request) -> Reply:
        if request.path.startswith("/token"):
            return Reply(200, {"Content-Type": "application/json"}, endless())
        return Reply(401, REGISTRY_HEADERS | bearer(lambda: server[0].host))

    return script


@pytest.mark.parametrize("case", ["probe", "404", "token"])
def test_endless_bodies_end_quickly_in_one_line_and_little_memory(case, tmp_path):
    holder: list[HostileServer] = []
    script = {"probe": endless_probe, "404": endless_404, "token": endless_token(holder)}[case]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    with HostileServer(script) as server:
        holder.append(server)
        args = ["registry", "save", str(context), "--images", f"{server.host}/library/app:1"]
        code, err, seconds, peak = run_measured([*args, "--retry-times", "1"])
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1, err
    assert len(lines) == 1 and server.host in lines[0], err
    assert "MiB" in lines[0], err
    assert seconds < 30, f"{seconds:.1f} s"
    assert peak < 300 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
