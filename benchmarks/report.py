"""The benchmark's outputs: latest.json, latest.md (tables, targets) and the plots."""

from __future__ import annotations

import json
from pathlib import Path

FLOOR = "curl-verified"
PYTHON_LIMITS = ("limit", "limit-verified")


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / "latest.md").write_text(text)
    chart(report, out / "latest.png")
    scale_chart(report, out / "scale.png")
    print(text)


def _rows(report: dict) -> dict:
    return {(r["workload"], r["contender"]): r for r in report["results"]}


def headline(row: dict) -> float | None:
    """The row's headline time: end to end (a Python limit has only a cache stage)."""
    s = row.get("seconds") or {}
    return s.get("median")


def ratio(report: dict, workload: str, contender: str, baseline: str = FLOOR) -> float | None:
    by = _rows(report)
    a, b = by.get((workload, contender)), by.get((workload, baseline))
    if not a or not b or not headline(a) or not headline(b):
        return None
    return headline(a) / headline(b)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _span(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f})"


def markdown(report: dict) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['skopeo']}, {m.get('curl', 'curl')}; {m['date']}. "
        f"Mode --{c['mode']}; medians of {c['repeats']} runs (min–max; scale points: "
        f"{c['scale_repeats']}), --max-pull-procs {c['max_parallel']}. Whole run: "
        f"{c.get('wall_seconds', 0) / 60:.1f} min ("
        + ", ".join(f"{k} {v} s" for k, v in c.get("phase_seconds", {}).items())
        + ").",
        "",
        "End to end = the whole process a user runs (`sealpy registry save` with interpreter "
        "start-up; skopeo-serial: registry started, one skopeo copy per image, registry "
        "stopped; curl: the curl process plus verification). The Python limits have a cache "
        "stage only. × floor = end to end ÷ the verified C floor (curl-verified). Requests: "
        "HTTP requests reaching the source in an untimed pass through a counting proxy, per "
        "image. Round trips (wan only): counted by the wan proxy — one per new connection "
        "plus one each time the client speaks after the server — per image.",
        "",
        "| profile | workload | contender | end to end s (min–max) | × floor | cache stage s "
        "| requests / image | round trips / image | conns | peak RSS MiB (children) | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    images = {w["key"]: w["images"] for w in report["workloads"]}
    for r in report["results"]:
        n = images.get(r["workload"], 1) or 1
        profile = "wan" if r["workload"].endswith("@wan") else "lan"
        name = r["workload"].split("@")[0]
        req = "–" if r.get("requests") is None else f"{r['requests'] / n:.1f}"
        trips = r.get("round_trips")
        trips_s = "–" if not trips else f"{trips['median'] / n:.1f}"
        conns = r.get("connections")
        conns_s = "–" if not conns else f"{conns['median']:.0f}"
        rss = (r.get("peak_rss_mib") or {}).get("median", 0)
        crss = (r.get("children_peak_rss_mib") or {}).get("median", 0)
        cpu = (r.get("cpu_seconds") or {}).get("median")
        e2e = "–" if r["contender"] in PYTHON_LIMITS else _span(r["seconds"])
        cache = _span(r.get("cache_seconds") or r["seconds"])
        lines.append(
            f"| {profile} | {name} | {r['contender']} | {e2e} "
            f"| {_fmt(ratio(report, r['workload'], r['contender']))} | {cache} | {req} "
            f"| {trips_s} | {conns_s} | {rss:.0f} ({crss:.0f}) | {_fmt(cpu)} |"
        )
    lines += ["", *scale_lines(report), ""]
    for w in report["workloads"]:
        lines.append(f"- **{w['key']}**: {w['description']} ({w['bytes'] / 1e6:.1f} MB to move).")
    cli = report.get("cli") or {}
    if cli.get("help_ms"):
        h = cli["help_ms"]
        lines += [
            "",
            f"`sealpy --help`: {h['median']:.0f} ms median ({h['min']:.0f}–{h['max']:.0f}).",
        ]
    targets = target_lines(report)
    if targets:
        lines += ["", "Targets (issue 16), from the medians above:", "", *targets]
    return "\n".join(lines) + "\n"


def scale_lines(report: dict) -> list[str]:
    """Per contender: time per image and peak memory at each scale point."""
    points = sorted(
        (w["images"], w["key"]) for w in report["workloads"] if w["key"] in scale_keys(report)
    )
    if len(points) < 2:
        return []
    by = _rows(report)
    header = " | ".join(f"{n} images: ms/image, peak MiB" for n, _ in points)
    out = ["Scale (small images, lan, end to end):", "", f"| contender | {header} |"]
    out.append("|---|" + "---|" * len(points))
    for contender in report["config"]["contenders"]:
        cells = []
        for n, key in points:
            r = by.get((key, contender))
            if not r or not r["seconds"]:
                cells.append("–")
                continue
            rss = max(
                (r.get("peak_rss_mib") or {}).get("max", 0),
                (r.get("children_peak_rss_mib") or {}).get("max", 0),
            )
            cells.append(f"{r['seconds']['median'] / n * 1000:.1f} ms, {rss:.0f}")
        out.append(f"| {contender} | " + " | ".join(cells) + " |")
    return out


def scale_keys(report: dict) -> set[str]:
    return {w["key"] for w in report["workloads"] if w.get("scale") or w["key"] == "small"}


def target_lines(report: dict) -> list[str]:
    """Each target of issue 16 this harness measures, as a figure and met/missed."""
    out: list[str] = []

    def at_most(label: str, value: float | None, limit: float, unit: str = "×") -> None:
        if value is not None:
            verdict = "met" if value <= limit else "missed"
            out.append(f"- {label}: {value:.2f}{unit} (target ≤ {limit}{unit}) — {verdict}")

    def speedup(label: str, workload: str, contender: str, limit: float) -> None:
        r = ratio(report, workload, contender, "skopeo-serial")
        if r is not None:
            verdict = "met" if 1 / r >= limit else "missed"
            out.append(f"- {label}: {1 / r:.2f}× (target ≥ {limit}×) — {verdict}")

    speedup("wan small: proxy speed-up over serial skopeo, end to end", "small@wan", "proxy", 8)
    at_most("wan small: proxy ÷ verified C floor", ratio(report, "small@wan", "proxy"), 1.3)
    at_most("lan large: proxy ÷ verified C floor, end to end", ratio(report, "large", "proxy"), 1.5)
    largest = max(
        (int(w["key"].split("-")[1]) for w in report["workloads"] if w.get("scale")), default=None
    )
    if largest is not None:  # the target is 800 (full mode); quick stops at 400
        at_most(
            f"lan {largest} small: proxy ÷ verified C floor (target set for 800)",
            ratio(report, f"small-{largest}", "proxy"),
            1.3,
        )
    for workload in ("small", "token", "multi"):
        speedup(f"sync speed-up over serial skopeo, {workload}", workload, "sync", 1.5)
    speedup("sync vs serial skopeo, large (no slower)", "large", "sync", 1.0)
    warm = _rows(report).get(("warm", "proxy"))
    if warm and warm["seconds"]:
        at_most(
            "start-up: proxy `registry save` of the cached small context, end to end",
            warm["seconds"]["median"],
            0.25,
            " s",
        )
    return out


def chart(report: dict, path: Path) -> None:
    """Each contender's end-to-end time ÷ the verified C floor, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w["key"] for w in report["workloads"]]
    contenders = [c for c in report["config"]["contenders"] if c != FLOOR]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(1, len(contenders))
    for i, contender in enumerate(contenders):
        ratios = [ratio(report, w, contender) or 0 for w in workloads]
        ax.bar([x + i * width for x in range(len(workloads))], ratios, width, label=contender)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(
        [x + width * (len(contenders) - 1) / 2 for x in range(len(workloads))],
        workloads,
        rotation=20,
    )
    ax.set_ylabel("end-to-end time ÷ verified C floor (log, lower is better)")
    m = report["machine"]
    ax.set_title(f"sealpy vs serial skopeo and the C floor — {m['cores']} cores, {m['date']}")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale_chart(report: dict, path: Path) -> None:
    """x = images, y = end-to-end seconds, log-log, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = scale_keys(report)
    points = sorted((w["images"], w["key"]) for w in report["workloads"] if w["key"] in keys)
    if len(points) < 2:
        return
    by = _rows(report)
    fig, ax = plt.subplots(figsize=(7, 5))
    for contender in report["config"]["contenders"]:
        xs, ys = [], []
        for n, key in points:
            r = by.get((key, contender))
            if r and r["seconds"]:
                xs.append(n)
                ys.append(r["seconds"]["median"])
        if xs:
            ax.plot(xs, ys, marker="o", label=contender)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images (3 layers of 16 KiB each)")
    ax.set_ylabel("seconds, end to end (Python limits: cache stage)")
    ax.set_title("How cost grows with the number of images (lan)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
