"""Attachments for tests, made the way their tools make them: cosign-like signature,
attestation and SBOM manifests (tags ``sha256-<hex>.sig``/``.att``/``.sbom``), OCI 1.1
referrers (manifests with a ``subject``), the referrers tag's index, and a scripted
registry front that answers the referrers API (distribution v2.8 does not)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from sealpy.core.image import media
from sealpy.core.image.compose import canonical_json, parse_document
from sealpy.core.image.media import Descriptor, Manifest
from sealpy.core.testing.images import EPOCH, ImageFactory


def referrers_tag(digest: str) -> str:
    """The referrers tag of a sha256 digest (``sha256-<hex>``); cosign's tags add
    ``.sig``/``.att``/``.sbom``."""
    return digest.replace(":", "-")


SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SPDX = "text/spdx+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM_ARTIFACT = "application/vnd.example.sbom.v1"


def _cosign_config(factory: ImageFactory, layers: list[tuple[str, bytes]]) -> Descriptor:
    """cosign's config: created, history per layer, empty architecture/os, diff_ids."""
    config = canonical_json(
        {
            "architecture": "",
            "os": "",
            "created": EPOCH,
            "config": {},
            "history": [{"created": EPOCH} for _ in layers],
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(d).hexdigest() for _, d in layers],
            },
        }
    )
    return Descriptor(media.OCI_CONFIG, factory.layout.put_blob_bytes(config), len(config))


def cosign_manifest(
    factory: ImageFactory, kind: str, repository: str, subject: str, seed: str = ""
) -> Manifest:
    """A manifest as cosign pushes under ``sha256-<hex>.<kind>`` (``sig``, ``att``,
    ``sbom``) for the manifest ``subject``: one layer, annotated as cosign does."""
    if kind == "sig":
        payload = canonical_json(
            {
                "critical": {
                    "identity": {"docker-reference": repository},
                    "image": {"docker-manifest-digest": subject},
                    "type": "cosign container image signature",
                },
                "optional": {"seed": seed},
            }
        )
        fake_signature = base64.b64encode(hashlib.sha256(payload + b"key").digest()).decode()
        layer_type, annotations = (
            SIMPLESIGNING,
            {"dev.cosignproject.cosign/signature": fake_signature},
        )
    elif kind == "att":
        statement = {"predicateType": "https://slsa.dev/provenance/v0.2", "subject": subject}
        payload = canonical_json(
            {"payloadType": "application/vnd.in-toto+json", "payload": json.dumps(statement)}
        )
        layer_type = DSSE
        annotations = {"predicateType": "https://slsa.dev/provenance/v0.2"}
    else:
        payload = canonical_json({"spdxVersion": "SPDX-2.3", "name": f"{repository} {seed}"})
        layer_type, annotations = SPDX, {}
    layer = Descriptor(layer_type, factory.layout.put_blob_bytes(payload), len(payload))
    config = _cosign_config(factory, [(layer_type, payload)])
    layer_json = layer.to_json()
    if annotations:
        layer_json["annotations"] = annotations
    manifest = parse_document(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer_json],
        }
    )
    factory.layout.put_manifest(manifest)
    return manifest


def referrer_manifest(factory: ImageFactory, subject: Manifest, seed: str) -> Manifest:
    """An OCI 1.1 artifact referring to ``subject`` (an SBOM, as oras attaches one)."""
    empty = b"{}"
    config = Descriptor(EMPTY, factory.layout.put_blob_bytes(empty), len(empty))
    sbom = canonical_json({"sbom": seed, "subject": subject.digest})
    layer = Descriptor(SPDX, factory.layout.put_blob_bytes(sbom), len(sbom))
    manifest = parse_document(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "artifactType": SBOM_ARTIFACT,
            "config": config.to_json(),
            "layers": [layer.to_json()],
            "subject": subject.descriptor().to_json(),
            "annotations": {"org.opencontainers.image.created": EPOCH, "seed": seed},
        }
    )
    factory.layout.put_manifest(manifest)
    return manifest


def referrer_entry(referrer: Manifest) -> dict:
    """The referrer's descriptor as the referrers API lists it."""
    entry = referrer.descriptor().to_json()
    entry["artifactType"] = (
        referrer.json.get("artifactType") or referrer.json["config"]["mediaType"]
    )
    if referrer.json.get("annotations"):
        entry["annotations"] = referrer.json["annotations"]
    return entry


def referrers_index(factory: ImageFactory, referrers: list[Manifest]) -> Manifest:
    """The referrers tag's index over ``referrers`` (as a client pushing them writes it)."""
    index = parse_document(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_INDEX,
            "manifests": [referrer_entry(r) for r in referrers],
        }
    )
    factory.layout.put_manifest(index)
    return index


def push_manifest(
    factory: ImageFactory, manifest: Manifest, host: str, repository: str, tag: str | None
) -> None:
    """Push a manifest of the factory's layout (an attachment) with its blobs."""
    factory.push(SimpleNamespace(digest=manifest.digest), host, repository, tag)  # type: ignore[arg-type]


def sign_all(
    factory: ImageFactory, subject: str, host: str, repository: str, kinds=("sig", "att", "sbom")
) -> dict[str, Manifest]:
    """Push cosign's ``.sig``/``.att``/``.sbom`` for ``subject``; tag -> manifest."""
    pushed = {}
    for kind in kinds:
        tag = f"{referrers_tag(subject)}.{kind}"
        manifest = cosign_manifest(factory, kind, f"{host}/{repository}", subject, seed=tag)
        push_manifest(factory, manifest, host, repository, tag)
        pushed[tag] = manifest
    return pushed


class ReferrersFront:
    """A registry front that answers ``GET /v2/<repo>/referrers/<digest>`` from
    ``listings`` ({digest: [entries]}, an empty index for others; ``page_size`` splits it
    into pages linked by ``Link``) and forwards everything else to ``upstream``. Records
    each path asked."""

    def __init__(
        self,
        upstream: str,
        listings: Mapping[str, list[dict]] | None,
        page_size: int = 0,
        *,
        list_tags: bool = True,
    ) -> None:
        self.upstream = upstream
        self.listings = listings  # None: no referrers API (the upstream's 404 passes)
        self.page_size = page_size
        self.list_tags = list_tags  # False: tags/list answers 404, as some registries do
        self.paths: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ReferrersFront:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _referrers(self) -> None:
                path, _, query = self.path.partition("?")
                digest = path.rsplit("/", 1)[1]
                assert front.listings is not None
                entries = list(front.listings.get(digest, []))
                start = int(query.split("=", 1)[1]) if query.startswith("page=") else 0
                size = front.page_size or len(entries) or 1
                page = entries[start : start + size]
                headers = {"Content-Type": media.OCI_INDEX}
                if start + size < len(entries):
                    headers["Link"] = f'<{path}?page={start + size}>; rel="next"'
                body = canonical_json(
                    {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": page}
                )
                self._answer(200, body, headers)

            def _forward(self) -> None:
                front.paths.append(self.path)
                front.requests.append((self.command, self.path))
                if front.listings is not None and "/referrers/" in self.path:
                    return self._referrers()
                if not front.list_tags and self.path.split("?")[0].endswith("/tags/list"):
                    error = {"errors": [{"code": "UNSUPPORTED", "message": "no tag listing"}]}
                    body = json.dumps(error).encode()
                    return self._answer(404, body, {"Content-Type": "application/json"})
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(front.upstream, timeout=30)
                # Headers may repeat (skopeo sends one Accept per media type): keep them all.
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                upstream.putheader("Host", front.upstream)
                for key, value in self.headers.items():
                    if key.lower() not in ("host", "connection"):
                        upstream.putheader(key, value)
                upstream.endheaders(body)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                passed = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "connection", "transfer-encoding")
                }
                if self.command == "HEAD":  # no body: say the upstream's length
                    passed["Content-Length"] = response.getheader("Content-Length", "0")
                return self._answer(response.status, data, passed)

            do_GET = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
