"""The registry client against scripted servers: what a real registry never does on cue
(redirects away, CDN errors, slow links that break, schema1), plus proxies, Docker Hub's
API host, and the time budget of retries."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sealpy.core.errors import ManifestError, RegistryError
from sealpy.core.image.media import DOCKER_SCHEMA1_SIGNED, Descriptor
from sealpy.core.model import RetryPolicy
from sealpy.core.reference import ImageReference
from sealpy.core.registries import Endpoint, RegistriesConfig, api_host
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.remote import RegistryClient


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Answer:
    """What the scripted server sends: a status, headers and a body given as pieces, each
    sent after ``delay`` seconds; ``cut`` closes the connection after the pieces although
    Content-Length announced more."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)
    length: int | None = None  # Content-Length; defaults to the pieces' total
    delay: float = 0.0
    cut: bool = False


Script = Callable[[Request], Answer]


class ScriptedServer:
    """A plain-HTTP server on 127.0.0.1 answering every request with ``script(request)``,
    except the ``/v2/`` ping, answered as a distribution registry would. Records requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def calls(self, fragment: str) -> list[Request]:
        return [r for r in self.requests if fragment in r.path]

    def __enter__(self) -> ScriptedServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                request = Request(self.command, self.path, dict(self.headers.items()))
                if self.path == "/v2/":
                    answer = Answer(headers={"Docker-Distribution-Api-Version": "registry/2.0"})
                else:
                    outer.requests.append(request)
                    answer = outer.script(request)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                total = sum(len(p) for p in answer.pieces)
                self.send_header("Content-Length", str(answer.length or total))
                self.end_headers()
                if self.command == "HEAD":
                    return
                for piece in answer.pieces:
                    time.sleep(answer.delay)
                    self.wfile.write(piece)
                    self.wfile.flush()
                if answer.cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def oci_manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 2},
            "layers": [],
        }
    ).encode()


def fast_retry(**overrides) -> RetryPolicy:
    values = {"attempts": 6, "initial_backoff": 0.01, "max_backoff": 0.05, "max_seconds": 20.0}
    return RetryPolicy(**{**values, **overrides})


def repository(client: RegistryClient, server: ScriptedServer, name: str = "library/app"):
    return client.repository(ImageReference(server.host, name, "1"))


def writer_for(tmp_path: Path, blob: bytes) -> BlobWriter:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    return BlobWriter(
        tmp_path / "partial" / "data",
        lambda d: tmp_path / "blobs" / d.split(":")[1],
        digest=digest,
        size=len(blob),
        durable=False,
    )


# --- 1. Docker Hub's API host; answers that are no registry's --------------------------------


def test_docker_hub_is_reached_at_its_api_host_under_its_own_name():
    """containers/image talks to registry-1.docker.io for docker.io: docker.io itself answers
    /v2/ with a redirect to www.docker.com."""
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("index.docker.io") == "registry-1.docker.io"
    assert api_host("quay.io") == "quay.io"
    assert api_host("127.0.0.1:5000") == "127.0.0.1:5000"
    ref = ImageReference.parse("nginx:1")
    (endpoint,) = RegistriesConfig().endpoints(ref)
    assert (endpoint.host, endpoint.repository) == ("docker.io", "library/nginx")
    with RegistryClient() as client:
        # Decided without a request: docker.io is neither loopback nor insecure.
        assert client.resolve(endpoint).url == "https://registry-1.docker.io"
        assert client.resolve(Endpoint("quay.io", "a/b")).url == "https://quay.io"
    # A mirror for docker.io is reached at its own location.
    mirrored = RegistriesConfig.load(mirrors=["docker.io=mirror.example:5000"], paths=[])
    assert [e.host for e in mirrored.endpoints(ref)] == ["mirror.example:5000", "docker.io"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Location": "https://www.docker.com/"}],
    ids=["no-location", "elsewhere"],
)
def test_a_redirect_instead_of_a_manifest_is_a_clear_error(headers):
    with (
        ScriptedServer(lambda r: Answer(301, headers)) as server,
        RegistryClient(retry=fast_retry()) as client,
    ):
        repo = repository(client, server)
        for operation in (repo.get_manifest, repo.head_manifest):
            with pytest.raises(RegistryError) as failure:
                operation("1")
            message = str(failure.value)
            assert "301" in message and "manifest 1" in message, message
            assert "JSON" not in message
            if headers:
                assert "https://www.docker.com/" in message
        assert len(server.calls("/manifests/")) == 2, "not retried"


# --- 2. the time budget counts time spent failing, and is never overshot -------------------


def test_a_slow_download_that_breaks_after_the_budget_resumes_with_range(tmp_path):
    blob = bytes(range(256)) * 64  # 16 KiB
    half = len(blob) // 2

    def script(request: Request) -> Answer:
        start = int(request.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
        if start == 0:  # first half trickles in for longer than the budget, then a break
            pieces = [blob[i : i + 1024] for i in range(0, half, 1024)]
            return Answer(200, pieces=pieces, length=len(blob), delay=0.1, cut=True)
        return Answer(
            206,
            {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"},
            pieces=[blob[start:]],
        )

    writer = writer_for(tmp_path, blob)
    descriptor = Descriptor("application/octet-stream", writer.digest, len(blob))
    with (
        ScriptedServer(script) as server,
        RegistryClient(retry=fast_retry(max_seconds=0.5)) as client,
    ):
        repository(client, server).fetch_blob(descriptor, writer)
        writer.commit()
        ranges = [r.headers.get("Range") for r in server.calls("/blobs/")]
    assert ranges == [None, f"bytes={half}-"]
    assert (tmp_path / "blobs" / writer.digest.split(":")[1]).read_bytes() == blob


def test_waits_never_reach_past_the_time_budget():
    """A Retry-After that does not fit in what is left of the budget ends the operation
    now, instead of sleeping past it (a behavioural bound, not a speed measurement)."""
    budget = 1.0
    unavailable = Answer(503, {"Retry-After": "0.9"}, [b"{}"])
    with (
        ScriptedServer(lambda r: unavailable) as server,
        RegistryClient(retry=fast_retry(attempts=10, max_seconds=budget)) as client,
    ):
        started = time.monotonic()
        with pytest.raises(RegistryError) as failure:
            repository(client, server).get_manifest("1")
        elapsed = time.monotonic() - started
    assert elapsed <= budget + 0.3, elapsed
    assert "503" in str(failure.value) and "time budget" in str(failure.value)
    assert len(server.calls("/manifests/")) == 2


# --- 3. schema1 ----------------------------------------------------------------------------


def test_a_signed_schema1_manifest_is_refused_at_once():
    """A registry's digest for signed schema1 is over the payload without signatures, so
    the bytes never match it: that must not read as a lying source retried six times."""
    body = json.dumps(
        {"schemaVersion": 1, "name": "library/app", "tag": "1", "fsLayers": [], "signatures": []}
    ).encode()
    answer = Answer(
        200,
        {"Content-Type": DOCKER_SCHEMA1_SIGNED, "Docker-Content-Digest": "sha256:" + "ab" * 32},
        [body],
    )
    with (
        ScriptedServer(lambda r: answer) as server,
        RegistryClient(retry=fast_retry()) as client,
        pytest.raises(ManifestError) as failure,
    ):
        repository(client, server).get_manifest("1")
    assert "schema1 manifests are not supported" in str(failure.value)
    assert "does not match" not in str(failure.value)
    assert len(server.calls("/manifests/")) == 1


def test_a_schema1_image_fails_with_a_message_naming_it(tmp_path):
    from sealpy.core import pipeline
    from sealpy.core.errors import CacheError
    from sealpy.core.model import CacheOptions, ImageSet
    from sealpy.core.testing.conformance import AMD64

    body = json.dumps({"schemaVersion": 1, "name": "library/app", "fsLayers": []}).encode()
    # Recognised by its schemaVersion alone, before the (never matching) served digest.
    headers = {"Content-Type": "application/json", "Docker-Content-Digest": "sha256:" + "cd" * 32}
    answer = Answer(200, headers, [body])
    with ScriptedServer(lambda r: answer) as server:
        ref = f"{server.host}/library/app:1"
        options = CacheOptions(platforms=(AMD64,), retry=fast_retry())
        with pytest.raises(CacheError) as failure:
            pipeline.cache(
                ImageSet.of([ref]), tmp_path / "registry", strategy="proxy", options=options
            )
        assert len(server.calls("/manifests/")) == 1
    assert str(failure.value).startswith(f"{ref}: manifest 1: Docker schema1 manifests")


# --- 4. proxies ----------------------------------------------------------------------------


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_proxy(monkeypatch) -> Iterator[str]:
    proxy = f"http://127.0.0.1:{dead_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield proxy


def test_loopback_registries_bypass_the_environment_proxy(conformance_catalog, dead_proxy):
    c = conformance_catalog
    with RegistryClient(retry=fast_retry(attempts=2)) as client:
        repo = client.repository(ImageReference(c.plain.host, "library/single", "1"))
        assert repo.get_manifest("1").digest == c.single.digest
        assert repo.blob_exists(c.single.config.digest)


def test_the_token_realm_on_loopback_bypasses_the_proxy(conformance_catalog, dead_proxy):
    from sealpy.core.auth import ConfiguredCredentials, Credential
    from sealpy.core.testing.pytest_plugin import TEST_PASSWORD, TEST_USER

    c = conformance_catalog
    creds = ConfiguredCredentials(creds=Credential(TEST_USER, TEST_PASSWORD))
    with RegistryClient(credentials=creds, retry=fast_retry(attempts=2)) as client:
        repo = client.repository(ImageReference(c.token.host, "private/app", "1"))
        assert repo.get_manifest("1").digest == c.private.digest


def test_other_hosts_still_use_the_environment_proxy(dead_proxy):
    """Only loopback is exempt: a corporate proxy stays in use for the rest."""
    with RegistryClient(retry=fast_retry(attempts=1)) as client:
        settings = client.session.merge_environment_settings(
            "https://quay.io/v2/", {}, False, True, None
        )
        assert settings["proxies"].get("https") == dead_proxy
        settings = client.session.merge_environment_settings(
            "http://127.0.0.1:5000/v2/", {}, False, True, None
        )
        assert not any(settings["proxies"].values())


# --- 6. CDN errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [520, 522, 524])
def test_cdn_errors_are_retried(status):
    manifest = oci_manifest()
    answers = iter([Answer(status, pieces=[b"cdn"])])

    def script(request: Request) -> Answer:
        return next(
            answers, Answer(200, {"Content-Type": json.loads(manifest)["mediaType"]}, [manifest])
        )

    with ScriptedServer(script) as server, RegistryClient(retry=fast_retry()) as client:
        assert repository(client, server).get_manifest("1").data == manifest
        assert len(server.calls("/manifests/")) == 2


# --- 5. repeated --registry-mirror flags merge with registries.conf ---------------------------


def test_repeated_mirror_flags_merge_with_the_conf_entry(tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "hub.internal:5000"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "conf-mirror.example"\n'
    )
    registries = RegistriesConfig.load(
        mirrors=["docker.io=http://first.example", "index.docker.io=second.example:5000"],
        paths=[conf],
    )
    endpoints = registries.endpoints(ImageReference.parse("nginx:1"))
    assert [(e.host, e.mirror) for e in endpoints] == [
        ("first.example", True),
        ("second.example:5000", True),
        ("conf-mirror.example", True),
        ("hub.internal:5000", False),
    ]
    assert endpoints[0].scheme == "http" and endpoints[-1].insecure
    assert all(e.repository == "library/nginx" for e in endpoints)
    # Without a conf entry the flags alone make one, still in the order given.
    alone = RegistriesConfig.load(mirrors=["quay.io=a.example", "quay.io=b.example"], paths=[])
    hosts = [e.host for e in alone.endpoints(ImageReference.parse("quay.io/x/y:1"))]
    assert hosts == ["a.example", "b.example", "quay.io"]


# --- 8. messages name each thing once --------------------------------------------------------


def test_a_retried_failure_names_its_operation_once():
    manifest = oci_manifest()
    lying = Answer(
        200,
        {
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Docker-Content-Digest": "sha256:" + "ab" * 32,
        },
        [manifest],
    )
    with (
        ScriptedServer(lambda r: lying) as server,
        RegistryClient(retry=fast_retry(attempts=2)) as client,
        pytest.raises(RegistryError) as failure,
    ):
        repository(client, server).get_manifest("1")
    message = str(failure.value)
    assert message.startswith("manifest 1: content does not match"), message
    assert message.count("manifest 1") == 1 and "gave up after 2 attempts" in message


def test_a_conflict_is_one_error_naming_each_image_once(image_factory, tmp_path, start_registry):
    from sealpy.core.errors import ConflictError
    from sealpy.core.testing.conformance import AMD64
    from sealpy.core.transport.copy import CopyJob, copy_images
    from sealpy.core.transport.distribution import DistributionLayout

    layout = DistributionLayout(tmp_path / "registry")
    jobs = []
    with RegistryClient() as client:
        for name in ("a", "b"):
            image = image_factory.image(f"client/conflict-{name}", [100])
            source = start_registry(tmp_path / name)
            image_factory.push(image, source.host, "team/app", "1")
            ref = ImageReference(source.host, "team/app", "1")
            jobs.append(
                CopyJob(str(ref), client.repository(ref), "1", layout.repository("team/app"), "1")
            )
        jobs = [
            CopyJob(j.label, j.source, j.reference, j.destination, j.tag, "team/app:1")
            for j in jobs
        ]
        outcome = copy_images(jobs, platforms=(AMD64,))
    assert [f.label for f in outcome.failures] == [j.label for j in jobs]
    errors = {id(f.error): f.error for f in outcome.failures}
    assert len(errors) == 1, "the same conflict, reported once by whoever lists failures"
    (error,) = errors.values()
    assert isinstance(error, ConflictError)
    assert all(str(error).count(j.label) == 1 for j in jobs), str(error)


# --- 9. a failed run still says what it completed --------------------------------------------


def test_a_failed_run_says_what_completed_before_the_error(conformance_catalog, tmp_path, capsys):
    from sealpy.core.cli import main

    c = conformance_catalog
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    good, bad = c.ref(c.plain, "library/single"), c.ref(c.plain, "library/absent")
    code = main(
        [
            "registry",
            "save",
            "--strategy",
            "proxy",
            "--platform",
            "linux/amd64",
            "--images",
            f"{good},{bad}",
            str(context),
        ]
    )
    assert code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert "info 1 image cached, 1 failed" in lines
    assert lines.index("info 1 image cached, 1 failed") < len(lines) - 1
    assert str(bad) in lines[-1] and "not found" in lines[-1]


def test_the_tally_is_printed_once_and_only_after_failures():
    import io

    from sealpy.core.progress import PlainProgress

    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.image_done("a")
    progress.close()
    assert "failed" not in stream.getvalue()  # a successful run's caller prints its summary
    progress = PlainProgress(stream)
    for image in ("a", "b"):
        progress.image_done(image)
    progress.image_failed("c", "not found")
    progress.close()
    progress.close()
    assert stream.getvalue().count("info 2 images cached, 1 failed\n") == 1


def test_a_push_takes_blobs_only_from_a_local_image(tmp_path):
    """The push destination uploads from sources that can open their blobs (the store, a
    directory, an archive: BlobOpener); a remote repository is refused before any request."""
    from sealpy.core.transport.copy import BlobOpener
    from sealpy.core.transport.distribution import DistributionLayout
    from sealpy.core.transport.ocilayout import OCILayout
    from sealpy.core.transport.remote import RemotePushDestination

    assert isinstance(OCILayout(tmp_path / "oci").image("x"), BlobOpener)
    assert isinstance(DistributionLayout(tmp_path / "dist").repository("a/b"), BlobOpener)
    with RegistryClient() as client:
        remote = client.repository(ImageReference("127.0.0.1:9", "a/b", "1"))
        assert not isinstance(remote, BlobOpener)
        destination = RemotePushDestination(remote)
        blob = Descriptor("application/octet-stream", "sha256:" + "0" * 64, 1)
        with pytest.raises(RegistryError, match="not a local image"):
            destination.receive_blob(blob, remote)
        assert client.requests_sent == 0
        assert (destination.blobs_sent, destination.mounted) == (0, 0)
