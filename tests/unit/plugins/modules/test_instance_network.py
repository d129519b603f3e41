"""instance_network as Ansible runs it: documentation matches the argument spec, bad input is a
clean failure, and check mode / apply / re-apply / absent in a network namespace of its own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
import yaml
from moduletools import run_module

from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandResult, CommandRunner
from ansible_collections.nimbus.compute.plugins.modules import instance_network

UUID = "6f1e8b2a-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
PORT = "3f1e6c3a-5b4e-4f0e-9a53-6c1c2a9d8b11"
NETWORKS = [{"name": "private", "type": "flat", "cidr": "10.66.0.0/24", "mtu": 1400}]
PORTS = [{"id": PORT, "network": "private", "fixed_ips": ["10.66.0.5"], "security_groups": ["web"]}]
SGS = [{"name": "web", "rules": [{"direction": "ingress", "protocol": "tcp", "port_range_min": 22}]}]


def run(args, capsys, check_mode=False):
    return run_module(instance_network, args, capsys, check_mode=check_mode)


def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(instance_network.DOCUMENTATION)["options"]
    spec = dict(instance_network.ARGUMENT_SPEC)
    spec.pop("instances_path")  # from the doc fragment
    assert set(doc) == set(spec)
    for name, option in spec.items():
        assert doc[name]["type"] == option["type"], name
        assert doc[name].get("default") == option.get("default"), name
        assert doc[name].get("choices") == option.get("choices"), name
        assert doc[name].get("required", False) == option.get("required", False), name
        assert doc[name].get("elements") == option.get("elements"), name


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"instance_uuid": "../etc"}, "not a valid UUID"),
        ({"networks": [dict(NETWORKS[0], type="vlan", physical_interface="eth9", vlan_id=5000)]}, "from 1 to 4094"),
        ({"ports": [dict(PORTS[0], mac="zz")]}, "aa:bb:cc:dd:ee:ff"),
        ({"security_groups": [{"name": "web", "rules": [{"direction": "ingress", "remote_ip_prefix": "10.0.0.1/8"}]}]},
         "not a CIDR"),
        # Wrong types: unhashable where a name is looked up, strings where a list is iterated.
        ({"ports": [dict(PORTS[0], network=["private"])]}, "network must be a name"),
        ({"ports": [dict(PORTS[0], security_groups=[["web"]])]}, "security group must be a name"),
        ({"ports": [dict(PORTS[0], security_groups="web")]}, "security_groups must be a list, got str"),
        ({"ports": [dict(PORTS[0], fixed_ips="10.66.0.5")]}, "fixed_ips must be a list, got str"),
        ({"ports": [dict(PORTS[0], allowed_address_pairs="10.66.0.0/24")]}, "allowed_address_pairs must be a list"),
        ({"security_groups": [dict(SGS[0], id=["x"])]}, "security group web id must be a name"),
        ({"security_groups": [dict(SGS[0], rules=[{"direction": "ingress", "remote_group_id": ["web"]}])]},
         "remote_group_id must be a name"),
        ({"security_groups": [dict(SGS[0], members="10.66.0.9")]}, "members must be a list"),
        ({"security_groups": [dict(SGS[0], rules="tcp")]}, "rules must be a list"),
    ],
)
def test_bad_input_fails_cleanly_before_any_change(tmp_path, capsys, extra, message):
    args = dict(instance_uuid=UUID, ports=PORTS, networks=NETWORKS, security_groups=SGS, instances_path=str(tmp_path))
    args.update(extra)
    result = run(args, capsys)
    assert result["failed"] is True and message in result["msg"]
    assert result["failed_step"] == "instance_network"
    assert "Traceback" not in json.dumps(result)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def no_commands(monkeypatch):
    """Fails the test if the module would run ``ip`` or ``nft`` (bad input must stop before them)."""
    def run(self, args, *rest, **kwargs):
        raise AssertionError("ran %s %s" % (self.binary, args))

    monkeypatch.setattr(CommandRunner, "run", run)


@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize(
    "extra, message",
    [
        ({"instances_path": "rel"}, "instances_path must be an absolute path, got 'rel'"),
        ({"instances_path": "/tmp/x\u0000"}, "instances_path must be an absolute path"),
        ({"netns": "a\u0000b"}, "netns 'a\\x00b' is not a network namespace name"),
        ({"netns": "--help"}, "netns '--help' is not a network namespace name"),
        ({"netns": "../../x"}, "netns '../../x' is not a network namespace name"),
        ({"netns": ""}, "netns '' is not a network namespace name"),
        ({"netns": "."}, "netns '.' is not a network namespace name"),
        ({"netns": "x" * 256}, "is not a network namespace name"),
    ],
)
def test_bad_instances_path_or_netns_fails_before_anything(tmp_path, capsys, monkeypatch, no_commands, state, extra,
                                                           message):
    monkeypatch.chdir(tmp_path)
    args = dict(instance_uuid=UUID, ports=PORTS, networks=NETWORKS, security_groups=SGS, instances_path=str(tmp_path),
                state=state)
    args.update(extra)
    result = run(args, capsys)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert result["failed_step"] == "instance_network" and result["msg"].startswith("instance_network: ")
    assert "Traceback" not in json.dumps(result) and "exception" not in result
    assert os.listdir(tmp_path) == [], "nothing created, not even relative to the working directory"


@pytest.mark.parametrize("scope", ["links", "all", "firewall"])
@pytest.mark.parametrize("state", ["present", "absent"])
def test_check_mode_creates_no_directory_and_no_lock(tmp_path, capsys, monkeypatch, state, scope):
    # No port and no registry: nothing to plan, so no ip or nft command is needed, only (in check mode) none is
    # allowed to create instances_path, its locks directory or the network lock.
    calls = []
    monkeypatch.setattr(CommandRunner, "run", lambda self, args, *rest, **kwargs: calls.append(args) or _no_table(args))
    path = tmp_path / "instances"
    args = dict(instance_uuid=UUID, instances_path=str(path), state=state, scope=scope, netns="hv1")
    result = run(args, capsys, check_mode=True)
    assert result["rc"] == 0 and result["changed"] is False, result
    assert os.listdir(tmp_path) == []
    assert all(list(a[:2]) == ["netns", "exec"] and "nft" in a for a in calls), calls


def _no_table(args):
    return CommandResult(["ip", *args], 1, "", "Error: No such file or directory")


@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize(
    "content, message",
    [
        ("{bad", "not JSON"),
        ("[]", "a JSON list, not an object"),
        ('{"instances": {"%s": 5}}' % UUID, "instances.%s is a JSON int" % UUID),
        ('{"instances": {"%s": {"p": {"tap": ["x"]}}}}' % UUID, "is not an object with tap"),
        ('{"links": []}', "'links' is not an object"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_corrupt_registry_is_a_clean_failure_naming_the_file(tmp_path, capsys, state, content, message):
    path = tmp_path / "network.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = dict(instance_uuid=UUID, ports=PORTS, networks=NETWORKS, security_groups=SGS, instances_path=str(tmp_path),
                state=state, netns="nimbus-test-no-such-ns")
    result = run(args, capsys)
    assert result["failed"] is True and message in result["msg"] and str(path) in result["msg"], result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert os.listdir(tmp_path) == ["network.json"], "nothing else written (no lock taken, nothing changed)"


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip("needs root, ip and nft")
    name = "nimbus-test-mod-%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def listing(ns):
    links = subprocess.run(["ip", "-n", ns, "link"], capture_output=True, text=True, check=True).stdout
    # Carrier and operstate of a bridge settle on their own a moment after it comes up.
    links = re.sub(r"NO-CARRIER,| state [A-Z]+", "", links)
    rules = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    return links, rules.stdout


def test_check_mode_apply_reapply_absent(tmp_path, capsys, netns):
    args = dict(instance_uuid=UUID, ports=PORTS, networks=NETWORKS, security_groups=SGS, instances_path=str(tmp_path),
                netns=netns, vif_type="ethernet")
    before = listing(netns)
    checked = run(args, capsys, check_mode=True)
    assert checked["changed"] is True
    assert ["ip", "-n", netns, "link", "add", "name", "brqprivate", "type", "bridge"] in checked["commands"]
    assert listing(netns) == before, "check mode changes nothing"

    applied = run(args, capsys)
    assert applied["changed"] is True
    assert applied["domain_interfaces"] == [{
        "type": "ethernet", "source_bridge": None, "target_dev": "tap3f1e6c3a-5b", "mac": applied["domain_interfaces"][0]["mac"],
        "model": None, "mtu": 1400, "port_id": PORT,
    }]
    links, rules = listing(netns)
    assert "tap3f1e6c3a-5b" in links and "master brqprivate" in links
    assert "table inet nimbus-%s" % UUID in rules

    again = run(args, capsys)
    assert again["changed"] is False and listing(netns) == (links, rules)

    gone = run(dict(args, state="absent", ports=[], networks=[], security_groups=[]), capsys)
    assert gone["changed"] is True and sorted(gone["removed_links"]) == ["brqprivate", "tap3f1e6c3a-5b"]
    assert listing(netns) == before
