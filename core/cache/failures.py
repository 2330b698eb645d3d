"""The one-line error a caching strategy raises when some of its images failed.

Every strategy (the built-in ``proxy`` and ``sync``, and plugins) reports failures the
same way: one image's error as it is, or "N of M images could not be cached: …" naming
each cause once. The errors name their image through :meth:`SealpyError.about`; a
conflict is one error shared by every image it involves, so it is said once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealpy.core.errors import CacheError, SealpyError
from sealpy.core.model import CacheReport


def cache_error(failures: Sequence[SealpyError], total: int, report: CacheReport) -> CacheError:
    """The :class:`CacheError` for a run of ``total`` images of which ``failures`` failed
    (one error per failed image, not empty); ``report`` (what was cached) rides along."""
    if not failures:
        raise ValueError("cache_error needs at least one failure")
    if len(failures) == 1:
        return CacheError(str(failures[0]), report)
    causes = "; ".join(dict.fromkeys(str(error) for error in failures))
    return CacheError(f"{len(failures)} of {total} images could not be cached: {causes}", report)
