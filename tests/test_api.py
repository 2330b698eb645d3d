"""The public API for plugin authors (sealpy.core.api): every name it promises exists and
is documented, and nothing a plugin needs is left behind a private name."""

from __future__ import annotations

import inspect

import sealpy.core.api as api

TYPE_ALIASES = {
    "DestinationFactory",
    "SourceFactory",
}  # documented by an attribute docstring in its module


def test_every_public_name_exists_once():
    assert len(api.__all__) == len(set(api.__all__))
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []
    assert all(not name.startswith("_") for name in api.__all__)


def test_every_public_name_is_documented():
    undocumented = []
    for name in api.__all__:
        if name in TYPE_ALIASES:
            continue
        doc = getattr(api, name).__doc__ or ""
        # A dataclass without a docstring gets its signature as one: that is not documentation.
        if not doc.strip() or doc.startswith(f"{name}("):
            undocumented.append(name)
    assert undocumented == []


def test_what_a_strategy_method_receives_and_returns_is_public():
    """The sealpy types in CacheStrategy.cache's signature can be named through the API."""
    public = {getattr(api, name) for name in api.__all__ if name not in TYPE_ALIASES}
    hints = inspect.get_annotations(api.CacheStrategy.cache, eval_str=True)
    assert len(hints) == 4  # images, registry_dir, options, return
    for value in hints.values():
        if isinstance(value, type) and value.__module__.startswith("sealpy"):
            assert value in public, value
