# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The config drive: an ISO 9660 image labelled ``config-2`` with the OpenStack metadata tree,
as Nova's ConfigDriveBuilder makes it (``openstack/latest`` plus the ``2012-08-10`` version),
built by xorriso in its mkisofs mode with Nova's genisoimage options — never by hand."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandRunner
from ansible_collections.nimbus.compute.plugins.module_utils._instance.layout import TMP_PREFIX

VOLUME_LABEL = "config-2"
VERSIONS = ("2012-08-10", "latest")
MAX_USER_DATA = 65535  # Nova's limit
NETWORK_DATA_DEFAULT = {"links": [], "networks": [], "services": []}


def xorriso(step):
    return CommandRunner("xorriso", step=step, timeout=120.0)


def hostname_from(name):
    """Nova's sanitize_hostname: lower case, [a-z0-9.-], no leading/trailing dot or dash, 63 chars."""
    text = re.sub(r"[ _]", "-", str(name).lower())
    text = re.sub(r"[^a-z0-9.-]", "", text)
    text = text.strip(".-")[:63].rstrip(".-")
    return text or "server"


def _json(value, what, step):
    try:
        return json.dumps(value, indent=2, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValidationError("%s cannot be written as JSON: %s" % (what, exc), step=step)


def files(instance_uuid, name, *, meta_data=None, user_data=None, network_data=None, step="instance_disks"):
    """``{relative path: bytes}`` of the drive; uuid, name and hostname filled in."""
    if not isinstance(meta_data or {}, dict) or not isinstance(network_data or {}, dict):
        raise ValidationError("meta_data and network_data must be dictionaries", step=step)
    # Bytes, not characters: 40,000 "é" are 80,000 bytes on the drive.
    if user_data is not None and len(user_data.encode("utf-8") if isinstance(user_data, str) else user_data) > MAX_USER_DATA:
        raise ValidationError("user_data is larger than %d bytes" % MAX_USER_DATA, step=step)
    meta = dict(meta_data or {})
    # cloud-init takes these as text: a dict here would reach the guest as a broken hostname.
    for key in ("name", "hostname", "availability_zone", "project_id"):
        if key in meta and not isinstance(meta[key], str):
            raise ValidationError("meta_data %s must be a string, got %r" % (key, meta[key]), step=step)
    if meta.get("uuid", instance_uuid) != instance_uuid:
        raise ValidationError("meta_data uuid %r differs from instance_uuid %s" % (meta["uuid"], instance_uuid), step=step)
    meta["uuid"] = instance_uuid
    meta.setdefault("name", name)
    meta.setdefault("hostname", hostname_from(meta["name"]))
    meta.setdefault("launch_index", 0)
    meta.setdefault("meta", {})
    meta.setdefault("public_keys", {})
    out = {}
    for version in VERSIONS:
        base = "openstack/%s/" % version
        out[base + "meta_data.json"] = _json(meta, "meta_data", step)
        if user_data is not None:
            out[base + "user_data"] = user_data.encode("utf-8") if isinstance(user_data, str) else bytes(user_data)
    out["openstack/latest/network_data.json"] = _json(network_data or NETWORK_DATA_DEFAULT, "network_data", step)
    out["openstack/latest/vendor_data.json"] = b"{}"
    return out


def digest(content):
    """Identifies the drive's content, so an unchanged drive is not rebuilt (idempotence)."""
    sha = hashlib.sha256()
    for rel in sorted(content):
        sha.update(rel.encode("utf-8") + b"\0" + hashlib.sha256(content[rel]).digest())
    return sha.hexdigest()


def build(target, content, step="instance_disks"):
    """Write the ISO to ``target`` (a temp name the caller renames): tree staged in a 0700 temp dir
    inside the instance dir, removed afterwards whatever happens."""
    workdir = tempfile.mkdtemp(prefix=TMP_PREFIX + "config-drive.", dir=os.path.dirname(target))
    try:
        for rel, data in content.items():
            path = os.path.join(workdir, rel)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
        xorriso(step).run([
            "-as", "mkisofs", "-o", target, "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
            "-publisher", "nimbus.compute", "-quiet", "-J", "-r", "-V", VOLUME_LABEL, workdir,
        ])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.chmod(target, 0o600)
