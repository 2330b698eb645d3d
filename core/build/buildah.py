"""The buildah builder: for build files the native builder refuses (RUN, SHELL, ...).

Available only when ``buildah`` is on PATH (``apt-get install buildah``). Each build runs
``buildah --storage-driver vfs bud --isolation chroot`` — the combination that works as
root on hosts without a container runtime's cgroup set-up — with a private storage
directory, so nothing outlives the build, and ``--timestamp`` from ``SOURCE_DATE_EPOCH``
(default 0), so the result is as reproducible as buildah allows. The image is pushed into
a private OCI layout and copied from there into the store with sealpy's own copy engine,
which takes the store's lock: buildah writing ``index.json`` itself could lose a
concurrent command's tag. With ``--format docker`` it is pushed as Docker schema2 into a
``dir:`` directory instead (an OCI layout cannot hold a Docker manifest) and its files are
moved into the store as they are.

File modes come from disk through buildah: unlike the native builder
(:mod:`sealpy.core.build.blobfiles`), registry blobs hard-linked read-only from the blob
cache enter the layer as 0444, so the digest depends on the cache (documented; fixing it
would mean copying ``registry/`` or changing the cache's shared files).

buildah's own flags that sealpy accepts (``--label``, ``--annotation``, ``--env``,
``--target``, ``--format``, ``--squash``, ``--ignorefile``, ``--timestamp``) are handed
to ``buildah bud`` unchanged; the image ID (``--iidfile``, ``-q``) is read from the
result, the same config digest buildah reports.

Credentials for the registries the FROM lines name are handed over in a temporary
authfile (mode 0600, removed with the build's directory); loopback registries are marked
insecure in a temporary ``registries.conf``, as the native builder allows plain HTTP
there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sealpy.core.build import BuildRequest, BuildResult, ImageBuilder
from sealpy.core.build.output import write_index
from sealpy.core.build.parser import Instruction, parse_files
from sealpy.core.cache.strategy import Availability
from sealpy.core.containers import (
    RegistryTable,
    credential_entries,
    write_authfile,
    write_registries_conf,
)
from sealpy.core.errors import BuildError, SealpyError
from sealpy.core.hookspecs import hookimpl
from sealpy.core.hosts import is_loopback
from sealpy.core.image.compose import platform_index
from sealpy.core.image.media import Manifest, load_json
from sealpy.core.model import BUILD_FILE_NAMES, BuildContext
from sealpy.core.process import child_environment, popen_tied, stop
from sealpy.core.reference import ImageReference, Platform
from sealpy.core.store.layout import Store, store_name
from sealpy.core.transport.blobio import stream_into
from sealpy.core.transport.copy import CopyJob, copy_images
from sealpy.core.transport.ocilayout import OCILayout

BUILDAH = "buildah"
INTERNAL = "localhost/sealpy-buildah-"
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


class BuildahBuilder(ImageBuilder):
    name = "buildah"
    description = "buildah bud (vfs storage, chroot isolation): every instruction, RUN included"

    @classmethod
    def availability(cls) -> Availability:
        if shutil.which(BUILDAH) is None:
            return Availability.missing("buildah not found; apt-get install buildah")
        return Availability.ok()

    def check(
        self,
        context: BuildContext,
        *,
        target: str | None = None,
        ignorefile: Path | None = None,
        registry_pending: bool = False,
    ) -> None:
        """Only the parse: buildah has its own rules for sources (symlinks, ignore files)
        and for ``--target``, and reports them itself when it runs."""
        parse_files(context.build_files, root=context.root)

    def build(self, request: BuildRequest) -> BuildResult:
        store = Store(request.store_root)
        names = tuple(store_name(t) for t in request.tags)
        instructions = parse_files(request.context.build_files, root=request.context.root)
        if request.cached_images and not _may_copy_registry(instructions):
            request.warn(
                "images were cached into registry/ but no COPY or ADD puts registry into "
                "the image; add `COPY registry ./registry` to the build file"
            )
        with (
            store.writing(),
            tempfile.TemporaryDirectory(prefix="buildah-", dir=store.temp_dir()) as tmp,
        ):
            work = Path(tmp)
            build_file = self._build_file(request, work)
            base = [
                BUILDAH,
                "--storage-driver",
                "vfs",
                "--root",
                str(work / "root"),
                "--runroot",
                str(work / "runroot"),
            ]
            env = self._registry_settings(request, instructions, work)
            platforms = request.platforms or (None,)
            out = OCILayout(work / "out")
            docker = request.output.format == "docker"
            manifests: list[Manifest] = []
            for number, platform in enumerate(platforms):
                local = f"{INTERNAL}{number}:latest"
                self._run(
                    [
                        *base,
                        "bud",
                        *self._bud_flags(request, platform, work),
                        "-f",
                        str(build_file),
                        "-t",
                        local,
                        str(request.context.root),
                    ],
                    request,
                    env,
                    what="bud",
                )
                destination = (
                    f"dir:{work / f'dir-{number}'}" if docker else f"oci:{out.root}:{number}"
                )
                self._run(
                    [
                        *base,
                        "push",
                        "--quiet",
                        "--format",
                        "v2s2" if docker else "oci",
                        local,
                        destination,
                    ],
                    request,
                    env,
                    what="push",
                    echo=False,
                )
                if docker:
                    manifests.append(_import_dir(work / f"dir-{number}", store))
                else:
                    manifests.append(out.get_manifest_by_digest(out.resolve(str(number)).digest))
            if docker:
                top = manifests[0]
                if len(manifests) > 1:
                    top = write_index(store, manifests, request.output)
            else:
                top = manifests[0] if len(manifests) == 1 else self._index(out, manifests)
                self._copy(out, top, store)
            for name in names:
                store.name(name, top)
            if not names:
                store.add_untagged(top)
        return BuildResult(top.digest, names, tuple(m.config.digest for m in manifests))

    def _build_file(self, request: BuildRequest, work: Path) -> Path:
        files = request.context.build_files
        if len(files) == 1:
            return files[0]
        request.warn(
            f"several build files ({', '.join(p.name for p in files)}) are read as one, "
            f"in the order {', '.join(BUILD_FILE_NAMES)}; use -f to choose one"
        )
        joined = work / "Containerfile"
        joined.write_text("\n".join(p.read_text() for p in files))
        return joined

    def _bud_flags(self, request: BuildRequest, platform: Platform | None, work: Path) -> list[str]:
        flags = ["--isolation", "chroot", "--timestamp", str(request.source_date_epoch or 0)]
        if platform is not None:
            flags += ["--platform", str(platform)]
        if not request.hosts.tls_verify:
            flags.append("--tls-verify=false")
        if (work / "auth.json").exists():
            flags += ["--authfile", str(work / "auth.json")]
        for key, value in request.build_args.items():
            flags += ["--build-arg", f"{key}={value}"]
        output = request.output
        flags += ["--format", output.format]
        for flag, pairs in (
            ("--label", output.labels),
            ("--annotation", output.annotations),
            ("--env", output.env),
        ):
            for key, value in pairs:
                flags += [flag, f"{key}={value}"]
        if output.squash:
            flags.append("--squash")
        if request.target is not None:
            flags += ["--target", request.target]
        if request.ignorefile is not None:
            flags += ["--ignorefile", str(Path(request.ignorefile).absolute())]
        return flags

    def _registry_settings(
        self, request: BuildRequest, instructions: list[Instruction], work: Path
    ) -> dict[str, str]:
        """An authfile with the credentials for the FROM registries (one host-wide entry
        per registry: see :func:`credential_entries`), and a registries.conf marking
        loopback ones insecure (plain HTTP)."""
        registries: dict[str, ImageReference] = {}
        for ins in instructions:
            if ins.keyword != "FROM" or "$" in ins.args:
                continue
            image = ins.args.split()[0]
            if image.lower() == "scratch":
                continue
            try:
                ref = ImageReference.parse(image)
            except SealpyError:
                continue  # a stage name
            registries.setdefault(ref.registry, ref)
        scopes = [(host, ref.repository) for host, ref in registries.items()]
        entries = credential_entries(request.hosts, scopes, per_repository=False)
        if entries:
            write_authfile(work / "auth.json", entries)
        # The host policy reaches buildah as --tls-verify=false (above) and the user's own
        # registries.conf, which buildah reads itself; what containers/image lacks is the
        # policy's loopback rule, so loopback hosts are listed insecure here.
        insecure = [h for h in registries if is_loopback(h)]
        if not insecure:
            return {}
        conf = work / "registries.conf"
        write_registries_conf(conf, [RegistryTable(host, insecure=True) for host in insecure])
        return {"CONTAINERS_REGISTRIES_CONF": str(conf)}

    def _run(
        self,
        command: list[str],
        request: BuildRequest,
        env: dict[str, str],
        *,
        what: str,
        echo: bool = True,
    ) -> None:
        process = popen_tied(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # No sealpy secret in buildah's environment; with our authfile on its command
            # line, the user's REGISTRY_AUTH_FILE (already read by sealpy) goes too.
            env={**child_environment(own_authfile="--authfile" in command), **env},
            text=True,
        )
        last: list[str] = []
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip("\n")
                last = [*last[-4:], line]
                # buildah's own tag and image ID name the private build, not the result
                internal = line.startswith(f"Successfully tagged {INTERNAL}") or _IMAGE_ID.match(
                    line
                )
                if line.startswith("COMMIT ") and INTERNAL in line:
                    line = " ".join(["COMMIT", *request.tags[:1]])
                if echo and not internal:
                    request.echo(line)
            process.wait()
        finally:
            stop(process)
        if process.returncode != 0:
            detail = next((line for line in reversed(last) if line.strip()), "no output")
            raise BuildError(f"buildah {what} failed (exit {process.returncode}): {detail}")

    def _index(self, out: OCILayout, manifests: list[Manifest]) -> Manifest:
        index = platform_index(manifests, lambda m: load_json(out.read_blob(m.config.digest)))
        out.put_manifest(index)
        return index

    def _copy(self, out: OCILayout, top: Manifest, store: Store) -> None:
        job = CopyJob(
            label="buildah result",
            source=out.image(""),
            reference=top.digest,
            destination=store.layout.image(""),
            tag=None,
        )
        outcome = copy_images([job], platforms=(), all_platforms=True)
        if outcome.failures:
            raise outcome.failures[0].error


def _import_dir(directory: Path, store: Store) -> Manifest:
    """A ``dir:`` image (``manifest.json`` and blobs named by hex digest) into the store as
    it is, each blob verified against its digest on the way."""
    manifest = Manifest.parse((directory / "manifest.json").read_bytes(), what="buildah's push")
    for blob in manifest.blobs:
        if store.layout.has_blob(blob.digest):
            continue
        with (
            open(directory / blob.digest.removeprefix("sha256:"), "rb") as source,
            store.layout.blob_writer(blob) as writer,
        ):
            stream_into(source, writer)
            writer.commit()
    store.layout.put_manifest(manifest)
    return manifest


@hookimpl
def sealpy_register_builders(registry) -> None:
    registry.register(BuildahBuilder)


def _may_copy_registry(instructions: list[Instruction]) -> bool:
    """Whether a COPY or ADD from the context names ``registry`` (or a directory holding
    it, such as ``.``). Read from the build file as written: buildah expands variables
    and globs itself, so anything with ``$`` or a wildcard counts as a maybe."""
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD") or ins.flag("from") is not None:
            continue
        words = list(ins.exec_form) if ins.exec_form is not None else ins.args.split()
        for source in words[:-1]:
            path = source.strip("\"'").removeprefix("./").rstrip("/")
            if path in ("", ".", "registry") or path.startswith("registry/"):
                return True
            if any(c in path for c in "$*?["):
                return True
    return False
