"""What signatures cost (issue 19): the small workload (50 images × 3 layers of 16 KiB)
with every image signed (a cosign ``.sig`` manifest each), cached by ``proxy`` with
signatures copied (the default) vs ``--copy-signatures=false``, and with a
``sigstoreSigned`` policy verifying every image on the way in. Whole ``sealpy registry
save`` processes, each with an empty blob cache, alternating, medians of ``--repeats``.
Target: copying signatures costs at most 15 % more time. Results:
benchmarks/results/signatures.{json,md}.

    .venv/bin/python benchmarks/bench_signatures.py [--repeats 5] [--images 50]
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

VARIANTS = {
    "signatures not copied": ["--copy-signatures=false"],
    "signatures copied (default)": [],
    "copied + policy verifying each": ["--signature-policy", "{policy}"],
}


def run(refs: list[str], scratch: Path, extra: list[str]) -> float:
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    cache = scratch / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    context = scratch / "ctx"
    (context / "images" / "shim").mkdir(parents=True, exist_ok=True)
    (context / "Kubefile").write_text("FROM scratch\n")
    (context / "images" / "shim" / "list").write_text("".join(r + "\n" for r in refs))
    args = [sys.executable, "-m", "sealpy.core", "registry", "save", "-q", "--registry-dir"]
    args += [str(out), "--cache-dir", str(cache), *extra, str(context)]
    os.sync()
    began = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-800:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--output", default=str(HERE / "results"))
    args = parser.parse_args()

    from sealpy.core.testing.images import ImageFactory
    from sealpy.core.testing.registry import RegistryServer
    from sealpy.core.testing.signing import TestSigner

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="sealpy-bench-sig-") as tmp:
        scratch = Path(tmp)
        factory = ImageFactory(scratch / "factory")
        with RegistryServer(scratch / "reg", workdir=scratch / "reg-work") as registry:
            items = {
                f"signed/app{i}": factory.image(f"bench/signed/{i}", [16384] * 3)
                for i in range(args.images)
            }
            push_many(factory, items, registry.host)
            signer = TestSigner()
            for repo, image in items.items():
                signer.push_signature(
                    registry.host, repo, image.digest, f"{registry.host}/{repo}", append=False
                )
            policy = scratch / "policy.json"
            policy.write_text(
                json.dumps(
                    {
                        "default": [{"type": "reject"}],
                        "transports": {
                            "docker": {
                                registry.host: [
                                    {
                                        "type": "sigstoreSigned",
                                        "keyData": signer.key_data,
                                        "signedIdentity": {"type": "matchRepository"},
                                    }
                                ]
                            }
                        },
                    }
                )
            )
            refs = [f"{registry.host}/{repo}:1" for repo in items]
            for repeat in range(args.repeats):
                names = list(VARIANTS)
                names = names[repeat % len(names) :] + names[: repeat % len(names)]
                for name in names:
                    extra = [a.replace("{policy}", str(policy)) for a in VARIANTS[name]]
                    times[name].append(run(refs, scratch, extra))
                    print(f"{name:32} {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    base = statistics.median(times["signatures not copied"])
    rows = {
        name: {
            "median_s": statistics.median(t),
            "runs": t,
            "vs_not_copied": statistics.median(t) / base,
        }
        for name, t in times.items()
    }
    copied = rows["signatures copied (default)"]["vs_not_copied"]
    lines = [
        f"Signatures benchmark, {time.strftime('%Y-%m-%d')}: {args.images} small images, each "
        f"signed; proxy, whole `sealpy registry save`, empty blob cache, medians of "
        f"{args.repeats}.",
        "",
        "| variant | median s | vs not copied |",
        "|---|---|---|",
        *(
            f"| {name} | {row['median_s']:.3f} | {row['vs_not_copied']:.2f}× |"
            for name, row in rows.items()
        ),
        "",
        f"- copying signatures: {(copied - 1) * 100:+.1f} % (target ≤ +15 %) — "
        f"{'met' if copied <= 1.15 else 'missed'}",
    ]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "signatures.json").write_text(
        json.dumps({"images": args.images, "rows": rows}, indent=2)
    )
    (out / "signatures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
