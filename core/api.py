"""sealpy's public API for plugin authors: import from here, not from private modules.

Everything a caching strategy needs — and everything the built-in strategies use — is
named here, documented where it is defined. A third-party strategy is usually::

    from sealpy.core import api

    class MyStrategy(api.CacheStrategy):
        name = "mine"
        description = "one line for `sealpy strategies`"

        def cache(self, images, registry_dir, options):
            return api.cache_with_engine(self.name, images, registry_dir, options)

    @api.hookimpl
    def sealpy_register_strategies(registry):
        registry.register(MyStrategy)

and changes one part: the destination each image is written to (a blob cache of its own:
``examples/sealpy-example-strategy``), the parallelism, or the whole ``cache`` method on
the ends and the engine below. The test kit (the conformance suite, the image factory,
registries and fault proxies for tests) is :mod:`sealpy.core.testing`.

Stability: the names in ``__all__`` are stable within a major version. A new keyword
argument with a default, a new optional protocol or a new field at the end of a value
type is not a break; removing or renaming a name, or changing what a method returns, is.
Anything imported from another sealpy module may change in any release.

The stages, and the words the reports use:

- the **engine** (:func:`copy_images`) copies :class:`CopyJob` s from an
  :class:`ImageSource` to an :class:`ImageDestination`: resolve each reference, fetch each
  blob the destinations lack once across all jobs, store children before indexes before
  tags, and find two sources for one ``repository:tag`` before anything lands;
- a blob is **fetched** when the run read it from the image's source (a registry, or a
  ``tar.txt`` archive in the context), and **reused** when the destination already had it,
  took it from a cache of its own (:attr:`Received.REUSED`), or another image of the same
  run fetched it;
- **ends**: a registry (:class:`RegistryClient`, from ``options.transport.client()``), a
  distribution directory (:class:`DistributionLayout`, what ``registry_dir`` holds), an
  OCI layout (:class:`OCILayout`), and archives (:class:`OCIArchiveSource`,
  :class:`DockerArchiveSource`, :class:`OCIArchiveDestination`,
  :class:`DockerArchiveDestination`);
- **options**: :class:`CacheOptions` (platforms, parallelism, progress) carries a
  :class:`TransportOptions` (the :class:`HostPolicy` — scheme, TLS verification, mirrors and
  credentials per host — and the retry policy); never read credentials elsewhere;
- the **blob cache** (:class:`BlobCache`, ``options.blob_cache``; ``None`` when the user
  turned it off) is the machine-wide store of verified blobs and manifests by digest;
  ``copy_images(..., blob_cache=)`` takes blobs from it and fetches through it, and a
  destination that is a :class:`BlobPlacer` gets them as hard links;
- **reports**: :class:`CacheReport` of :class:`CachedImage` s; failures become one
  :class:`CacheError` through :func:`cache_error`.
"""

from __future__ import annotations

from sealpy.core.cache.engine import (
    DestinationFactory,
    SourceFactory,
    cache_with_engine,
    layout_repository,
)
from sealpy.core.cache.failures import cache_error
from sealpy.core.cache.strategy import Availability, CacheStrategy, StrategyRegistry
from sealpy.core.errors import (
    AuthenticationError,
    CacheError,
    ConflictError,
    ContentError,
    ContextError,
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    PlatformNotFoundError,
    RegistryError,
    SealpyError,
)
from sealpy.core.hookspecs import hookimpl
from sealpy.core.hosts import HostPolicy, TransportOptions
from sealpy.core.image.compose import canonical_json, new_index, new_manifest
from sealpy.core.image.media import Descriptor, Manifest, sha256_digest
from sealpy.core.image.walk import walk
from sealpy.core.model import (
    ArchiveEntry,
    CachedImage,
    CacheOptions,
    CacheReport,
    ImageSet,
    RequiredImage,
    RetryPolicy,
)
from sealpy.core.progress import ProgressReporter, SilentProgress
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.transport.archive import DockerArchiveSource, OCIArchiveSource, archive_job
from sealpy.core.transport.archive_write import DockerArchiveDestination, OCIArchiveDestination
from sealpy.core.transport.blobcache import BlobCache, BlobPlacer, open_blob_cache
from sealpy.core.transport.blobio import BlobWriter
from sealpy.core.transport.copy import (
    BlobOpener,
    ConvertingSource,
    CopyFailure,
    CopyJob,
    CopyOutcome,
    CopyResult,
    ImageDestination,
    ImageSource,
    Received,
    SharedBlobStore,
    copy_images,
)
from sealpy.core.transport.distribution import DistributionLayout, DistributionRepository
from sealpy.core.transport.ocilayout import OCILayout
from sealpy.core.transport.placement import Placement
from sealpy.core.transport.remote import RegistryClient, RemoteRepository

__all__ = [  # noqa: RUF022 - grouped by stage, as the docstring reads
    # hooks and strategies
    "hookimpl",
    "CacheStrategy",
    "StrategyRegistry",
    "Availability",
    # what a strategy receives and returns
    "ImageSet",
    "RequiredImage",
    "ArchiveEntry",
    "ImageReference",
    "Platform",
    "CacheOptions",
    "TransportOptions",
    "HostPolicy",
    "RetryPolicy",
    "ProgressReporter",
    "SilentProgress",
    "CacheReport",
    "CachedImage",
    # caching with the engine
    "cache_with_engine",
    "DestinationFactory",
    "SourceFactory",
    "layout_repository",
    "archive_job",
    "cache_error",
    # the engine
    "copy_images",
    "CopyJob",
    "CopyResult",
    "CopyFailure",
    "CopyOutcome",
    "ImageSource",
    "ImageDestination",
    "Received",
    "SharedBlobStore",
    # the machine-wide blob cache (options.blob_cache)
    "BlobCache",
    "BlobPlacer",
    "Placement",
    "open_blob_cache",
    "BlobOpener",
    "ConvertingSource",
    "BlobWriter",
    # ends
    "RegistryClient",
    "RemoteRepository",
    "DistributionLayout",
    "DistributionRepository",
    "OCILayout",
    "OCIArchiveSource",
    "DockerArchiveSource",
    "OCIArchiveDestination",
    "DockerArchiveDestination",
    # images
    "Descriptor",
    "Manifest",
    "walk",
    "new_manifest",
    "new_index",
    "canonical_json",
    "sha256_digest",
    # errors
    "SealpyError",
    "CacheError",
    "ConflictError",
    "ContentError",
    "ContextError",
    "DigestMismatchError",
    "ManifestError",
    "NotFoundError",
    "PlatformNotFoundError",
    "RegistryError",
    "AuthenticationError",
]
