"""Run real buildah next to ``sealpy build`` and read both results (not a test module).

buildah runs as the reference implementation (Sealos builds with it): ``buildah bud
--storage-driver vfs --isolation chroot`` with a private ``--root``/``--runroot``, the
result pushed to a ``dir:`` directory (which keeps the manifest type, OCI or Docker, and
compresses layers as a push to a registry does) and read from its JSON files.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from _build_support import cli, read_json

from sealpy.core.testing.registry import require_tool

IDENTITY_LABEL = "io.buildah.version"  # buildah's own label; sealpy does not add it


@dataclass
class Image:
    """A built image as a registry would get it."""

    manifest: dict
    config: dict
    blobs: Path  # directory holding the blobs by hex digest

    @property
    def body(self) -> dict:
        return self.config.get("config") or {}

    def labels(self) -> dict:
        """Labels without buildah's identity label."""
        return {k: v for k, v in (self.body.get("Labels") or {}).items() if k != IDENTITY_LABEL}

    def media_types(self) -> dict:
        return {
            "manifest": self.manifest.get("mediaType"),
            "config": self.manifest["config"]["mediaType"],
            "layers": sorted({layer["mediaType"] for layer in self.manifest["layers"]}),
        }

    def files(self) -> dict[str, int]:
        """Regular files of all layers (path → mtime), later layers winning."""
        out: dict[str, int] = {}
        for layer in self.manifest["layers"]:
            with tarfile.open(self.blobs / layer["digest"].split(":")[1]) as tar:
                for member in tar:
                    if member.isfile():
                        out[member.name.lstrip("./")] = int(member.mtime)
        return out


class Buildah:
    """buildah with private storage under ``root``."""

    def __init__(self, root: Path) -> None:
        require_tool("buildah")
        self.root = root
        self.base = [
            "buildah",
            "--storage-driver",
            "vfs",
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
        ]
        self._pushed = 0

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, env=env, check=False
        )

    def bud(
        self, context: Path, kubefile: Path, *flags: str, tag: str = "t", env=None
    ) -> subprocess.CompletedProcess:
        return self.run(
            "bud",
            "--isolation",
            "chroot",
            "-q",
            "-f",
            str(kubefile),
            "-t",
            tag,
            *flags,
            str(context),
            env=env,
        )

    def build(self, context: Path, kubefile: Path, *flags: str, tag: str = "t", env=None) -> Image:
        done = self.bud(context, kubefile, *flags, tag=tag, env=env)
        assert done.returncode == 0, done.stderr
        return self.image(tag)

    def image(self, tag: str) -> Image:
        self._pushed += 1
        target = self.root / f"pushed-{self._pushed}"
        done = self.run("push", "--quiet", tag, f"dir:{target}")
        assert done.returncode == 0, done.stderr
        manifest = json.loads((target / "manifest.json").read_text())
        config = json.loads((target / manifest["config"]["digest"].split(":")[1]).read_text())
        return Image(manifest, config, target)


def sealpy_build(
    capsys, context: Path, kubefile: Path, store: Path, *flags: str, tag: str = "t"
) -> tuple[int, str, str]:
    return cli(
        capsys,
        "build",
        "--no-save-image",
        "-q",
        "-f",
        str(kubefile),
        "-t",
        tag,
        *flags,
        str(context),
        "--root",
        str(store),
    )


def sealpy_image(store: Path, tag: str = "t") -> Image:
    """The image named ``localhost/<tag>:latest`` in a sealpy store."""
    index = json.loads((store / "index.json").read_text())
    name = f"localhost/{tag}:latest"
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
            manifest = read_json(store, entry["digest"])
            return Image(manifest, read_json(store, manifest["config"]["digest"]), blobs(store))
    raise KeyError(name)


def blobs(store: Path) -> Path:
    return store / "blobs" / "sha256"
