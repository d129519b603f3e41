"""instance_network's ``domain_interfaces`` as ``domain_xml`` consumes them: the NIC model is the
port's or the option's when set, else the image's ``hw_vif_model`` (Nova's order)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import CommandError, ValidationError
from ansible_collections.nimbus.compute.plugins.module_utils._common.runner import CommandResult
from ansible_collections.nimbus.compute.plugins.module_utils._domain import compare, xml_builder
from ansible_collections.nimbus.compute.plugins.module_utils._network import instance, nft
from ansible_collections.nimbus.compute.plugins.module_utils._network.errors import NetworkError, UnsupportedError
from ansible_collections.nimbus.compute.plugins.module_utils._network.instance import (
    domain_interfaces,
    ensure_absent,
    ensure_present,
)
from ansible_collections.nimbus.compute.plugins.module_utils._network.links import Links, Registry, created_by
from ansible_collections.nimbus.compute.plugins.module_utils._network.validation import parse_request

INSTANCE = "11111111-2222-3333-4444-555555555555"
PORT = "aaaaaaaa-0000-0000-0000-000000000001"
HOST = xml_builder.HostInfo(arch="x86_64", machine="pc-i440fx-7.2", vhost_net=False, direct_io=True)


def models(image_model, port_model=None, option=None, vif_type="bridge"):
    port = {"id": PORT, "network": "n"}
    if port_model:
        port["vif_model"] = port_model
    nics = domain_interfaces(parse_request(INSTANCE, [port], [{"name": "n"}], [], option), vif_type)
    properties = {"hw_vif_model": image_model} if image_model else {}
    req = xml_builder.DomainRequest(
        instance_uuid=INSTANCE, instances_path="/srv/instances", virt_type="qemu", name="vm",
        flavor={"name": "m1.tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1},
        image={"id": "img-1", "properties": properties}, disks=[], interfaces=nics,
    )
    dom = compare.parse(xml_builder.generate(req, HOST))
    return nics[0]["model"], [m.get("type") for m in dom.findall("devices/interface/model")]


@pytest.mark.parametrize("vif_type", ["bridge", "ethernet"])
def test_image_hw_vif_model_reaches_the_domain(vif_type):
    assert models("e1000", vif_type=vif_type) == (None, ["e1000"])
    assert models("rtl8139") == (None, ["rtl8139"])


def test_no_property_means_virtio():
    assert models(None) == (None, ["virtio"])


def test_port_or_option_overrides_the_image():
    assert models("e1000", port_model="virtio") == ("virtio", ["virtio"])
    assert models("e1000", option="e1000e") == ("e1000e", ["e1000e"])
    assert models("e1000", port_model="rtl8139", option="e1000e") == ("rtl8139", ["rtl8139"])


# ---------------------------------------------------------------------------------------------
# A run that fails halfway, and the preflight, with an in-memory "kernel" behind the ip runner.


class FakeKernel:
    """Just enough of ``ip`` for the plans: links by name, alias/mtu/master/up, and a failure on the
    ``fail_at``-th command that changes something (1-based)."""

    def __init__(self, links=None, fail_at=None):
        self.links = links or {}
        self.fail_at = fail_at
        self.changes = 0
        self.sysctl = {nft.BR_NETFILTER: "1", nft.BR_NETFILTER6: "1"}
        self.netns_missing = False
        self.nft_refuses = False

    def _result(self, args, rc=0, out="", err="", check=True):
        if check and rc:
            raise CommandError("ip %s failed (exit %d): %s" % (" ".join(args[:2]), rc, err), step="instance_network")
        return CommandResult(["ip", *args], rc, out, err)

    def run(self, args, check=True, input_data=None, timeout=None):
        args = [str(a) for a in args]
        if args[:2] == ["netns", "exec"]:
            if self.netns_missing:
                return self._result(args, 255, err='Cannot open network namespace "%s": No such file' % args[2], check=check)
            if args[3] == "cat":
                value = self.sysctl.get(args[4])
                return self._result(args, 0 if value else 1, (value or "") + "\n", "cat: No such file", check=check)
            if self.nft_refuses:  # nft inside the namespace
                return self._result(args, 1, err="Error: Could not process rule: Protocol error", check=check)
            return self._result(args)
        if args[:1] == ["-n"]:
            args = args[2:]
        if args[:3] == ["-j", "-d", "link"]:
            link = self.links.get(args[-1])
            if link is None:
                return self._result(args, 1, err='Device "%s" does not exist.' % args[-1], check=check)
            return self._result(args, out=json.dumps([dict(link, ifname=args[-1])]))
        if args[:3] == ["-j", "link", "show"]:
            members = [{"ifname": name} for name, link in self.links.items() if link.get("master") == args[-1]]
            return self._result(args, out=json.dumps(members))
        self.changes += 1
        if self.changes == self.fail_at:
            return self._result(args, 2, err="Error: injected failure", check=check)
        if args[:2] == ["link", "add"]:
            kind = args[args.index("type") + 1]
            self.links[args[args.index("name") + 1]] = {"flags": [], "linkinfo": {"info_kind": kind}}
        elif args[:2] == ["tuntap", "add"]:
            self.links[args[3]] = {"flags": [], "linkinfo": {"info_kind": "tun"}}
        elif args[:2] == ["link", "delete"]:
            self.links.pop(args[3])
            for link in self.links.values():
                if link.get("master") == args[3]:
                    link.pop("master")
        elif args[:3] == ["link", "set", "dev"]:
            link, key = self.links[args[3]], args[4]
            if key == "up":
                link["flags"] = ["UP"]
            elif key == "alias":
                link["ifalias"] = args[5]
            else:
                link[key] = int(args[5]) if key == "mtu" else args[5]
        return self._result(args)


class NoFirewall:
    def __init__(self, netns=None):
        pass

    def preflight(self):
        pass


def two_ports(net=None):
    ports = [{"id": "aaaaaaaa-0000-0000-0000-00000000000%d" % i, "network": "n", "fixed_ips": ["10.9.0.%d" % (i + 4)]}
             for i in (1, 2)]
    ports[1]["id"] = "bbbbbbbb-0000-0000-0000-000000000002"
    net = net or {"name": "n", "physical_interface": "eth1", "mtu": 1400, "cidr": "10.9.0.0/24"}
    return parse_request(INSTANCE, ports, [net], [])


def host_links():
    """The host's links before any run: the uplink eth1."""
    return {"eth1": {"flags": ["UP"], "linkinfo": {"info_kind": "veth"}, "mtu": 1500}}


def use_kernel(monkeypatch, fake):
    monkeypatch.setattr(instance, "Links", lambda netns=None: Links(netns, runner=fake))
    monkeypatch.setattr(instance, "Firewall", NoFirewall)
    return fake


@pytest.fixture
def kernel(monkeypatch):
    return use_kernel(monkeypatch, FakeKernel(host_links()))


def test_every_link_of_a_run_failing_at_any_command_is_removed_by_absent(tmp_path, kernel):
    planned = ensure_present(two_ports(), str(tmp_path), vif_type="ethernet", scope="links", check_mode=True)["commands"]
    creating = [c for c in planned if created_by(c[1:])]
    assert len(planned) >= 12 and len(creating) == 3  # bridge + 2 taps
    for fail_at in range(1, len(planned) + 1):
        path = tmp_path / str(fail_at)
        kernel.links = host_links()
        kernel.changes, kernel.fail_at = 0, fail_at
        with pytest.raises(NetworkError, match="injected failure"):
            ensure_present(two_ports(), str(path), vif_type="ethernet", scope="links")
        left = set(kernel.links) - {"eth1"}
        recorded = set(Registry(str(path)).data["links"]) if left else set()
        assert left <= recorded, "command %d failed: %s exist but only %s are recorded" % (fail_at, left, recorded)
        kernel.fail_at = None
        gone = ensure_absent(INSTANCE, str(path), scope="links")
        assert set(kernel.links) == {"eth1"}, "command %d failed: absent left %s" % (fail_at, set(kernel.links))
        assert sorted(gone["removed_links"]) == sorted(left)
        assert Registry(str(path)).data == {"links": {}, "instances": {}}


def test_a_link_whose_alias_someone_else_set_is_not_deleted(tmp_path, kernel):
    kernel.fail_at = 3  # after the bridge's add and alias: it is recorded and aliased
    with pytest.raises(NetworkError):
        ensure_present(two_ports(), str(tmp_path), vif_type="ethernet", scope="links")
    kernel.links["brqn"]["ifalias"] = "someone else's"
    kernel.fail_at = None
    assert ensure_absent(INSTANCE, str(tmp_path), scope="links")["removed_links"] == []
    assert "brqn" in kernel.links


class RacingKernel(FakeKernel):
    """Another agent sharing the kernel creates ``name`` (a plain bridge, not ours) just before our
    ``link add`` of it runs, ``times`` times."""

    def __init__(self, links, name, times=1):
        super().__init__(links)
        self.name, self.times = name, times

    def run(self, args, check=True, input_data=None, timeout=None):
        args = [str(a) for a in args]
        if args[:2] == ["link", "add"] and args[args.index("name") + 1] == self.name and self.times:
            self.times -= 1
            self.links[self.name] = {"flags": ["UP"], "linkinfo": {"info_kind": "bridge"}}
            return self._result(args, 2, err="RTNETLINK answers: File exists", check=check)
        return super().run(args, check=check, input_data=input_data, timeout=timeout)


def racing(monkeypatch, times):
    return use_kernel(monkeypatch, RacingKernel(host_links(), "brqn", times))


def test_a_bridge_made_meanwhile_by_another_build_is_used_and_left_to_its_maker(tmp_path, monkeypatch):
    kernel = racing(monkeypatch, times=1)
    result = ensure_present(two_ports(), str(tmp_path), vif_type="ethernet", scope="links")
    taps = {p.tap for p in two_ports().ports}
    assert sorted(result["created_links"]) == sorted(taps)  # not the bridge: someone else made it
    assert all(kernel.links[tap]["master"] == "brqn" for tap in taps) and "ifalias" not in kernel.links["brqn"]
    assert set(Registry(str(tmp_path)).data["links"]) == taps
    assert sorted(ensure_absent(INSTANCE, str(tmp_path), scope="links")["removed_links"]) == sorted(taps)
    assert set(kernel.links) == {"eth1", "brqn"}


def test_a_link_that_keeps_appearing_fails_after_a_few_plans(tmp_path, monkeypatch):
    kernel = racing(monkeypatch, times=instance.LINK_PLAN_ATTEMPTS)
    kernel.links.pop("brqn", None)
    original_show = Links.show
    # The other agent deletes its bridge again each time, so every plan wants to create it.
    monkeypatch.setattr(Links, "show", lambda self, name: None if name == "brqn" else original_show(self, name))
    with pytest.raises(NetworkError, match=r"ip link add name brqn type bridge failed: .*File exists"):
        ensure_present(two_ports(), str(tmp_path), vif_type="ethernet", scope="links")
    assert kernel.times == 0 and Registry(str(tmp_path)).data["links"] == {}


def fake_firewall(kernel):
    return lambda netns=None: nft.Firewall(netns, runner=None, ip_runner=kernel)


@pytest.mark.parametrize("scope", ["all", "links", "firewall"])
@pytest.mark.parametrize(
    "setup, error, message",
    [
        (lambda k: k.sysctl.pop(nft.BR_NETFILTER), UnsupportedError, "bridge netfilter is not available"),
        (lambda k: k.sysctl.update({nft.BR_NETFILTER6: "0"}), UnsupportedError, "bridge-nf-call-ip6tables is 0"),
        (lambda k: setattr(k, "netns_missing", True), NetworkError, "network namespace hv1 cannot be entered"),
        ("nft", UnsupportedError, "nftables bridge family or inet conntrack is not available"),
    ],
)
def test_preflight_fails_before_any_link_changes_in_every_scope(tmp_path, kernel, monkeypatch, scope, setup, error, message):
    monkeypatch.setattr(instance, "Firewall", fake_firewall(kernel))
    if setup == "nft":
        kernel.nft_refuses = True
    else:
        setup(kernel)
    with pytest.raises(error, match=message) as raised:
        ensure_present(two_ports(), str(tmp_path), netns="hv1", vif_type="ethernet", scope=scope)
    assert kernel.changes == 0 and set(kernel.links) == {"eth1"}
    if scope == "firewall" and setup == "nft":
        # The firewall scope probes nft only to explain its failed load, made under the host's network
        # lock: the lock file is all that exists (no network.json, no link, no rule).
        assert os.listdir(tmp_path) in ([], ["locks"])
        assert set(os.listdir(tmp_path / "locks")) <= {"network.lock"} if os.listdir(tmp_path) else True
    else:
        assert os.listdir(tmp_path) == []
    if "namespace" in message:
        assert "bridge netfilter" not in raised.value.msg


def test_no_port_security_needs_no_preflight(tmp_path, kernel, monkeypatch):
    monkeypatch.setattr(instance, "Firewall", fake_firewall(kernel))
    kernel.nft_refuses = True
    req = parse_request(INSTANCE, [{"id": PORT, "network": "n", "port_security_enabled": False}], [{"name": "n"}], [])
    assert ensure_present(req, str(tmp_path), netns="hv1", scope="links")["created_links"] == ["brqn"]


# ---------------------------------------------------------------------------------------------
# Check mode only reads; bad instances_path and netns fail before anything is read or made.


@pytest.mark.parametrize("scope", ["all", "links", "firewall"])
@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize("exists", [True, False], ids=["instances_path", "no-instances_path"])
def test_check_mode_creates_nothing_not_even_the_lock(tmp_path, kernel, monkeypatch, scope, state, exists):
    monkeypatch.setattr(instance, "Firewall", fake_firewall(kernel))
    path = tmp_path / "instances"
    if exists:
        path.mkdir()
    if state == "present":
        result = ensure_present(two_ports(), str(path), netns="hv1", vif_type="ethernet", scope=scope, check_mode=True)
        assert result["changed"] is True
    else:
        ensure_absent(INSTANCE, str(path), netns="hv1", scope=scope, check_mode=True)
    assert kernel.changes == 0 and set(kernel.links) == {"eth1"}
    assert os.listdir(tmp_path) == (["instances"] if exists else [])
    assert not exists or os.listdir(path) == []


def test_check_mode_reads_the_registry_without_the_lock(tmp_path, kernel):
    ensure_present(two_ports(), str(tmp_path), vif_type="ethernet", scope="links")
    (tmp_path / "locks" / "network.lock").unlink()
    (tmp_path / "locks").rmdir()
    planned = ensure_absent(INSTANCE, str(tmp_path), scope="links", check_mode=True)
    assert sorted(planned["removed_links"]) == ["brqn", "tapaaaaaaaa-00", "tapbbbbbbbb-00"]
    assert os.listdir(tmp_path) == ["network.json"]


@pytest.mark.parametrize("call", ["present", "absent"])
@pytest.mark.parametrize("instances_path, netns, message", [
    ("relative/instances", None, "instances_path must be an absolute path"),
    ("/srv/x\0y", None, "instances_path must be an absolute path"),
    ("", None, "instances_path must be an absolute path"),
    (None, "a\0b", "netns"),
    (None, "--help", "netns"),
    (None, "../../x", "netns"),
])
def test_bad_instances_path_or_netns_fails_before_anything(tmp_path, kernel, monkeypatch, call, instances_path, netns,
                                                           message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(instance, "Firewall", fake_firewall(kernel))
    path = str(tmp_path / "instances") if instances_path is None else instances_path
    with pytest.raises(ValidationError, match=message) as err:
        if call == "present":
            ensure_present(two_ports(), path, netns=netns, vif_type="ethernet")
        else:
            ensure_absent(INSTANCE, path, netns=netns)
    assert err.value.step == "instance_network"
    assert kernel.changes == 0 and os.listdir(tmp_path) == []
