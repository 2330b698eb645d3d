"""A CI fleet in miniature: several sealpy processes behind one pull-through registry.

The set-up (issue 18, "A fleet"): an upstream registry holding the images, a counting
:class:`~sealpy.core.testing.faultproxy.FaultProxy` in front of it (the upstream as the
world reaches it: every request to it is counted), and a stock ``docker-registry`` in
pull-through mode (``proxy: remoteurl:``) whose remote is that counter. Builders name
the images by the counter's host and get the pull-through registry as their mirror from a
``registries.conf`` (``CONTAINERS_REGISTRIES_CONF``), so a builder that fell back to the
upstream would be counted too. Each builder is a separate ``sealpy registry save``
process with its own empty ``HOME`` and ``XDG_CACHE_HOME`` (a machine-wide cache lives
there: separate directories are separate machines).

:func:`run_fleet` runs ``concurrent`` builders at once, then one more of the same images,
again with empty directories, and returns what each did and what the upstream saw. The
test (``tests/test_fleet.py``) asserts on it; ``benchmarks/fleet.py`` prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core.testing.faultproxy import FaultProxy
from sealpy.core.testing.images import ImageFactory, TestImage
from sealpy.core.testing.registry import RegistryServer


@dataclass
class BuildRun:
    """One builder process: its report (``registry save --json``), exit code, stderr,
    wall seconds, the upstream blob requests counted while it ran (meaningful for a
    builder that ran alone), and ``verified``: ``sealpy registry verify`` passed."""

    name: str
    registry_dir: Path
    code: int
    report: dict
    stderr: str
    seconds: float
    upstream_blob_requests: int = 0
    verified: bool = False

    @property
    def digests(self) -> dict[str, str]:
        return {i["reference"]: i["digest"] for i in self.report.get("images", [])}

    @property
    def served_by(self) -> set[str | None]:
        return {i["served_by"] for i in self.report.get("images", [])}


@dataclass
class FleetResult:
    """What the fleet did: the builders that ran at once, the one after them, and the
    upstream's counts over all of them: every request, blob requests (GET and HEAD), and
    the bytes of the blobs it sent."""

    concurrent: list[BuildRun]
    after: BuildRun
    images: dict[str, TestImage]
    upstream_blob_requests: int
    upstream_blob_gets: int
    upstream_blob_bytes: int
    upstream_requests: int
    pull_through: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def builds(self) -> list[BuildRun]:
        return [*self.concurrent, self.after]

    def blobs_needed_per_build(self) -> int:
        """Distinct blobs one build needs (configs and layers of every image)."""
        return len({d for image in self.images.values() for d in _blobs(image)})

    def bytes_needed_per_build(self) -> int:
        sizes = {d: s for image in self.images.values() for d, s in _blob_sizes(image)}
        return sum(sizes.values())

    def summary(self) -> dict:
        """The numbers, as the benchmark prints them."""
        needed, size = self.blobs_needed_per_build(), self.bytes_needed_per_build()
        return {
            "builders": len(self.builds),
            "concurrent": len(self.concurrent),
            "images": len(self.images),
            "blobs_needed_per_build": needed,
            "bytes_needed_per_build": size,
            "blobs_needed_all_builds": needed * len(self.builds),
            "bytes_needed_all_builds": size * len(self.builds),
            "upstream_blob_gets": self.upstream_blob_gets,
            "upstream_blob_heads": self.upstream_blob_requests - self.upstream_blob_gets,
            "upstream_blob_bytes": self.upstream_blob_bytes,
            "upstream_requests": self.upstream_requests,
            "after_upstream_blob_requests": self.after.upstream_blob_requests,
            "seconds": {k: round(v, 3) for k, v in self.timings.items()},
            "builder_seconds": {b.name: round(b.seconds, 3) for b in self.builds},
        }


def _blobs(image: TestImage) -> set[str]:
    return {image.config.digest, *(layer.digest for layer in image.layers)}


def _blob_sizes(image: TestImage) -> list[tuple[str, int]]:
    return [
        (image.config.digest, image.config.size),
        *((layer.digest, layer.descriptor.size) for layer in image.layers),
    ]


def make_images(factory: ImageFactory, count: int, *, layer_size: int = 4096) -> list[TestImage]:
    """``count`` images sharing a base layer, each with two layers of its own."""
    base = factory.layer(layer_size * 2, "fleet-kit/base")
    return [
        factory.image(f"fleet-kit/app{i}", [base, layer_size, layer_size // 2])
        for i in range(count)
    ]


def sealpy_command() -> list[str]:
    """How to start sealpy as a user does: the console script next to this interpreter."""
    script = Path(sys.executable).parent / "sealpy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sealpy.core"]


def _environment(home: Path, conf: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SEALPY_", "REGISTRY_AUTH", "XDG_"))
    }
    (home / "cache").mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
        CONTAINERS_REGISTRIES_CONF=str(conf),
    )
    return env


def _start(name: str, scratch: Path, refs: list[str], conf: Path) -> tuple[subprocess.Popen, Path]:
    home = scratch / name / "home"
    context = scratch / name / "context"
    context.mkdir(parents=True)
    command = [
        *sealpy_command(),
        "registry",
        "save",
        "--json",
        "--strategy",
        "proxy",
        "--platform",
        "linux/amd64",
        "--images",
        ",".join(refs),
        str(context),
    ]
    process = subprocess.Popen(
        command,
        env=_environment(home, conf),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, context / "registry"


def _finish(name: str, process: subprocess.Popen, registry_dir: Path, started: float) -> BuildRun:
    out, err = process.communicate(timeout=600)
    seconds = time.monotonic() - started
    try:
        report = json.loads(out) if out.strip() else {}
    except ValueError:
        report = {}
    verify = subprocess.run(
        [*sealpy_command(), "registry", "verify", str(registry_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SEALPY_")},
    )
    return BuildRun(
        name,
        registry_dir,
        process.returncode,
        report,
        err,
        seconds,
        verified=verify.returncode == 0,
    )


def _blob_requests(counter: FaultProxy) -> int:
    """Blob requests the upstream saw so far (GET and HEAD)."""
    return counter.count(kind="blob")


def run_fleet(
    scratch: Path,
    factory: ImageFactory,
    *,
    images: int = 6,
    concurrent: int = 3,
    layer_size: int = 4096,
) -> FleetResult:
    """Run the fleet under ``scratch`` (made fresh; registries stopped on return)."""
    scratch.mkdir(parents=True, exist_ok=True)
    made = make_images(factory, images, layer_size=layer_size)
    timings: dict[str, float] = {}
    with RegistryServer(scratch / "upstream-root", workdir=scratch / "upstream-work") as upstream:
        names: dict[str, TestImage] = {}
        for i, image in enumerate(made):
            factory.push(image, upstream.host, f"fleet/app{i}", "1")
        with FaultProxy(upstream.host) as counter:
            pull_through = RegistryServer(
                scratch / "pull-through-root",
                workdir=scratch / "pull-through-work",
                proxy_remote=f"http://{counter.host}",
            )
            with pull_through:
                conf = scratch / "registries.conf"
                conf.write_text(
                    f'[[registry]]\nlocation = "{counter.host}"\n'
                    f'[[registry.mirror]]\nlocation = "{pull_through.host}"\ninsecure = true\n'
                )
                refs = [f"{counter.host}/fleet/app{i}:1" for i in range(images)]
                for ref, image in zip(refs, made, strict=True):
                    names[ref] = image
                started = time.monotonic()
                running = [
                    (f"builder{n}", *_start(f"builder{n}", scratch, refs, conf))
                    for n in range(concurrent)
                ]
                first = [_finish(name, p, d, started) for name, p, d in running]
                timings["concurrent_seconds"] = time.monotonic() - started
                before = _blob_requests(counter)
                started = time.monotonic()
                name = f"builder{concurrent}"
                process, registry_dir = _start(name, scratch, refs, conf)
                after = _finish(name, process, registry_dir, started)
                timings["after_seconds"] = time.monotonic() - started
                total = _blob_requests(counter)
                after.upstream_blob_requests = total - before
                requests = counter.count()
            blob_bytes = _upstream_blob_bytes(counter, made)
    return FleetResult(
        first,
        after,
        names,
        upstream_blob_requests=total,
        upstream_blob_gets=counter.count("GET", "blob"),
        upstream_blob_bytes=blob_bytes,
        upstream_requests=requests,
        pull_through=pull_through.host,
        timings=timings,
    )


def _upstream_blob_bytes(counter: FaultProxy, made: list[TestImage]) -> int:
    """Bytes of the blobs the upstream sent: each answered blob GET is one whole blob."""
    sizes = {d: s for image in made for d, s in _blob_sizes(image)}
    return sum(
        sizes.get(s.path.rsplit("/", 1)[-1], 0)
        for s in list(counter.seen)
        if s.method == "GET" and s.kind == "blob" and s.status == 200
    )
