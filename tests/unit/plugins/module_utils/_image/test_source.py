"""The image source: URL redaction and checksum parsing (image_cache validates these before any work)."""

from __future__ import annotations

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image import source


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:pa%40ss@example.com:8443/a?b=c", "https://example.com:8443/a?b=c"),
        ("http://token@example.com/x", "http://example.com/x"),
        ("http://example.com/x", "http://example.com/x"),
    ],
)
def test_redact(url, shown):
    assert source.redact(url) == shown


def test_parse_checksum():
    assert source.parse_checksum("sha256:" + "A" * 64) == ("sha256", "a" * 64)
    assert source.parse_checksum("sha512:" + "b" * 128) == ("sha512", "b" * 128)
    assert source.parse_checksum(None) is None
    for bad in ("sha256:" + "g" * 64, "sha512:" + "b" * 64, "sha1:" + "a" * 40, "SHA256:" + "a" * 64):
        with pytest.raises(ValidationError):
            source.parse_checksum(bad)


@pytest.mark.parametrize("src", ["ftp://example.com/x", "http:///x", "file://host/x", "http://example.com:port/x"])
def test_validate_src_refuses(src):
    with pytest.raises(ValidationError, match="src"):
        source.validate_src(src)


def test_validate_src_accepts():
    assert source.validate_src("file:///var/tmp/x.img").path == "/var/tmp/x.img"
