"""The package installs both ways: as a wheel and editable (setuptools package-dir mapping
``sealpy.core`` → ``core/``, ``sealpy.strategies`` → ``strategies/``)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import sealpy.core
import sealpy.strategies

ROOT = Path(__file__).parents[1]
PACKAGES = {p.parent for top in ("core", "strategies") for p in (ROOT / top).rglob("__init__.py")}


def test_editable_install_maps_the_source_directories():
    assert Path(sealpy.core.__file__).parent == ROOT / "core"
    assert Path(sealpy.strategies.__file__).parent == ROOT / "strategies"
    assert not (ROOT / "sealpy").exists(), "no generic top-level package directory"


def test_every_package_directory_is_declared():
    import tomllib

    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        "sealpy."
        + ("core" if p.is_relative_to(ROOT / "core") else "strategies")
        + "".join(
            "." + part
            for part in p.relative_to(
                ROOT / ("core" if p.is_relative_to(ROOT / "core") else "strategies")
            ).parts
        )
        for p in PACKAGES
    }
    assert on_disk == declared


_SKIPPED = shutil.ignore_patterns(
    ".venv", ".git", ".nox", "__pycache__", "*.egg-info", "registry", "results"
)


def _ignore_outputs(directory: str, names: list[str]) -> set[str]:
    """What a build or a run leaves behind; ``build/`` only at the top (``core/build`` is a
    package)."""
    skipped = set(_SKIPPED(directory, names))
    if Path(directory) == ROOT and "build" in names:
        skipped.add("build")
    return skipped


def test_wheel_holds_the_mapped_packages_and_entry_points(tmp_path):
    # Build from a copy: building writes build/ and egg-info next to the sources.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=_ignore_outputs,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("sealpy-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "sealpy/core/__init__.py",
        "sealpy/core/cli/__init__.py",
        "sealpy/core/transport/copy.py",
        "sealpy/core/testing/conformance.py",
        "sealpy/strategies/proxy.py",
        "sealpy/strategies/sync/__init__.py",
        "sealpy/strategies/sync/skopeo.py",
        "sealpy/core/py.typed",
    ):
        assert module in names, module
    assert not any(n.startswith(("core/", "strategies/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[sealpy]" in text and "proxy = sealpy.strategies.proxy" in text
    assert "sealpy = sealpy.core.cli:main" in text

    # Installed from the wheel (into a directory of its own), the modules import from there.
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import sealpy.core.reference as r, "
        "sealpy.strategies; print(r.__file__); print(r.ImageReference.parse('nginx'))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(target)], capture_output=True, text=True, check=True
    )
    file, ref = out.stdout.split()
    assert file.startswith(str(target)) and ref == "docker.io/library/nginx:latest"


def test_distribution_metadata():
    assert importlib.metadata.version("sealpy") == sealpy.core.__version__


def test_manifest_parsing_refuses_schema1_and_checks_digests():
    import json

    import pytest

    from sealpy.core.errors import DigestMismatchError, ManifestError
    from sealpy.core.image.media import Manifest

    schema1 = json.dumps({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []}).encode()
    with pytest.raises(ManifestError, match="schema1"):
        Manifest.parse(schema1, "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(ManifestError, match="schema1"):
        Manifest.parse(schema1)  # recognised by its shape too
    good = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1},
            "layers": [],
        }
    ).encode()
    with pytest.raises(DigestMismatchError):
        Manifest.parse(good, expected_digest="sha256:" + "b" * 64)
    evil = good.replace(b"sha256:" + b"a" * 64, b"sha256:../../etc/passwd")
    with pytest.raises(ManifestError, match="digest"):
        Manifest.parse(evil)  # a digest becomes a path: only sha256 hex is accepted
