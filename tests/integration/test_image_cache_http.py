"""Images served by a real HTTP server on 127.0.0.1 (started here): hostile server behaviour is a
clean error that leaves _base empty, and N concurrent runs for one image download it once."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common import paths
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError, ImageRefused

sys.path.insert(0, os.path.dirname(__file__))
import image_corpus

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory):
    directory = tmp_path_factory.mktemp("http")
    raw = str(directory / "disk.raw")
    with open(raw, "wb") as handle:
        handle.write(os.urandom(1 << 20) + bytes(7 << 20))
    path = str(directory / "disk.qcow2")
    image_corpus.qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, path)
    return path


@pytest.fixture
def server():
    with image_corpus.ImageServer() as running:
        yield running


def base_listing(instances_path):
    base_dir = paths.base_dir(str(instances_path))
    return sorted(os.listdir(base_dir)) if os.path.isdir(base_dir) else []


def fetch(url, instances_path, **options):
    return cache.ensure_cached(cache.ImageRequest("img-http", url, options.pop("disk_format", "qcow2"),
                                                  instances_path=str(instances_path), **options))


def test_fetch_over_http_once(server, qcow2, tmp_path):
    url = server.add("/disk.qcow2", "file", (qcow2, 0))
    first = fetch(url, tmp_path)
    assert first["changed"] is True and first["virtual_size"] == 8 << 20
    assert fetch(url, tmp_path)["changed"] is False
    assert server.hits("/disk.qcow2") == 1, "the second run must not download again"


@pytest.mark.parametrize(
    "kind, value, options, words",
    [
        (None, None, {}, "HTTP 404"),
        ("truncated", b"QFI\xfb" + bytes(5000), {}, "truncated"),
        ("redirect", "/loop", {}, "HTTP 302"),
        ("redirect", "file:///etc/passwd", {}, "HTTP 302"),
        ("redirect", "ftp://127.0.0.1:1/x", {}, "redirect from http to ftp:// refused"),
        ("slow_headers", 3, {"timeout": 1}, "timed out"),
        ("trickle", 4, {"download_timeout": 1}, "not complete within 1 s"),
    ],
)
def test_hostile_server_is_a_clean_error(server, tmp_path, kind, value, options, words):
    url = server.add("/loop", kind, value) if kind else server.url("/missing")
    with pytest.raises(ImageError) as info:
        fetch(url, tmp_path, **options)
    assert words in str(info.value)
    assert "image_cache: fetch of http://127.0.0.1" in str(info.value)
    assert base_listing(tmp_path) == []


def test_redirects_are_bounded(server, qcow2, tmp_path):
    for hop in range(8):
        server.add("/hop%d" % hop, "redirect", "/hop%d" % (hop + 1))
    server.add("/hop8", "file", (qcow2, 0))
    with pytest.raises(ImageError, match="HTTP 302"):
        fetch(server.url("/hop0"), tmp_path)
    assert server.hits("/hop8") == 0
    assert fetch(server.url("/hop4"), tmp_path)["changed"] is True  # four redirects are fine


def test_size_limit_refuses_before_reading_the_body(server, tmp_path):
    big = tmp_path / "big.raw"
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)
    url = server.add("/big.raw", "file", (str(big), 0))
    with pytest.raises(ImageRefused) as info:
        fetch(url, tmp_path / "instances", disk_format="raw", max_virtual_size_gb=0.5)
    assert info.value.rule == "size-limit"
    assert base_listing(tmp_path / "instances") == []


def test_basic_auth_without_leaking_the_password(server, qcow2, tmp_path):
    token = base64.b64encode(b"glance:s3cret").decode()
    server.add("/private.qcow2", "auth", (token, qcow2))
    url = server.url("/private.qcow2")
    assert fetch(url, tmp_path / "a", url_username="glance", url_password="s3cret")["changed"] is True
    assert fetch(url.replace("http://", "http://glance:s3cret@"), tmp_path / "b")["changed"] is True
    with pytest.raises(ImageError) as info:
        fetch(url.replace("http://", "http://glance:wrong-s3cret@"), tmp_path / "c")
    assert "HTTP 401" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_https_certificates_are_verified_unless_told_not_to(qcow2, tmp_path):
    pem = str(tmp_path / "server.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", pem, "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    with open(pem, "a") as key, open(tmp_path / "cert.pem") as cert:
        key.write(cert.read())
    with image_corpus.ImageServer(tls_cert=pem) as server:
        url = server.add("/disk.qcow2", "file", (qcow2, 0))
        assert url.startswith("https://")
        with pytest.raises(ImageError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(url, tmp_path / "a")
        assert base_listing(tmp_path / "a") == []
        assert fetch(url, tmp_path / "b", validate_certs=False)["changed"] is True


WORKER = """
import json, sys
from ansible_collections.nimbus.compute.plugins.module_utils._image import cache
req = cache.ImageRequest("img-shared", sys.argv[1], "qcow2", instances_path=sys.argv[2], lock_timeout=60)
print(json.dumps(cache.ensure_cached(req)))
"""


def test_concurrent_runs_download_once(server, qcow2, tmp_path):
    """8 processes race for one uncached image: one download, one conversion, one base file."""
    url = server.add("/shared.qcow2", "file", (qcow2, 0.5))  # slow enough that all 8 overlap
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env) for _worker in range(8)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert server.hits("/shared.qcow2") == 1
    assert sorted(result["changed"] for result in results) == [False] * 7 + [True]
    assert {result["base_path"] for result in results} == {paths.base_path(str(tmp_path), "img-shared")}
    assert base_listing(tmp_path) == [paths.base_name("img-shared")]
