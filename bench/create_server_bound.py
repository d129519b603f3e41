# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The least any Ansible module design can spend on create_server.py's create+delete, against its target.

Two bare modules do exactly the floor's work (`qemu-img create` of the overlay, defineXML and create
through libvirt-python; then destroy, undefine and rm) with nothing else: no validation, no journal,
no lock, no XML builder, no image check. They run as two tasks of one play, against a no-op play of two
no-op modules and the floor, in interleaved rounds. If these two tasks already exceed
1.5 x floor + no-op, no set of modules can meet create_server.py's target; what they leave below it is
all that every other step (image check, claim, journal, XML, the role's own tasks) may cost.

    .venv/bin/python bench/create_server_bound.py [--runs 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("create_server_bench", os.path.join(HERE, "create_server.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

BARE_CREATE = r'''#!/usr/bin/python
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(uuid=dict(type="str", required=True), base=dict(type="str", required=True),
                                              xml=dict(type="str", required=True), dir=dict(type="str", required=True)))
    import libvirt

    params = module.params
    inst = os.path.join(params["dir"], params["uuid"])
    os.makedirs(inst)
    disk = os.path.join(inst, "disk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", params["base"], "-F", "raw", disk, "3G"], check=True)
    with open(params["xml"]) as handle:
        xml = handle.read().replace("@UUID@", params["uuid"]).replace("@DISK@", disk).replace("@DIR@", inst)
    with open(os.path.join(inst, "libvirt.xml"), "w") as handle:
        handle.write(xml)
    libvirt.open("qemu:///system").defineXML(xml).create()
    module.exit_json(changed=True)


main()
'''

BARE_DELETE = r'''#!/usr/bin/python
import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(uuid=dict(type="str", required=True), dir=dict(type="str", required=True)))
    import libvirt

    domain = libvirt.open("qemu:///system").lookupByName("floor-" + module.params["uuid"])
    domain.destroy()
    domain.undefine()
    shutil.rmtree(os.path.join(module.params["dir"], module.params["uuid"]))
    module.exit_json(changed=True)


main()
'''

BARE_PLAY = """- hosts: all
  gather_facts: false
  tasks:
    - bare_create: {uuid: "{{ run_uuid }}", base: "{{ base }}", xml: "{{ xml }}", dir: "{{ dir }}"}
    - bare_delete: {uuid: "{{ run_uuid }}", dir: "{{ dir }}"}
"""

NOOP_PLAY = """- hosts: all
  gather_facts: false
  tasks:
    - nimbus_noop_0:
    - nimbus_noop_1:
"""


def prepared(tmp):
    """The cached base and the floor's XML, made by one real create+delete through the roles (not timed)."""
    src = os.path.join(tmp, "base.raw")
    bench.make_raw_image(src, 10 << 20)
    image = {"id": "bench-bound", "src": "file://" + src, "disk_format": "raw", "properties": {}}
    return bench.floor_template(tmp, {"bench_flavor": bench.FLAVOR, "bench_image": image,
                                      "bench_instances": bench.INSTANCES, **bench.guest_images()})


def main():
    parser = argparse.ArgumentParser(description="lower bound of create+delete through Ansible modules")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root and the lab (make setup)")
    tmp = bench.fresh_workdir()
    base, xml = prepared(tmp)
    xml_path = bench._write(tmp, "floor.xml", xml)
    library = os.path.join(tmp, "library")
    os.makedirs(library)
    for name, text in (("bare_create.py", BARE_CREATE), ("bare_delete.py", BARE_DELETE),
                       ("nimbus_noop_0.py", bench.NOOP_MODULE), ("nimbus_noop_1.py", bench.NOOP_MODULE)):
        bench._write(library, name, text)
    bare_play, noop_play = bench._write(tmp, "bare.yml", BARE_PLAY), bench._write(tmp, "noop.yml", NOOP_PLAY)

    bare, floors, noops = [], [], []
    for _run in range(args.runs):
        extra = {"run_uuid": str(uuidlib.uuid4()), "base": base, "xml": xml_path, "dir": tmp}
        bare.append(bench.playbook(bare_play, extra, library=library)[0])
        floors.append(bench.floor_run(base, xml, tmp))
        noops.append(bench.playbook(noop_play, {}, library=library)[0])
    ours, floor, noop = (statistics.median(values) for values in (bare, floors, noops))
    print("\n%d runs each, medians (min-max):" % args.runs)
    print("| bare modules, 2 tasks (s) | floor (s) | no-op play, 2 tasks (s) | bare / (1.5 x floor + no-op) |")
    print("|---|---|---|---|")
    print("| %s | %s | %s | %.2f |" % (bench._spread(bare), bench._spread(floors), bench._spread(noops),
                                       ours / (1.5 * floor + noop)))
    print("\nleft for every other step below the target: %.2f s (1.5 x floor %.2f s, bare - no-op %.2f s)"
          % (1.5 * floor - (ours - noop), 1.5 * floor, ours - noop))
    print("create_server_bound ratio=%.2f slack_s=%.2f" % (ours / (1.5 * floor + noop), 1.5 * floor - (ours - noop)))
    shutil.rmtree(bench.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
