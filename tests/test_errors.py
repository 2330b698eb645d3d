"""The error hierarchy: what an error is about is a field, not text to match or rebuild;
one failures helper gives every strategy the same one-line CacheError."""

from __future__ import annotations

import pytest

from sealpy.core import errors
from sealpy.core.cache.failures import cache_error
from sealpy.core.errors import (
    CacheError,
    ConflictError,
    ContentError,
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    RegistryError,
    SealpyError,
)
from sealpy.core.model import CacheReport


def test_an_error_with_a_subject_renders_subject_then_message():
    error = NotFoundError("manifest unknown", subject="example.com/app:1")
    assert str(error) == "example.com/app:1: manifest unknown"
    assert error.message == "manifest unknown"
    assert str(NotFoundError("manifest unknown")) == "manifest unknown"


def test_about_keeps_class_attributes_and_cause():
    report = CacheReport("proxy")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise CacheError("writing failed", report) from exc
    except CacheError as caught:
        original = caught
    named = original.about("example.com/app:1")
    assert type(named) is CacheError
    assert named.report is report
    assert isinstance(named.cause, OSError) and named.cause is original.cause
    assert named.__traceback__ is original.__traceback__
    assert str(named) == "example.com/app:1: writing failed"
    assert str(original) == "writing failed", "the original is left as it was (it may be shared)"


def test_about_the_same_subject_is_the_error_itself():
    error = DigestMismatchError("content has digest sha256:00", subject="blob sha256:ab")
    assert error.about("blob sha256:ab") is error


def test_about_another_subject_keeps_the_first_in_the_message():
    error = DigestMismatchError("content has digest sha256:00", subject="blob sha256:ab")
    named = error.about("example.com/app:1")
    assert str(named) == "example.com/app:1: blob sha256:ab: content has digest sha256:00"
    assert named.subject == "example.com/app:1"


def test_content_errors_are_a_branch_of_their_own():
    assert issubclass(DigestMismatchError, ContentError)
    assert issubclass(ManifestError, ContentError)
    assert not issubclass(ContentError, RegistryError)


def test_classes_nothing_raises_are_gone():
    assert not hasattr(errors, "NotImplementedYetError")


def test_one_failure_is_its_own_line():
    report = CacheReport("proxy")
    error = cache_error([NotFoundError("not found").about("example.com/a:1")], 3, report)
    assert isinstance(error, CacheError) and error.report is report
    assert str(error) == "example.com/a:1: not found"


def test_several_failures_name_a_conflict_once():
    conflict = ConflictError("a:1, b:1 would all be stored as app:1 with different content")
    failures = [
        conflict,
        SealpyError("not found").about("c:1"),
        conflict,
    ]
    error = cache_error(failures, 5, CacheReport("sync"))
    assert str(error) == (
        "3 of 5 images could not be cached: "
        "a:1, b:1 would all be stored as app:1 with different content; c:1: not found"
    )


def test_no_failures_is_no_error():
    with pytest.raises(ValueError):
        cache_error([], 1, CacheReport("proxy"))


def test_amended_adds_to_the_message_and_keeps_class_subject_and_cause():
    cause = OSError("connection reset")
    error = NotFoundError("not found", subject="manifest 1")
    error.__cause__ = cause
    amended = error.amended(" (also tried mirror m.example: 503)")
    assert type(amended) is NotFoundError and amended.cause is cause
    assert str(amended) == "manifest 1: not found (also tried mirror m.example: 503)"
    assert str(error) == "manifest 1: not found"


def test_a_missing_path_is_told_by_its_class_not_its_text(tmp_path):
    """tar.txt's archive check asks whether the path is missing by the error's class: a
    file whose name reads like the old message text is not taken for a missing one."""
    from sealpy.core.build.context import Tree
    from sealpy.core.errors import BuildError, PathNotFoundError

    with pytest.raises(PathNotFoundError, match="nope: no such file or directory"):
        Tree(tmp_path).resolve("nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PathNotFoundError, match="a path component is not a directory"):
        Tree(tmp_path).resolve("file/below")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(BuildError) as failure:
        Tree(tmp_path).resolve("loop")
    assert not isinstance(failure.value, PathNotFoundError)


# --- the engine and the strategies name each image through about() ---------------------


def test_the_engine_names_each_image_of_a_shared_failing_blob_keeping_class_and_cause(
    tmp_path,
):
    from sealpy.core.reference import Platform
    from sealpy.core.testing.memory import MemoryRepository
    from sealpy.core.transport.copy import CopyJob, copy_images

    reset = ConnectionResetError(104, "Connection reset by peer")

    class Breaking(MemoryRepository):
        def fetch_blob(self, descriptor, writer, on_bytes=None):
            if descriptor.digest == shared:
                raise NotFoundError("blob unknown", subject=f"blob {shared}") from reset
            super().fetch_blob(descriptor, writer, on_bytes)

    source = Breaking("src")
    destination = MemoryRepository("dst", scratch=tmp_path)
    images = [source.add_image([b"shared base", f"app {i}".encode()]) for i in range(2)]
    shared = images[0].layers[0].digest
    jobs = [
        CopyJob(f"app{i}", source, m.digest, destination, tag=f"v{i}") for i, m in enumerate(images)
    ]
    outcome = copy_images(jobs, platforms=[Platform.parse("linux/amd64")], max_parallel=2)
    assert sorted(f.label for f in outcome.failures) == ["app0", "app1"]
    for failure in outcome.failures:
        assert type(failure.error) is NotFoundError
        assert failure.error.cause is reset
        assert str(failure.error) == f"{failure.label}: blob {shared}: blob unknown"


def test_a_sync_conflict_is_one_error_listed_for_each_of_its_images():
    from sealpy.core.model import CacheOptions
    from sealpy.core.reference import ImageReference
    from sealpy.strategies.sync.planning import CopyPlan, without_conflicts

    def plan(host: str, expected: str) -> CopyPlan:
        ref = ImageReference.parse(f"{host}/app:1")
        return CopyPlan(
            label=str(ref),
            ref=ref,
            source=f"docker://{ref}",
            repository="app",
            tag="1",
            copy_reference="1",
            all_platforms=False,
            platform=None,
            expected=expected,
        )

    plans, failures = without_conflicts(
        [plan("a.example", "sha256:" + "a" * 64), plan("b.example", "sha256:" + "b" * 64)],
        [],
        CacheOptions(),
    )
    assert plans == []
    assert len(failures) == 2 and failures[0] is failures[1]
    assert isinstance(failures[0], ConflictError)
    message = str(cache_error(failures, 2, CacheReport("sync")))
    assert message.count("would all be stored as app:1 with different content") == 1


def test_a_blob_that_cannot_be_written_fails_its_image_with_the_os_error_as_cause(tmp_path):
    from sealpy.core.reference import Platform
    from sealpy.core.testing.memory import MemoryRepository
    from sealpy.core.transport.copy import CopyJob, copy_images

    full = OSError(28, "No space left on device")

    class Full(MemoryRepository):
        def receive_blob(self, descriptor, source, on_bytes=None):
            raise full

    source = MemoryRepository("src")
    image = source.add_image([b"layer"])
    job = CopyJob("app", source, image.digest, Full("dst", scratch=tmp_path), tag="1")
    outcome = copy_images([job], platforms=[Platform.parse("linux/amd64")])
    (failure,) = outcome.failures
    assert failure.error.cause is full
    assert str(failure.error).startswith("app: blob sha256:")
    assert str(failure.error).endswith(": writing failed: No space left on device")
