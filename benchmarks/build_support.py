"""Helpers for bench_build.py: the workload (a build context whose registry/ is filled with
incompressible layers), one measured process tree, and the registry/ tree of an OCI archive.

Kept apart from the strategy benchmark's runner on purpose: the build stage measures two
whole commands (sealpy, buildah) as a user runs them, nothing inside sealpy.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sealpy.core.api import DistributionLayout
from sealpy.core.image.media import digest_hex
from sealpy.core.testing.images import ImageFactory

MIB = 1024 * 1024
LAYER_MIB = 64  # a typical large layer; a 1 GiB registry is 16 of them
SAMPLE_S = 0.02

KUBEFILE = """\
FROM scratch
LABEL sealos.io.type="application" sealos.io.version="v1beta1"
COPY registry ./registry
COPY manifests ./manifests
CMD ["kubectl apply -f manifests/"]
"""


# --- the workload ----------------------------------------------------------------------


def write_registry(root: Path, size_mib: int, scratch: Path) -> dict:
    """Fill ``root`` (a registry directory in distribution's on-disk layout) with images
    whose layers total ``size_mib`` MiB of random (incompressible) data, gzip-wrapped as
    real layers are. The image factory writes each image into an OCI layout under
    ``scratch``; its blobs are then moved (renamed, not copied) into the distribution
    tree and the manifests and tags stored with :class:`DistributionLayout`."""
    layer_mib = min(LAYER_MIB, max(1, size_mib // 4))
    count = max(1, round(size_mib / layer_mib))
    factory = ImageFactory(scratch)
    layout = DistributionLayout(root, durable=False)
    images = []
    for first in range(0, count, 2):
        sizes = [layer_mib * MIB] * min(2, count - first)
        seed = f"bench-build-{size_mib}-{first // 2}"
        image = factory.image(seed, sizes)
        repository = f"bench/app{first // 2}"
        for digest in sorted(image.blob_digests):
            target = layout.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(factory.layout.blob_path(digest), target)
        layout.put_manifest(repository, image.manifest)
        layout.set_tag(repository, "1.0", image.digest)
        images.append(f"{repository}:1.0")
    shutil.rmtree(scratch)
    return {"images": images, "layers": count, "layer_mib": layer_mib}


def write_context(context: Path, size_mib: int, scratch: Path) -> dict:
    """A build context: Kubefile, a small manifests/ naming the cached images, registry/."""
    (context / "manifests").mkdir(parents=True)
    info = write_registry(context / "registry", size_mib, scratch)
    (context / "Kubefile").write_text(KUBEFILE)
    for i, image in enumerate(info["images"]):
        (context / "manifests" / f"app{i}.yaml").write_text(
            "apiVersion: v1\nkind: Pod\nmetadata:\n"
            f"  name: app{i}\nspec:\n  containers:\n    - name: app\n      image: {image}\n"
        )
    return info


def registry_files(registry: Path) -> dict[str, int]:
    """The regular files of a registry directory on disk: path (``registry/...``) → size."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(registry):
        for name in files:
            path = Path(dirpath, name)
            out[str(Path("registry", path.relative_to(registry)))] = path.stat().st_size
    return out


# --- measuring one process tree --------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, through each task's ``children`` list."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


class TreeSampler:
    """Peak memory of a process tree, sampled every 20 ms: the largest sum of RSS over the
    tree at one moment, and each process's own high-water mark (VmHWM, reset at exec) as
    last seen. RUSAGE_CHILDREN's ru_maxrss is not used: Linux carries it over fork and
    exec, so it would report at least this (larger) benchmark process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_sum_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.processes: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in _tree(self.pid):
                self.processes.add(pid)
                total += _status_kib(pid, "VmRSS:")
                hwm = _status_kib(pid, "VmHWM:")
                if hwm:
                    self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
            self.peak_sum_kib = max(self.peak_sum_kib, total)
            self._stop.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kib(self) -> int:
        return max(self.peak_sum_kib, max(self.hwm_kib.values(), default=0))


@dataclass
class Measured:
    """One phase: wall seconds, CPU seconds of the whole tree (user + system, every waited
    descendant included), peak RSS in MiB, how many processes were seen, the exit code.
    ``waits`` (voluntary context switches: blocked on I/O or a lock) and ``preempted``
    (involuntary: the CPU taken by another process) and the 1-minute load average at the
    start tell how much of the wall time a busy machine added."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    processes: int
    returncode: int
    output: str
    waits: int = 0
    preempted: int = 0
    load: float = 0.0

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "processes": self.processes,
            "waits": self.waits,
            "preempted": self.preempted,
            "load": self.load,
        }


def measure(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Measured:
    """Run ``argv`` once, its output into ``log``; time, CPU and peak memory of its tree.

    ``os.wait4`` gives the rusage of exactly this child and what it waited for, so other
    processes on the machine do not count. Every phase starts after ``sync``, so one run's
    writeback is not charged to the next."""
    os.sync()  # start with nothing of earlier runs pending on the disk
    load = os.getloadavg()[0]
    with open(log, "wb") as out:
        start = time.perf_counter()
        pid = os.posix_spawnp(
            argv[0], argv, dict(env or os.environ), file_actions=_redirect(out.fileno())
        )
        sampler = TreeSampler(pid)
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=sampler.peak_kib / 1024,
        processes=len(sampler.processes),
        returncode=os.waitstatus_to_exitcode(status),
        output=log.read_text(errors="replace")[-2000:],
        waits=usage.ru_nvcsw,
        preempted=usage.ru_nivcsw,
        load=round(load, 2),
    )


def _redirect(fd: int) -> list:
    return [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, fd, 1),
        (os.POSIX_SPAWN_DUP2, fd, 2),
    ]


def own_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- reading an OCI archive ------------------------------------------------------------


def _blob(archive: tarfile.TarFile, digest: str):
    member = archive.getmember(f"blobs/sha256/{digest_hex(digest)}")
    handle = archive.extractfile(member)
    assert handle is not None
    return handle


def archive_registry_files(path: Path) -> dict[str, int]:
    """The regular files under ``registry/`` in the image of an OCI archive (its first
    image; the first platform of an index): path → size, later layers winning. Layers are
    read as streams, never whole into memory."""
    with tarfile.open(path) as archive:
        doc = json.load(_blob_or_file(archive, "index.json"))
        while doc.get("manifests"):
            doc = json.load(_blob(archive, doc["manifests"][0]["digest"]))
        files: dict[str, int] = {}
        for layer in doc["layers"]:
            with tarfile.open(fileobj=_blob(archive, layer["digest"]), mode="r|*") as tar:
                for member in tar:
                    name = member.name.lstrip("/").removeprefix("./")
                    if member.isfile() and name.startswith("registry/"):
                        files[name] = member.size
    return files


def _blob_or_file(archive: tarfile.TarFile, name: str):
    handle = archive.extractfile(name)
    assert handle is not None
    return handle
