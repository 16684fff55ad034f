"""Safe extraction of a (verified) archive into the private staging folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from updater.errors import UnsafeArchiveError
from updater.staging import StagingLimits, extract_tar


def _tar(*members: tuple[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_regular_bundle_extracts_with_exec_bit(tmp_path: Path) -> None:
    extract_tar(_tar(("./r4agent", b"x"), ("lib/a.bin", b"yy")), tmp_path)
    assert (tmp_path / "r4agent").read_bytes() == b"x"
    assert (tmp_path / "r4agent").stat().st_mode & 0o100
    assert (tmp_path / "lib" / "a.bin").read_bytes() == b"yy"


@pytest.mark.parametrize("name", ["..\\..\\evil", "C:evil", "a/../../evil", "/abs", "../x"])
def test_windows_and_posix_traversal_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("r4agent", b"x"), (name, b"e")), tmp_path / "stage")
    assert not (tmp_path / "evil").exists()


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("r4agent", b"x"), ("./r4agent", b"y")), tmp_path)


def test_member_count_and_total_size_caps(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(*[(f"f{i}", b"") for i in range(5)]), tmp_path,
                    limits=StagingLimits(max_members=4))
    with pytest.raises(UnsafeArchiveError):
        extract_tar(_tar(("big", b"x" * 100)), tmp_path, limits=StagingLimits(max_total_bytes=99))


def test_garbage_is_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract_tar(b"not a tar at all" * 100, tmp_path)
