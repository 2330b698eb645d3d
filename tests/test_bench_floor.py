"""The benchmark's C floor (benchmarks/floor.py): the bearer token reaches curl only
through a 0600 config file that is gone afterwards, never through its arguments; and the
verified floor rejects a file whose sha256 is not its digest."""

from __future__ import annotations

import hashlib
import importlib.util
import stat
import subprocess
import sys
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
_spec = importlib.util.spec_from_file_location("bench_floor", _BENCH / "floor.py")
assert _spec and _spec.loader
floor = importlib.util.module_from_spec(_spec)
sys.modules["bench_floor"] = floor
_spec.loader.exec_module(floor)

TOKEN = "secret-token-value"


def _spec_for(tmp_path: Path, data: bytes, digest: str | None = None) -> dict:
    digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    return {
        "out": str(tmp_path / "out"),
        "registry": "127.0.0.1:1",
        "max_parallel": 4,
        "transfers": [{"repository": "a/b", "digest": digest, "size": len(data)}],
    }


def _fake_curl(tmp_path: Path, data: bytes, seen: dict):
    """Stands in for curl: records its arguments and config, writes the one output."""

    def run(argv, **kwargs):
        config = Path(argv[argv.index("-K") + 1])
        seen["argv"] = argv
        seen["mode"] = stat.S_IMODE(config.stat().st_mode)
        seen["config"] = config.read_text()
        seen["path"] = config
        output = next(
            line.split("=", 1)[1].strip().strip('"')
            for line in seen["config"].splitlines()
            if line.startswith("output")
        )
        Path(output).write_bytes(data)
        return subprocess.CompletedProcess(argv, 0, "", "")

    return run


def test_the_token_goes_to_curl_in_a_private_config_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(floor, "bearer_token", lambda *a: TOKEN)
    seen: dict = {}
    monkeypatch.setattr(floor.subprocess, "run", _fake_curl(tmp_path, b"blob", seen))
    result = floor.run_curl(_spec_for(tmp_path, b"blob"), verified=True)
    assert result["bytes_fetched"] == 4
    assert not any(TOKEN in arg for arg in seen["argv"])
    assert f'header = "Authorization: Bearer {TOKEN}"' in seen["config"]
    assert "parallel-max = 4" in seen["config"]
    assert seen["mode"] == 0o600
    assert not seen["path"].exists()


def test_the_verified_floor_rejects_a_digest_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(floor, "bearer_token", lambda *a: None)
    monkeypatch.setattr(floor.subprocess, "run", _fake_curl(tmp_path, b"changed", {}))
    spec = _spec_for(tmp_path, b"blob")
    with pytest.raises(RuntimeError, match="digest mismatch"):
        floor.run_curl(spec, verified=True)
    floor.run_curl(spec, verified=False)  # the plain floor does not look
