# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Download an image (http, https or file) into a file, bounded in redirects, size and time.

The bytes are hashed while they stream (when a checksum is wanted) and all-zero blocks are
skipped with a seek, so a raw image lands sparse. Credentials in a URL go into an
Authorization header that is not forwarded on redirects, and never into a message.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import os
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import ImageError, ImageRefused
from ansible_collections.nimbus.compute.plugins.module_utils._image.source import file_path, opened_inside, redact, validate_src

MAX_REDIRECTS = 5
CHUNK = 1 << 20
SPARSE_BLOCK = 64 << 10
_ZEROS = memoryview(bytes(CHUNK))


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS
    max_repeats = 2

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        # urllib would follow a redirect to ftp:// and from https down to http: refuse both.
        old, new = urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new == "http"):
            raise urllib.error.HTTPError(req.full_url, code, "redirect from %s to %s:// refused" % (old, new), headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open_http(src, timeout, validate_certs, credentials):
    parts = urllib.parse.urlsplit(src)
    request = urllib.request.Request(redact(src), headers={"User-Agent": "nimbus.compute image_cache"})
    if credentials is None and parts.username is not None:
        credentials = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    if credentials is not None:
        token = "%s:%s" % credentials
        # Unredirected: a redirect to another host must not receive the credentials.
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode("ascii"))
    context = ssl.create_default_context() if validate_certs else ssl._create_unverified_context()
    opener = urllib.request.build_opener(_Redirects(), urllib.request.HTTPSHandler(context=context))
    return opener.open(request, timeout=timeout)


class FetchResult:
    __slots__ = ("digest", "size")

    def __init__(self, size, digest):
        self.size = size
        self.digest = digest


def fetch(src, dest, *, timeout=30.0, deadline=3600.0, validate_certs=True, credentials=None, max_bytes=None,
          free_bytes=None, algorithm=None, image_id="?", fsync=True, file_dirs=None):
    """Copy ``src`` into the new file ``dest`` (created 0644, must not exist) and fsync it
    (``fsync=False`` for a temporary file that is converted, then dropped).

    ``timeout`` bounds each connect/read, ``deadline`` the whole transfer; more than ``max_bytes``
    is refused, more than ``free_bytes`` fails (retryable: another host may have room). With ``file_dirs``
    (resolved directories) a file:// source is copied only when the file opened lies under one of them.
    Returns the byte count and the hex digest (when ``algorithm`` is given).
    """
    shown = redact(src)
    parts = validate_src(src)
    try:
        if parts.scheme == "file":
            local = file_path(parts)
            if not stat.S_ISREG(os.stat(local).st_mode):  # a FIFO or a device never ends cleanly
                raise ImageError("fetch of %s failed: not a regular file" % shown)
            source = open(local, "rb")
            if file_dirs is not None and not opened_inside(source.fileno(), file_dirs):
                source.close()
                raise ImageError("fetch of %s failed: the opened file is outside file_src_dirs" % shown)
            expected = os.fstat(source.fileno()).st_size
        else:
            source = _open_http(src, timeout, validate_certs, credentials)
            length = source.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
    except urllib.error.HTTPError as exc:
        raise ImageError("fetch of %s failed: HTTP %d %s" % (shown, exc.code, exc.reason))
    except urllib.error.URLError as exc:
        raise ImageError("fetch of %s failed: %s" % (shown, exc.reason))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ImageError("fetch of %s failed: %s" % (shown, exc or type(exc).__name__))
    with source:
        if max_bytes is not None and expected is not None and expected > max_bytes:
            raise ImageRefused(image_id, "size-limit", "%s is %d bytes, more than the %d allowed" % (shown, expected, max_bytes))
        if free_bytes is not None and expected is not None and expected > free_bytes:
            raise _no_space(shown, expected, free_bytes)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            limits = dict(deadline=deadline, max_bytes=max_bytes, free_bytes=free_bytes, algorithm=algorithm)
            size, digest = _copy(source, fd, shown, image_id, **limits)
            os.ftruncate(fd, size)
            if fsync:
                os.fsync(fd)
        except OSError as exc:  # our side: disk full or I/O error while writing
            raise ImageError("fetch of %s failed writing %s: %s" % (shown, dest, exc.strerror or exc),
                             retryable=exc.errno == errno.ENOSPC)
        finally:
            os.close(fd)
    if expected is not None and size != expected:
        raise ImageError("fetch of %s failed: truncated, received %d of %d bytes" % (shown, size, expected))
    return FetchResult(size, digest)


def _no_space(shown, size, free):
    return ImageError("not enough free space for %s: %d bytes needed, %d free" % (shown, size, free), retryable=True)


def _copy(source, fd, shown, image_id, *, deadline, max_bytes, free_bytes, algorithm):
    stop_at = time.monotonic() + deadline
    hasher = hashlib.new(algorithm) if algorithm else None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    while True:
        try:
            count = _fill(source, view, stop_at)
        except TimeoutError:  # socket.timeout is its alias
            raise ImageError("fetch of %s failed: no data received for the read timeout after %d bytes" % (shown, size))
        except http.client.IncompleteRead as exc:
            raise ImageError("fetch of %s failed: truncated after %d bytes (%s)" % (shown, size, exc))
        except (OSError, http.client.HTTPException) as exc:
            raise ImageError("fetch of %s failed after %d bytes: %s" % (shown, size, exc))
        if not count:
            return size, hasher.hexdigest() if hasher else None
        chunk = view[:count]
        size += count
        if max_bytes is not None and size > max_bytes:
            raise ImageRefused(image_id, "size-limit", "%s is more than the %d bytes allowed" % (shown, max_bytes))
        if free_bytes is not None and size > free_bytes:
            raise _no_space(shown, size, free_bytes)
        if hasher:
            hasher.update(chunk)
        _write_sparse(fd, buffer, count)
        if time.monotonic() > stop_at:
            raise ImageError("fetch of %s failed: not complete within %.0f s (%d bytes received)" % (shown, deadline, size))


def _fill(source, view, stop_at):
    """Fill ``view`` (or up to the end of the body) one receive at a time, so a server that
    trickles bytes cannot hold a read past the deadline."""
    count = 0
    while count < len(view):
        got = source.readinto1(view[count:])
        if not got:
            break
        count += got
        if time.monotonic() > stop_at:
            break
    return count


def _write_sparse(fd, buffer, count):
    """Write ``buffer[:count]`` at the current offset, seeking over all-zero 64 KiB blocks so a
    raw image lands sparse. bytearray.startswith is a memcmp (comparing memoryviews is not)."""
    view = memoryview(buffer)
    start = 0  # first byte of the pending run of data blocks
    for offset in range(0, count, SPARSE_BLOCK):
        end = min(offset + SPARSE_BLOCK, count)
        if buffer.startswith(_ZEROS[: end - offset], offset, end):
            _write_all(fd, view[start:offset])
            os.lseek(fd, end - offset, os.SEEK_CUR)
            start = end
    _write_all(fd, view[start:count])


def _write_all(fd, chunk):
    while chunk:
        written = os.write(fd, chunk)
        chunk = chunk[written:]
