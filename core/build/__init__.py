"""Image builders: turn a build context and its build file into an image in the local store.

A builder is registered by name through the ``sealpy_register_builders`` hook, like a
caching strategy; ``native`` (no container engine: FROM/COPY/ADD/ENV/LABEL/... without
RUN) is the default, ``buildah`` an optional backend for build files that need RUN.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sealpy.core.cache.strategy import Availability, NamedRegistry
from sealpy.core.model import BuildContext
from sealpy.core.reference import Platform

if TYPE_CHECKING:
    from sealpy.core.auth import CredentialProvider
    from sealpy.core.hosts import HostPolicy, TransportOptions
    from sealpy.core.registries import RegistriesConfig
    from sealpy.core.transport.blobcache import BlobCache


def _stderr_warning(message: str) -> None:
    print(f"warn {message}", file=sys.stderr)


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OutputOptions:
    """The ``buildah bud`` flags that change what a build writes, with buildah 1.28's
    meaning: ``format`` (``oci`` or ``docker``), ``annotations`` (manifest annotations),
    ``env`` and ``labels`` (set after the build file's own ENV and LABEL, the later
    winning), ``squash`` (the image's layers, base included, as one layer)."""

    format: str = "oci"
    annotations: Pairs = ()
    env: Pairs = ()
    labels: Pairs = ()
    squash: bool = False


@dataclass(frozen=True)
class BuildRequest:
    """Everything a builder needs. ``store_root`` is the local OCI image store;
    ``cached_images`` says images were cached into ``<context>/registry`` (the builder
    warns when no instruction copies that directory); ``echo`` prints a progress line and
    ``warn`` a warning (stderr by default); ``source_date_epoch`` fixes every timestamp
    (``None``: 0, the Unix epoch). ``target`` stops at that stage (``--target``);
    ``ignorefile`` replaces the context's ``.containerignore``/``.dockerignore``.
    ``credentials``, ``tls_verify`` and ``registries`` make the host policy a builder's
    own pulls follow (:attr:`hosts`, :attr:`transport`), through ``blob_cache`` (the
    machine-wide blob cache; None: off)."""

    context: BuildContext
    store_root: Path
    tags: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    credentials: CredentialProvider | None = None
    tls_verify: bool = True
    registries: RegistriesConfig | None = None
    blob_cache: BlobCache | None = None
    cached_images: bool = False
    echo: Callable[[str], None] = print
    warn: Callable[[str], None] = field(default=_stderr_warning)
    source_date_epoch: int | None = None
    output: OutputOptions = field(default_factory=OutputOptions)
    target: str | None = None
    ignorefile: Path | None = None

    @cached_property
    def hosts(self) -> HostPolicy:
        """How the builder reaches registries (FROM, ``COPY --from``)."""
        from sealpy.core.auth import AnonymousCredentials
        from sealpy.core.hosts import HostPolicy
        from sealpy.core.registries import RegistriesConfig

        return HostPolicy(
            registries=self.registries or RegistriesConfig(),
            tls_verify=self.tls_verify,
            credentials=self.credentials or AnonymousCredentials(),
        )

    @cached_property
    def transport(self) -> TransportOptions:
        """The transport options of the builder's own pulls: :attr:`hosts`, the default
        retry policy."""
        from sealpy.core.hosts import TransportOptions

        return TransportOptions(hosts=self.hosts, blob_cache=self.blob_cache)


@dataclass(frozen=True)
class BuildResult:
    """The built image: its manifest (or index) digest, the names it got in the store, and
    the image ID of each platform's image (its config digest, which buildah prints)."""

    digest: str
    names: tuple[str, ...]
    image_ids: tuple[str, ...] = ()


class ImageBuilder(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    def availability(cls) -> Availability:
        return Availability.ok()

    def check(
        self,
        context: BuildContext,
        *,
        target: str | None = None,
        ignorefile: Path | None = None,
        registry_pending: bool = False,
    ) -> None:
        """Cheap checks of the build files, run before the cache stage so that a wrong build
        file fails before a single image is downloaded; raises a :class:`BuildError
        <sealpy.core.errors.BuildError>`. ``target`` and ``ignorefile`` are ``--target``
        and ``--ignorefile``; ``registry_pending``: the cache stage is about to create
        ``registry/`` in the context, so sources under it do not exist yet.

        The default only parses the build files (unknown or malformed instructions), the
        ground every builder shares; a builder that knows its rules checks more."""
        from sealpy.core.build.parser import parse_files

        parse_files(context.build_files, root=context.root)

    @abstractmethod
    def build(self, request: BuildRequest) -> BuildResult:
        """Build ``request.context`` into the store at ``request.store_root``."""


class BuilderRegistry(NamedRegistry[ImageBuilder]):
    kind = "builder"
    plural = "builders"
