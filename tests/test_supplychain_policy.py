"""containers-policy.json evaluation: scopes, requirements, signed identities, fail-closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealpy.core.reference import ImageReference
from sealpy.core.supplychain.cosign import SignatureCandidate
from sealpy.core.supplychain.errors import PolicyFileError, PolicyRejectedError
from sealpy.core.supplychain.policy import Policy, Scope
from sealpy.core.testing.signing import TestSigner, signature_candidates

DIGEST = "sha256:" + "5e" * 32
OTHER = "sha256:" + "0d" * 32


@pytest.fixture(scope="module")
def signer() -> TestSigner:
    return TestSigner()


@pytest.fixture(scope="module")
def stranger() -> TestSigner:
    return TestSigner()


def policy(default: list | None = None, **docker: list) -> Policy:
    document: dict = {"default": default or [{"type": "reject"}]}
    if docker:
        document["transports"] = {"docker": {k.replace("__", "/"): v for k, v in docker.items()}}
    return Policy.from_bytes(json.dumps(document).encode())


def signed_by(signer: TestSigner, identity: dict | None = None) -> list:
    requirement: dict = {"type": "sigstoreSigned", "keyData": signer.key_data}
    if identity is not None:
        requirement["signedIdentity"] = identity
    return [requirement]


def scoped(requirements: list, scope: str = "") -> Policy:
    return Policy.from_bytes(
        json.dumps(
            {"default": [{"type": "reject"}], "transports": {"docker": {scope: requirements}}}
        ).encode()
    )


def sigs(
    signer: TestSigner, identity: str, digest: str = DIGEST, **kwargs
) -> list[SignatureCandidate]:
    return signature_candidates(signer.sign(digest, identity, **kwargs), "sig")


NGINX = ImageReference.parse("docker.io/library/nginx:1.25")


# --- sigstoreSigned ------------------------------------------------------------------------


def test_good_signature_is_accepted(signer: TestSigner) -> None:
    verdict = scoped(signed_by(signer)).evaluate(
        NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25")
    )
    assert verdict.accepted and verdict.reasons == ()
    assert verdict.check() is verdict
    assert verdict.scope == Scope("docker", "")


def test_signature_identity_is_normalised(signer: TestSigner) -> None:
    # cosign writes Docker Hub as index.docker.io; "nginx:1.25" is the same image.
    rule = scoped(signed_by(signer))
    assert rule.evaluate(NGINX, DIGEST, sigs(signer, "index.docker.io/library/nginx:1.25")).accepted
    assert rule.evaluate(NGINX, DIGEST, sigs(signer, "nginx:1.25")).accepted


def test_tampered_payload_is_rejected(signer: TestSigner) -> None:
    verdict = scoped(signed_by(signer)).evaluate(
        NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25", tamper="payload")
    )
    assert not verdict.accepted
    assert verdict.reasons == (
        "no signature was accepted (1 tried: sig layer 0: not signed by the policy's key)",
    )


def test_corrupted_signature_and_missing_annotation_are_rejected(signer: TestSigner) -> None:
    rule = scoped(signed_by(signer))
    corrupt = rule.evaluate(
        NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25", tamper="signature")
    )
    assert "not signed by the policy's key" in corrupt.reasons[0]
    missing = rule.evaluate(
        NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25", tamper="annotation")
    )
    assert "no signature annotation" in missing.reasons[0]
    garbage = [SignatureCandidate(b"{}", "not base64!", "x")]
    assert "not base64" in rule.evaluate(NGINX, DIGEST, garbage).reasons[0]


def test_wrong_key_is_rejected(signer: TestSigner, stranger: TestSigner) -> None:
    verdict = scoped(signed_by(signer)).evaluate(
        NGINX, DIGEST, sigs(stranger, "docker.io/library/nginx:1.25")
    )
    assert not verdict.accepted and "not signed by the policy's key" in verdict.reasons[0]


def test_signature_for_another_digest_is_rejected(signer: TestSigner) -> None:
    verdict = scoped(signed_by(signer)).evaluate(
        NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25", digest=OTHER)
    )
    assert not verdict.accepted
    assert f"signs {OTHER}, not this manifest" in verdict.reasons[0]


def test_payload_is_parsed_only_after_the_signature_verified(signer: TestSigner) -> None:
    bad = SignatureCandidate(
        b"not json",
        signer.sign(DIGEST, "x.io/a").layers()[0].annotations["dev.cosignproject.cosign/signature"],
        "sig",
    )
    assert (
        "not signed by the policy's key"
        in scoped(signed_by(signer)).evaluate(NGINX, DIGEST, [bad]).reasons[0]
    )
    from sealpy.core.supplychain.sign import sign_payload

    signed_garbage = SignatureCandidate(
        b"not json", sign_payload(b"not json", signer.private_key), "sig"
    )
    reason = scoped(signed_by(signer)).evaluate(NGINX, DIGEST, [signed_garbage]).reasons[0]
    assert "malformed payload" in reason


def test_raw_der_signature_is_accepted(signer: TestSigner) -> None:
    from sealpy.core.supplychain import keys
    from sealpy.core.supplychain.cosign import SimpleSigningPayload

    payload = SimpleSigningPayload("docker.io/library/nginx:1.25", DIGEST).to_bytes()
    candidate = SignatureCandidate(payload, keys.sign(signer.private_key, payload), "der")
    assert scoped(signed_by(signer)).evaluate(NGINX, DIGEST, [candidate]).accepted


def test_missing_signature_under_sigstore_signed(signer: TestSigner) -> None:
    verdict = scoped(signed_by(signer)).evaluate(NGINX, DIGEST, [])
    assert not verdict.accepted
    with pytest.raises(PolicyRejectedError) as caught:
        verdict.check()
    assert str(caught.value) == (
        "image docker.io/library/nginx:1.25 rejected by policy scope docker default: "
        "no signature found (a sigstoreSigned requirement needs one)"
    )
    assert caught.value.verdict is verdict


def test_unsigned_image_under_reject_default() -> None:
    verdict = policy().evaluate(NGINX, DIGEST, [])
    assert not verdict.accepted and verdict.scope == Scope(None)
    assert verdict.message.endswith(
        "rejected by policy scope default: the policy rejects every image in this scope"
    )


def test_one_good_signature_among_several_is_enough(
    signer: TestSigner, stranger: TestSigner
) -> None:
    candidates = (
        sigs(stranger, "docker.io/library/nginx:1.25")
        + sigs(signer, "docker.io/library/nginx:1.25", digest=OTHER)
        + sigs(signer, "docker.io/library/nginx:1.25")
    )
    assert scoped(signed_by(signer)).evaluate(NGINX, DIGEST, candidates).accepted


def test_every_failure_is_listed_when_none_is_good(
    signer: TestSigner, stranger: TestSigner
) -> None:
    candidates = sigs(stranger, "docker.io/library/nginx:1.25") + sigs(
        signer, "docker.io/library/other:1"
    )
    reason = scoped(signed_by(signer)).evaluate(NGINX, DIGEST, candidates).reasons[0]
    assert reason.startswith("no signature was accepted (2 tried: ")
    assert "not signed by the policy's key" in reason
    assert "wrong identity 'docker.io/library/other:1' (policy: matchRepoDigestOrExact)" in reason


def test_several_keys(signer: TestSigner, stranger: TestSigner, tmp_path: Path) -> None:
    paths = []
    for i, s in enumerate((stranger, signer)):
        path = tmp_path / f"k{i}.pub"
        path.write_bytes(s.public_key_pem)
        paths.append(str(path))
    by_paths = scoped([{"type": "sigstoreSigned", "keyPaths": paths}])
    by_datas = scoped(
        [{"type": "sigstoreSigned", "keyDatas": [stranger.key_data, signer.key_data]}]
    )
    by_path = scoped([{"type": "sigstoreSigned", "keyPath": paths[1]}])
    for rule in (by_paths, by_datas, by_path):
        assert rule.evaluate(NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25")).accepted
    other = TestSigner()
    assert (
        "policy's keys"
        in by_datas.evaluate(NGINX, DIGEST, sigs(other, "docker.io/library/nginx:1.25")).reasons[0]
    )


def test_reference_pinning_another_digest_is_rejected(signer: TestSigner) -> None:
    pinned = NGINX.with_digest(OTHER)
    verdict = policy([{"type": "insecureAcceptAnything"}]).evaluate(pinned, DIGEST, [])
    assert not verdict.accepted and "pins" in verdict.reasons[0]


# --- signed identities -----------------------------------------------------------------------

REPO = "docker.io/library/nginx"
BY_DIGEST = ImageReference.parse(f"{REPO}@{DIGEST}")


@pytest.mark.parametrize(
    ("identity", "image", "signed", "accepted"),
    [
        # matchRepoDigestOrExact (the default): tag exact; by digest the repository.
        (None, NGINX, f"{REPO}:1.25", True),
        (None, NGINX, f"{REPO}:1.26", False),
        (None, NGINX, REPO, False),  # cosign's repository-only identity
        (None, BY_DIGEST, f"{REPO}:anything", True),
        (None, BY_DIGEST, "docker.io/library/other:1", False),
        (None, BY_DIGEST, REPO, False),  # an identity without tag or digest never matches
        ({"type": "matchRepoDigestOrExact"}, NGINX, f"{REPO}:1.26", False),
        # matchExact
        ({"type": "matchExact"}, NGINX, f"{REPO}:1.25", True),
        ({"type": "matchExact"}, BY_DIGEST, f"{REPO}:1.25", False),
        ({"type": "matchExact"}, BY_DIGEST, f"{REPO}@{DIGEST}", True),
        ({"type": "matchExact"}, NGINX, REPO, False),
        # matchRepository: what cosign's signatures need
        ({"type": "matchRepository"}, NGINX, REPO, True),
        ({"type": "matchRepository"}, NGINX, f"{REPO}:other", True),
        ({"type": "matchRepository"}, NGINX, "docker.io/library/other", False),
        # exactReference
        (
            {"type": "exactReference", "dockerReference": "quay.io/up/nginx:1"},
            NGINX,
            "quay.io/up/nginx:1",
            True,
        ),
        (
            {"type": "exactReference", "dockerReference": "quay.io/up/nginx:1"},
            NGINX,
            f"{REPO}:1.25",
            False,
        ),
        # exactRepository
        (
            {"type": "exactRepository", "dockerRepository": "quay.io/up/nginx"},
            NGINX,
            "quay.io/up/nginx",
            True,
        ),
        ({"type": "exactRepository", "dockerRepository": "quay.io/up/nginx"}, NGINX, REPO, False),
        # remapIdentity: a mirror whose signatures name the upstream
        (
            {
                "type": "remapIdentity",
                "prefix": "docker.io/library",
                "signedPrefix": "quay.io/upstream",
            },
            NGINX,
            "quay.io/upstream/nginx:1.25",
            True,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "docker.io/library",
                "signedPrefix": "quay.io/upstream",
            },
            NGINX,
            f"{REPO}:1.25",
            False,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "docker.io/library",
                "signedPrefix": "quay.io/upstream",
            },
            NGINX,
            "quay.io/upstream/nginx:1.26",
            False,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "docker.io/library",
                "signedPrefix": "quay.io/upstream",
            },
            BY_DIGEST,
            "quay.io/upstream/nginx:whatever",
            True,
        ),
        # no match of the prefix ("docker.io/lib" is not a path prefix): no remapping
        (
            {
                "type": "remapIdentity",
                "prefix": "docker.io/lib",
                "signedPrefix": "quay.io/upstream",
            },
            NGINX,
            f"{REPO}:1.25",
            True,
        ),
    ],
)
def test_signed_identity_rules(
    signer: TestSigner, identity: dict | None, image: ImageReference, signed: str, accepted: bool
) -> None:
    verdict = scoped(signed_by(signer, identity)).evaluate(image, DIGEST, sigs(signer, signed))
    assert verdict.accepted is accepted, verdict.reasons


def test_identity_is_the_images_own_reference_not_a_mirror(signer: TestSigner) -> None:
    # Fetched through mirror.local, the image is still docker.io/library/nginx:1.25.
    signatures = sigs(signer, "mirror.local/library/nginx:1.25")
    assert not scoped(signed_by(signer)).evaluate(NGINX, DIGEST, signatures).accepted


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (
            {"type": "exactReference", "dockerReference": "quay.io/up/nginx"},
            "needs a tag or digest",
        ),
        ({"type": "exactReference"}, "needs 'dockerReference'"),
        ({"type": "exactRepository", "dockerRepository": "Not Valid"}, "is not a repository"),
        (
            {"type": "remapIdentity", "prefix": "docker.io/x:tag", "signedPrefix": "q.io"},
            "not valid",
        ),
        ({"type": "remapIdentity", "prefix": "nginx/x", "signedPrefix": "q.io"}, "not valid"),
        ({"type": "remapIdentity", "prefix": "q.io"}, "needs 'signedPrefix'"),
        ("matchExact", "must be an object"),
    ],
)
def test_malformed_identities_are_policy_errors(
    signer: TestSigner, identity: object, message: str
) -> None:
    requirement = {"type": "sigstoreSigned", "keyData": signer.key_data, "signedIdentity": identity}
    with pytest.raises(PolicyFileError, match=message):
        scoped([requirement])


# --- scopes ----------------------------------------------------------------------------------


def test_most_specific_scope_wins() -> None:
    accept, reject = [{"type": "insecureAcceptAnything"}], [{"type": "reject"}]
    scopes = {
        "": reject,
        "*.io": accept,
        "*.example.io": reject,
        "reg.example.io:5000": accept,
        "reg.example.io:5000/team": reject,
        "reg.example.io:5000/team/app": accept,
        "reg.example.io:5000/team/app:1": reject,
    }
    rules = Policy.from_bytes(
        json.dumps({"default": accept, "transports": {"docker": scopes}}).encode()
    )
    expectations = [
        ("reg.example.io:5000/team/app:1", '"reg.example.io:5000/team/app:1"'),
        ("reg.example.io:5000/team/app:2", '"reg.example.io:5000/team/app"'),
        ("reg.example.io:5000/team/other:1", '"reg.example.io:5000/team"'),
        ("reg.example.io:5000/solo:1", '"reg.example.io:5000"'),
        ("other.example.io/x:1", '"*.example.io"'),
        ("other.example.io:5000/x:1", '"*.example.io"'),  # wildcards match without the port
        ("quay.io/x:1", '"*.io"'),
        ("localhost:5000/x:1", "docker default"),
    ]
    for text, scope in expectations:
        found, _ = rules.requirements_for(ImageReference.parse(text))
        assert str(found).endswith(scope), (text, str(found))
    # Only the most specific scope applies: the accepting host scope does not help.
    assert not rules.evaluate(ImageReference.parse("reg.example.io:5000/team/x:1"), DIGEST).accepted
    assert rules.evaluate(ImageReference.parse("reg.example.io:5000/solo:1"), DIGEST).accepted


def test_digest_scope_and_global_default() -> None:
    accept = [{"type": "insecureAcceptAnything"}]
    rules = policy(**{f"docker.io__library__nginx@{DIGEST}": accept})
    assert rules.evaluate(BY_DIGEST, DIGEST).accepted
    assert rules.requirements_for(NGINX)[0] == Scope(None)
    # A reference with tag and digest is looked up by tag, then by digest.
    assert rules.evaluate(NGINX.with_digest(DIGEST), DIGEST).accepted
    # Docker Hub's short names are expanded before lookup; no tag means latest.
    latest = policy(**{"docker.io__library__busybox:latest": accept})
    assert latest.evaluate(ImageReference.parse("busybox", default_tag=False), DIGEST).accepted


def test_all_requirements_of_a_scope_must_hold(signer: TestSigner) -> None:
    both = scoped([{"type": "insecureAcceptAnything"}, *signed_by(signer)])
    assert not both.evaluate(NGINX, DIGEST, []).accepted
    # Every failing requirement is reported, not only the first.
    twice = scoped([{"type": "reject"}, *signed_by(signer)]).evaluate(NGINX, DIGEST, [])
    assert len(twice.reasons) == 2 and "no signature found" in twice.reasons[1]
    assert both.evaluate(NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25")).accepted


# --- fail-closed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ({"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}, "GPG simple signing"),
        (
            {"type": "signedBaseLayer", "baseLayerIdentity": {"type": "exactRepository"}},
            "signedBaseLayer",
        ),
        (
            {
                "type": "sigstoreSigned",
                "fulcio": {"caPath": "/ca", "oidcIssuer": "i", "subjectEmail": "e"},
            },
            "Fulcio",
        ),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/ca"}}, "X.509"),
        ({"type": "sigstoreSigned", "keyPath": "/k.pub", "rekorPublicKeyPath": "/r.pub"}, "Rekor"),
        ({"type": "sigstoreSigned", "keyPath": "/k.pub", "rekorPublicKeyDatas": ["x"]}, "Rekor"),
        ({"type": "sigstoreSigned", "keyPath": "/k.pub", "newFeature": 1}, "field 'newFeature'"),
        (
            {
                "type": "sigstoreSigned",
                "keyPath": "/k.pub",
                "signedIdentity": {"type": "matchFuture"},
            },
            "matchFuture",
        ),
        (
            {
                "type": "sigstoreSigned",
                "keyPath": "/k.pub",
                "signedIdentity": {"type": "matchExact", "x": 1},
            },
            "field 'x' of matchExact",
        ),
        ({"type": "somethingNew"}, "requirement type 'somethingNew'"),
        ({"type": "insecureAcceptAnything", "but": "only if"}, "field 'but'"),
    ],
)
def test_unsupported_requirements_fail_closed(requirement: dict, message: str) -> None:
    rules = policy([{"type": "insecureAcceptAnything"}], **{"docker.io": [requirement]})
    unaffected = ImageReference.parse("quay.io/x:1")
    assert rules.evaluate(unaffected, DIGEST).accepted
    image = ImageReference.parse("docker.io/x/y:1")
    verdict = rules.evaluate(image, DIGEST)
    assert not verdict.accepted
    assert message in verdict.reasons[0]
    assert "sealpy does not implement" in verdict.reasons[0]
    assert any(message in p for p in rules.problems())


def test_unusable_key_fails_closed(tmp_path: Path, signer: TestSigner) -> None:
    rules = scoped([{"type": "sigstoreSigned", "keyPath": str(tmp_path / "absent.pub")}])
    verdict = rules.evaluate(NGINX, DIGEST, sigs(signer, "docker.io/library/nginx:1.25"))
    assert not verdict.accepted and "cannot read public key" in verdict.reasons[0]
    bad_data = scoped([{"type": "sigstoreSigned", "keyData": "@@"}])
    assert "keyData is not base64" in bad_data.evaluate(NGINX, DIGEST).reasons[0]


# --- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "'default' requirements are missing"),
        (b'{"default": []}', "non-empty list"),
        (b'{"default": [{}]}', "string 'type'"),
        (b'{"default": [{"type": 1}]}', "string 'type'"),
        (b'{"default": [{"type": "reject"}], "extra": 1}', "unknown top-level field 'extra'"),
        (b'{"default": [{"type": "reject"}], "transports": []}', "'transports' must be an object"),
        (b'{"default": [{"type": "reject"}], "transports": {"docker": []}}', "transports.docker"),
        (
            b'{"default": [{"type": "reject"}], "default": [{"type": "reject"}]}',
            "duplicate field 'default'",
        ),
        (b'{"default": [{"type": "sigstoreSigned"}]}', "exactly one of"),
        (
            b'{"default": [{"type": "sigstoreSigned", "keyPath": "a", "keyData": "b"}]}',
            "exactly one of",
        ),
        (b'{"default": [{"type": "sigstoreSigned", "keyPaths": []}]}', "non-empty list"),
        (b'{"default": [{"type": "sigstoreSigned", "keyPath": 3}]}', "non-empty string"),
    ],
)
def test_malformed_policy_files(tmp_path: Path, document: bytes, message: str) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(document)
    with pytest.raises(PolicyFileError, match=message) as caught:
        Policy.load(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_policy_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sealpy.core.supplychain.policy as module

    system = tmp_path / "etc" / "policy.json"
    monkeypatch.setattr(module, "SYSTEM_POLICY", system)
    home = tmp_path / "home"
    # Nothing anywhere: every image accepted, and --debug says so.
    none = Policy.load(home=home)
    assert none.path is None and none.evaluate(NGINX, DIGEST).accepted
    assert "every image accepted" in none.describe()
    system.parent.mkdir()
    system.write_text('{"default": [{"type": "reject"}]}')
    assert Policy.load(home=home).path == system
    user = home / ".config" / "containers" / "policy.json"
    user.parent.mkdir(parents=True)
    user.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    loaded = Policy.load(home=home)
    assert loaded.path == user and loaded.describe() == f"signature policy: {user}"
    explicit = tmp_path / "mine.json"
    explicit.write_text('{"default": [{"type": "reject"}]}')
    assert Policy.load(explicit, home=home).path == explicit
    with pytest.raises(PolicyFileError, match="cannot read signature policy"):
        Policy.load(tmp_path / "absent.json")


def test_other_transports_are_checked_but_not_used() -> None:
    document = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"atomic": {"": [{"type": "reject"}]}, "oci": {"": [{"type": "signedBy"}]}},
    }
    rules = Policy.from_bytes(json.dumps(document).encode())
    assert rules.evaluate(NGINX, DIGEST).accepted
    document["transports"]["oci"] = {"": []}
    with pytest.raises(PolicyFileError):
        Policy.from_bytes(json.dumps(document).encode())
