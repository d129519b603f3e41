# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Create + delete of one server from a cached image through the `server` / `server_delete`
roles, against the floor measured in the same run:

  floor      = qemu-img create (overlay) + virsh define + virsh start + virsh destroy + virsh undefine + rm
  ansible    = the same tasks, each module task that ran replaced by a no-op module (one copy per
               distinct module used), each controller-only task by a no-op set_fact and each skipped
               task by a skipped no-op task, in one play: Ansible's own per-task cost, reported separately
  nimbus     = ansible-playbook running roles server then server_delete (imported: the harness adds no
               task of its own to either side)

for a 10 MiB and a 2 GiB raw base image (the time must not grow with image size).
Target: nimbus <= 1.5 x floor + ansible overhead. Needs root and the lab (make setup).

    .venv/bin/python bench/create_server.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
WORK = "/var/tmp/nimbus-bench-create"
INSTANCES = os.path.join(WORK, "instances")
URI = "qemu:///system"
FLAVOR = {"name": "bench.tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 3, "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Create
      ansible.builtin.import_role:
        name: nimbus.compute.server
      vars:
        server_uuid: "{{ bench_uuid }}"
        server_flavor: "{{ bench_flavor }}"
        server_image: "{{ bench_image }}"
        server_kernel_image: "{{ nimbus_guest_kernel }}"
        server_ramdisk_image: "{{ nimbus_guest_ramdisk }}"
        server_instances_path: "{{ bench_instances }}"
        server_config_drive: false
        server_reserved_host_memory_mb: 0
    - name: Delete
      ansible.builtin.import_role:
        name: nimbus.compute.server_delete
      vars:
        server_delete_uuid: "{{ bench_uuid }}"
        server_delete_instances_path: "{{ bench_instances }}"
        server_delete_shutdown_timeout: 1
"""


def env(count_file):
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, "bench", "callbacks"),
                ANSIBLE_CALLBACKS_ENABLED="nimbus_task_count", NIMBUS_TASK_COUNT_FILE=count_file)


NOOP_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule


def main():
    AnsibleModule(argument_spec={}, supports_check_mode=True).exit_json(changed=False)


if __name__ == "__main__":
    main()
"""


def playbook(path, extra_vars, library=None):
    """Wall time of one ansible-playbook run and its tasks: {"module": tasks that ran a module process on
    the host, "controller": set_fact, include_* ..., "skipped": tasks whose condition was false}."""
    count_file = path + ".count.json"
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=" + os.path.join(VENV_BIN, "python"), "-e", "ansible_pipelining=true",
            "-e", json.dumps(extra_vars), path] + (["-M", library] if library else [])
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env(count_file), check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit("bench: playbook failed:\n" + proc.stdout[-3000:])
    with open(count_file, encoding="utf-8") as handle:
        return elapsed, json.load(handle)


def make_raw_image(path, size):
    with open(path, "wb") as handle:
        handle.write(b"NIMBUS-ROOT-DISK v1".ljust(512, b"\0"))
        handle.write(os.urandom(1 << 20))  # 1 MiB of real data; the rest stays sparse
        handle.truncate(size)


def floor_run(base, xml_template, tmp):
    """The bare commands Nova's spawn path boils down to, and the delete."""
    run_uuid = str(uuidlib.uuid4())
    inst = os.path.join(tmp, run_uuid)
    started = time.perf_counter()
    os.makedirs(inst, mode=0o755)
    disk = os.path.join(inst, "disk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk, str(FLAVOR["root_gb"] << 30)],
                   check=True)
    xml_path = os.path.join(inst, "libvirt.xml")
    with open(xml_path, "w", encoding="utf-8") as handle:
        handle.write(xml_template.replace("@UUID@", run_uuid).replace("@DISK@", disk).replace("@DIR@", inst))
    name = "floor-" + run_uuid
    for args in (["define", xml_path], ["start", name], ["destroy", name], ["undefine", name]):
        subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)
    shutil.rmtree(inst)
    return time.perf_counter() - started


def floor_xml(libvirt_xml):
    """Our generated XML, renamed for the floor run: same devices, same boot, only names differ."""
    xml = re.sub(r"<name>[^<]*</name>", "<name>floor-@UUID@</name>", libvirt_xml, count=1)
    xml = re.sub(r"<uuid>[^<]*</uuid>", "<uuid>@UUID@</uuid>", xml, count=1)
    xml = re.sub(r"<metadata>.*?</metadata>", "", xml, flags=re.S)
    xml = re.sub(r"""(<source file=["'])[^"']*/disk(["'])""", r"\1@DISK@\2", xml)
    return re.sub(r"""(<source path=["'])[^"']*/console.log(["'])""", r"\1@DIR@/console.log\2", xml)


def guest_images():
    """The lab guest's kernel and ramdisk image dicts (make setup builds them)."""
    with open(os.path.join(ROOT, ".cache", "guest", "images.json"), encoding="utf-8") as handle:
        return json.load(handle)


def fresh_workdir():
    """An empty WORK holding INSTANCES, and a scratch directory in it that QEMU can traverse."""
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(INSTANCES)
    tmp = tempfile.mkdtemp(dir=WORK)
    os.chmod(tmp, 0o755)
    return tmp


def floor_template(tmp, base_vars):
    """(cached base path, the XML the floor defines): from one create through the roles, kept until its
    libvirt.xml is read, then deleted (not timed)."""
    keep_vars = {**base_vars, "bench_uuid": str(uuidlib.uuid4())}
    playbook_create_only(tmp, keep_vars)
    with open(os.path.join(INSTANCES, keep_vars["bench_uuid"], "libvirt.xml"), encoding="utf-8") as handle:
        xml_template = floor_xml(handle.read())
    playbook_delete_only(tmp, keep_vars)
    return os.path.join(INSTANCES, "_base", _sha1(base_vars["bench_image"]["id"])), xml_template


def main():
    parser = argparse.ArgumentParser(description="create+delete benchmark")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root and the lab (make setup)")
    guest = guest_images()
    tmp = fresh_workdir()
    play = os.path.join(tmp, "create_delete.yml")
    with open(play, "w", encoding="utf-8") as handle:
        handle.write(PLAY)

    # Set-up (not timed): each base image cached, the tasks a run executes, and the XML the floor defines.
    sizes = []
    for label, size in (("10 MiB", 10 << 20), ("2 GiB", 2 << 30)):
        src = os.path.join(tmp, "base-%d.raw" % size)
        make_raw_image(src, size)
        image = {"id": "bench-%d" % size, "src": "file://" + src, "disk_format": "raw", "properties": {}}
        base_vars = {"bench_flavor": FLAVOR, "bench_image": image, "bench_instances": INSTANCES, **guest}
        _elapsed, tasks = playbook(play, {**base_vars, "bench_uuid": str(uuidlib.uuid4())})
        base, xml_template = floor_template(tmp, base_vars)
        sizes.append({"label": label, "vars": base_vars, "tasks": tasks, "base": base, "xml": xml_template,
                      "ours": [], "floors": []})
    if sizes[0]["tasks"] != sizes[1]["tasks"]:
        sys.exit("bench: the two image sizes ran different tasks: %s vs %s" % (sizes[0]["tasks"], sizes[1]["tasks"]))
    tasks = sizes[0]["tasks"]
    noop_play, library = noop_playbook(tmp, tasks)

    # Interleaved rounds: a slow spell of the machine hits every side alike, not only the one running then.
    overheads = []
    for _run in range(args.runs):
        for one in sizes:
            elapsed, counted = playbook(play, {**one["vars"], "bench_uuid": str(uuidlib.uuid4())})
            if counted != tasks:
                sys.exit("bench: the runs ran different tasks: %s vs %s" % (tasks, counted))
            one["ours"].append(elapsed)
            one["floors"].append(floor_run(one["base"], one["xml"], tmp))
        elapsed, counted = playbook(noop_play, {}, library=library)
        if any(counted[key] != tasks[key] for key in ("module", "controller", "skipped")):
            sys.exit("bench: the no-op play ran %s" % counted)
        overheads.append(elapsed)
    rows = [(one["label"], one["ours"], one["floors"], tasks) for one in sizes]
    overhead = statistics.median(overheads)
    print("\n%d runs each, medians (min-max):" % args.runs)
    print("| base image | nimbus create+delete (s) | floor (s) | ansible no-op, same tasks (s) "
          "| nimbus / (1.5 x floor + ansible) |")
    print("|---|---|---|---|---|")
    for label, ours, floors, _tasks in rows:
        print("| %s | %s | %s | %s | %.2f |" % (label, _spread(ours), _spread(floors), _spread(overheads),
                                                statistics.median(ours) / (1.5 * statistics.median(floors) + overhead)))
    growth = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
    counts = (tasks["module"], len(tasks["module_actions"]), tasks["controller"], tasks["skipped"])
    print("\ntasks that ran per create+delete: %d module tasks of %d distinct modules, %d controller-only tasks"
          ", %d skipped tasks; the no-op play runs (or skips) as many of each" % counts)
    print("  by action: %s" % ", ".join("%s=%d" % item for item in sorted(tasks["actions"].items())))
    print("2 GiB / 10 MiB time ratio: %.2f" % growth)
    ok = all(statistics.median(r[1]) <= 1.5 * statistics.median(r[2]) + overhead for r in rows)
    print("create_server target_met=%s size_growth=%.2f" % (str(ok).lower(), growth))
    shutil.rmtree(WORK, ignore_errors=True)


def _sha1(text):
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


def _write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def playbook_create_only(tmp, extra):
    playbook(_write(tmp, "create.yml", PLAY.split("    - name: Delete", maxsplit=1)[0]), extra)


def playbook_delete_only(tmp, extra):
    head, delete = PLAY.split("    - name: Create", maxsplit=1)[0], "    - name: Delete" + PLAY.split("    - name: Delete")[1]
    playbook(_write(tmp, "delete.yml", head + delete), extra)


def noop_playbook(tmp, tasks):
    """Ansible's fixed and per-task cost: one play with the same tasks as the create+delete, each module
    task replaced by a no-op module and each controller task by a no-op set_fact. Each module the
    create+delete used gets its own copy of the no-op module, as Ansible builds one payload per distinct
    module per run (about 0.2 s each here). A skipped task is mirrored by a skipped no-op task: Ansible
    still templates its condition (about 30 ms here). Returns the play's path and its module library."""
    library = os.path.join(tmp, "library")
    os.makedirs(library, exist_ok=True)
    body = ""
    for index, (_action, count) in enumerate(sorted(tasks["module_actions"].items())):
        _write(library, "nimbus_noop_%d.py" % index, NOOP_MODULE)
        body += "".join("    - name: No-op %d.%d\n      nimbus_noop_%d:\n" % (index, i, index) for i in range(count))
    body += "".join("    - name: Fact %d\n      ansible.builtin.set_fact:\n        noop_%d: %d\n" % (i, i, i)
                    for i in range(tasks["controller"]))
    body += "".join("    - name: Skipped %d\n      nimbus_noop_0:\n      when: noop_skip | default(false)\n" % i
                    for i in range(tasks["skipped"]))
    return _write(tmp, "noop.yml", "- hosts: all\n  gather_facts: false\n  tasks:\n" + body), library


def _spread(values):
    return "%.2f (%.2f-%.2f)" % (statistics.median(values), min(values), max(values))


if __name__ == "__main__":
    main()
