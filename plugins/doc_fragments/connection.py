# -*- coding: utf-8 -*-
# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations


class ModuleDocFragment:
    # Mirrors CONNECTION_ARGS in module_utils/_common/args.py
    DOCUMENTATION = r"""
options:
  libvirt_uri:
    description:
      - libvirt connection URI on the target host, for example V(qemu:///system) or V(test:///default).
      - Can be set once for the whole collection through C(module_defaults) and the C(group/nimbus.compute.libvirt) action group.
    type: str
    default: qemu:///system
"""

    # Mirrors INSTANCES_PATH_ARGS in module_utils/_common/args.py
    INSTANCES_PATH = r"""
options:
  instances_path:
    description:
      - Directory that holds one directory per server (named by its UUID) and the image cache C(_base).
    type: path
    default: /var/lib/nimbus/instances
"""
