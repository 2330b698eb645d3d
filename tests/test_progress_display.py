"""What a terminal user sees while images are cached: RichProgress driven as the engine
drives it, on a fake terminal (a rich Console writing into a StringIO), and the info line
before caching."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from sealpy.core.cli import main
from sealpy.core.progress import PlainProgress, RichProgress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def terminal(width: int = 120) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=True, width=width), stream


def last_frame(stream: io.StringIO) -> list[str]:
    """The rows the live display shows now: each redraw starts after a carriage return."""
    text = ANSI.sub("", stream.getvalue())
    return [line.rstrip() for line in text.split("\r")[-1].splitlines() if line.strip()]


def names(count: int) -> list[str]:
    return [f"docker.io/library/img{i:02d}:1.0" for i in range(count)]


def engine_run(progress: RichProgress, images: list[str], size: int = 50_000) -> None:
    """As the engine: every image starts (its size known once its manifests are in)
    before bytes move; five are done, three have bytes moving, the rest are queued."""
    for image in images:
        progress.image_started(image, size)
    for image in images[:5]:
        progress.image_bytes(image, size)
        progress.image_done(image, "1 blobs fetched, 0 reused, 0.0 MiB")
    for image in images[5:8]:
        progress.image_bytes(image, size // 2)
    progress.refresh()


def test_23_images_show_one_overall_row_and_only_the_transfers_in_flight():
    console, stream = terminal()
    progress = RichProgress(console=console)
    images = names(23)
    progress.plan(len(images))
    engine_run(progress, images)
    rows = last_frame(stream)
    progress.close()
    assert len(rows) == 1 + 3, rows  # overall + the three moving; queued and done: no row
    overall = rows[0]
    assert overall.startswith("5/23 images")
    assert "0.3/1.1 MB" in overall  # 5 × 50 kB + 3 × 25 kB of 23 × 50 kB
    assert "?" not in "\n".join(rows)  # sizes are known: no "x/? MB", no idle "?" speed
    shown = [row.split()[0] for row in rows[1:]]
    assert shown == images[5:8]


def test_rows_are_capped_and_a_finished_transfer_frees_its_row():
    console, stream = terminal()
    progress = RichProgress(console=console, max_rows=4)
    images = names(10)
    progress.plan(len(images))
    for image in images:
        progress.image_started(image, 1000)
        progress.image_bytes(image, 100)
    progress.refresh()
    assert [r.split()[0] for r in last_frame(stream)[1:]] == images[:4]
    progress.image_bytes(images[0], 900)
    progress.image_done(images[0])
    progress.refresh()
    rows = last_frame(stream)
    progress.close()
    assert rows[0].startswith("1/10 images")
    assert [r.split()[0] for r in rows[1:]] == images[1:5]


def test_present_blobs_count_as_done_so_the_overall_bar_ends_full():
    """An image whose blobs the destination had moves no bytes; its size still counts
    as done once it is, and a failed image's unmoved bytes leave the total."""
    console, stream = terminal()
    progress = RichProgress(console=console)
    progress.plan(3)
    for image in ("a", "b", "c"):
        progress.image_started(image, 1_000_000)
    progress.image_done("a", "0 blobs fetched, 1 reused")
    progress.image_bytes("b", 1_000_000)
    progress.image_done("b")
    progress.image_bytes("c", 200_000)
    progress.image_failed("c", "not found")
    progress.refresh()
    (overall,) = last_frame(stream)
    progress.close()
    assert overall.startswith("2/3 images (1 failed)")
    assert "2.2/2.2 MB" in overall


def test_the_image_count_grows_with_images_started_without_a_plan():
    console, stream = terminal()
    progress = RichProgress(console=console)
    for image in ("a", "b"):
        progress.image_started(image)  # a strategy that does not know sizes (sync)
    progress.refresh()
    (overall,) = last_frame(stream)
    progress.close()
    assert overall.startswith("0/2 images")


def test_a_display_that_showed_nothing_never_hides_the_cursor_and_closes_twice():
    console, stream = terminal()
    progress = RichProgress(console=console)
    progress.close()
    progress.close()
    assert HIDE_CURSOR not in stream.getvalue()
    console, stream = terminal()
    progress = RichProgress(console=console)
    progress.image_started("a", 10)
    progress.close()
    text = stream.getvalue()
    assert text.rindex(SHOW_CURSOR) > text.rindex(HIDE_CURSOR)


def test_a_build_with_nothing_to_cache_gives_the_cursor_back(tmp_path: Path):
    """The cache stage's display is closed when there is nothing to cache (before, a
    build of a context without images left the terminal's cursor hidden)."""
    from sealpy.core import pipeline
    from sealpy.core.model import CacheOptions

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Kubefile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    (context / "a.txt").write_text("a\n")
    console, stream = terminal()
    progress = RichProgress(console=console)
    pipeline.build(
        pipeline.BuildJob(
            context=context,
            tags=("demo/none:1",),
            strategy="proxy",
            cache=CacheOptions(progress=progress),
            store_root=tmp_path / "store",
        )
    )
    # Closed: a display that was never closed would start at a late image and hide the
    # cursor for good (the command has returned: nobody closes it).
    progress.image_started("late", 1)
    assert HIDE_CURSOR not in stream.getvalue()


def test_plain_progress_keeps_one_line_per_event():
    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.plan(2)
    progress.image_started("a", 10)
    progress.image_bytes("a", 10)
    progress.image_done("a", "1 blobs fetched")
    progress.image_started("b", 10)
    progress.image_failed("b", "not found")
    progress.close()
    assert stream.getvalue().splitlines() == [
        "info caching a",
        "info cached a (1 blobs fetched)",
        "info caching b",
        "error b: not found",
        "info 1 image cached, 1 failed",
    ]


def test_many_references_are_counted_on_the_info_line_and_listed_with_debug(
    conformance_catalog, tmp_path: Path, capsys
):
    c = conformance_catalog
    refs = [str(c.ref(c.plain, repo)) for repo in list(c.fleet)[:4]]
    context = tmp_path / "ctx"
    context.mkdir()
    args = ["registry", "save", "--platform=linux/amd64", "--images", ",".join(refs)]
    assert main([*args, str(context)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "info saving 4 images (--debug lists them)" in err
    assert not any(line.startswith("debug saving") for line in err)
    assert main(["--debug", *args, str(context)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("debug saving")] == [
        f"debug saving {ref}" for ref in sorted(refs)
    ]
