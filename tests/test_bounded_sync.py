"""A source whose blob body never ends: ``sync`` stops it, as ``proxy`` does, instead of
letting skopeo write without limit into the registry directory (issue 17, item 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealpy.core.testing.conformance import Catalog
from sealpy.core.testing.faultproxy import FaultPlan, FaultProxy


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("strategy", ["sync", "proxy"])
def test_a_blob_body_that_never_ends_is_an_error_naming_image_and_blob(
    strategy: str, conformance_catalog: Catalog, tmp_path: Path
) -> None:
    c = conformance_catalog
    layer = c.single.layers[1].descriptor  # a small layer, sent without end
    plan = FaultPlan(rate=1.0, kinds=("endless",), paths=f"/blobs/{layer.digest}$")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY registry ./registry\n")
    with FaultProxy(c.plain.host, plan) as proxy:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sealpy.core",
                "registry",
                "save",
                "--strategy",
                strategy,
                "--platform",
                "linux/amd64",
                "--images",
                f"{proxy.host}/library/single:1",
                str(context),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("SEALPY_")},
        )
        elapsed = time.monotonic() - started
        endless = proxy.fault_counts()["endless"]
    assert result.returncode != 0
    assert endless >= 1  # the hostile body was sent
    error = result.stderr.strip().splitlines()[-1]
    assert "library/single:1" in error and layer.digest in error, error
    assert elapsed < 60
    # What was received past the bound is gone, and little was received at all.
    assert tree_size(context / "registry") < 8 << 20
