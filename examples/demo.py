"""The bundled demo: build examples/demo-context offline, as `sealos build` would.

No internet is needed. The demo
1. starts a local registry (Debian's docker-registry) and seeds it with sample images —
   deterministic stand-ins made by sealpy's test-image factory — for every docker.io
   image the context needs (some multi-platform); the docker-archive tar.txt names,
   ``images/skopeo/pause.tar``, is committed (``make_archive`` reproduces it);
2. runs the real CLI: ``sealpy build -t demo/app:v1 --registry-mirror
   docker.io=http://127.0.0.1:PORT examples/demo-context``, so docker.io is served by
   the local mirror while every image keeps its name;
3. checks the result: ``sealpy registry verify``, ``sealpy images``, ``sealpy inspect``.

Usage: ``./dev.sh demo [--strategy proxy|sync] [extra sealpy build flags]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sealpy.core import pipeline
from sealpy.core.reference import ImageReference
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer

HERE = Path(__file__).parent
CONTEXT = HERE / "demo-context"
MULTI_PLATFORM = {"library/nginx", "library/busybox"}
ARCHIVE = CONTEXT / "images/skopeo/pause.tar"


def make_archive(factory: ImageFactory, path: Path = ARCHIVE) -> Path:
    """The context's ``images/skopeo/pause.tar``, as ``docker save`` writes it. It is
    committed (so ``sealpy scan examples/demo-context`` works on a fresh clone); the factory
    is deterministic, so this rewrites the same bytes (a test checks that)."""
    image = factory.image("demo/pause:3.9", [4 * 1024])
    return factory.docker_archive(image, path, "registry.k8s.io/pause:3.9")


def seed(factory: ImageFactory, mirror: RegistryServer, references: list[ImageReference]) -> None:
    base = factory.layer(256 * 1024, "demo/base-os", compressible=True)
    for ref in references:
        if ref.registry != "docker.io":
            continue
        seed_name = f"demo/{ref.repository}:{ref.tag}"
        if ref.repository in MULTI_PLATFORM:
            item = factory.multi_platform(
                seed_name, ["linux/amd64", "linux/arm64"], [base, 512 * 1024]
            )
        else:
            item = factory.image(seed_name, [base, 384 * 1024])
        factory.push(item, mirror.host, ref.repository, ref.tag)
        print(
            f"  seeded {ref} ({'multi-platform' if ref.repository in MULTI_PLATFORM else 'single'})"
        )


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        sys.exit(f"demo: `{' '.join(command[:3])} ...` failed with exit code {result.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default=None, help="caching strategy (default: sealpy's)")
    parser.add_argument("--keep", action="store_true", help="keep the image store and registry/")
    args, extra = parser.parse_known_args()
    sealpy = str(Path(sys.executable).with_name("sealpy"))

    with tempfile.TemporaryDirectory(prefix="sealpy-demo-") as tmp:
        work = Path(tmp)
        shutil.rmtree(CONTEXT / "registry", ignore_errors=True)
        factory = ImageFactory(work / "factory")
        if not ARCHIVE.exists():  # deleted by hand: the same bytes come back
            make_archive(factory)

        print("== what the context needs (sealpy scan)")
        run([sealpy, "scan", str(CONTEXT)])
        needed = list(pipeline.scan(CONTEXT).images.references)

        with RegistryServer(work / "mirror", workdir=work / "mirror-work") as mirror:
            print(f"== seeding a local docker.io mirror at {mirror.url}")
            seed(factory, mirror, needed)
            store = work / "store"
            build = [
                sealpy,
                "build",
                "-t",
                "demo/app:v1",
                "--root",
                str(store),
                "--registry-mirror",
                f"docker.io=http://{mirror.host}",
                "--max-pull-procs",
                "4",
            ]
            if args.strategy:
                build += ["--strategy", args.strategy]
            print("== building the cluster image")
            run([*build, *extra, str(CONTEXT)])

        print("== checking the registry directory inside the context")
        run([sealpy, "registry", "verify", str(CONTEXT / "registry")])
        print("== the image store")
        run([sealpy, "images", "--root", str(store)])
        run([sealpy, "inspect", "--root", str(store), "localhost/demo/app:v1"])
        if args.keep:
            kept = HERE / "demo-store"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(store, kept)
            print(f"kept the image store in {kept} and the registry in {CONTEXT / 'registry'}")
        else:
            shutil.rmtree(CONTEXT / "registry", ignore_errors=True)
    print("demo: done")


if __name__ == "__main__":
    main()
