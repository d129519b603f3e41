"""fetch() on local files: sparse writes, limits, checksums, cleanup of partial files (HTTP: tests/integration)."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._image import fetch
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError, ImageRefused


def test_zero_blocks_become_holes(tmp_path):
    src = tmp_path / "src"
    data = os.urandom(4096) + bytes(8 << 20) + os.urandom(4096)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    result = fetch.fetch("file://%s" % src, str(dest), algorithm="sha256")
    assert result.size == len(data)
    assert result.digest == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data
    assert os.stat(dest).st_blocks * 512 <= 256 << 10, "the zeros were not written"


def test_trailing_zeros_keep_the_size(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" + bytes(3 << 20))
    dest = tmp_path / "dest"
    assert fetch.fetch("file://%s" % src, str(dest)).size == (3 << 20) + 1
    assert os.path.getsize(dest) == (3 << 20) + 1


def test_size_limit_and_free_space(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"y" * 5000)
    with pytest.raises(ImageRefused) as info:
        fetch.fetch("file://%s" % src, str(tmp_path / "a"), max_bytes=4999, image_id="img")
    assert info.value.rule == "size-limit"
    with pytest.raises(ImageError) as info:
        fetch.fetch("file://%s" % src, str(tmp_path / "b"), free_bytes=100)
    assert info.value.retryable is True
    assert "free space" in str(info.value)


def test_existing_destination_is_never_overwritten(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"z")
    dest = tmp_path / "dest"
    dest.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        fetch.fetch("file://%s" % src, str(dest))
    assert dest.read_bytes() == b"keep"


@pytest.mark.parametrize("path", ["/dev/zero", "/proc/self"])
def test_only_regular_files(tmp_path, path):
    with pytest.raises(ImageError, match="not a regular file"):
        fetch.fetch("file://" + path, str(tmp_path / "dest"))
    assert not os.path.exists(tmp_path / "dest")


def test_a_symlink_swapped_in_after_the_check_is_not_followed_out(tmp_path):
    """fetch re-checks the opened file: the request's check passed for a file that a symlink to a secret
    replaced before the copy."""
    allowed = tmp_path / "images"
    allowed.mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    (allowed / "guest.img").symlink_to(tmp_path / "secret")
    dirs = (str(allowed),)
    with pytest.raises(ImageError, match="outside file_src_dirs"):
        fetch.fetch("file://%s/guest.img" % allowed, str(tmp_path / "dest"), file_dirs=dirs)
    assert not os.path.exists(tmp_path / "dest")
    (allowed / "guest.img").unlink()
    (allowed / "guest.img").write_bytes(b"image")
    assert fetch.fetch("file://%s/guest.img" % allowed, str(tmp_path / "dest"), file_dirs=dirs).size == 5
