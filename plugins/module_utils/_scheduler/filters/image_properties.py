# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""ImagePropertiesFilter: hw_architecture / img_hv_type / hw_vm_mode / img_hv_requested_version vs the host."""

from __future__ import annotations

import re

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.filters.base import BaseHostFilter

# Version parts of at most 9 digits (libvirt's are below 1000) and a bounded text: int() refuses more than 4300 digits.
_PREDICATE = re.compile(r"^\s*(<=|>=|<|>|!=|==)\s*([0-9]{1,9}(?:\.[0-9]{1,9})*)\s*\Z")
MAX_PREDICATE = 255
_COMPARE = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "!=": lambda a, b: a != b,
}


def canonical_arch(name):
    if name is None:
        return None
    name = str(name).lower()
    if name in ("i386", "i486", "i586", "x86_32", "x86_32p"):
        return "i686"
    return "x86_64" if name == "amd64" else name


def canonical_hv_type(name):
    if name is None:
        return None
    name = str(name).lower()
    return "xen" if name == "xapi" else name


def canonical_vm_mode(name):
    if name is None:
        return None
    name = str(name).lower()
    return {"pv": "xen", "hv": "hvm", "baremetal": "hvm"}.get(name, name)


def _version_tuple(text):
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 9.0 == 9.0.0, as packaging compares release numbers
    return tuple(parts)


def parse_version_predicate(text):
    """">= 6.0, < 8" -> [(op, version tuple)], or SchedulerInputError."""
    if not isinstance(text, str):
        raise SchedulerInputError("image property img_hv_requested_version must be a string such as '>= 6.0, < 8', "
                                  "got %r" % (text,))
    if len(text) > MAX_PREDICATE:
        raise SchedulerInputError("image property img_hv_requested_version is too long (%d characters, at most %d)"
                                  % (len(text), MAX_PREDICATE))
    preds = []
    for part in text.split(","):
        found = _PREDICATE.match(part)
        if not found:
            raise SchedulerInputError("image property img_hv_requested_version %r: bad restriction %r" % (text, part))
        preds.append((found.group(1), _version_tuple(found.group(2))))
    return preds


def version_of(number):
    """libvirt/Nova integer version (major*1e6 + minor*1e3 + micro) as a tuple.

    A negative number has no version (Nova's convert_version_to_str loops forever on one: floor
    division never reaches 0); HostState rejects it, and this refuses it rather than hang.
    """
    if number < 0:
        raise SchedulerInputError("hypervisor_version must not be negative, got %r" % (number,))
    number = int(number)
    parts = []
    while number > 0:
        parts.insert(0, number % 1000)
        number //= 1000
    return _version_tuple(".".join(map(str, parts))) if parts else (0,)


class ImagePropertiesFilter(BaseHostFilter):
    name = "ImagePropertiesFilter"
    label = "image properties filter"
    run_filter_once_per_request = True

    def _wanted(self, spec):
        props = spec.image_properties
        arch = props.get("hw_architecture", self.config.get("image_properties_default_architecture"))
        return (canonical_arch(arch), canonical_hv_type(props.get("img_hv_type")), canonical_vm_mode(props.get("hw_vm_mode")))

    def is_active(self, spec):
        return any(self._wanted(spec))

    def filter_all(self, hosts, spec):
        wanted = self._wanted(spec)
        if not any(wanted):
            return list(hosts)
        props = spec.image_properties
        required = props.get("img_hv_requested_version")
        predicate = parse_version_predicate(required) if required else None
        bits_required = props.get("hw_maxphysaddr_bits")
        return [h for h in hosts if self._supported(h, wanted, predicate, bits_required)]

    @staticmethod
    def _supported(host, wanted, predicate, bits_required):
        if not host.supported_instances:
            return False
        for supported in host.supported_instances:
            # Nova compares each wanted value with the whole [arch, hv_type, vm_mode] entry.
            if any(w and w not in supported for w in wanted):
                continue
            if predicate and host.hypervisor_version:
                version = version_of(host.hypervisor_version)
                if not all(_COMPARE[op](version, v) for op, v in predicate):
                    continue
            bits = (host.cpu_info.get("maxphysaddr") or {}).get("bits") if bits_required else None
            if bits and bits < int(bits_required):
                continue
            return True
        return False
