"""The test helper ``tests.support.daemon.Daemon`` cleans up after itself: its ``kt-daemon-*``
temporary directory is gone after ``close()``, after a test that failed inside ``with``, and
after a Daemon nobody closed is collected."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import pytest

from tests.support.daemon import Daemon


def leftovers(directory: Path) -> list[Path]:
    return sorted(directory.glob("kt-daemon-*"))


@pytest.fixture()
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory for this test only: other tests' daemons cannot change the count."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_directory_is_removed_when_the_test_fails_inside_with(private_tmp: Path) -> None:
    assert leftovers(private_tmp) == []
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        Daemon(private_tmp / "missing.yaml") as daemon,
    ):
        assert len(leftovers(private_tmp)) == 1
        daemon.wait()
        raise RuntimeError("the test failed")
    assert leftovers(private_tmp) == []
    # The log outlives the directory, for assertion messages written after the block.
    assert "missing.yaml" in daemon.log()


def test_directory_is_removed_by_close_and_by_collection(private_tmp: Path) -> None:
    closed = Daemon(private_tmp / "missing.yaml")
    forgotten = Daemon(private_tmp / "missing.yaml")
    assert len(leftovers(private_tmp)) == 2
    closed.wait()
    closed.close()
    closed.close()  # twice is harmless
    assert len(leftovers(private_tmp)) == 1
    proc = forgotten.proc
    del forgotten
    gc.collect()
    assert leftovers(private_tmp) == []
    assert proc.poll() is not None  # and its process is gone too
