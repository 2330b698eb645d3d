"""Helpers shared by the build, store and merge tests (not a test module)."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from sealpy.core import pipeline
from sealpy.core.build import BuildResult
from sealpy.core.cli import main
from sealpy.core.model import ImageSet
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import RegistryServer


@dataclass
class Built:
    result: BuildResult
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def build(context: Path, store: Path, **kwargs) -> Built:
    """Build through the pipeline (as the CLI does), collecting output and warnings."""
    lines: list[str] = []
    warnings: list[str] = []
    kwargs.setdefault("tags", ["test"])
    scanned = pipeline.scan(context)
    result = pipeline.build_scanned(
        scanned, store_root=store, echo=lines.append, warn=warnings.append, **kwargs
    )
    return Built(result, lines, warnings)


def read_json(store: Path, digest: str) -> dict:
    return json.loads((store / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


def manifest_of(store: Path, name: str) -> dict:
    index = json.loads((store / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
            return read_json(store, entry["digest"])
    raise KeyError(name)


def config_of(store: Path, manifest: dict) -> dict:
    return read_json(store, manifest["config"]["digest"])


def blob(store: Path, digest: str) -> Path:
    return store / "blobs" / "sha256" / digest.split(":")[1]


def members(store: Path, digest: str) -> list[tarfile.TarInfo]:
    with tarfile.open(blob(store, digest), "r:gz") as tar:
        return tar.getmembers()


def member_names(store: Path, digest: str) -> list[str]:
    return [m.name for m in members(store, digest)]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``sealpy ARGS`` in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def store_snapshot(store: Path) -> dict[str, bytes]:
    """Every file under the store with its content (to show nothing changed)."""
    if not store.exists():
        return {}
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name not in (".lock", ".gc.lock")
    }


def cached_context(
    tmp: Path,
    factory: ImageFactory,
    registry: RegistryServer,
    *,
    seed: str = "app",
    repository: str = "library/app",
    tag: str = "1.0",
) -> tuple[Path, str, str]:
    """A build context whose registry/ holds one factory image, cached by the proxy
    strategy from ``registry``; returns (context, image reference, manifest digest)."""
    image = factory.image(seed, [4096, 2048])
    ref = factory.push(image, registry.host, repository, tag)
    context = tmp / "ctx"
    (context / "manifests").mkdir(parents=True)
    (context / "manifests" / "app.yaml").write_text(f"image: {ref}\n")
    (context / "Kubefile").write_text(
        "FROM scratch\n"
        "LABEL sealos.io.type=application sealos.io.version=v1beta1\n"
        "COPY registry ./registry\n"
        "COPY manifests ./manifests\n"
        'CMD ["kubectl apply -f manifests/"]\n'
    )
    pipeline.cache(ImageSet.of([str(ref)]), context / "registry", strategy="proxy")
    return context, str(ref), image.digest
