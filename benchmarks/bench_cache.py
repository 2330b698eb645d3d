"""The machine-wide blob cache's benchmark (issue 18): what it saves and what it costs.

  second-context  contexts A and B share a 64 MiB base layer and have 10 small images each.
                  B's cold run right after A's (A filled the cache) vs B's images without
                  the base layer, cold, empty cache: the time of fetching B's own bytes.
                  Target: B after A fetches none of the shared bytes and takes at most
                  1.2x the own-bytes time. The link method used is reported.
  overhead        a first run (empty cache) with the cache on vs --cache-dir none, small
                  and large workloads, cache and context on one filesystem (target <= 5 %
                  slower); and, where a tmpfs can be mounted (root), the context on a
                  tmpfs (cross-filesystem: blobs are copied).
  fleet           four builders behind one pull-through registry (see fleet.py): upstream
                  blob requests and bytes vs what each build needed.

Whole ``sealpy registry save`` processes, medians of ``--repeats`` runs, alternating
cache on and off. Results: benchmarks/results/cache.{json,md}.

    .venv/bin/python benchmarks/bench_cache.py [--repeats 5] [--large-mib 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import push_many  # noqa: E402

SEALPY = [sys.executable, "-m", "sealpy.core"]


def save(refs: list[str], out: Path, cache: str, *, debug: bool = False) -> tuple[float, dict, str]:
    """One timed ``sealpy registry save --json`` of ``refs`` into ``out``: (seconds, the
    JSON report, stderr)."""
    context = out.with_name(out.name + "-ctx")
    context.mkdir(parents=True, exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    (context / "images" / "shim").mkdir(parents=True, exist_ok=True)
    (context / "images" / "shim" / "list").write_text("".join(r + "\n" for r in refs))
    args = [*SEALPY, "registry", "save", "--json", "--registry-dir", str(out)]
    args += ["--cache-dir", cache, *(["--debug"] if debug else [])]
    os.sync()
    began = time.monotonic()
    done = subprocess.run([*args, str(context)], capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-800:])
    return seconds, json.loads(done.stdout), done.stderr


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def second_context(scratch: Path, factory, registry, repeats: int) -> dict:
    base = factory.layer(64 << 20, "bench-cache/base", compression="none")
    items = {}
    for ctx in ("a", "b"):
        for i in range(10):
            own = 65536 + i
            items[f"{ctx}/app{i}"] = factory.image(f"bench-cache/{ctx}/{i}", [base, own])
            items[f"own-{ctx}/app{i}"] = factory.image(f"bench-cache/{ctx}/{i}", [own])
    push_many(factory, items, registry.host)
    refs = {
        k: [f"{registry.host}/{r}:1" for r in items if r.startswith(f"{k}/")]
        for k in ("a", "b", "own-b")
    }
    after, own_only, methods, fetched = [], [], "", 0
    for _ in range(repeats):
        cache = fresh(scratch / "sc-cache")
        save(refs["a"], fresh(scratch / "sc-a") / "registry", str(cache))
        seconds, report, err = save(
            refs["b"], fresh(scratch / "sc-b") / "registry", str(cache), debug=True
        )
        after.append(seconds)
        fetched = max(fetched, report["totals"]["bytes_fetched"])
        methods = "; ".join(
            line.split("blob cache into ", 1)[1]
            for line in err.splitlines()
            if "blob cache into" in line
        )
        empty = fresh(scratch / "sc-own-cache")
        own_only.append(save(refs["own-b"], fresh(scratch / "sc-own") / "registry", str(empty))[0])
    return {
        "b_after_a_s": statistics.median(after),
        "b_own_bytes_only_s": statistics.median(own_only),
        "ratio": statistics.median(after) / statistics.median(own_only),
        # Everything B read from the registry: the shared 64 MiB layer would be in it.
        "b_bytes_fetched": fetched,
        "shared_layer_fetched_by_b": fetched >= 64 << 20,
        "link_method": methods,
    }


def overhead(scratch: Path, factory, registry, repeats: int, large_mib: int) -> list[dict]:
    small = {f"ov-small/app{i}": factory.image(f"ov/s{i}", [16384] * 3) for i in range(50)}
    large = {
        f"ov-large/app{i}": factory.image(
            f"ov/l{i}", [factory.layer(large_mib << 20, f"ov/l{i}", compression="none")]
        )
        for i in range(3)
    }
    push_many(factory, {**small, **large}, registry.host)
    rows = []
    places = [("same filesystem", scratch)]
    tmpfs = _tmpfs(scratch / "tmpfs", large_mib * 4 + 64)
    if tmpfs is not None:
        places.append(("context on tmpfs (copy)", tmpfs))
    try:
        for where, root in places:
            for name, items in (("small", small), ("large", large)):
                refs = [f"{registry.host}/{r}:1" for r in items]
                on, off = [], []
                for _ in range(repeats):
                    cache = fresh(scratch / "ov-cache")
                    on.append(save(refs, fresh(root / "ov-on") / "registry", str(cache))[0])
                    shutil.rmtree(root / "ov-on", ignore_errors=True)  # (a tmpfs holds one)
                    off.append(save(refs, fresh(root / "ov-off") / "registry", "none")[0])
                    shutil.rmtree(root / "ov-off", ignore_errors=True)
                rows.append(
                    {
                        "workload": name,
                        "where": where,
                        "cache_on_s": statistics.median(on),
                        "cache_off_s": statistics.median(off),
                        "overhead": statistics.median(on) / statistics.median(off) - 1,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        if tmpfs is not None:
            subprocess.run(["umount", str(tmpfs)], check=False)
    return rows


def _tmpfs(path: Path, mib: int) -> Path | None:
    if os.geteuid() != 0:
        return None
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], capture_output=True
    )
    return path if done.returncode == 0 else None


def markdown(report: dict) -> str:
    sc = report["second_context"]
    lines = [
        f"Blob cache benchmark, {report['date']}, medians of {report['repeats']} runs.",
        "",
        "| workload | result | target |",
        "|---|---|---|",
        f"| second-context | B after A {sc['b_after_a_s']:.2f} s vs B's own bytes only "
        f"{sc['b_own_bytes_only_s']:.2f} s: {sc['ratio']:.2f}x; B fetched "
        f"{sc['b_bytes_fetched'] / (1 << 20):.2f} MiB in all (the shared layer is 64 MiB); "
        f"into B by: {sc['link_method']} | <= 1.2x, none of the shared bytes — "
        f"{'met' if sc['ratio'] <= 1.2 and not sc['shared_layer_fetched_by_b'] else 'missed'} |",
    ]
    for row in report["overhead"]:
        lines.append(
            f"| overhead, {row['workload']}, {row['where']} | on {row['cache_on_s']:.3f} s, "
            f"off {row['cache_off_s']:.3f} s: {row['overhead'] * 100:+.1f} % | "
            + (
                f"<= 5 % — {'met' if row['overhead'] <= 0.05 else 'missed'}"
                if row["where"] == "same filesystem"
                else "reported"
            )
            + " |"
        )
    fleet = report.get("fleet")
    if fleet:
        mib = 1 << 20
        lines.append(
            f"| fleet ({fleet['concurrent']} builders at once, then one more; "
            f"{fleet['images']} images) | upstream moved {fleet['upstream_blob_gets']} blobs, "
            f"{fleet['upstream_blob_bytes'] / mib:.1f} MiB, against "
            f"{fleet['blobs_needed_all_builds']} blobs, "
            f"{fleet['bytes_needed_all_builds'] / mib:.1f} MiB the four builds needed "
            f"({fleet['blobs_needed_per_build']} each); the fourth builder's upstream blob "
            f"requests: {fleet['after_upstream_blob_requests']} | reported (the fourth: 0) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--skip", default="", help="comma-separated: second-context,overhead,fleet")
    parser.add_argument("--output", default=str(HERE / "results"))
    args = parser.parse_args()
    skip = set(args.skip.split(","))

    from sealpy.core.testing.images import ImageFactory
    from sealpy.core.testing.registry import RegistryServer

    report: dict = {"date": time.strftime("%Y-%m-%d"), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="sealpy-bench-cache-") as tmp:
        scratch = Path(tmp)
        factory = ImageFactory(scratch / "factory")
        with RegistryServer(scratch / "reg", workdir=scratch / "reg-work") as registry:
            if "second-context" not in skip:
                report["second_context"] = second_context(scratch, factory, registry, args.repeats)
                print(json.dumps(report["second_context"]), file=sys.stderr, flush=True)
            if "overhead" not in skip:
                report["overhead"] = overhead(
                    scratch, factory, registry, args.repeats, args.large_mib
                )
        if "fleet" not in skip:
            from fleet import run_fleet

            report["fleet"] = run_fleet(scratch / "fleet")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
    if "second_context" in report and "overhead" in report:
        (out / "cache.md").write_text(markdown(report))
        print(markdown(report))


if __name__ == "__main__":
    main()
