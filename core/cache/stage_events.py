"""What the cache stage says besides its progress: before the run, the info line naming
what is saved (every reference as a debug line); after it, the mirrors left out of the
run, where the blob cache put its blobs, and which endpoint served each image."""

from __future__ import annotations

from collections.abc import Sequence

from sealpy.core.events import Event, EventKind
from sealpy.core.model import CachedImage, CacheOptions, CacheReport

LISTED_INLINE = 3


def before(names: Sequence[str]) -> list[Event]:
    """A few references by name, many by count (each is a debug event, shown with
    ``--debug``)."""
    if len(names) <= LISTED_INLINE:
        line = f"saving images {', '.join(names)}"
    else:
        line = f"saving {len(names)} images (--debug lists them)"
    return [Event(EventKind.INFO, line), *(Event(EventKind.DEBUG, f"saving {n}") for n in names)]


def after_run(options: CacheOptions) -> list[Event]:
    """The blob cache in use and how its blobs went into each place (hard link, reflink,
    copy), or that it is off; a warning for each mirror left out of the run."""
    events: list[Event] = []
    if options.signature_policy is not None:
        events.append(Event(EventKind.DEBUG, f"signature {options.signature_policy.describe()}"))
    cache = options.blob_cache
    if cache is None:
        events.append(Event(EventKind.DEBUG, "blob cache: off"))
    else:
        lines = cache.placement_summary()
        events.append(
            Event(EventKind.DEBUG, f"blob cache {cache.root}" + ("" if lines else ": not used"))
        )
        events += [Event(EventKind.DEBUG, f"blob cache into {line}") for line in lines]
    for failure in options.transport.endpoints.failures():
        message = f"mirror {failure.label} left out of this run: {failure.reason}"
        events.append(Event(EventKind.WARNING, message))
    return events


def served(report: CacheReport) -> list[Event]:
    return [
        Event(EventKind.DEBUG, f"{image.source}: served by {_served(image)}")
        for image in report.images
    ]


def _served(image: CachedImage) -> str:
    if image.served_by:
        return image.served_by
    return "(not known: an archive, or a copy whose source the strategy does not report)"
