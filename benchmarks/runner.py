"""One timed benchmark run, in a process of its own (so peak RSS and CPU time are its own).

Usage: ``python benchmarks/runner.py SPEC.json`` — prints one JSON object on stdout.
The spec names the contender (a registered strategy, or a baseline: ``skopeo-serial``,
``limit``, ``limit-verified``, ``curl``, ``curl-verified``), the images, where to write,
and the options. A strategy runs as the whole ``sealpy registry save`` process, timed
from outside (end to end; its --json report gives the cache stage). A baseline has no
start-up of its own to pay: its time covers everything it does (skopeo-serial: the local
registry started, every skopeo copy, the registry stopped; curl: the curl process and
the verification).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import floor  # benchmarks/floor.py: this file runs as a script from benchmarks/
import requests


def directory_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # gone while we looked
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class DiskSampler:
    """Peak size of a directory (the run's TMPDIR: disk used outside the registry dir)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, directory_size(self.path))
            self._stop.wait(0.05)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, directory_size(self.path))


def _vmhwm_kib(pid: int | str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # gone while we looked
        pass
    return 0


def peak_rss_kib() -> int:
    """This process's own peak RSS (VmHWM). ru_maxrss survives fork and exec on Linux, so
    it would report the benchmark driver's peak instead."""
    return _vmhwm_kib("self")


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                queue.append(child)
    return found


class ChildrenSampler:
    """Largest peak RSS (VmHWM) of any descendant process (skopeo, docker-registry), sampled
    every 20 ms while the run lasts; ``main_pid``'s own peak (the sealpy process of an
    end-to-end run) is kept apart. RUSAGE_CHILDREN's ru_maxrss cannot be used: Linux keeps
    ru_maxrss across fork and exec, so every child would report at least this process's
    size at the time it forked."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self.main_pid: int | None = None
        self.main_peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for pid in _descendants(me):
                if pid == self.main_pid:
                    self.main_peak_kib = max(self.main_peak_kib, _vmhwm_kib(pid))
                else:
                    self.peak_kib = max(self.peak_kib, _vmhwm_kib(pid))
            self._stop.wait(0.02)

    def __enter__(self) -> ChildrenSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_strategy(spec: dict, sampler: ChildrenSampler) -> dict:
    """The whole ``sealpy registry save`` process, timed from outside (interpreter start,
    plugin loading, scan, cache, report): the end-to-end time. The cache stage alone is
    the ``seconds`` of its ``--json`` report."""
    sealpy = str(Path(sys.executable).with_name("sealpy"))
    context = Path(os.environ["TMPDIR"]) / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    command = [
        sealpy,
        "registry",
        "save",
        "-q",
        "--json",
        "--strategy",
        spec["contender"],
        "--platform",
        spec.get("platform", "linux/amd64"),
        "--max-pull-procs",
        str(spec.get("max_parallel", 8)),
        "--images",
        ",".join(spec["images"]),
        "--registry-dir",
        spec["out"],
    ]
    if spec.get("all"):
        command.append("--all")
    if spec.get("authfile"):
        command += ["--authfile", spec["authfile"]]
    command.append(str(context))
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler.main_pid = process.pid
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"sealpy failed ({process.returncode}): {stderr.strip()[-800:]}")
    report = json.loads(stdout)
    return {
        "seconds": seconds,
        "cache_seconds": report["seconds"],
        "requests_self": report["totals"]["requests"],
        "blobs_fetched": report["totals"]["blobs_fetched"],
        "bytes_fetched": report["totals"]["bytes_fetched"],
    }


def run_skopeo_serial(spec: dict) -> dict:
    """Sealos >= 4.3's saver: a local registry, then one ``skopeo copy`` at a time."""
    from sealpy.core.cache.localregistry import RegistryProcess
    from sealpy.core.reference import ImageReference

    out = Path(spec["out"])
    work = Path(os.environ["TMPDIR"]) / "registry-work"
    registry = RegistryProcess(out, work)
    started = time.perf_counter()
    registry.start()
    try:
        for text in spec["images"]:
            ref = ImageReference.parse(text)
            command = [
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ]
            if spec.get("authfile"):
                command += ["--authfile", spec["authfile"]]
            if spec.get("all"):
                command.append("--all")
            command += [f"docker://{ref}", f"docker://{registry.host}/{ref.repository}:{ref.tag}"]
            subprocess.run(command, check=True, capture_output=True)
    finally:
        registry.stop()
    return {"seconds": time.perf_counter() - started}


def _token_getter(session: requests.Session, registry: str, authfile: str | None):
    """What a minimal client must do for token auth: ask for the challenge once, then one
    token per repository (inside the timed part: every contender pays for it too)."""
    if not authfile:
        return lambda repository: {}
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.http.auth import Challenge

    credential = ConfiguredCredentials(authfile=Path(authfile)).credentials_for(registry)
    header = session.get(f"http://{registry}/v2/").headers.get("WWW-Authenticate", "")
    challenge = Challenge.parse(header)
    if challenge is None or challenge.scheme != "bearer":
        return lambda repository: {}

    def token(repository: str) -> dict:
        answer = session.get(
            challenge.params["realm"],
            params={
                "service": challenge.params.get("service", ""),
                "scope": f"repository:{repository}:pull",
                "account": credential.username,
            },
            auth=(credential.username, credential.password),
        ).json()
        return {"Authorization": f"Bearer {answer['token']}"}

    return token


def run_limit(spec: dict, *, verified: bool) -> dict:
    """Nothing moves the bytes faster: parallel plain GETs of every manifest and blob into
    files on the same disk. ``verified`` adds sha256 and fsync before a rename."""
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=spec.get("max_parallel", 8) * 2)
    session.mount("http://", adapter)
    registry = spec["registry"]
    started = time.perf_counter()
    token = _token_getter(session, registry, spec.get("authfile"))
    repositories = sorted({b["repository"] for b in spec["transfers"]})
    with ThreadPoolExecutor(spec.get("max_parallel", 8)) as pool:
        tokens = list(pool.map(token, repositories))
    headers = dict(zip(repositories, tokens, strict=True))

    def fetch(item: dict) -> int:
        kind = "manifests" if item.get("manifest") else "blobs"
        url = f"http://{registry}/v2/{item['repository']}/{kind}/{item['digest']}"
        target = out / item["digest"].split(":")[1]
        digest = hashlib.sha256() if verified else None
        accept = {"Accept": item.get("media_type", "*/*")} if item.get("manifest") else {}
        with session.get(
            url, headers={**headers[item["repository"]], **accept}, stream=True
        ) as response:
            response.raise_for_status()
            partial = target.with_suffix(".partial")
            with open(partial, "wb") as f:
                for chunk in response.iter_content(1 << 20):
                    f.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                if verified:
                    f.flush()
                    os.fsync(f.fileno())
            if verified and "sha256:" + digest.hexdigest() != item["digest"]:
                raise RuntimeError(f"digest mismatch for {item['digest']}")
            os.replace(partial, target)
        return item["size"]

    with ThreadPoolExecutor(spec.get("max_parallel", 8)) as pool:
        moved = sum(pool.map(fetch, spec["transfers"]))
    return {"seconds": time.perf_counter() - started, "bytes_fetched": moved}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    tmp = Path(spec["tmpdir"])
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    import tempfile

    tempfile.tempdir = str(tmp)
    contender = spec["contender"]
    # The contender's own state (a cache of its own, ...) lives under spec["state"]: its
    # environment says so, and what lands there counts as disk it used.
    os.environ.update(spec.get("env") or {})
    state = Path(spec["state"]) if spec.get("state") else None
    with (
        DiskSampler(tmp) as disk,
        DiskSampler(state) if state else contextlib.nullcontext() as state_disk,
        ChildrenSampler() as children_rss,
    ):
        if contender == "skopeo-serial":
            result = run_skopeo_serial(spec)
        elif contender in ("limit", "limit-verified"):
            result = run_limit(spec, verified=contender == "limit-verified")
        elif contender in ("curl", "curl-verified"):
            result = floor.run_curl(spec, verified=contender == "curl-verified")
        else:
            result = run_strategy(spec, children_rss)
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        {
            "cpu_seconds": me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime,
            # An end-to-end run's own process is the sealpy child; else this one.
            "peak_rss_mib": (children_rss.main_peak_kib or peak_rss_kib()) / 1024,
            "children_peak_rss_mib": children_rss.peak_kib / 1024,
            "peak_extra_disk_mib": (disk.peak + (state_disk.peak if state_disk else 0)) / (1 << 20),
            "state_left_mib": (directory_size(state) if state else 0) / (1 << 20),
        }
    )
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
