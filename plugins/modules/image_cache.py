#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_cache
short_description: Fetch an image into the host's image cache as a verified raw base file
version_added: 0.1.0
author: nimbus.compute developers (@nimbus)
description:
  - Fetches an image into C(<instances_path>/_base/<SHA-1 of image_id>), the way Nova's libvirt driver caches images.
  - Every image is treated as hostile. Before any C(qemu-img) call the downloaded bytes are inspected in pure Python
    (raw, qcow2, qed, vmdk, vdi, vhd, vhdx, iso, luks). An image is refused when it has a backing file, an external data file,
    unknown qcow2 incompatible features, a parent image (vmdk delta link, differencing vhd/vhdx/vdi), a vmdk type other than
    monolithicSparse/streamOptimized or extents outside the file,
    when more than one format claims it, when it is not the declared O(disk_format), when its virtual size exceeds
    O(max_virtual_size_gb), or when the O(checksum) does not match. C(qemu-img info) must then agree with the inspector.
  - Disk images are converted to raw with C(qemu-img convert -f <format> -O raw) under CPU, memory and time limits.
    Kernel (V(aki)) and ramdisk (V(ari)) images for direct kernel boot are stored byte for byte and must not look like
    any disk image format.
  - The download goes to C(<sha1>.part), is fsynced, verified, converted and renamed into place. A refused image leaves
    nothing in C(_base). A per-image lock in C(<instances_path>/locks/) makes concurrent runs for one image download it once.
  - When the base file exists it is re-verified (regular file, raw, within the size limit) and not downloaded again;
    its modification time is refreshed so that M(nimbus.compute.image_cache_cleanup) keeps it.
extends_documentation_fragment:
  - nimbus.compute.connection.instances_path
options:
  src:
    description:
      - Where to fetch the image from, an C(http://), C(https://) or C(file://) URL. Other schemes are refused.
      - For HTTP basic authentication prefer O(url_username) and O(url_password) over credentials in the URL; either way
        they are not put in messages and not forwarded on redirects.
      - Required, with O(image_id) and O(disk_format), unless O(images) is given.
    type: str
  image_id:
    description:
      - The image's identifier (for example a Glance image UUID). The cache file is named by its SHA-1.
      - A non-empty string without control characters (a number is taken as its text; a list or dict is refused).
    type: raw
  disk_format:
    description:
      - The format the image claims to be. It must match what the inspector detects.
      - V(aki) and V(ari) are a kernel and an initramfs for direct kernel boot, stored without conversion.
    type: str
    choices: [raw, qcow2, vmdk, vdi, vhd, vhdx, iso, aki, ari]
  images:
    description:
      - Several images cached in one run, in order, instead of O(src), O(image_id), O(disk_format) and O(checksum); the
        server role checks a build's root, kernel and ramdisk images this way, in one process instead of three.
      - Each is an image dict as the server role and the scheduler request carry it, with C(id), C(src), C(disk_format)
        and optionally C(checksum), which mean what O(image_id), O(src), O(disk_format) and O(checksum) mean; C(properties)
        and C(name) are ignored here, any other key is refused.
      - The other options apply to each image, O(max_virtual_size_gb) included. Every image is checked before any is
        fetched; the images cached before one that fails stay in the cache, and the failure lists their results in RV(images).
    type: list
    elements: dict
  checksum:
    description:
      - Expected digest of the downloaded bytes, V(sha256:<hex>) or V(sha512:<hex>). A mismatch refuses the image.
    type: str
  max_virtual_size_gb:
    description:
      - The largest virtual size accepted, in GiB; normally the flavor's root disk. Checked before conversion.
      - V(0) means no limit, as a flavor with C(root_gb=0) takes the image's own size in Nova.
    type: int
  file_src_dirs:
    description:
      - Directories that C(file://) sources must lie in. A C(file://) O(src) is copied only when the file, with symlinks
        resolved, is under one of them; anything else is refused before any change.
      - Without it a C(file://) O(src) may name any regular file the module can read, and a V(raw) image takes any bytes.
        Set it wherever O(src) comes from someone who should not read the hypervisor's files, for example an
        AWX survey.
      - The check is made again on the file as opened, so a symlink swapped in after the first check cannot lead out.
    type: list
    elements: str
  timeout:
    description:
      - Seconds allowed for connecting and for each read without data. Above 0 and at most 604800 (a week).
    type: int
    default: 30
  download_timeout:
    description:
      - Seconds allowed for the whole download. Above 0 and at most 604800 (a week).
    type: int
    default: 3600
  lock_timeout:
    description:
      - Seconds to wait for another run that is fetching the same image. Above 0 and at most 604800 (a week).
    type: int
    default: 3600
  url_username:
    description:
      - User name for HTTP basic authentication.
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication.
    type: str
  validate_certs:
    description:
      - Verify the server's TLS certificate for C(https://) sources.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reports whether the image would be fetched; downloads nothing.
  diff_mode:
    support: none
    description: A base image is a new file, not an edit; there is nothing to show a diff of.
notes:
  - Base files are mode 0644 in a 0755 C(_base) owned by root; QEMU only ever reads them as a backing file.
"""

EXAMPLES = r"""
- name: Cache the guest root disk (qcow2, converted to raw)
  nimbus.compute.image_cache:
    src: https://images.example.com/debian-12.qcow2
    image_id: 5f4f8a3e-2c1d-4a7e-9c55-0d7c2f1b7c11
    disk_format: qcow2
    checksum: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    max_virtual_size_gb: 20

- name: Cache the kernel for direct kernel boot
  nimbus.compute.image_cache:
    src: file:///srv/images/vmlinuz
    image_id: guest-kernel-6.1
    disk_format: aki

- name: Cache a server's root disk, kernel and ramdisk in one run
  nimbus.compute.image_cache:
    images:
      - {id: debian-12, src: "https://images.example.com/debian-12.qcow2", disk_format: qcow2}
      - {id: guest-kernel-6.1, src: "https://images.example.com/vmlinuz", disk_format: aki}
      - {id: guest-initrd-6.1, src: "https://images.example.com/initrd.img", disk_format: ari}
    max_virtual_size_gb: 20

- name: Cache an image from a local file, refusing files outside /srv/images
  nimbus.compute.image_cache:
    src: "file:///srv/images/{{ image_file }}"
    image_id: "{{ image_file }}"
    disk_format: qcow2
    file_src_dirs: [/srv/images]
"""

RETURN = r"""
image_id:
  description: The image id the base file is named after.
  returned: when O(src) is given
  type: str
elapsed:
  description: Seconds the module ran on the host for its step (the server role's per-step timings).
  returned: always
  type: float
base_path:
  description: Path of the raw base file, C(<instances_path>/_base/<SHA-1 of image_id>).
  returned: when O(src) is given
  type: str
  sample: /var/lib/nimbus/instances/_base/3f786850e387550fdab836ed7e6dc881de23001b
virtual_size:
  description: Virtual size of the image in bytes (null in check mode when nothing is cached yet).
  returned: when O(src) is given
  type: int
  sample: 1073741824
detected_format:
  description:
    - The format the inspector found in the download.
    - For a base found in the cache, what its raw content looks like (V(raw), V(iso) or V(luks)).
  returned: when O(src) is given
  type: str
  sample: qcow2
images:
  description:
    - With O(images), one result per image in the order given, each with the keys above (C(changed), C(image_id),
      C(base_path), C(virtual_size), C(detected_format), C(msg)).
    - On a failure, the results of the images cached before the one that failed.
  returned: when O(images) is given
  type: list
  elements: dict
  sample: [{changed: false, image_id: debian-12, base_path: /var/lib/nimbus/instances/_base/3f78..., virtual_size: 2147483648,
            detected_format: raw}]
rule:
  description: The safety rule that refused the image, for example V(qcow2-backing-file).
  returned: when the image is refused
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nimbus.compute.plugins.module_utils._common.args import INSTANCES_PATH_ARGS, spec
from ansible_collections.nimbus.compute.plugins.module_utils._common.clock import StepClock
from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError, failure
from ansible_collections.nimbus.compute.plugins.module_utils._image import image_list
from ansible_collections.nimbus.compute.plugins.module_utils._image.cache import FORMATS, ImageRequest, ensure_cached

ARGUMENT_SPEC = spec(
    INSTANCES_PATH_ARGS,
    src=dict(type="str"),
    # raw: type str would turn a list into its Python repr and cache the image under that; validate_image_id checks it.
    image_id=dict(type="raw"),
    disk_format=dict(type="str", choices=list(FORMATS)),
    # Checked key by key in image_list (the role's image dicts carry keys for other steps).
    images=dict(type="list", elements="dict"),
    checksum=dict(type="str"),
    max_virtual_size_gb=dict(type="int"),
    timeout=dict(type="int", default=30),
    download_timeout=dict(type="int", default=3600),
    lock_timeout=dict(type="int", default=3600),
    url_username=dict(type="str"),
    url_password=dict(type="str", no_log=True),
    validate_certs=dict(type="bool", default=True),
    file_src_dirs=dict(type="list", elements="str"),
)
# The options of one image, which images replaces (each of its dicts carries them).
SINGLE_IMAGE_OPTIONS = ("src", "image_id", "disk_format", "checksum")


def main():
    clock = StepClock()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_one_of=[("src", "images")],
                           mutually_exclusive=[("images", name) for name in SINGLE_IMAGE_OPTIONS],
                           required_together=[("src", "image_id", "disk_format")])
    params = dict(module.params)
    images = params.pop("images")
    try:
        if images is None:
            request = ImageRequest(params.pop("image_id"), params.pop("src"), params.pop("disk_format"), **params)
            module.exit_json(**clock.stamp(ensure_cached(request, check_mode=module.check_mode)))
        for name in SINGLE_IMAGE_OPTIONS:
            params.pop(name)
        requests = image_list.requests_for(images, **params)
        module.exit_json(**clock.stamp(image_list.ensure_all_cached(requests, check_mode=module.check_mode)))
    except image_list.ListFailed as failed:
        module.fail_json(images=failed.done, **clock.stamp(failure(failed.error, "image_cache")))
    except (NimbusError, OSError) as err:
        module.fail_json(**clock.stamp(failure(err, "image_cache")))


if __name__ == "__main__":
    main()
