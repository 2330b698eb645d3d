"""Start-up benchmark: whole ``sealpy`` processes, interpreter start to exit, for the commands
whose cost is mostly start-up (issue 16's "Start-up" target):

  help    ``sealpy --help``
  save    ``sealpy registry save CONTEXT`` when all of its images are cached already (warm)
  scan    ``sealpy scan CONTEXT`` (a small context: a Kubefile, one manifest, a shim list)

The context lists N small images (3 layers of 16 KiB each) pushed to a local
``docker-registry`` by sealpy's test-image factory; one untimed ``registry save`` per
executable fills its registry directory first. Several ``sealpy`` executables can be
compared (``--sealpy PATH``, repeatable, e.g. one from a checkout of the previous commit):
runs are interleaved, the order rotated every repeat, and the median, min and max wall time
of each command × executable are printed with its median CPU time (user + system, the
steadier number on a busy machine), and written as JSON with ``--json``::

    .venv/bin/python benchmarks/bench_startup.py [--repeats 15] [--images 50]
    .venv/bin/python benchmarks/bench_startup.py --sealpy /tmp/before/.venv/bin/sealpy \\
        --sealpy .venv/bin/sealpy --json benchmarks/results/startup.json

Timings on a busy machine are noisy: compare executables within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SEALPY = str(Path(sys.executable).with_name("sealpy"))
COMMANDS = ("help", "save", "scan")


def seed(workdir: Path, host: str, count: int) -> list[str]:
    """Push ``count`` small images to ``host``; their references."""
    from sealpy.core.testing.images import ImageFactory

    factory = ImageFactory(workdir / "oci")
    refs = []
    for i in range(count):
        image = factory.image(f"startup/{i}", [16384, 16384, 16384])
        factory.push(image, host, f"small/app{i}", "1")
        refs.append(f"{host}/small/app{i}:1")
    return refs


def make_context(directory: Path, refs: list[str]) -> Path:
    """A small build context naming ``refs``: a shim list, and one manifest (two of them)."""
    (directory / "images" / "shim").mkdir(parents=True)
    (directory / "manifests").mkdir()
    (directory / "Kubefile").write_text(
        'FROM scratch\nCOPY . .\nCMD ["kubectl apply -f manifests"]\n'
    )
    (directory / "images" / "shim" / "images.txt").write_text("".join(f"{r}\n" for r in refs))
    deployment = "\n".join(
        [
            "apiVersion: apps/v1",
            "kind: Deployment",
            "metadata: {name: app}",
            "spec:",
            "  template:",
            "    spec:",
            "      containers:",
            *(f"        - name: c{i}\n          image: {ref}" for i, ref in enumerate(refs[:2])),
        ]
    )
    (directory / "manifests" / "app.yaml").write_text(deployment + "\n")
    return directory


def command_line(sealpy: str, command: str, context: Path, registry_dir: Path) -> list[str]:
    if command == "help":
        return [sealpy, "--help"]
    if command == "save":
        return [sealpy, "registry", "save", "--registry-dir", str(registry_dir), str(context)]
    if command == "scan":
        return [sealpy, "scan", str(context)]
    raise ValueError(command)


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall-clock seconds of the whole process, and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument(
        "--sealpy",
        action="append",
        help="a sealpy executable to time (repeatable; default: the one beside this Python)",
    )
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    executables = args.sealpy or [DEFAULT_SEALPY]
    commands = [c for c in args.commands.split(",") if c]

    from sealpy.core.testing.registry import RegistryServer

    with tempfile.TemporaryDirectory(prefix="sealpy-startup-") as tmp:
        work = Path(tmp)
        with RegistryServer(work / "source") as server:
            print(f"seeding {args.images} images ...", file=sys.stderr, flush=True)
            refs = seed(work, server.host, args.images)
            context = make_context(work / "ctx", refs)
            registry_dirs = {exe: work / f"registry-{i}" for i, exe in enumerate(executables)}
            for exe, registry_dir in registry_dirs.items():  # fill: the timed saves are warm
                timed(command_line(exe, "save", context, registry_dir))
            times: dict[tuple[str, str], list[tuple[float, float]]] = {
                (c, exe): [] for c in commands for exe in executables
            }
            for repeat in range(args.repeats):
                shift = repeat % len(executables)
                order = executables[shift:] + executables[:shift]
                for command in commands:
                    for exe in order:
                        argv = command_line(exe, command, context, registry_dirs[exe])
                        times[command, exe].append(timed(argv))
    rows = []
    for (command, exe), runs in times.items():
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        rows.append(
            {
                "command": command,
                "sealpy": exe,
                "median": statistics.median(wall),
                "min": min(wall),
                "max": max(wall),
                "cpu_median": statistics.median(cpu),
                "runs": len(runs),
            }
        )
    print(f"{'command':<7} {'median':>7} {'min':>6} {'max':>6} {'cpu':>6}  sealpy")
    for row in rows:
        print(
            f"{row['command']:<7} {row['median']:7.3f} {row['min']:6.3f} {row['max']:6.3f}"
            f" {row['cpu_median']:6.3f}  {row['sealpy']}"
        )
    if args.json:
        report = {
            "images": args.images,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "load_average_after": os.getloadavg(),
            "python": sys.version.split()[0],
            "results": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
