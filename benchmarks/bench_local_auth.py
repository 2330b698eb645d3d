"""What protecting sync's local registry costs, per request (issue 17, item 7).

Starts a stock docker-registry three ways — no auth, htpasswd (bcrypt cost 4), token auth
(an ES256 token server on loopback) — and sends the same requests to each: for each of N
repositories, the requests a skopeo push of a small image makes (blob HEADs, a blob upload
POST+PUT, a manifest PUT), keep-alive, one token per repository. Reports wall time and the
registry's (plus the token server's) CPU seconds, medians of --repeats runs.

    python benchmarks/bench_local_auth.py --images 50 --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from sealpy.core.testing.registry import RegistryServer, TokenServer

USER, PASSWORD = "sealpy-run", "x" * 32


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_small_images(host: str, images: int, session: requests.Session, token_for) -> int:
    """Push ``images`` one-layer images (each its own repository); returns requests sent."""
    sent = 0
    for i in range(images):
        repo = f"bench/app{i}"
        headers = token_for(repo)
        blobs = []
        for part in (b"config", b"layer"):
            data = part + str(i).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs.append((digest, len(data)))
            r = session.head(f"http://{host}/v2/{repo}/blobs/{digest}", headers=headers)
            sent += 1
            if r.status_code == 404:
                r = session.post(f"http://{host}/v2/{repo}/blobs/uploads/", headers=headers)
                sent += 1
                assert r.status_code == 202, r.status_code
                location = r.headers["Location"]
                if location.startswith("/"):
                    location = f"http://{host}{location}"
                sep = "&" if "?" in location else "?"
                r = session.put(f"{location}{sep}digest={digest}", data=data, headers=headers)
                sent += 1
                assert r.status_code == 201, r.status_code
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": blobs[0][0],
                    "size": blobs[0][1],
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": blobs[1][0],
                        "size": blobs[1][1],
                    }
                ],
            }
        ).encode()
        r = session.put(
            f"http://{host}/v2/{repo}/manifests/1",
            data=manifest,
            headers={**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        sent += 1
        assert r.status_code == 201, (r.status_code, r.text)
    return sent


def run(mode: str, images: int, scratch: Path) -> dict:
    root = scratch / f"{mode}-{time.monotonic_ns()}"
    work = root.parent / f"{root.name}-work"
    auth = None
    tokens = None
    if mode == "htpasswd":
        auth = RegistryServer.htpasswd(work, {USER: PASSWORD})
    elif mode == "token":
        tokens = TokenServer(work / "token", {USER: PASSWORD}).start()
        auth = tokens.auth_config()
    server = RegistryServer(root, workdir=work, auth=auth).start()
    session = requests.Session()
    session.trust_env = False

    def token_for(repo: str) -> dict[str, str]:
        if mode == "none":
            return {}
        if mode == "htpasswd":
            return {}  # session.auth sends Basic with every request
        scope = f"repository:{repo}:pull,push"
        answer = session.get(
            tokens.realm, params={"service": tokens.service, "scope": scope}, auth=(USER, PASSWORD)
        )
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    if mode == "htpasswd":
        session.auth = (USER, PASSWORD)
    assert server.process is not None
    cpu_before = process_cpu(server.process.pid)
    own_before = time.process_time()
    started = time.monotonic()
    sent = push_small_images(server.host, images, session, token_for)
    seconds = time.monotonic() - started
    registry_cpu = process_cpu(server.process.pid) - cpu_before
    # The token server runs in this process: its share is in our CPU time.
    own_cpu = time.process_time() - own_before
    server.stop()
    if tokens is not None:
        tokens.stop()
    return {
        "seconds": seconds,
        "registry_cpu": registry_cpu,
        "client_cpu": own_cpu,
        "requests": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"none": [], "htpasswd": [], "token": []}
    with tempfile.TemporaryDirectory(prefix="sealpy-bench-auth-") as scratch:
        for _ in range(args.repeats):
            for mode in results:  # interleaved
                results[mode].append(run(mode, args.images, Path(scratch)))
    for mode, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{mode:9} {med['requests']:.0f} requests: {med['seconds']:.3f} s, registry CPU "
            f"{med['registry_cpu']:.2f} s, client+token-server CPU {med['client_cpu']:.2f} s "
            f"({1000 * med['registry_cpu'] / med['requests']:.2f} ms registry CPU per request)"
        )


if __name__ == "__main__":
    main()
