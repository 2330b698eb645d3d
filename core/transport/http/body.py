"""Reading a registry's answers: a blob body as it arrives (every byte counts as progress),
a manifest body bounded in size, and the check that an answer is no redirect or error
page where a manifest was expected."""

from __future__ import annotations

from collections.abc import Iterator

import requests

from sealpy.core.errors import ManifestError, RegistryError
from sealpy.core.registries import Endpoint
from sealpy.core.transport.blobio import CHUNK
from sealpy.core.transport.http.session import read_capped, size_text

MAX_MANIFEST_BYTES = 4 << 20  # containers/image's limit: a manifest is never bigger


def arriving(response: requests.Response) -> Iterator[bytes]:
    """A body as it arrives, up to CHUNK at a time. Unlike iter_content, whose reads wait
    to fill a whole chunk and lose it when the connection breaks, every byte received is
    handed over: it is written (the retry resumes after it) and counts as progress."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from response.iter_content(CHUNK)
        return
    while chunk := read1(CHUNK, decode_content=True):
        yield chunk


def expect_success(response: requests.Response, endpoint: Endpoint, what: str) -> None:
    """Anything but 2xx here is not a manifest: above all a redirect (not followed for
    manifests), which is what a host that is no registry answers — docker.io itself sends
    /v2/ to www.docker.com. Reading that as a manifest would only say "not valid JSON"."""
    status = response.status_code
    if 200 <= status < 300:
        return
    response.close()
    answer = f"{status} {response.reason or ''}".strip()
    location = response.headers.get("Location")
    if location:
        answer += f" (redirect to {location})"
    raise RegistryError(
        f"{what}: {endpoint.host} answered {answer} instead of a manifest; is it a registry?"
    )


def read_limited(response: requests.Response, limit: int, what: str, host: str) -> bytes:
    """The whole body, failing with ManifestError naming ``host`` past ``limit`` bytes (a
    manifest is read into memory; nothing a registry sends may make that unbounded)."""
    try:
        data = read_capped(response, limit)
    finally:
        response.close()
    if data is None:
        raise ManifestError(f"{host} sent a manifest larger than {size_text(limit)}", subject=what)
    return data
