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


def test_an_upload_a_little_larger_than_its_blob_is_not_stopped(tmp_path: Path) -> None:
    """skopeo may compress a layer again on its way (a 64 MiB random layer arrived 2,291
    bytes larger): only an upload far past the image's largest blob is stopped."""
    from sealpy.core.image.media import Descriptor
    from sealpy.core.transport.distribution import DistributionLayout
    from sealpy.strategies.sync.bounds import SLACK, UploadBound

    layout = DistributionLayout(tmp_path / "registry")
    bound = UploadBound(layout, [], client=None)  # type: ignore[arg-type]
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "a" * 64, 64 << 20)
    bound.plans["app"] = []
    bound._blobs["app"] = [(None, blob)]  # type: ignore[list-item]  # sizes looked up already
    data = tmp_path / "registry/docker/registry/v2/repositories/app/_uploads/u1/data"
    data.parent.mkdir(parents=True)
    with open(data, "wb") as f:
        f.truncate(blob.size + 2291)
    assert bound.check(["app"]) is None
    with open(data, "wb") as f:
        f.truncate(2 * blob.size + SLACK + 1)
    message = bound.check(["app"])
    assert message is not None and blob.digest in message
