"""A/B benchmark of caching strategies: every registered strategy (third-party plugins
included) against Sealos's serial skopeo loop and the limit, on the same workloads.

    nox -s bench                      # or: python benchmarks/bench_strategies.py
    python benchmarks/bench_strategies.py --repeats 5 --large-mib 250 --small-images 50
    python benchmarks/bench_strategies.py --sweep-procs   # choose --max-pull-procs

Workloads live in local registries filled by sealpy's test-image factory:
  small   many small images (N × 3 layers of 16 KiB)
  large   few large images (4 × one layer of M MiB)
  shared  images sharing a base layer
  multi   multi-platform indexes cached with --all
  warm    the small workload again, everything already cached
  token   small images from a token-auth registry

Every run writes to a fresh directory and nothing is deleted until the end (deleting
trees on an ext4 disk with online discard slowed the following runs). Budget about 25x
the large workload in free disk. Each timed run is a subprocess of its own
(benchmarks/runner.py): the cache stage is timed in-process, and peak RSS, CPU time
(children included) and the peak disk used outside the registry directory (its TMPDIR, and
the state directory of a contender that keeps state of its own: see --contender-env and
CacheStrategy.state_environment) are its own.
Contenders alternate within each repeat (rotated order); medians and min-max are
reported. HTTP requests are counted in a separate, untimed pass through a pass-through
proxy in front of the source, the same for every contender.
Baselines: ``skopeo-serial`` (Sealos >= 4.3: a local registry and one skopeo at a time),
``limit`` (parallel plain GETs of the same manifests and blobs into files) and
``limit-verified`` (plus sha256 and fsync). Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EXAMPLE_PLUGIN = (str(ROOT / "examples" / "sealpy-example-strategy"), "sealpy_example_strategy")
BASELINES = ["skopeo-serial", "limit", "limit-verified"]


@dataclass
class Workload:
    name: str
    description: str
    registry: str
    images: list[str]
    transfers: list[dict]
    all: bool = False
    warm: bool = False
    authfile: str | None = None
    bytes: int = 0
    proxied_images: dict = field(default_factory=dict)


def transfers_for(item, repository: str, all_platforms: bool) -> list[dict]:
    """The manifests and blobs a cache of ``item`` moves (for the limit baselines)."""
    from sealpy.core.testing.images import TestIndex

    out = [
        {
            "repository": repository,
            "digest": item.digest,
            "size": item.manifest.size,
            "manifest": True,
            "media_type": item.manifest.media_type,
        }
    ]
    images = item.images if isinstance(item, TestIndex) else [item]
    if isinstance(item, TestIndex) and not all_platforms:
        images = [item.for_platform("linux/amd64")]
    for image in images:
        if isinstance(item, TestIndex):
            out.append(
                {
                    "repository": repository,
                    "digest": image.digest,
                    "size": image.manifest.size,
                    "manifest": True,
                    "media_type": image.manifest.media_type,
                }
            )
        out.append(
            {"repository": repository, "digest": image.config.digest, "size": image.config.size}
        )
        out += [
            {"repository": repository, "digest": layer.digest, "size": layer.descriptor.size}
            for layer in image.layers
        ]
    return out


def unique(transfers: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for t in transfers:
        seen.setdefault(t["digest"], t)
    return list(seen.values())


def seed_workloads(args, factory, plain, token, authfile: Path) -> list[Workload]:
    from sealpy.core.auth import ConfiguredCredentials
    from sealpy.core.transport.remote import RegistryClient

    workloads: list[Workload] = []

    def push_all(server, items: dict, client=None) -> tuple[list[str], list[dict]]:
        refs, transfers = [], []
        for repo, item in items.items():
            factory.push(item, server.host, repo, "1", client=client)
            refs.append(f"{server.host}/{repo}:1")
            transfers += transfers_for(item, repo, all_platforms=False)
        return refs, transfers

    def small_items(prefix: str, count: int) -> dict:
        return {
            f"{prefix}/app{i}": factory.image(f"bench/{prefix}/{i}", [16384, 16384, 16384])
            for i in range(count)
        }

    def add(
        name, description, server, items, *, all_platforms=False, warm=False, auth=None, client=None
    ):
        refs, _ = push_all(server, items, client)
        transfers = unique(
            [t for repo, item in items.items() for t in transfers_for(item, repo, all_platforms)]
        )
        workloads.append(
            Workload(
                name,
                description,
                server.host,
                refs,
                transfers,
                all_platforms,
                warm,
                auth,
                sum(t["size"] for t in transfers),
            )
        )

    print("seeding workloads ...", file=sys.stderr, flush=True)
    small = small_items("small", args.small_images)
    if "small" in args.workloads:
        add("small", f"{args.small_images} images × 3 layers of 16 KiB", plain, small)
    if "large" in args.workloads:
        large = {
            f"large/app{i}": factory.image(
                f"bench/large/{i}",
                [factory.layer(args.large_mib << 20, f"bench/large/{i}", compression="none")],
            )
            for i in range(4)
        }
        add("large", f"4 images × one {args.large_mib} MiB layer", plain, large)
    if "shared" in args.workloads:
        base = factory.layer(8 << 20, "bench/shared-base")
        shared = {
            f"shared/app{i}": factory.image(f"bench/shared/{i}", [base, 65536]) for i in range(20)
        }
        add("shared", "20 images sharing an 8 MiB base layer, 64 KiB each on top", plain, shared)
    if "multi" in args.workloads:
        multi = {
            f"multi/app{i}": factory.multi_platform(
                f"bench/multi/{i}", ["linux/amd64", "linux/arm64", "linux/arm/v7"], [32768, 32768]
            )
            for i in range(10)
        }
        add(
            "multi",
            "10 indexes × 3 platforms × 2 layers of 32 KiB, --all",
            plain,
            multi,
            all_platforms=True,
        )
    if "warm" in args.workloads:
        add(
            "warm",
            f"the small workload again, all {args.small_images} images already cached",
            plain,
            small if "small" in args.workloads else small_items("small", args.small_images),
            warm=True,
        )
    if "token" in args.workloads:
        with RegistryClient(credentials=ConfiguredCredentials(authfile=authfile)) as client:
            add(
                "token",
                "20 images × 3 layers of 16 KiB from a token-auth registry",
                token,
                small_items("token", 20),
                auth=str(authfile),
                client=client,
            )
    return workloads


def contender_state(contender: str, scratch: Path, args) -> tuple[Path | None, dict[str, str]]:
    """A fresh state directory and the environment that puts the contender's own state
    there: the strategy's ``state_environment`` plus ``--contender-env`` entries (``{state}``
    stands for the directory). None when the contender keeps no state of its own."""
    env = dict(args.strategy_env.get(contender, {}))
    env.update(args.contender_env.get(contender, {}))
    if not env:
        return None, {}
    state = fresh(scratch, f"state-{contender}")
    return state, {k: v.replace("{state}", str(state)) for k, v in env.items()}


STATE_PLACEHOLDER_DIR = "/sealpy-bench-state-placeholder"


def parse_contender_env(parser: argparse.ArgumentParser, entries: list[str]) -> dict:
    parsed: dict[str, dict[str, str]] = {}
    for entry in entries:
        contender, _, assignment = entry.partition(":")
        name, eq, value = assignment.partition("=")
        if not contender or not name or not eq:
            parser.error(f"--contender-env {entry!r}: expected CONTENDER:NAME=VALUE")
        parsed.setdefault(contender, {})[name] = value
    return parsed


def run_once(
    contender: str,
    workload: Workload,
    out: Path,
    tmp: Path,
    args,
    images=None,
    state: tuple[Path | None, dict[str, str]] = (None, {}),
) -> dict:
    """One timed run in a subprocess. ``state`` (from :func:`contender_state`) is reset by
    the caller between cold runs and kept for warm ones."""
    spec = {
        "state": str(state[0]) if state[0] else None,
        "env": state[1],
        "contender": contender,
        "images": images or workload.images,
        "out": str(out),
        "tmpdir": str(tmp),
        "all": workload.all,
        "authfile": workload.authfile,
        "max_parallel": args.max_parallel,
        "registry": workload.registry,
        "transfers": workload.transfers
        if not workload.warm
        else [t for t in workload.transfers if t.get("manifest")],
        "plugins": [list(EXAMPLE_PLUGIN)] if args.example_plugin else [],
    }
    spec_path = tmp.parent / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    # Every contender starts with nothing waiting to be written back: fsync costs depend
    # on other dirty data on the filesystem (measured: 0.67 s instead of 0.19 s after a
    # contender that wrote without syncing).
    os.sync()
    result = subprocess.run(
        [sys.executable, str(HERE / "runner.py"), str(spec_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    spec_path.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"{contender} on {workload.name} failed: {result.stderr.strip()[-800:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def count_requests(contender: str, workload: Workload, scratch: Path, args, upstream) -> int | None:
    """One untimed run through a pass-through proxy that counts what reaches the source."""
    from sealpy.core.reference import ImageReference
    from sealpy.core.testing.faultproxy import FaultProxy

    with FaultProxy(upstream) as proxy:
        images = [
            str(ImageReference(proxy.host, ImageReference.parse(r).repository, "1"))
            for r in workload.images
        ]
        if workload.authfile:  # the same credentials, for the proxy's address
            from sealpy.core.auth import ConfiguredCredentials
            from sealpy.core.containers import write_authfile

            credential = ConfiguredCredentials(authfile=Path(workload.authfile)).credentials_for(
                workload.registry
            )
            authfile = scratch / f"proxy-auth-{time.monotonic_ns()}.json"
            write_authfile(authfile, {proxy.host: credential})
            workload = replace(workload, authfile=str(authfile))
        if contender.startswith("limit"):  # the limit's GETs go through the proxy too
            run_once(
                contender,
                replace(workload, registry=proxy.host),
                fresh(scratch, "count"),
                scratch / "tmp",
                args,
            )
            return len(proxy.seen)
        out = fresh(scratch, f"count-{workload.name}-{contender}")
        if workload.warm:
            run_once(contender, workload, out, scratch / "tmp", args, images)
            proxy.seen.clear()
        run_once(contender, workload, out, scratch / "tmp", args, images)
        return len(proxy.seen)


def fresh(scratch: Path, name: str) -> Path:
    """A directory no run has used. Nothing is deleted until the benchmark ends: on this
    disk (ext4 with online discard) deleting trees made the following runs up to 3x slower
    in system time, whichever contender came next."""
    return scratch / "runs" / f"{name}-{time.monotonic_ns()}"


def summarize(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "skopeo": skopeo,
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


def proxy_cold_warm(workload: Workload, scratch: Path, args, count: int = 20) -> dict:
    """The proxy strategy on the first ``count`` small images: a cold run into a fresh
    directory, then a warm re-run into the same directory, ``args.repeats`` times."""
    from sealpy.core.reference import ImageReference

    count = min(count, len(workload.images))
    repos = {ImageReference.parse(r).repository for r in workload.images[:count]}
    subset = replace(
        workload,
        images=workload.images[:count],
        transfers=[t for t in workload.transfers if t["repository"] in repos],
    )
    cold, warm = [], []
    for _ in range(args.repeats):
        out = fresh(scratch, "cold-warm")
        cold.append(run_once("proxy", subset, out, scratch / "tmp", args)["seconds"])
        warm.append(run_once("proxy", subset, out, scratch / "tmp", args)["seconds"])
    return {"images": count, "cold": summarize_values(cold), "warm": summarize_values(warm)}


def summarize_values(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cli_end_to_end(workload: Workload, scratch: Path, repeats: int) -> dict:
    """`sealpy registry save` for a workload, interpreter start-up included."""
    sealpy = str(Path(sys.executable).with_name("sealpy"))
    context = scratch / "e2e-ctx"
    context.mkdir(exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    times = []
    for _ in range(repeats):
        target = fresh(scratch, "e2e")
        os.sync()
        started = time.perf_counter()
        subprocess.run(
            [
                sealpy,
                "registry",
                "save",
                "-q",
                "--platform",
                "linux/amd64",
                "--images",
                ",".join(workload.images),
                "--registry-dir",
                str(target),
                str(context),
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return {
        "workload": workload.name,
        "seconds": {"median": statistics.median(times), "min": min(times), "max": max(times)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A/B benchmark of sealpy caching strategies")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small-images", type=int, default=50)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument(
        "--max-parallel", type=int, default=None, help="--max-pull-procs for every contender"
    )
    parser.add_argument("--workloads", default="small,large,shared,multi,warm,token")
    parser.add_argument(
        "--contenders", default=None, help="comma-separated (default: every strategy + baselines)"
    )
    parser.add_argument("--no-example-plugin", dest="example_plugin", action="store_false")
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
        help="environment for one contender's runs; {state} is its state directory, fresh "
        "for each cold run (repeatable)",
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    args.workloads = args.workloads.split(",")
    args.contender_env = parse_contender_env(parser, args.contender_env)

    from sealpy.core.auth import Credential
    from sealpy.core.containers import write_authfile
    from sealpy.core.model import DEFAULT_MAX_PARALLEL
    from sealpy.core.plugins import new_plugin_manager, strategy_registry
    from sealpy.core.testing.images import ImageFactory
    from sealpy.core.testing.registry import RegistryServer, TokenServer

    if args.max_parallel is None:
        args.max_parallel = DEFAULT_MAX_PARALLEL
    plugins = []
    if args.example_plugin:
        sys.path.insert(0, EXAMPLE_PLUGIN[0])
        plugins.append(__import__(EXAMPLE_PLUGIN[1]))
    registry = strategy_registry(new_plugin_manager(plugins))
    strategies = registry.names()
    # Each strategy's own state goes under a directory the benchmark resets (placeholder
    # path, replaced per run by contender_state).
    args.strategy_env = {
        name: {
            k: v.replace(STATE_PLACEHOLDER_DIR, "{state}")
            for k, v in registry.get(name).state_environment(Path(STATE_PLACEHOLDER_DIR)).items()
        }
        for name in strategies
    }
    contenders = args.contenders.split(",") if args.contenders else [*strategies, *BASELINES]

    with tempfile.TemporaryDirectory(
        prefix="sealpy-bench-", dir=os.environ.get("BENCH_DIR")
    ) as tmp:
        scratch = Path(tmp)
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
            workloads = seed_workloads(args, factory, plain, token, authfile)
            # Let the seeding's writes reach the disk first: pending writeback would slow the
            # first runs' fsyncs (measured: 2x on the first workload without this).
            os.sync()
            time.sleep(2)
            upstream = {plain.host: plain.host, token.host: token.host}
            if args.sweep_procs:
                return sweep(args, workloads, scratch)
            results = []
            for workload in workloads:
                runs: dict[str, list[dict]] = {c: [] for c in contenders}
                warm_dirs = {}
                warm_states = {}
                if workload.warm:  # every contender starts from its own complete cache
                    for contender in contenders:
                        warm_dirs[contender] = fresh(scratch, f"warm-{contender}")
                        warm_states[contender] = contender_state(contender, scratch, args)
                        run_once(
                            contender,
                            workload,
                            warm_dirs[contender],
                            scratch / "tmp",
                            args,
                            state=warm_states[contender],
                        )
                for repeat in range(args.repeats):
                    order = (
                        contenders[repeat % len(contenders) :]
                        + contenders[: repeat % len(contenders)]
                    )
                    for contender in order:
                        out = warm_dirs.get(contender) or fresh(
                            scratch, f"{workload.name}-{contender}"
                        )
                        print(
                            f"{workload.name:7} {contender:15} run {repeat + 1}/{args.repeats}",
                            file=sys.stderr,
                            flush=True,
                        )
                        state = warm_states.get(contender) or contender_state(
                            contender, scratch, args
                        )
                        runs[contender].append(
                            run_once(contender, workload, out, scratch / "tmp", args, state=state)
                        )
                for contender in contenders:
                    requests = (
                        count_requests(
                            contender, workload, scratch, args, upstream[workload.registry]
                        )
                        if args.count
                        else None
                    )
                    results.append(
                        {
                            "workload": workload.name,
                            "contender": contender,
                            "runs": runs[contender],
                            "seconds": summarize(runs[contender], "seconds"),
                            "cpu_seconds": summarize(runs[contender], "cpu_seconds"),
                            "peak_rss_mib": summarize(runs[contender], "peak_rss_mib"),
                            "children_peak_rss_mib": summarize(
                                runs[contender], "children_peak_rss_mib"
                            ),
                            "peak_extra_disk_mib": summarize(
                                runs[contender], "peak_extra_disk_mib"
                            ),
                            "state_left_mib": summarize(runs[contender], "state_left_mib"),
                            "requests": requests,
                        }
                    )
            small_workload = next((w for w in workloads if w.name == "small"), None)
            cold_warm = proxy_cold_warm(small_workload, scratch, args) if small_workload else None
            e2e = (
                cli_end_to_end(
                    next(w for w in workloads if w.name == "small"), scratch, args.repeats
                )
                if "small" in args.workloads
                else None
            )
    report = {
        "machine": machine(),
        "config": {
            "repeats": args.repeats,
            "max_parallel": args.max_parallel,
            "small_images": args.small_images,
            "large_mib": args.large_mib,
            "contenders": contenders,
        },
        "workloads": [
            {k: v for k, v in asdict(w).items() if k in ("name", "description", "bytes")}
            for w in workloads
        ],
        "results": results,
        "cli": {**cli_timings(), "registry_save_end_to_end": e2e, "proxy_cold_warm": cold_warm},
    }
    write_outputs(report, Path(args.output))


def sweep(args, workloads: list[Workload], scratch: Path) -> None:
    """Proxy with 2, 4, 8, 16 parallel fetches on every workload: medians."""
    rows = []
    for workload in workloads:
        if workload.warm:
            continue
        for procs in (2, 4, 8, 16):
            args.max_parallel = procs
            times = []
            for _ in range(args.repeats):
                out = fresh(scratch, f"sweep-{workload.name}-{procs}")
                times.append(run_once("proxy", workload, out, scratch / "tmp", args)["seconds"])
            rows.append((workload.name, procs, statistics.median(times)))
            print(
                f"{workload.name:7} procs={procs:2}  median {statistics.median(times):.3f} s",
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


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "latest.md").write_text(table)
    chart(report, out / "latest.png")
    print(table)


def _ratio(report: dict, workload: str, contender: str, baseline: str) -> float | None:
    by = {(r["workload"], r["contender"]): r for r in report["results"]}
    a, b = by.get((workload, contender)), by.get((workload, baseline))
    if not a or not b or not a["seconds"] or not b["seconds"]:
        return None
    return a["seconds"]["median"] / b["seconds"]["median"]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['skopeo']}; {m['date']}. Medians of {report['config']['repeats']} runs "
        f"(min–max), --max-pull-procs {report['config']['max_parallel']}.",
        "",
        "| workload | contender | cache stage s (min–max) | × limit | × verified limit | MB/s | requests "
        "| peak RSS MiB (children) | extra disk MiB | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sizes = {w["name"]: w["bytes"] for w in report["workloads"]}
    for r in report["results"]:
        s = r["seconds"]
        ratio = _fmt(_ratio(report, r["workload"], r["contender"], "limit"))
        vratio = _fmt(_ratio(report, r["workload"], r["contender"], "limit-verified"))
        mbs = f"{sizes[r['workload']] / s['median'] / 1e6:.0f}" if r["workload"] != "warm" else "–"
        rss = r["peak_rss_mib"]["median"] if r["peak_rss_mib"] else 0
        crss = r["children_peak_rss_mib"]["median"] if r["children_peak_rss_mib"] else 0
        requests = r["requests"] if r["requests"] is not None else "–"
        lines.append(
            f"| {r['workload']} | {r['contender']} | {s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f}) "
            f"| {ratio} | {vratio} | {mbs} | {requests} | {rss:.0f} ({crss:.0f}) "
            f"| {r['peak_extra_disk_mib']['median']:.1f} | {r['cpu_seconds']['median']:.2f} |"
        )
    cli = report["cli"]
    lines += [
        "",
        f"`sealpy --help`: {cli['help_ms']['median']:.0f} ms median "
        f"({cli['help_ms']['min']:.0f}–{cli['help_ms']['max']:.0f}).",
    ]
    if cli.get("registry_save_end_to_end"):
        e = cli["registry_save_end_to_end"]["seconds"]
        lines.append(
            f"`sealpy registry save` end to end on the small workload (proxy, interpreter start-up "
            f"included): {e['median']:.2f} s median ({e['min']:.2f}–{e['max']:.2f})."
        )
    if cli.get("proxy_cold_warm"):
        cw = cli["proxy_cold_warm"]
        lines.append(
            f"proxy on the first {cw['images']} small images, cache stage: cold "
            f"{cw['cold']['median']:.3f} s, warm {cw['warm']['median']:.3f} s (medians)."
        )
    for w in report["workloads"]:
        lines.append(f"- **{w['name']}**: {w['description']} ({w['bytes'] / 1e6:.1f} MB to move).")
    targets = target_lines(report)
    if targets:
        lines += ["", "Targets (issue 7), from the medians above:", "", *targets]
    return "\n".join(lines) + "\n"


def target_lines(report: dict) -> list[str]:
    """Each target as a figure and met/missed: figures, not assertions."""
    by = {(r["workload"], r["contender"]): r for r in report["results"]}
    out = []

    def ratio_target(label, workload, contender, baseline, limit, *, faster=False):
        ratio = _ratio(report, workload, contender, baseline)
        if ratio is None:
            return
        if faster:  # "at least N× faster than the baseline"
            speedup = 1 / ratio
            verdict = "met" if speedup >= limit else "missed"
            out.append(f"- {label}: {speedup:.2f}× (target ≥ {limit}×) — {verdict}")
        else:
            verdict = "met" if ratio <= limit else "missed"
            out.append(f"- {label}: {ratio:.2f}× (target ≤ {limit}×) — {verdict}")

    ratio_target("proxy ÷ verified limit, small", "small", "proxy", "limit-verified", 1.5)
    ratio_target("proxy ÷ verified limit, large", "large", "proxy", "limit-verified", 1.3)
    ratio_target("proxy warm ÷ limit", "warm", "proxy", "limit", 2.0)
    ratio_target(
        "sync speed-up over serial skopeo, small",
        "small",
        "sync",
        "skopeo-serial",
        1.5,
        faster=True,
    )
    large = by.get(("large", "proxy"))
    if large and large["peak_rss_mib"]:
        rss = large["peak_rss_mib"]["max"]
        verdict = "met" if rss < 100 else "missed"
        out.append(f"- proxy peak RSS, large (worst run): {rss:.0f} MiB (target < 100) — {verdict}")
    return out


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w["name"] for w in report["workloads"]]
    contenders = [c for c in report["config"]["contenders"] if c != "limit"]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(1, len(contenders))
    for i, contender in enumerate(contenders):
        ratios = [_ratio(report, w, contender, "limit") or 0 for w in workloads]
        ax.bar([x + i * width for x in range(len(workloads))], ratios, width, label=contender)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([x + width * (len(contenders) - 1) / 2 for x in range(len(workloads))], workloads)
    ax.set_ylabel("cache-stage time ÷ limit (log scale, lower is better)")
    m = report["machine"]
    ax.set_title(f"sealpy caching strategies vs the limit — {m['cores']} cores, {m['date']}")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
