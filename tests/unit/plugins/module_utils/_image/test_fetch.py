"""fetch() on local files: sparse writes, limits, checksums, redaction (HTTP: tests/integration)."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
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


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:pa%40ss@example.com:8443/a?b=c", "https://example.com:8443/a?b=c"),
        ("http://token@example.com/x", "http://example.com/x"),
        ("http://example.com/x", "http://example.com/x"),
    ],
)
def test_redact(url, shown):
    assert fetch.redact(url) == shown


def test_parse_checksum():
    assert fetch.parse_checksum("sha256:" + "A" * 64) == ("sha256", "a" * 64)
    assert fetch.parse_checksum("sha512:" + "b" * 128) == ("sha512", "b" * 128)
    assert fetch.parse_checksum(None) is None
    for bad in ("sha256:" + "g" * 64, "sha512:" + "b" * 64, "sha1:" + "a" * 40, "SHA256:" + "a" * 64):
        with pytest.raises(ValidationError):
            fetch.parse_checksum(bad)


@pytest.mark.parametrize("path", ["/dev/zero", "/proc/self"])
def test_only_regular_files(tmp_path, path):
    with pytest.raises(ImageError, match="not a regular file"):
        fetch.fetch("file://" + path, str(tmp_path / "dest"))
    assert not os.path.exists(tmp_path / "dest")
