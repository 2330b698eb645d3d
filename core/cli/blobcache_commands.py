"""``sealpy cache info`` and ``sealpy cache prune``: the machine-wide blob cache."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from sealpy.core.cli.options import CacheDirOpt
from sealpy.core.errors import UsageError

SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``20G``, ``512M``, ``1.5GiB``, ``1000`` (bytes); binary units."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not found:
        raise UsageError(f"--max-size {text!r}: give a size such as 20G, 512M or 1000000")
    return int(float(found[1]) * SIZE_UNITS[found[2].lower()])


def parse_age(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w``."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text, re.IGNORECASE)
    if not found:
        raise UsageError(f"--older-than {text!r}: give an age such as 7d, 12h or 30m")
    return float(found[1]) * AGE_UNITS[found[2].lower()]


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def _cache(cache_dir: str | None):
    from sealpy.core.transport.blobcache import open_blob_cache

    cache = open_blob_cache(cache_dir)
    if cache is None:
        raise UsageError("the blob cache is turned off (--cache-dir none / SEALPY_CACHE_DIR)")
    return cache


def cache_info(
    cache_dir: CacheDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print JSON.")] = False,
) -> None:
    """Where the machine-wide blob cache is, how many blobs it holds and their size."""
    info = _cache(cache_dir).info()
    if as_json:
        data = {
            "location": str(info.root),
            "blobs": info.blobs,
            "bytes": info.bytes,
            "partial_bytes": info.partial_bytes,
        }
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"location: {info.root}")
    typer.echo(f"blobs:    {info.blobs}")
    typer.echo(f"size:     {human(info.bytes)} ({info.bytes} bytes)")
    if info.partial_bytes:
        typer.echo(f"partial:  {human(info.partial_bytes)} of unfinished downloads")


def cache_prune(
    cache_dir: CacheDirOpt = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size", help="Remove least recently used blobs down to this size (20G)."
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Remove blobs unused for this long (7d, 12h)."),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all/--no-all", help="Remove every blob (not those in use now).")
    ] = False,
) -> None:
    """Remove cached blobs, least recently used first; a blob another sealpy process is
    using right now stays."""
    if max_size is None and older_than is None and not everything:
        raise UsageError("say what to remove: --max-size SIZE, --older-than AGE or --all")
    result = _cache(cache_dir).prune(
        max_size=parse_size(max_size) if max_size is not None else None,
        older_than=parse_age(older_than) if older_than is not None else None,
        everything=everything,
    )
    busy = f"; {result.kept_busy} in use, kept" if result.kept_busy else ""
    typer.echo(
        f"Removed {result.removed} blobs ({human(result.freed)}){busy}; "
        f"{result.remaining} blobs ({human(result.remaining_bytes)}) remain"
    )
