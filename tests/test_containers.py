"""The one writer of containers configuration files (registries.conf, auth.json) that
skopeo (``sync``) and buildah are given."""

from __future__ import annotations

import base64
import json
import tomllib

import pytest

from sealpy.core.auth import Credential
from sealpy.core.containers import (
    MirrorTable,
    RegistryTable,
    authfile_document,
    credential_entries,
    registries_conf,
)
from sealpy.core.errors import UsageError

# Each needs escaping in a TOML basic string: quote, backslash, a control character,
# DEL, and a character beyond the BMP (which JSON, the old writer here, gives as a
# surrogate pair, invalid in TOML).
AWKWARD = ['reg"istry.example', "back\\slash.example/ns", "tab\there", "del\x7fhost", "h🐳st"]


@pytest.mark.parametrize("value", AWKWARD)
def test_registries_conf_strings_read_back_as_written(value):
    tables = [
        RegistryTable(
            f"{value}/location",
            insecure=False,
            prefix=value,
            blocked=False,
            mirrors=(MirrorTable(f"mirror.example/{value}", insecure=True),),
        ),
        RegistryTable(value, insecure=True),
    ]
    parsed = tomllib.loads(registries_conf(tables))
    first, second = parsed["registry"]
    assert first["prefix"] == value and first["location"] == f"{value}/location"
    assert first["mirror"] == [
        {"location": f"mirror.example/{value}", "insecure": True, "pull-from-mirror": "all"}
    ]
    assert second == {"location": value, "insecure": True}
    assert registries_conf(tables).isascii()


def test_a_value_with_no_toml_form_is_a_usage_error():
    with pytest.raises(UsageError, match="not valid Unicode"):
        registries_conf([RegistryTable("bad\udcffhost", insecure=True)])


class _Provider:
    """Answers per (host, repository) from a table; records what was asked."""

    def __init__(self, answers: dict[tuple[str, str], Credential]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def credentials_for(self, registry: str, repository: str = "") -> Credential | None:
        self.asked.append((registry, repository))
        return self.answers.get((registry, repository))


def test_auth_entries_are_keyed_per_repository_or_per_host_as_asked():
    alpha, beta = Credential("a", "pa"), Credential("b", "pb")
    provider = _Provider({("r.io", "ns/alpha"): alpha, ("r.io", "ns/beta"): beta})
    scopes = [("r.io", "ns/alpha"), ("r.io", "ns/beta"), ("r.io", "ns/alpha"), ("q.io", "x")]
    assert credential_entries(provider, scopes, per_repository=True) == {
        "r.io/ns/alpha": alpha,
        "r.io/ns/beta": beta,
    }
    # A host key takes the first repository's credential; the others are not asked.
    provider.asked.clear()
    assert credential_entries(provider, scopes, per_repository=False) == {"r.io": alpha}
    assert provider.asked == [("r.io", "ns/alpha"), ("q.io", "x")]


def test_authfile_document_holds_user_and_password_under_the_key():
    document = json.loads(authfile_document({"r.io/ns/app": Credential("u", "p:w")}))
    assert document == {"auths": {"r.io/ns/app": {"auth": base64.b64encode(b"u:p:w").decode()}}}
