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


@pytest.mark.parametrize("dirs", [[], "/srv/images", ["srv/images"], [None], ["/srv/\0images"]])
def test_file_dirs_must_be_absolute_paths(dirs):
    with pytest.raises(ValidationError, match="file_src_dirs"):
        source.validate_file_dirs(dirs)


@pytest.fixture
def image_tree(tmp_path):
    """An allowed directory holding an image and a symlink leading out of it, and a secret outside it."""
    allowed, outside = tmp_path / "images", tmp_path / "etc"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "guest.img").write_bytes(b"image")
    (outside / "shadow").write_bytes(b"secret")
    (allowed / "escape.img").symlink_to(outside / "shadow")
    return allowed, outside


def test_file_src_inside_the_dirs_is_accepted(image_tree):
    allowed, _outside = image_tree
    dirs = source.validate_file_dirs([str(allowed)])
    source.check_file_src(source.validate_src("file://%s/guest.img" % allowed), dirs)
    source.check_file_src(source.validate_src("http://example.com/etc/shadow"), dirs)  # only file:// is checked
    source.check_file_src(source.validate_src("file:///etc/shadow"), None)  # no dirs: anywhere, as before


@pytest.mark.parametrize("name", ["escape.img", "../etc/shadow"])
def test_file_src_leading_outside_the_dirs_is_refused(image_tree, name):
    allowed, outside = image_tree
    dirs = source.validate_file_dirs([str(allowed)])
    with pytest.raises(ValidationError, match="outside file_src_dirs") as caught:
        source.check_file_src(source.validate_src("file://%s/%s" % (allowed, name)), dirs)
    assert str(outside / "shadow") in caught.value.msg


def test_a_directory_sharing_a_prefix_is_not_inside(tmp_path):
    (tmp_path / "images-private").mkdir()
    dirs = source.validate_file_dirs([str(tmp_path / "images")])
    with pytest.raises(ValidationError, match="outside"):
        source.check_file_src(source.validate_src("file://%s/images-private/x" % tmp_path), dirs)


def test_opened_inside_reads_the_path_of_the_open_file(image_tree):
    allowed, _outside = image_tree
    dirs = source.validate_file_dirs([str(allowed)])
    with open(allowed / "guest.img", "rb") as inside, open(allowed / "escape.img", "rb") as escaped:
        assert source.opened_inside(inside.fileno(), dirs) is True
        assert source.opened_inside(escaped.fileno(), dirs) is False
