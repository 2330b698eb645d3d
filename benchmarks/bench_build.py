"""The build stage benchmark: ``sealpy build`` + ``sealpy save`` against ``buildah bud`` +
``buildah push`` on a cluster-image context whose registry/ holds 100 MiB or 1 GiB.

Method (issue 16, item 4):

- The context is a Kubefile (``FROM scratch``, a label, ``COPY registry ./registry``,
  ``COPY manifests ./manifests``, a CMD), a small manifests/ and registry/ in distribution's
  on-disk layout. The registry is written directly: the image factory makes images of 64 MiB
  layers of random bytes (gzip-wrapped, so already compressed, as real layers are) and
  their blobs, manifests and tags are stored with ``sealpy.core.api.DistributionLayout``.
  The context is made once per size and only read by the contenders.
- Contenders, each as a user runs it, as whole processes:
  sealpy: ``sealpy build --root R --no-save-image -t NAME CONTEXT`` (native builder; the
  images are in registry/ already, so caching is skipped) then
  ``sealpy save --root R --format oci-archive -o OUT NAME``;
  buildah: ``buildah --storage-driver vfs --root R --runroot RR bud --isolation chroot -t NAME
  -f Kubefile CONTEXT`` then ``buildah ... push NAME oci-archive:OUT``.
- Every run starts from a fresh store (sealpy ``--root``, buildah ``--root``/``--runroot``)
  under the scratch directory; nothing is deleted until every run is over. Contenders
  alternate which goes first from one repeat to the next.
- Per phase (build, save, total): wall time, CPU seconds (user + system of the process and
  every descendant it waited for, from wait4) and peak RSS of the whole process tree
  (sampled every 20 ms: largest RSS sum, or a single process's VmHWM if larger).
  Medians of ``--repeats`` runs.
- Fairness check: the regular files under registry/ (path and size) in both archives must
  equal the context's registry/ (read from the first repeat's archives, after timing).

Results: ``benchmarks/results/build-latest.{json,md}``. Target: sealpy build + save ≥ 4×
faster than buildah bud + push on 1 GiB, sealpy's peak memory < 150 MiB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_support import (
    MIB,
    Measured,
    archive_registry_files,
    measure,
    own_peak_mib,
    registry_files,
    write_context,
)

RESULTS = Path(__file__).resolve().parent / "results"
CONTENDERS = ("sealpy", "buildah")
PHASES = ("build", "save")
TARGET_SPEED_UP = 4.0
TARGET_PEAK_MIB = 150.0
# Disk one repeat needs, in multiples of the registry size: sealpy's store and archive
# (2×); buildah's vfs container copy, committed layer and archive (3×); plus headroom.
DISK_FACTOR = 6


def sealpy_command() -> list[str]:
    """The ``sealpy`` console script of this interpreter's environment (what users run)."""
    script = Path(sys.executable).with_name("sealpy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sealpy.core"]


def commands(contender: str, context: Path, run: Path, name: str) -> dict[str, list[str]]:
    archive = str(run / "image.tar")
    if contender == "sealpy":
        base = [*sealpy_command()]
        root = ["--root", str(run / "store")]
        return {
            "build": [*base, "build", *root, "--no-save-image", "-q", "-t", name, str(context)],
            "save": [*base, "save", *root, "--format", "oci-archive", "-o", archive, name],
        }
    base = ["buildah", "--storage-driver", "vfs", "--root", str(run / "storage")]
    base += ["--runroot", str(run / "run")]
    kubefile = str(context / "Kubefile")
    return {
        "build": [
            *base,
            "bud",
            "--isolation",
            "chroot",
            "-q",
            "-t",
            name,
            "-f",
            kubefile,
            str(context),
        ],
        "save": [*base, "push", "-q", name, f"oci-archive:{archive}"],
    }


def run_contender(contender: str, context: Path, run: Path, name: str) -> dict:
    run.mkdir(parents=True)
    phases: dict[str, Measured] = {}
    for phase, argv in commands(contender, context, run, name).items():
        measured = measure(argv, run / f"{phase}.log")
        if measured.returncode != 0:
            sys.exit(
                f"error: {contender} {phase} failed ({measured.returncode}): {' '.join(argv)}\n"
                f"{measured.output}"
            )
        phases[phase] = measured
    result: dict = {phase: m.as_dict() for phase, m in phases.items()}
    result["total"] = {
        "wall_s": round(sum(m.wall_s for m in phases.values()), 3),
        "cpu_s": round(sum(m.cpu_s for m in phases.values()), 3),
        "peak_rss_mib": round(max(m.peak_rss_mib for m in phases.values()), 1),
    }
    result["total"]["preempted"] = sum(m.preempted for m in phases.values())
    result["total"]["waits"] = sum(m.waits for m in phases.values())
    result["archive_mib"] = round((run / "image.tar").stat().st_size / MIB, 1)
    return result


def medians(runs: list[dict]) -> dict:
    out: dict = {}
    for phase in (*PHASES, "total"):
        out[phase] = {
            key: round(statistics.median(r[phase][key] for r in runs), 3)
            for key in ("wall_s", "cpu_s", "peak_rss_mib")
        }
        walls = [r[phase]["wall_s"] for r in runs]
        out[phase]["wall_min"], out[phase]["wall_max"] = min(walls), max(walls)
    return out


def check_trees(context: Path, runs: dict[str, Path]) -> dict:
    """Whether each contender's archive holds exactly the context's registry/ files."""
    expected = registry_files(context / "registry")
    report: dict = {"files": len(expected), "bytes": sum(expected.values())}
    for contender, run in runs.items():
        got = archive_registry_files(run / "image.tar")
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        resized = sorted(p for p in set(expected) & set(got) if expected[p] != got[p])
        report[contender] = {
            "same": not (missing or extra or resized),
            "missing": missing[:5],
            "extra": extra[:5],
            "resized": resized[:5],
        }
    return report


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "buildah": version.strip(),
        "date": datetime.date.today().isoformat(),
    }


def check_disk(scratch: Path, sizes: list[int], repeats: int) -> None:
    need = sum(size * MIB * (1 + DISK_FACTOR * repeats) for size in sizes)
    free = shutil.disk_usage(scratch).free
    print(f"disk: {free / 2**30:.1f} GiB free at {scratch}, about {need / 2**30:.1f} GiB needed")
    if free < need:
        sys.exit(f"error: not enough free disk at {scratch} ({free / 2**30:.1f} GiB free)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1024", help="registry/ sizes in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", type=Path, help="work directory (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: whole MiB, comma-separated, not {args.sizes!r}")
    if not sizes or min(sizes) < 1 or args.repeats < 1:
        parser.error("--sizes and --repeats must be positive")
    if shutil.which("buildah") is None:
        sys.exit("error: buildah is not installed (apt-get install -y buildah)")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="sealpy-bench-build-"))
    scratch.mkdir(parents=True, exist_ok=True)
    check_disk(scratch, sizes, args.repeats)
    report: dict = {"machine": machine(), "repeats": args.repeats, "sizes": {}}
    try:
        for size in sizes:
            report["sizes"][str(size)] = bench_size(size, scratch / f"{size}MiB", args.repeats)
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report["targets"] = targets(report)
    report["bench_peak_rss_mib"] = round(own_peak_mib(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "build-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "build-latest.md").write_text(text)
    print(text)


def bench_size(size: int, work: Path, repeats: int) -> dict:
    context = work / "context"
    print(f"{size} MiB: writing the context ...", flush=True)
    info = write_context(context, size, work / "factory")
    runs: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
    first: dict[str, Path] = {}
    for i in range(repeats):
        order = CONTENDERS if i % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            run = work / f"{contender}-{i}"
            result = run_contender(contender, context, run, f"bench/build:{size}-{i}")
            runs[contender].append(result)
            first.setdefault(contender, run)
            print(f"  {contender} #{i}: {json.dumps(result['total'])}", flush=True)
    return {
        "context": info,
        "runs": runs,
        "medians": {c: medians(r) for c, r in runs.items()},
        "tree_check": check_trees(context, first),
    }


def targets(report: dict) -> list[dict]:
    sizes = report["sizes"]
    if not sizes:
        return []
    key = "1024" if "1024" in sizes else max(sizes, key=int)
    m = sizes[key]["medians"]
    speed_up = m["buildah"]["total"]["wall_s"] / m["sealpy"]["total"]["wall_s"]
    peak = m["sealpy"]["total"]["peak_rss_mib"]
    return [
        {
            "target": f"sealpy build + save vs buildah bud + push, {key} MiB",
            "value": round(speed_up, 2),
            "limit": f">= {TARGET_SPEED_UP}x faster",
            "met": speed_up >= TARGET_SPEED_UP,
        },
        {
            "target": f"sealpy peak RSS, {key} MiB",
            "value": peak,
            "limit": f"< {TARGET_PEAK_MIB:.0f} MiB",
            "met": peak < TARGET_PEAK_MIB,
        },
    ]


def markdown(report: dict) -> str:
    mach = report["machine"]
    lines = [
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, Linux "
        f"{mach['kernel']}, Python {mach['python']}, {mach['buildah']}; {mach['date']}. "
        f"Medians of {report['repeats']} runs; wall s (min–max), CPU s, peak RSS MiB "
        "(whole process tree).",
        "",
        "| registry/ | contender | build s | build CPU s | build MiB | save s | save CPU s "
        "| save MiB | total s (min–max) | total CPU s | peak MiB | × sealpy (wall) | × sealpy (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, data in report["sizes"].items():
        m = data["medians"]
        base = m["sealpy"]["total"]["wall_s"]
        base_cpu = m["sealpy"]["total"]["cpu_s"]
        for contender in CONTENDERS:
            b, s, t = (m[contender][p] for p in ("build", "save", "total"))
            lines.append(
                f"| {size} MiB | {contender} | {b['wall_s']:.2f} | {b['cpu_s']:.2f} | "
                f"{b['peak_rss_mib']:.0f} | {s['wall_s']:.2f} | {s['cpu_s']:.2f} | "
                f"{s['peak_rss_mib']:.0f} | {t['wall_s']:.2f} ({t['wall_min']:.2f}–"
                f"{t['wall_max']:.2f}) | {t['cpu_s']:.2f} | {t['peak_rss_mib']:.0f} | "
                f"{t['wall_s'] / base:.2f} | {t['cpu_s'] / base_cpu:.2f} |"
            )
    lines.append("")
    for size, data in report["sizes"].items():
        check = data["tree_check"]
        same = all(check[c]["same"] for c in CONTENDERS)
        ctx = data["context"]
        lines.append(
            f"- {size} MiB: {len(ctx['images'])} images, {ctx['layers']} layers of "
            f"{ctx['layer_mib']} MiB random data; registry/ = {check['files']} files, "
            f"{check['bytes'] / MIB:.1f} MiB; both archives hold the same registry/ tree "
            f"(paths and sizes): {'yes' if same else 'NO — ' + json.dumps(check)}"
        )
    loads = [
        r[phase].get("load", 0.0)
        for data in report["sizes"].values()
        for runs in data["runs"].values()
        for r in runs
        for phase in PHASES
    ]
    lines.append(
        f"- 1-minute load average at the start of each phase: {min(loads):.1f}–{max(loads):.1f} "
        f"on {mach['cores']} cores (above the core count, wall times include waiting for a CPU; "
        "compare the CPU seconds)"
    )
    lines += ["", "Targets (issue 16), from the medians above:", ""]
    for t in report["targets"]:
        lines.append(
            f"- {t['target']}: {t['value']} (target {t['limit']}) — "
            f"{'met' if t['met'] else 'missed'}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
