"""``sealpy inspect --images``: render the inventory of a cluster image's registry
(:mod:`sealpy.core.store.inventory`) as a table or as JSON."""

from __future__ import annotations

import json

import typer

from sealpy.core.reference import Platform


def show_images(store, name: str, platform: Platform | None, as_json: bool) -> None:
    """The images inside the stored cluster image ``name`` (for an index: its
    ``platform`` image, default this host's)."""
    from sealpy.core.store.inventory import cluster_images

    stored = store.get(name)
    manifest = store.manifest(stored)
    chosen = store.require_platform(stored, platform) if manifest.is_index or platform else manifest
    entries = cluster_images(store, [layer.digest for layer in chosen.layers])
    if as_json:
        document = {
            "image": stored.name or stored.digest,
            "digest": manifest.digest,
            "manifest": chosen.digest,
            "images": [e.to_json() for e in entries],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    if not entries:
        typer.echo(f"no images in {stored.display} (no registry/docker/registry/v2 in its layers)")
        return
    rows = [("REPOSITORY", "TAG", "DIGEST", "PLATFORMS", "SIGNATURES")]
    for e in entries:
        platforms = ",".join(p.platform + ("" if p.present else "(absent)") for p in e.platforms)
        rows.append((e.repository, e.tag, e.digest, platforms or "-", str(len(e.signatures))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
