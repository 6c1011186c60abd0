"""The one output writer (issue 27, defect 1): what a path names decides how it is written, and nothing that is
not a regular file is ever replaced by one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from minigpt_geom import OutputError
from minigpt_geom.cli import main
from minigpt_geom.io.files import write_bytes, write_text


def character_device(path: Path) -> Path:
    """A character device at `path`, the same as /dev/null (1, 3): what `-o /dev/null` names."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


needs_mknod = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")


@needs_mknod
def test_defect_1_a_device_fifo_or_symlink_output_is_never_replaced(tmp_path):
    """A character device is written through and stays a device; a FIFO nobody reads is refused in one line
    (not waited on, not replaced); a symbolic link stays a link, the file it points at gets the output."""
    device = character_device(tmp_path / "null")
    write_text(device, "through /dev/null")
    assert stat.S_ISCHR(os.lstat(device).st_mode)

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO .*no process reads"):
        write_bytes(fifo, b"x")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting: the output goes through
    try:
        write_bytes(fifo, b"through the pipe")
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    with pytest.raises(OutputError, match="is a directory"):
        write_text(tmp_path, "x")
    with pytest.raises(OutputError, match="empty path"):
        write_text("", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.txt", "null", "target.txt"]  # no temporary


@needs_mknod
@pytest.mark.slow
def test_defect_1_report_onto_a_device_writes_through_it(tiny_checkpoint, tmp_path, capsys):
    """The issue's own case: `mknod x c 1 3; report -o x` left a regular file at x."""
    device = character_device(tmp_path / "x")
    assert main(["report", "the cat", "--weights", str(tiny_checkpoint), "-o", str(device), "--quiet"]) == 0
    assert stat.S_ISCHR(os.lstat(device).st_mode) and os.listdir(tmp_path) == ["x"]


