"""Attachments in a registry: read an existing one, push a new one — with sealpy's own
client and copy engine (the remote end :class:`RemotePushDestination`), so signatures
travel exactly as images do.

Used to append a signature to a ``.sig`` manifest already in the registry (cosign keeps
every signature of a digest in one manifest), by ``sealpy push --sign-by-…`` and by the
test kit's signer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sealpy.core.errors import NotFoundError
from sealpy.core.image.media import Descriptor
from sealpy.core.reference import ImageReference
from sealpy.core.supplychain.cosign import SignatureCandidate, candidates, signature_tag
from sealpy.core.supplychain.sign import AttachmentImage
from sealpy.core.transport.copy import ImageSource
from sealpy.core.transport.ocilayout import OCILayout
from sealpy.core.transport.remote import RegistryClient, RemotePushDestination


def read_attachment(source: ImageSource, tag: str) -> AttachmentImage | None:
    """The attachment image tagged ``tag`` in ``source`` (any image source of the copy
    engine: a remote repository, a registry directory, a layout), or ``None`` when there is
    none. Blobs are streamed through a scratch layout and verified; each is at most
    :data:`~sealpy.core.supplychain.cosign.MAX_PAYLOAD_BYTES`."""
    try:
        manifest = source.get_manifest(tag)
    except NotFoundError:
        return None
    with tempfile.TemporaryDirectory(prefix="sealpy-attachment-") as scratch:
        layout = OCILayout(Path(scratch))

        def read(descriptor: Descriptor) -> bytes:
            writer = layout.blob_writer(descriptor)
            try:
                source.fetch_blob(descriptor, writer)
                writer.commit()
            finally:
                writer.close()
            return layout.read_blob(descriptor.digest)

        return AttachmentImage.read(manifest, read)


def read_signatures(
    source: ImageSource, manifest_digest: str, label: str
) -> list[SignatureCandidate]:
    """The cosign signatures of ``manifest_digest`` in ``source`` (its
    ``sha256-<hex>.sig`` manifest), as candidates for
    :meth:`~sealpy.core.supplychain.policy.Policy.evaluate`; none when there is no such
    tag. ``label`` names the repository in messages."""
    tag = signature_tag(manifest_digest)
    image = read_attachment(source, tag)
    if image is None:
        return []
    return candidates(image.manifest, lambda d: image.blobs[d.digest], f"{label}:{tag}")


def fetch_attachment(
    client: RegistryClient, repository: ImageReference, tag: str
) -> AttachmentImage | None:
    """The attachment image tagged ``tag`` in ``repository``'s repository, or ``None``."""
    return read_attachment(client.repository(repository.with_tag(tag).with_digest(None)), tag)


def push_attachment(
    client: RegistryClient,
    repository: ImageReference,
    image: AttachmentImage,
    tag: str | None,
) -> ImageReference:
    """Push ``image`` into ``repository``'s repository (blobs, then the manifest, then
    ``tag`` if given) through the copy engine; returns the pushed reference by digest."""
    from sealpy.core.transport.copy import CopyJob, copy_images

    target = ImageReference(repository.registry, repository.repository, tag, None)
    with tempfile.TemporaryDirectory(prefix="sealpy-attachment-") as scratch:
        layout = OCILayout(Path(scratch))
        for data in image.blobs.values():
            layout.put_blob_bytes(data)
        layout.put_manifest(image.manifest)
        job = CopyJob(
            label=f"{target.name}@{image.digest}",
            source=layout.image(""),
            reference=image.digest,
            destination=RemotePushDestination(client.repository(target)),
            tag=tag,
        )
        outcome = copy_images([job], platforms=(), all_platforms=True, max_parallel=2)
    if outcome.failures:
        raise outcome.failures[0].error
    return target.with_tag(None).with_digest(image.digest)
