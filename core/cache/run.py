"""One strategy run as every command makes it: the signature policy first (rejected
images are not cached at all; accepted ones are pinned to the digest verified), then the
strategy, then the report with the endpoint that served each image — one
:class:`CacheError` for the run naming every image that failed, whichever step failed it.
"""

from __future__ import annotations

import time
from pathlib import Path

from sealpy.core.cache.failures import cache_error
from sealpy.core.cache.policycheck import apply_policy
from sealpy.core.cache.strategy import CacheStrategy
from sealpy.core.errors import CacheError
from sealpy.core.model import CacheOptions, CacheReport, ImageSet
from sealpy.core.transport.distribution import DistributionLayout


def run_strategy(
    chosen: type[CacheStrategy], images: ImageSet, registry_dir: Path, options: CacheOptions
) -> CacheReport:
    """Cache ``images`` (not empty) into ``registry_dir`` (existing) with ``chosen``."""
    total = len(images)
    policy = apply_policy(images, options)
    images = policy.images
    # A run that was killed may have left half-written link files; they would make
    # `registry verify` fail although the re-run completes everything else.
    DistributionLayout(registry_dir).remove_abandoned_writes()
    started = time.monotonic()
    served = options.transport.endpoints  # which endpoint served each image
    try:
        if images.images or images.archives:
            report = chosen().cache(images, registry_dir, options)
        else:
            report = CacheReport(strategy=chosen.name)
    except CacheError as exc:
        if isinstance(exc.report, CacheReport):
            exc.report = served.fill(exc.report)
        if policy.rejected:  # one error for the whole run: the policy's and the strategy's
            report = exc.report if isinstance(exc.report, CacheReport) else CacheReport(chosen.name)
            raise cache_error([*policy.rejected, exc], total, report) from exc
        raise
    if not report.seconds:
        report = CacheReport(
            report.strategy, report.images, time.monotonic() - started, report.requests
        )
    if policy.rejected:
        raise cache_error(policy.rejected, total, served.fill(report))
    return served.fill(report)
