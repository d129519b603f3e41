"""The image corpus the image cache tests build for themselves (qemu-img plus a few patched
bytes), and a loopback HTTP server that counts hits and misbehaves on request.

``build(directory)`` returns (good, hostile): Case records naming a file, the format it claims and,
for hostile ones, the rule that must refuse it.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import ssl
import struct
import subprocess
import threading
import time

MIB = 1 << 20


class Case:
    def __init__(self, name, path, disk_format, rule=None, raw=None, **options):
        self.name = name
        self.path = path
        self.disk_format = disk_format
        self.rule = rule
        self.raw = raw  # the guest-visible bytes a good image must convert to
        self.options = options

    def __repr__(self):
        return self.name


def qemu_img(*args):
    proc = subprocess.run(["qemu-img", *args], capture_output=True, timeout=60, check=False)
    if proc.returncode:
        raise AssertionError("qemu-img %s: %s" % (" ".join(args), proc.stderr.decode()))


def patch(path, offset, data):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _vhd_footer_patch(path, **fields):
    """Rewrite fields of both VHD footer copies and fix their checksums (qemu checks them)."""
    offsets = {"current_size": (48, ">Q"), "disk_type": (60, ">I")}
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        for at in sorted({0, size - 512}):
            handle.seek(at)
            footer = bytearray(handle.read(512))
            if footer[:8] != b"conectix":
                continue
            for name, value in fields.items():
                offset, fmt = offsets[name]
                struct.pack_into(fmt, footer, offset, value)
            struct.pack_into(">I", footer, 64, 0)
            struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
            handle.seek(at)
            handle.write(footer)


def _vmdk_descriptor_patch(path, old, new):
    with open(path, "r+b") as handle:
        data = handle.read(64 * 1024)
        at = data.index(old)
        end = data.index(b"\0", at)
        text = data[at:end].replace(old, new)
        handle.seek(at)
        handle.write(text + b"\0" * max(0, end - at - len(text)))


def _head(source, target, length):
    """Copy the first ``length`` bytes of ``source`` to ``target`` (a truncated image)."""
    with open(source, "rb") as handle:
        head = handle.read(length)
    with open(target, "wb") as handle:
        handle.write(head)
    return head


def _raw_pattern(path):
    """16 MiB guest content: data, a long zero run, data (so sparse handling is exercised)."""
    rng = hashlib.sha256(b"nimbus corpus")
    chunks = []
    for i in range(64):
        rng.update(b"%d" % i)
        chunks.append(rng.digest() * 512)  # 16 KiB
    data = b"".join(chunks) + bytes(12 * MIB) + b"".join(reversed(chunks))
    data += bytes(16 * MIB - len(data))
    with open(path, "wb") as handle:
        handle.write(data)
    return data


def build(directory):
    """Write the corpus into ``directory``; returns (good cases, hostile cases)."""
    def d(name):
        return os.path.join(directory, name)

    raw = _raw_pattern(d("good.raw"))
    good = [Case("raw", d("good.raw"), "raw", raw=raw)]
    for name, fmt, opts in [
        ("qcow2", "qcow2", []),
        ("qcow2-v2", "qcow2", ["-o", "compat=0.10"]),
        ("qcow2-compressed", "qcow2", ["-c"]),
        ("vmdk", "vmdk", []),
        ("vmdk-stream", "vmdk", ["-o", "subformat=streamOptimized"]),
        ("vdi", "vdi", []),
        ("vhd", "vpc", []),
        ("vhd-fixed", "vpc", ["-o", "subformat=fixed"]),
        ("vhdx", "vhdx", []),
    ]:
        qemu_img("convert", "-f", "raw", "-O", fmt, *opts, d("good.raw"), d(name))
        good.append(Case(name, d(name), "vhd" if fmt == "vpc" else fmt, raw=raw))
    iso = d("good.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "/etc/hostname"], check=True, capture_output=True)
    with open(iso, "rb") as handle:
        good.append(Case("iso", iso, "iso", raw=handle.read()))
    kernel = b"MZ" + os.urandom(500) + b"HdrS" + os.urandom(200000)
    with open(d("vmlinuz"), "wb") as handle:
        handle.write(kernel)
    good.append(Case("aki", d("vmlinuz"), "aki", raw=kernel))
    good.append(Case("ari", d("good.raw"), "ari", raw=raw))
    return good, _hostile(d)


def _hostile(d):
    cases = []

    def add(name, fmt, rule, **options):
        cases.append(Case(name, d(name), fmt, rule, **options))

    def qcow2(name, *opts, size="16M"):
        qemu_img("create", "-q", "-f", "qcow2", *opts, d(name), size)

    qcow2("backing.qcow2", "-b", d("qcow2"), "-F", "qcow2")
    add("backing.qcow2", "qcow2", "qcow2-backing-file")
    qcow2("backing-passwd.qcow2", "-b", "/etc/passwd", "-F", "raw")
    add("backing-passwd.qcow2", "qcow2", "qcow2-backing-file")
    qcow2("data-file.qcow2", "-o", "data_file=" + d("data-file.raw"))
    add("data-file.qcow2", "qcow2", "qcow2-data-file")
    qcow2("unknown-bit.qcow2")
    patch(d("unknown-bit.qcow2"), 72, struct.pack(">Q", 1 << 13))
    add("unknown-bit.qcow2", "qcow2", "qcow2-unknown-incompatible-features")
    qcow2("corrupt.qcow2")
    patch(d("corrupt.qcow2"), 72, struct.pack(">Q", 1 << 1))
    add("corrupt.qcow2", "qcow2", "qcow2-corrupt")
    # Real LUKS key setup costs seconds of PBKDF: flip the header field qemu-img would have set.
    qcow2("encrypted.qcow2")
    patch(d("encrypted.qcow2"), 32, struct.pack(">I", 2))
    add("encrypted.qcow2", "qcow2", "qcow2-encrypted")
    _head(d("qcow2"), d("truncated.qcow2"), 60)
    add("truncated.qcow2", "qcow2", "qcow2-bad-header")
    qcow2("absurd-size.qcow2")
    patch(d("absurd-size.qcow2"), 24, struct.pack(">Q", 1 << 62))
    add("absurd-size.qcow2", "qcow2", "virtual-size", max_virtual_size_gb=1)
    qcow2("too-big.qcow2", size="3G")
    add("too-big.qcow2", "qcow2", "virtual-size", max_virtual_size_gb=2)
    qcow2("bad-refcount.qcow2")
    patch(d("bad-refcount.qcow2"), 96, struct.pack(">I", 7))
    add("bad-refcount.qcow2", "qcow2", "qemu-img-rejects")
    cases.append(Case("qcow2-as-raw", d("qcow2"), "raw", "format-mismatch"))
    cases.append(Case("qcow2-as-aki", d("qcow2"), "aki", "format-mismatch"))
    cases.append(Case("qcow2-bad-checksum", d("qcow2"), "qcow2", "checksum-mismatch", checksum="sha256:" + "0" * 64))
    qemu_img("create", "-q", "-f", "qed", d("image.qed"), "16M")
    add("image.qed", "qcow2", "qed-refused")
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", d("flat.vmdk"), "8M")
    add("flat.vmdk", "vmdk", "vmdk-create-type")
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", d("split.vmdk"), "8M")
    add("split.vmdk", "vmdk", "vmdk-create-type")
    qemu_img("create", "-q", "-f", "vmdk", d("extent-passwd.vmdk"), "8M")
    _vmdk_descriptor_patch(d("extent-passwd.vmdk"), b'SPARSE "extent-passwd.vmdk"', b'FLAT "/etc/passwd" 0')
    add("extent-passwd.vmdk", "vmdk", "vmdk-extent-outside")
    _head(d("vmdk"), d("descriptor-past-end.vmdk"), 600)
    add("descriptor-past-end.vmdk", "vmdk", "vmdk-extent-outside")
    qemu_img("create", "-q", "-f", "vmdk", "-b", d("vmdk"), "-F", "vmdk", d("delta-link.vmdk"))
    add("delta-link.vmdk", "vmdk", "vmdk-parent")
    cases.append(Case("vmdk-as-qcow2", d("vmdk"), "qcow2", "format-mismatch"))
    cases.append(Case("vdi-as-raw", d("vdi"), "raw", "format-mismatch"))
    cases.append(Case("vhdx-as-vhd", d("vhdx"), "vhd", "format-mismatch"))
    cases.append(Case("raw-as-qcow2", d("good.raw"), "qcow2", "format-mismatch"))
    open(d("empty.raw"), "wb").close()
    add("empty.raw", "raw", "empty-image")
    qcow2("empty.qcow2", size="0")
    add("empty.qcow2", "qcow2", "empty-image")
    qemu_img("create", "-q", "-f", "vpc", d("differencing.vhd"), "16M")
    _vhd_footer_patch(d("differencing.vhd"), disk_type=4)
    add("differencing.vhd", "vhd", "vhd-differencing")
    qemu_img("create", "-q", "-f", "vpc", d("size-lie.vhd"), "16M")
    _vhd_footer_patch(d("size-lie.vhd"), current_size=8 * MIB)
    add("size-lie.vhd", "vhd", "qemu-img-disagrees")
    with open(d("image.luks"), "wb") as handle:
        handle.write(b"LUKS\xba\xbe\x00\x02" + bytes(16 * MIB - 8))
    add("image.luks", "raw", "format-mismatch")
    with open(d("good.iso"), "rb") as handle:
        iso = bytearray(handle.read())
    with open(d("qcow2"), "rb") as handle:
        header = handle.read(512)  # a whole qcow2 header in the ISO's free system area
    iso[: len(header)] = header
    with open(d("iso-qcow2.polyglot"), "wb") as handle:
        handle.write(iso)
    add("iso-qcow2.polyglot", "iso", "multiple-formats")
    with open(d("qcow2"), "rb") as handle, open(d("qcow2-vhd.polyglot"), "wb") as out:
        out.write(handle.read())
        with open(d("vhd-fixed"), "rb") as vhd:
            vhd.seek(-512, os.SEEK_END)
            out.write(vhd.read())
    add("qcow2-vhd.polyglot", "qcow2", "multiple-formats")
    return cases


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] = server.hits.get(self.path, 0) + 1
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        kind, value = route
        try:
            getattr(self, "_" + kind)(value)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _file(self, spec):
        path, delay = spec
        time.sleep(delay)
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as handle:
            self.wfile.write(handle.read()) if size < 64 * MIB else self._stream(handle)

    def _stream(self, handle):
        while True:
            block = handle.read(MIB)
            if not block:
                return
            self.wfile.write(block)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _truncated(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * 2))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _slow_headers(self, seconds):
        time.sleep(seconds)
        self._redirect("/never")

    def _trickle(self, seconds):
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def _auth(self, spec):
        token, path = spec
        if self.headers.get("Authorization") != "Basic " + token:
            self.send_error(401)
            return
        self._file((path, 0))


class ImageServer:
    """``with ImageServer() as server: server.add("/x", "file", (path, 0)); server.url("/x")``."""

    def __init__(self, tls_cert=None):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.scheme = "https" if tls_cert else "http"
        if tls_cert:  # a PEM file holding the certificate and its key
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.httpd.routes = {}
        self.httpd.hits = {}
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def add(self, path, kind, value):
        self.httpd.routes[path] = (kind, value)
        return self.url(path)

    def url(self, path):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.httpd.server_address[1], path)

    def hits(self, path):
        return self.httpd.hits.get(path, 0)
