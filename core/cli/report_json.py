"""The cache stage's report as one JSON object: what ``build --json`` and
``registry save --json`` print on stdout (a stable interface; README "sealpy registry save
--json", pinned by ``tests/test_report_json.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sealpy.core.errors import CacheError
    from sealpy.core.model import CachedImage, CacheReport


def report_json(
    report: CacheReport | None,
    strategy: str,
    *,
    errors: tuple[str, ...] = (),
    image: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object: ``report`` ``None`` (nothing was cached) gives no images and zero
    totals; ``image`` is the built image (``build`` only)."""
    images = report.images if report is not None else ()
    data: dict[str, Any] = {
        "strategy": report.strategy if report is not None else strategy,
        "images": [_image(i) for i in images],
        "totals": {
            "images": len(images),
            "blobs_fetched": sum(i.blobs_fetched for i in images),
            "blobs_reused": sum(i.blobs_reused for i in images),
            "bytes_fetched": sum(i.bytes_fetched for i in images),
            "requests": report.requests if report is not None else None,
            "attachments": sum(i.attachments for i in images),
        },
        "seconds": round(report.seconds, 3) if report is not None else 0.0,
        "errors": list(errors),
    }
    if image is not None:
        data["image"] = image
    return data


def _image(image: CachedImage) -> dict[str, Any]:
    return {
        "reference": image.source,
        "stored_as": image.stored_as,
        "digest": image.digest,
        "platforms": list(image.platforms),
        "blobs_fetched": image.blobs_fetched,
        "blobs_reused": image.blobs_reused,
        "bytes_fetched": image.bytes_fetched,
        "seconds": round(image.seconds, 3),
        "served_by": image.served_by,
        "attachments": image.attachments,
    }


def print_report(data: dict[str, Any]) -> None:
    """The object on stdout, alone."""
    typer.echo(json.dumps(data, indent=2))


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json/--no-json",
        help="Print the run's report as one JSON object on stdout (no progress bars).",
    ),
]


def failed_report(exc: CacheError, strategy: str) -> dict[str, Any]:
    """The object for a cache stage that failed: what was cached, and the error."""
    from sealpy.core.model import CacheReport

    report = exc.report if isinstance(exc.report, CacheReport) else None
    return report_json(report, strategy, errors=(str(exc),))
