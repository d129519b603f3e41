# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Glue between Ansible and the scheduler engine: hostvars -> host states, options -> engine, errors -> lookup errors."""

from __future__ import annotations

from ansible.errors import AnsibleLookupError

from ansible_collections.nimbus.compute.plugins.module_utils._common.errors import NimbusError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.engine import OPTION_DEFAULTS, Scheduler
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.request_spec import RequestSpec

FACT = "nimbus_hypervisor"
ENGINE_OPTIONS = tuple(OPTION_DEFAULTS)


def plain(value):
    """Tagged/lazy Ansible containers -> plain dicts, lists and scalars."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def hosts_from_inventory(variables, group):
    """The nimbus_hypervisor fact of every host in ``group``; the inventory name becomes the hostname."""
    groups = (variables or {}).get("groups") or {}
    if group not in groups:
        raise AnsibleLookupError("nimbus.compute.schedule: inventory group %r does not exist; pass hosts= or set "
                                 "hypervisor_group" % group)
    hostvars = variables.get("hostvars") or {}
    hosts, missing = [], []
    for name in groups[group]:
        hv = hostvars.get(name) or {}
        # The host variable first: a set_fact or inventory override outranks the gathered fact,
        # as it does everywhere else in Ansible's variable precedence.
        fact = hv.get(FACT) or (hv.get("ansible_facts") or {}).get(FACT)
        if not fact:
            missing.append(name)
            continue
        if not isinstance(fact, dict):
            raise AnsibleLookupError("nimbus.compute.schedule: host %s: %s must be a dict of host-state fields, got %s"
                                     % (name, FACT, type(fact).__name__))
        fact = plain(fact)
        fact["hostname"] = str(name)
        hosts.append(fact)
    if missing:
        raise AnsibleLookupError("nimbus.compute.schedule: no %s fact for %s; run nimbus.compute.hypervisor_info on "
                                 "them first" % (FACT, ", ".join(missing)))
    return hosts


def schedule(options, variables):
    """Run one scheduling request from the lookup's options; returns the placements.

    Bad input is refused with a message naming the host and field (SchedulerInputError). Anything
    else that escapes the engine is still turned into a lookup error naming the step, never a traceback.
    """
    step = "reading the host states"
    try:
        hosts = options.get("hosts")
        hosts = plain(hosts) if hosts is not None else hosts_from_inventory(variables, options["hypervisor_group"])
        if not hosts:
            raise AnsibleLookupError("nimbus.compute.schedule: No valid host: there are no hosts to schedule on")
        engine_options = {k: plain(options.get(k)) for k in ENGINE_OPTIONS if options.get(k) is not None}
        step = "building the request (flavor, image, hints)"
        spec = RequestSpec(plain(options["flavor"]), image=plain(options.get("image")), hints=plain(options.get("hints")),
                           count=options.get("count", 1), instance_uuids=plain(options.get("instance_uuids")),
                           project_id=options.get("project_id"), availability_zone=options.get("availability_zone"))
        step = "configuring the filters and weighers"
        scheduler = Scheduler(filters=plain(options.get("filters")), weighers=plain(options.get("weighers")),
                              weight_multipliers=plain(options.get("weight_multipliers")), **engine_options)
        step = "scheduling"
        return scheduler.schedule(hosts, spec, explain=bool(options.get("explain")))
    except AnsibleLookupError:
        raise
    except NimbusError as err:
        raise AnsibleLookupError("nimbus.compute.schedule: %s" % err.msg)
    except Exception as err:  # last resort: input the validation missed must still not end in a traceback
        raise AnsibleLookupError("nimbus.compute.schedule: unexpected error while %s: %s: %s (the input was not "
                                 "refused with a clearer message; please report it)" % (step, type(err).__name__, err),
                                 orig_exc=err)
