# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""image_cache's ``images`` option: a server's root, kernel and ramdisk images cached in one module run.

Nova's driver fetches all of a server's images in one service call. Ansible starts a process per module
task, so the server role checks a build's images through one image_cache run instead of one per image.
Each image is the dict the role, the scheduler request and domain_xml carry (``id``, ``src``,
``disk_format``, ``checksum``; ``properties`` and ``name`` are for the other steps and ignored here),
and gets exactly what a run for it alone would give it, in the order given.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._image.cache import ImageRequest, ensure_cached
from ansible_collections.nimbus.compute.plugins.module_utils._image.errors import STEP

IMAGE_KEYS = ("id", "src", "disk_format", "checksum")
# Keys of the image dict that belong to other steps (domain_xml, the scheduler).
IGNORED_KEYS = ("properties", "name")


def requests_for(images, **shared):
    """One ImageRequest per image, every image checked before any is fetched; ``shared`` holds the options
    that apply to each (instances_path, max_virtual_size_gb, timeouts, credentials, file_src_dirs)."""
    if not isinstance(images, list) or not images:
        raise ValidationError("images must be a non-empty list of image dicts", step=STEP)
    requests, seen = [], set()
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise ValidationError("images[%d] must be a dict, got %r" % (index, image), step=STEP)
        # As text: keys from YAML may be numbers, which do not sort with strings.
        unknown = sorted(str(key) for key in set(image) - set(IMAGE_KEYS) - set(IGNORED_KEYS))
        if unknown:
            raise ValidationError("images[%d] has unknown keys %s (known: %s)"
                                  % (index, ", ".join(unknown), ", ".join(IMAGE_KEYS + IGNORED_KEYS)), step=STEP)
        missing = [key for key in ("id", "src", "disk_format") if image.get(key) is None]
        if missing:
            raise ValidationError("images[%d] needs %s" % (index, ", ".join(missing)), step=STEP)
        try:
            request = ImageRequest(image["id"], image["src"], image["disk_format"], checksum=image.get("checksum"),
                                   **shared)
        except ValidationError as exc:
            raise ValidationError("images[%d] (%s): %s" % (index, image["id"], exc.msg), step=exc.step) from None
        if request.image_id in seen:
            raise ValidationError("images[%d]: image %s is listed twice" % (index, request.image_id), step=STEP)
        seen.add(request.image_id)
        requests.append(request)
    return requests


class ListFailed(Exception):
    """An image of the list failed with ``error`` (a NimbusError or an OSError); ``done`` holds the results
    of the images cached before it, which the module reports with the failure."""

    def __init__(self, error, done):
        super().__init__(str(error))
        self.error = error
        self.done = done


def ensure_all_cached(requests, check_mode=False):
    """Each image cached in turn; the module result ``{changed, images: [one result per image]}``.
    The images before a failing one stay cached: the cache is shared, another build may use them."""
    done = []
    for request in requests:
        try:
            done.append(ensure_cached(request, check_mode=check_mode))
        except (NimbusError, OSError) as exc:
            raise ListFailed(exc, done) from exc
    return {"changed": any(result["changed"] for result in done), "images": done}
