"""Timed runs of one contender on one workload, each in a subprocess of its own
(benchmarks/runner.py), and the untimed request-count pass."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from workloads import Workload

HERE = Path(__file__).resolve().parent


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


def manifests_of(workload: Workload) -> list[dict]:
    """What a floor fetches on the warm workload: the manifests only (tags re-resolved)."""
    return [t for t in workload.transfers if t.get("manifest")]


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
        "transfers": workload.transfers if not workload.warm else manifests_of(workload),
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

    if contender.startswith(("limit", "curl")):
        # The floors fetch exactly the list they are given, one request each (what this
        # pass counted when it ran them: the same number every time).
        return len(workload.transfers if not workload.warm else manifests_of(workload))
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
        out = fresh(scratch, f"count-{workload.name}-{contender}")
        # Its own empty state (blob cache included), as a timed cold run has: a cache left
        # by another run would hide the requests this pass is there to count.
        state = contender_state(contender, scratch, args)
        if workload.warm:
            run_once(contender, workload, out, scratch / "tmp", args, images, state=state)
            proxy.seen.clear()
        run_once(contender, workload, out, scratch / "tmp", args, images, state=state)
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


def summarize_values(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(
    workload: Workload, contenders: list[str], repeats: int, scratch: Path, args, proxy=None
) -> dict[str, list[dict]]:
    """``repeats`` timed runs of every contender on ``workload``, rotated order; under
    wan, ``proxy``'s connection and round-trip counts are added to each run."""
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    warm_dirs, warm_states = {}, {}
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
    for repeat in range(repeats):
        order = contenders[repeat % len(contenders) :] + contenders[: repeat % len(contenders)]
        for contender in order:
            out = warm_dirs.get(contender) or fresh(scratch, f"{workload.name}-{contender}")
            print(
                f"{workload.key:12} {contender:15} run {repeat + 1}/{repeats}",
                file=sys.stderr,
                flush=True,
            )
            state = warm_states.get(contender) or contender_state(contender, scratch, args)
            if proxy is not None:
                proxy.reset_counts()
            run = run_once(contender, workload, out, scratch / "tmp", args, state=state)
            if proxy is not None:
                run.update(proxy.counts())
            runs[contender].append(run)
    return runs


def result_row(workload: Workload, contender: str, runs: list[dict], requests) -> dict:
    keys = (
        "seconds",
        "cache_seconds",
        "cpu_seconds",
        "peak_rss_mib",
        "children_peak_rss_mib",
        "peak_extra_disk_mib",
        "state_left_mib",
        "connections",
        "round_trips",
    )
    return {
        "workload": workload.key,
        "contender": contender,
        "runs": runs,
        **{k: summarize(runs, k) for k in keys},
        "requests": requests,
    }
