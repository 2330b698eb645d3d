"""The C floor: Debian's curl fetching the same manifests and blobs as a contender, with
the same parallelism (``curl --parallel --parallel-max N``), into files.

``curl`` is the floor itself; ``curl-verified`` adds what a cache must do and curl does
not: the sha256 of every file checked against its digest, and an fsync of every file and
of the directory. The check runs after the download, in threads (hashlib's C code drops
the GIL), so it is an upper bound on what verifying while streaming would cost.

Token auth: one bearer token for every repository, fetched here in Python (not part of
what is timed as curl's work, but inside the timed run) and handed to curl through a
config file (mode 0600, deleted afterwards), never on its command line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def bearer_token(registry: str, authfile: str | None, repositories: list[str]) -> str | None:
    """One pull token for every repository (distribution's token spec takes repeated
    ``scope`` parameters), or None when the registry asks for none."""
    if not authfile:
        return None
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.http.auth import Challenge

    credential = ConfiguredCredentials(authfile=Path(authfile)).credentials_for(registry)
    header = requests.get(f"http://{registry}/v2/", timeout=30).headers.get("WWW-Authenticate", "")
    challenge = Challenge.parse(header)
    if challenge is None or challenge.scheme != "bearer" or credential is None:
        return None
    answer = requests.get(
        challenge.params["realm"],
        params=[
            ("service", challenge.params.get("service", "")),
            ("account", credential.username),
            *[("scope", f"repository:{r}:pull") for r in repositories],
        ],
        auth=(credential.username, credential.password),
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_config(spec: dict, out: Path, token: str | None) -> str:
    """curl's config: global options, then one url/output pair per transfer."""
    lines = [
        "parallel",
        f"parallel-max = {spec.get('max_parallel', 8)}",
        "fail",
        "silent",
        "show-error",
        "location",
        f"header = {_quote('Accept: ' + MANIFEST_TYPES)}",
    ]
    if token:
        lines.append(f"header = {_quote('Authorization: Bearer ' + token)}")
    for item in spec["transfers"]:
        kind = "manifests" if item.get("manifest") else "blobs"
        url = f"http://{spec['registry']}/v2/{item['repository']}/{kind}/{item['digest']}"
        lines += [f"url = {_quote(url)}", f"output = {_quote(str(out / _name(item)))}"]
    return "\n".join(lines) + "\n"


def _name(item: dict) -> str:
    return item["digest"].split(":", 1)[1]


def _verify(path: Path, digest: str) -> None:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
        os.fsync(f.fileno())
    if "sha256:" + sha.hexdigest() != digest:
        raise RuntimeError(f"digest mismatch for {digest}")


def run_curl(spec: dict, *, verified: bool) -> dict:
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    repositories = sorted({t["repository"] for t in spec["transfers"]})
    token = bearer_token(spec["registry"], spec.get("authfile"), repositories)
    config = Path(os.environ["TMPDIR"]) / f"curl-{os.getpid()}.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(curl_config(spec, out, token))
        result = subprocess.run(["curl", "-K", str(config)], capture_output=True, text=True)
    finally:
        config.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"curl failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    if verified:
        unique = {t["digest"]: t for t in spec["transfers"]}
        with ThreadPoolExecutor(spec.get("max_parallel", 8)) as pool:
            list(pool.map(lambda t: _verify(out / _name(t), t["digest"]), unique.values()))
        directory = os.open(out, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    moved = sum(t["size"] for t in spec["transfers"])
    return {"seconds": time.perf_counter() - started, "bytes_fetched": moved}
