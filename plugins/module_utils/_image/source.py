# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""An image's source: the URL (schemes allowed, credentials kept out of messages) and its checksum.

Apart from fetch.py so that a run that finds its image cached validates its options without
importing the HTTP and TLS stack (about 30 ms of every image_cache run).
"""

from __future__ import annotations

import os
import re
import urllib.parse

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import STEP

SCHEMES = ("http", "https", "file")
CHECKSUM_ALGORITHMS = {"sha256": 64, "sha512": 128}
_CHECKSUM = re.compile(r"^(sha256|sha512):([0-9a-fA-F]+)\Z")


def redact(url):
    """The URL without user:password@ — safe for messages and logs, even when it does not parse."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that does not parse>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def validate_src(src):
    try:
        parts = urllib.parse.urlsplit(src or "")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValidationError("src %r is not a valid URL: %s" % (redact(src), exc), step=STEP)
    if parts.scheme not in SCHEMES:
        raise ValidationError(
            "src %r: scheme %r is not allowed (use %s)" % (redact(src or ""), parts.scheme, ", ".join(SCHEMES)), step=STEP
        )
    if parts.scheme == "file" and (not parts.path or parts.netloc not in ("", "localhost")):
        raise ValidationError("src %r: a file URL needs an absolute local path (file:///path)" % src, step=STEP)
    if parts.scheme != "file" and not parts.hostname:
        raise ValidationError("src %r has no host" % redact(src), step=STEP)
    return parts


def parse_checksum(value):
    """``sha256:<hex>`` / ``sha512:<hex>`` -> (algorithm, lower-case hex), or None."""
    if not value:
        return None
    match = _CHECKSUM.match(value.strip())
    if not match or len(match.group(2)) != CHECKSUM_ALGORITHMS[match.group(1)]:
        raise ValidationError(
            "checksum %r is not sha256:<64 hex digits> or sha512:<128 hex digits>" % value, step=STEP
        )
    return match.group(1), match.group(2).lower()


def validate_file_dirs(dirs):
    """``file_src_dirs``: None (file sources anywhere) or a non-empty list of absolute directory paths."""
    if dirs is None:
        return None
    if not isinstance(dirs, (list, tuple)) or not dirs:
        raise ValidationError("file_src_dirs must be a non-empty list of absolute directory paths", step=STEP)
    for entry in dirs:
        if not isinstance(entry, str) or not os.path.isabs(entry) or "\0" in entry:
            raise ValidationError("file_src_dirs entry %r is not an absolute path" % (entry,), step=STEP)
    # Resolved once: a symlinked directory stands for where it points, as the sources are resolved too.
    return tuple(os.path.realpath(entry) for entry in dirs)


def inside_dirs(path, dirs):
    """Whether the resolved ``path`` lies under one of the resolved ``dirs``."""
    return any(os.path.commonpath((path, entry)) == entry for entry in dirs)


def file_path(parts):
    """The local path of a file:// URL (split): what fetch opens and the file_src_dirs check resolves.
    unquote is what urllib.request's url2pathname does on POSIX, without loading the HTTP stack."""
    return urllib.parse.unquote(parts.path)


def check_file_src(parts, dirs):
    """Refuse a file:// source that resolves (symlinks followed) outside ``dirs``; None allows any."""
    if dirs is None or parts.scheme != "file":
        return
    local = os.path.realpath(file_path(parts))
    if not inside_dirs(local, dirs):
        raise ValidationError("src %r resolves to %s, outside file_src_dirs (%s)"
                              % (urllib.parse.urlunsplit(parts), local, ", ".join(dirs)), step=STEP)


def opened_inside(fd, dirs):
    """Whether the file open on ``fd`` is under ``dirs``, by the path the kernel reports for it: a symlink
    swapped in after the check cannot lead the copy out of the allowed directories."""
    try:
        return inside_dirs(os.readlink("/proc/self/fd/%d" % fd), dirs)
    except OSError:
        return False
