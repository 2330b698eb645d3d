"""Reading and starting image configs: the layer diff IDs, the history, the platform, and
the ``created`` timestamp the builders write.

Configs come from other tools and registries, so the readers accept what is missing or
``null`` (an empty list) instead of failing on it; whether the counts match the manifest
is the caller's check.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping


def diff_ids(config: Mapping) -> list[str]:
    """The uncompressed layer digests of ``rootfs.diff_ids`` (a new list)."""
    return list((config.get("rootfs") or {}).get("diff_ids") or [])


def history(config: Mapping) -> list[dict]:
    """The ``history`` entries (a new list)."""
    return list(config.get("history") or [])


def platform(config: Mapping) -> dict:
    """The platform an index entry gets for an image with this config: ``architecture``
    and ``os`` always (empty when the config lacks them), ``variant`` when set."""
    found = {"architecture": config.get("architecture", ""), "os": config.get("os", "")}
    if config.get("variant"):
        found["variant"] = config["variant"]
    return found


def timestamp(epoch: int) -> str:
    """RFC 3339, UTC, whole seconds (``created``): ``1970-01-01T00:00:00Z`` for epoch 0."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
