"""pytest fixtures for real registries and test images.

Enable in a ``conftest.py``::

    pytest_plugins = ["sealpy.core.testing.pytest_plugin"]

Registries are real ``docker-registry`` processes on 127.0.0.1; a missing binary fails
the test with the Debian package to install (never a silent skip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sealpy.core.auth import Credential
from sealpy.core.testing.images import ImageFactory
from sealpy.core.testing.registry import MissingTool, RegistryServer, TokenServer, require_tool

TEST_USER = "alice"
TEST_PASSWORD = "pa55-w0rd-for-tests"  # a fixture secret: tests grep output for it


@pytest.fixture(autouse=True)
def own_blob_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets an empty machine-wide blob cache of its own (``SEALPY_CACHE_DIR``,
    also for the ``sealpy`` processes it starts): a blob cached by an earlier test would
    let a later one pass without touching its registry — or its injected faults."""
    root = tmp_path_factory.mktemp("blob-cache")
    monkeypatch.setenv("SEALPY_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def image_factory(tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    """A deterministic image factory whose layout lives for the whole session."""
    return ImageFactory(tmp_path_factory.mktemp("images"))


def _require(name: str) -> None:
    try:
        require_tool(name)
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry without authentication (session-wide)."""
    _require("docker-registry")
    base = tmp_path_factory.mktemp("plain-registry")
    with RegistryServer(base / "root", workdir=base / "work") as server:
        yield server


@pytest.fixture(scope="session")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with htpasswd (Basic) auth; ``.credential`` logs in."""
    _require("docker-registry")
    base = tmp_path_factory.mktemp("htpasswd-registry")
    auth = RegistryServer.htpasswd(base / "work", {TEST_USER: TEST_PASSWORD})
    credential = Credential(TEST_USER, TEST_PASSWORD)
    with RegistryServer(
        base / "root", workdir=base / "work", auth=auth, credential=credential
    ) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with token auth; ``.token_server`` is the :class:`TokenServer`."""
    _require("docker-registry")
    base = tmp_path_factory.mktemp("token-registry")
    with TokenServer(base / "token", {TEST_USER: TEST_PASSWORD}) as tokens:
        server = RegistryServer(
            base / "root",
            workdir=base / "work",
            auth=tokens.auth_config(),
            credential=Credential(TEST_USER, TEST_PASSWORD),
        )
        server.token_server = tokens  # type: ignore[attr-defined]
        with server:
            yield server


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start extra registries (for example a stock one serving a written directory);
    each is stopped at the end of the test."""
    _require("docker-registry")
    started: list[RegistryServer] = []

    def start(root: Path, **kwargs) -> RegistryServer:
        server = RegistryServer(
            root, workdir=tmp_path / f"registry-{len(started)}", **kwargs
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def conformance_catalog(
    image_factory: ImageFactory,
    plain_registry: RegistryServer,
    htpasswd_registry: RegistryServer,
    token_registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The conformance suite's images, pushed once per session (see conformance.py)."""
    from sealpy.core.testing.conformance import build_catalog

    return build_catalog(
        image_factory,
        plain_registry,
        htpasswd_registry,
        token_registry,
        tmp_path_factory.mktemp("archives"),
    )
