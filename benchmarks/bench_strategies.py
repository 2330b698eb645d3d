"""A/B benchmark of caching strategies: every registered strategy (third-party plugins
included) against Sealos's serial skopeo loop, the Python limit and the C floor, on the
same workloads, under network profiles ``lan`` and ``wan``.

    ./dev.sh bench --quick            # or: nox -s bench -- --quick
    python benchmarks/bench_strategies.py --full
    python benchmarks/bench_strategies.py --quick --profiles wan --workloads small
    python benchmarks/bench_strategies.py --sweep-procs   # choose --max-pull-procs

Workloads and their sizes per mode: benchmarks/workloads.py (and the README's table).
Network profiles: benchmarks/network.py (``wan``: 50 ms per round trip, one more per new
connection, 100 Mbit/s shared; a proxy on 127.0.0.1, nothing on the machine changes).
The C floor (``curl``, ``curl-verified``): benchmarks/floor.py.

Each timed run is a subprocess of its own (benchmarks/runner.py). A strategy runs as the
whole ``sealpy registry save`` process, timed from outside: the end-to-end headline; its
--json report gives the cache stage, kept as a detail. Peak RSS, CPU time (children
included) and the peak disk used outside the registry directory are the run's own.
Every run writes to a fresh directory and nothing is deleted until the end (deleting
trees on an ext4 disk with online discard slowed the following runs).
Contenders alternate within each repeat (rotated order); medians and min-max are
reported. HTTP requests are counted in a separate, untimed pass through a pass-through
proxy in front of the source, the same for every contender; under ``wan`` the proxy
also counts connections and round trips of every timed run.
Baselines: ``skopeo-serial`` (Sealos >= 4.3: a local registry, one skopeo at a time),
``limit``/``limit-verified`` (parallel plain GETs in Python; lan only), ``curl`` and
``curl-verified`` (the C floor; ratios are taken against ``curl-verified``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # workloads, network, report: modules beside this script

import report as reporting  # noqa: E402
from network import PROFILES, profile_hosts  # noqa: E402
from runs import (  # noqa: E402
    STATE_PLACEHOLDER_DIR,
    count_requests,
    fresh,
    measure,
    parse_contender_env,
    result_row,
    run_once,
)
from workloads import MODES, WAN_WORKLOADS, Workload, seed_workloads, through  # noqa: E402

ROOT = HERE.parent
RESULTS = HERE / "results"
BASELINES = ["skopeo-serial", "limit", "limit-verified", "curl", "curl-verified"]
# Under wan the C floor is the reference, and only the verified one runs: there the two
# curl floors differ by under 2 % (quiet quick run, 2026-12-03: large 10.97 vs 11.14 s,
# small 1.99 vs 2.07 s) since the network, not hashing, bounds them; dropping the
# unverified one keeps the quick mode under 15 minutes.
LAN_ONLY = {"limit", "limit-verified", "curl"}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    skopeo = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "skopeo": skopeo,
        "curl": " ".join(curl[:2]),
        "date": time.strftime("%Y-%m-%d"),
    }


def cli_timings(repeats: int = 10) -> dict:
    sealpy = str(Path(sys.executable).with_name("sealpy"))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sealpy, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return {
        "help_ms": {
            "median": statistics.median(times) * 1000,
            "min": min(times) * 1000,
            "max": max(times) * 1000,
        }
    }


def compile_bytecode() -> None:
    """Byte-compile sealpy and the example plugin once, as an installed package is: with
    PYTHONDONTWRITEBYTECODE set (as in some CI and agent shells) an editable install
    would recompile ~80 modules at every start (measured: +0.3 s of CPU per process)."""
    import compileall

    import sealpy.core
    import sealpy.strategies

    for directory in (
        Path(sealpy.core.__file__).parent,
        Path(sealpy.strategies.__file__).parent,
        ROOT / "examples",
    ):
        compileall.compile_dir(directory, quiet=2, maxlevels=20)


def under_profiles(args, workloads: list[Workload], scratch: Path, authfile: Path, token):
    """Each workload to measure, profile by profile: ``(workload as contenders reach it,
    as seeded, the wan proxy in front of its registry or None)``. Under a delayed profile
    the small and token workloads are the lan ones reached through a proxy, and large
    has smaller images of its own."""
    upstreams = sorted({w.registry for w in workloads})
    for profile in args.profiles:
        if profile == "lan":
            plan = [w for w in workloads if w.profile == "lan"]
        else:
            plan = [w for w in workloads if w.profile == profile] + [
                w
                for w in workloads
                if w.profile == "lan" and w.name in WAN_WORKLOADS and w.name != "large"
            ]
        with profile_hosts(PROFILES[profile], upstreams) as (hosts, proxies):
            for seeded in plan:
                if profile == "lan":
                    yield seeded, seeded, None
                    continue
                host = hosts[seeded.registry]
                auth = (
                    wan_authfile(scratch, authfile, token.host, host) if seeded.authfile else None
                )
                yield through(seeded, host, profile, auth), seeded, proxies[seeded.registry]


def wan_authfile(scratch: Path, authfile: Path, token_host: str, host: str) -> str:
    """The token registry's credentials, also for its wan proxy's address."""
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.containers import write_authfile

    credential = ConfiguredCredentials(authfile=authfile).credentials_for(token_host)
    path = scratch / f"auth-{time.monotonic_ns()}.json"
    write_authfile(path, {token_host: credential, host: credential})
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description="A/B benchmark of sealpy caching strategies")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="every workload at its quick size (the default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="every workload at its full size (README table)",
    )
    parser.set_defaults(mode="quick")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick), 5 (full)")
    parser.add_argument(
        "--scale-repeats",
        type=int,
        default=None,
        help="repeats of the scale points: default 1 (quick), 3 (full)",
    )
    parser.add_argument("--small-images", type=int, default=50)
    parser.add_argument(
        "--scale",
        default=None,
        help="image counts of the scale series beside small's (comma-separated; "
        "default 200,400 quick, 200,800 full)",
    )
    parser.add_argument(
        "--max-parallel", type=int, default=None, help="--max-pull-procs for every contender"
    )
    parser.add_argument("--workloads", default="small,large,shared,multi,warm,token,scale")
    parser.add_argument("--profiles", default="lan,wan")
    parser.add_argument(
        "--contenders", default=None, help="comma-separated (default: every strategy + baselines)"
    )
    parser.add_argument(
        "--no-count", dest="count", action="store_false", help="skip the request-count pass"
    )
    parser.add_argument(
        "--sweep-procs", action="store_true", help="time proxy with 2/4/8/16 parallel fetches"
    )
    parser.add_argument(
        "--contender-env",
        action="append",
        default=[],
        metavar="CONTENDER:NAME=VALUE",
        help="environment for one contender's runs; {state} is its state "
        "directory, fresh for each cold run (repeatable)",
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    args.workloads = args.workloads.split(",")
    args.profiles = args.profiles.split(",")
    scale = args.scale or ",".join(map(str, MODES[args.mode]["scale"]))
    args.scale = [int(n) for n in scale.split(",") if n]
    unknown = set(args.profiles) - set(PROFILES)
    if unknown:
        parser.error(f"unknown profile(s): {', '.join(sorted(unknown))}")
    args.repeats = args.repeats or (3 if args.mode == "quick" else 5)
    args.scale_repeats = args.scale_repeats or (1 if args.mode == "quick" else 3)
    args.contender_env = parse_contender_env(parser, args.contender_env)

    from sealpy.core.auth import Credential
    from sealpy.core.containers import write_authfile
    from sealpy.core.model import DEFAULT_MAX_PARALLEL
    from sealpy.core.plugins import new_plugin_manager, strategy_registry
    from sealpy.core.testing.images import ImageFactory
    from sealpy.core.testing.registry import RegistryServer, TokenServer

    if args.max_parallel is None:
        args.max_parallel = DEFAULT_MAX_PARALLEL
    # Strategies as `sealpy registry save` finds them: installed, through entry points.
    registry = strategy_registry(new_plugin_manager())
    strategies = registry.names()
    # Each strategy's own state goes under a directory the benchmark resets (placeholder
    # path, replaced per run by contender_state).
    # Every run of a strategy starts cold, with an empty machine-wide blob cache of its own
    # (a warm run keeps its state, cache included); the cache's effect is measured by
    # bench_cache.py only.
    args.strategy_env = {
        name: {
            "SEALPY_CACHE_DIR": "{state}/blob-cache",
            **{
                k: v.replace(STATE_PLACEHOLDER_DIR, "{state}")
                for k, v in registry.get(name)
                .state_environment(Path(STATE_PLACEHOLDER_DIR))
                .items()
            },
        }
        for name in strategies
    }
    # The Python limits (how fast Python could go) run in full mode only: the C floor is
    # the reference of every ratio, and they cost a minute of the quick mode's budget.
    baselines = BASELINES if args.mode == "full" else [b for b in BASELINES if "limit" not in b]
    contenders = args.contenders.split(",") if args.contenders else [*strategies, *baselines]
    compile_bytecode()

    started = time.monotonic()
    # Removed after the report is written: deleting the registries and runs (tens of
    # thousands of files) took minutes on a busy disk, time the results need not wait for.
    tmp = tempfile.mkdtemp(prefix="sealpy-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        scratch = args.scratch = Path(tmp)
        factory = ImageFactory(scratch / "factory")
        users = {"bench": "bench-password"}
        authfile = scratch / "auth.json"
        with (
            TokenServer(scratch / "token", users) as tokens,
            RegistryServer(scratch / "plain", workdir=scratch / "plain-work") as plain,
            RegistryServer(
                scratch / "token-root", workdir=scratch / "token-work", auth=tokens.auth_config()
            ) as token,
        ):
            write_authfile(authfile, {token.host: Credential("bench", "bench-password")})
            phases = {"seeding": time.monotonic()}
            workloads = seed_workloads(args, factory, plain, token, authfile)
            phases["seeding"] = time.monotonic() - phases["seeding"]
            phases["timed runs"] = phases["counting passes"] = 0.0
            # Let the seeding's writes reach the disk first: pending writeback would slow the
            # first runs' fsyncs (measured: 2x on the first workload without this).
            os.sync()
            time.sleep(2)
            if args.sweep_procs:
                sweep(args, under_profiles(args, workloads, scratch, authfile, token))
                shutil.rmtree(tmp, ignore_errors=True)
                return
            results, measured = [], []
            # Requests per image do not depend on the network: counted once, under lan
            # (the untimed counting pass talks to the source directly anyway).
            per_image: dict[tuple[str, str], float] = {}
            for workload, seeded, proxy in under_profiles(
                args, workloads, scratch, authfile, token
            ):
                profile = workload.profile
                these = [c for c in contenders if profile == "lan" or c not in LAN_ONLY]
                repeats = args.scale_repeats if workload.scale else args.repeats
                if args.mode == "quick" and workload.key == "large@wan":
                    # ±0.1 % between runs (network-bound), 47 s per repeat: two in quick.
                    repeats = min(repeats, 2)
                began = time.monotonic()
                runs = measure(workload, these, repeats, scratch, args, proxy)
                phases["timed runs"] += time.monotonic() - began
                measured.append(workload)
                n_images = len(workload.images)
                for contender in these:
                    requests = None
                    if (seeded.name, contender) in per_image:  # counted under lan
                        requests = round(per_image[seeded.name, contender] * n_images)
                    elif args.count and not workload.scale:
                        began = time.monotonic()
                        requests = count_requests(
                            contender, workload, scratch, args, seeded.registry
                        )
                        phases["counting passes"] += time.monotonic() - began
                        per_image[seeded.name, contender] = requests / n_images
                    results.append(result_row(workload, contender, runs[contender], requests))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = {
        "machine": machine(),
        "config": {
            "mode": args.mode,
            "repeats": args.repeats,
            "scale_repeats": args.scale_repeats,
            "max_parallel": args.max_parallel,
            "small_images": args.small_images,
            "sizes": MODES[args.mode],
            "profiles": args.profiles,
            "contenders": contenders,
            "wall_seconds": round(time.monotonic() - started),
            "phase_seconds": {k: round(v) for k, v in phases.items()},
        },
        "workloads": [
            {
                "key": w.key,
                "images": len(w.images),
                "scale": w.scale,
                **{k: v for k, v in asdict(w).items() if k in ("name", "description", "bytes")},
            }
            for w in measured
        ],
        "results": results,
        "cli": cli_timings(),
    }
    reporting.write_outputs(report, Path(args.output))
    shutil.rmtree(tmp, ignore_errors=True)


def sweep(args, plan) -> None:
    """Proxy with 2, 4, 8, 16 and 32 parallel fetches on every workload of every profile
    (to choose how many requests to keep in flight): medians, end to end."""
    rows = []
    for workload, _seeded, _proxy in plan:
        if workload.warm:
            continue
        for procs in (2, 4, 8, 16, 32):
            args.max_parallel = procs
            times = []
            for _ in range(args.repeats):
                out = fresh(args.scratch, f"sweep-{workload.name}-{procs}")
                run = run_once("proxy", workload, out, args.scratch / "tmp", args)
                times.append(run["seconds"])
            rows.append((workload.key, procs, statistics.median(times)))
            print(
                f"{workload.key:12} procs={procs:2}  median {statistics.median(times):.3f} s",
                flush=True,
            )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "procs-sweep.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "repeats": args.repeats,
                "rows": [
                    {"workload": w, "max_pull_procs": p, "median_seconds": s} for w, p, s in rows
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
