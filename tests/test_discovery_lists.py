"""images/shim/ (reference lists) and images/skopeo/tar.txt (archives)."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery_kit import DIGEST, found, make_context, scan, warnings_at

from sealpy.core.discovery.shim import shim_line_value
from sealpy.core.errors import ContextError
from sealpy.core.model import Location
from sealpy.core.reference import ImageReference

# --- images/shim ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("nginx:1.25", "nginx:1.25"),
        ("   nginx:1.25   ", "nginx:1.25"),
        ('"nginx:1.25"', "nginx:1.25"),
        ("'nginx:1.25'", "nginx:1.25"),
        ("nginx:1.25 # pinned", "nginx:1.25"),
        ('"nginx:1.25"   # quoted and commented', "nginx:1.25"),
        ("nginx:1.25\t# tab before the comment", "nginx:1.25"),
        ("", None),
        ("   ", None),
        ("# a comment", None),
        ("   # indented comment", None),
    ],
)
def test_shim_line_value(line: str, value: str | None) -> None:
    assert shim_line_value(line) == value


def test_shim_files_recursive_with_comments_quotes_and_warnings(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "images/shim/base": """
                # the base images
                nginx:1.25

                "quay.io/prometheus/node-exporter:v1.7.0"   # exporter
                'redis:7'
                Bad Reference
            """,
            "images/shim/more/deep.txt": f"registry.k8s.io/pause:3.9@{DIGEST}\nnginx:1.25\n",
        },
    )
    result = scan(ctx)
    assert found(result) == {
        "docker.io/library/nginx:1.25": (
            Location("images/shim/base", 2),
            Location("images/shim/more/deep.txt", 2),
        ),
        "docker.io/library/redis:7": (Location("images/shim/base", 5),),
        "quay.io/prometheus/node-exporter:v1.7.0": (Location("images/shim/base", 4),),
        f"registry.k8s.io/pause:3.9@{DIGEST}": (Location("images/shim/more/deep.txt", 1),),
    }
    assert warnings_at(result) == [("images/shim/base", 6)]
    assert "Bad Reference" in result.images.warnings[0].message


# --- images/skopeo/tar.txt -------------------------------------------------------------------


def _archive_context(tmp_path: Path, tar_txt: str) -> Path:
    return make_context(
        tmp_path / "ctx",
        {
            "images/skopeo/app.tar": b"docker archive bytes",
            "images/skopeo/sub/tool.oci.tar": b"oci archive bytes",
            "images/skopeo/tar.txt": tar_txt,
        },
    )


def test_tar_txt_good_lines(tmp_path: Path) -> None:
    ctx = _archive_context(
        tmp_path,
        """
        # archives shipped with the app

        docker-archive:app.tar@my/app:1.0
          oci-archive:sub/tool.oci.tar@registry.example.com:5000/tools/tool
        """,
    )
    result = scan(ctx)
    assert result.images.images == ()
    app, tool = result.images.archives
    assert app.transport == "docker-archive"
    assert app.path == ctx.resolve() / "images/skopeo/app.tar"
    assert app.path.is_absolute()
    assert app.destination == ImageReference.parse("docker.io/my/app:1.0")
    assert app.location == Location("images/skopeo/tar.txt", 3)
    assert tool.transport == "oci-archive"
    assert tool.path == ctx.resolve() / "images/skopeo/sub/tool.oci.tar"
    assert str(tool.destination) == "registry.example.com:5000/tools/tool:latest"
    assert tool.location == Location("images/skopeo/tar.txt", 4)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("docker-daemon:app.tar@my/app:1", "unknown transport"),
        ("app.tar@my/app:1", "unknown transport"),
        ("docker-archive:app.tar", "malformed line"),
        ("docker-archive:@my/app:1", "malformed line"),
        ("docker-archive:app.tar@", "malformed line"),
        ("docker-archive:app.tar@My/App:1", "bad destination"),
        (f"docker-archive:app.tar@my/app@{DIGEST}", "has a digest"),
        ("docker-archive:missing.tar@my/app:1", "not found"),
        ("oci-archive:sub@my/app:1", "not found"),  # a directory is not an archive
    ],
)
def test_tar_txt_bad_line_is_an_error_naming_file_and_line(
    tmp_path: Path, line: str, complaint: str
) -> None:
    ctx = _archive_context(tmp_path, f"docker-archive:app.tar@my/app:1.0\n\n{line}\n")
    with pytest.raises(ContextError) as caught:
        scan(ctx)
    message = str(caught.value)
    assert message.startswith("images/skopeo/tar.txt:3: ")
    assert complaint in message


def test_no_tar_txt_no_archives(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", {"images/skopeo/app.tar": b"x"})
    assert scan(ctx).images.archives == ()


def test_tar_txt_path_may_hold_an_at_sign(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        {
            "images/skopeo/v@2/app.tar": b"x",
            "images/skopeo/tar.txt": "docker-archive:v@2/app.tar@my/app:2\n",
        },
    )
    (entry,) = scan(ctx).images.archives
    assert entry.path == ctx.resolve() / "images/skopeo/v@2/app.tar"
    assert str(entry.destination) == "docker.io/my/app:2"
