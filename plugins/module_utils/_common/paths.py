# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Names and paths on a hypervisor, all derived from the server UUID (DESIGN.md §1)."""

from __future__ import annotations

import hashlib
import os
import re

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import ValidationError

DEFAULT_INSTANCES_PATH = "/var/lib/nimbus/instances"


# The canonical 8-4-4-4-12 form, lower case: the name of an instance dir. validate_uuid checks it first so
# that a module run with a good UUID does not import the uuid module (several ms of every module process);
# other input goes through uuid.UUID for the right message.
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def validate_uuid(value, what="instance UUID", step="validate"):
    """Return the canonical lower-case UUID string, or raise ValidationError."""
    lowered = value.lower() if isinstance(value, str) else None
    if lowered is not None and CANONICAL_UUID.match(lowered):
        return lowered
    import uuid as uuidlib

    try:
        parsed = uuidlib.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise ValidationError("%s %r is not a valid UUID" % (what, value), step=step)
    canonical = str(parsed)
    if canonical != str(value).lower():
        raise ValidationError("%s %r is not in canonical 8-4-4-4-12 form" % (what, value), step=step)
    return canonical


def validate_instances_path(instances_path, step="validate", what="instances_path"):
    """An absolute path without NUL bytes (the OS refuses those with a ValueError, not an OSError)."""
    if not isinstance(instances_path, str) or not os.path.isabs(instances_path) or "\0" in instances_path:
        raise ValidationError("%s must be an absolute path, got %r" % (what, instances_path), step=step)
    return instances_path


def inside(path, root):
    """True when ``path`` resolves (symlinks followed) to ``root`` or below it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def require_inside(path, root, step="validate"):
    if not inside(path, root):
        raise ValidationError("path %s resolves outside instances_path %s" % (path, root), step=step)
    return path


def base_name(image_id):
    """Nova names a cached base image by the SHA-1 of the image id."""
    return hashlib.sha1(str(image_id).encode("utf-8")).hexdigest()


def base_dir(instances_path):
    return os.path.join(instances_path, "_base")


def base_path(instances_path, image_id):
    return os.path.join(base_dir(instances_path), base_name(image_id))


def instance_dir(instances_path, instance_uuid):
    return os.path.join(instances_path, instance_uuid)


def locks_dir(instances_path):
    return os.path.join(instances_path, "locks")


def domain_name(instance_uuid):
    return "instance-%s" % instance_uuid
