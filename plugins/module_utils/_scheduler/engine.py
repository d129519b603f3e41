# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""The scheduler engine: filters, weighers and picks, with Nova's FilterScheduler semantics.

For each server of a request (Nova's ``_schedule`` loop):
  1. run the filters over the hosts that passed for the previous server (filters marked
     ``run_filter_once_per_request`` only for the first server);
  2. weigh: clamp, normalise each weigher's raw values to 0..1 over the candidates, multiply, sum;
  3. order by weight, highest first; equal weights keep the previous server's order (Nova sorts a
     list that it reorders after every placement, so this is what a stable sort gives there);
  4. pick at random among the best ``host_subset_size``, put it first, consume its resources.
Alternates come from one more filter-and-weigh pass after the last placement, as in Nova.

Speed: the first server filters and weighs every host. Later servers only re-check the host
that just changed (unless an affinity rule makes one host's answer depend on the others) and
find the best hosts with a threshold search over per-weigher sorted lists of distinct weight
vectors, so 1,000 placements over 10,000 hosts stay well under a second. Exact float weights
and the tie order are computed the same way on both paths, so the choices are identical.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from bisect import bisect_left, insort

from ansible_collections.nimbus.compute.plugins.module_utils._scheduler import registry
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.errors import NoValidHost, SchedulerInputError
from ansible_collections.nimbus.compute.plugins.module_utils._scheduler.host_state import (
    MAX_QUANTITY,
    MAX_RATIO,
    HostState,
    host_states,
    show,
)

OPTION_DEFAULTS = {
    "host_subset_size": 1,
    "max_attempts": 3,
    "seed": None,
    "service_down_time": 60,
    "now": None,
    "max_instances_per_host": 50,
    "max_io_ops_per_host": 8,
    "rules": [],
    "image_properties_default_architecture": None,
    "metrics_weight_setting": {},
    "metrics_required": True,
    "metrics_weight_of_unavailable": -10000.0,
}
EXPLAIN_TOP = 3
_FAST_MAX_SUBSET = 64  # beyond this the threshold search saves little


def _positive_int(options, key, minimum=1):
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SchedulerInputError("%s must be a whole number >= %d, got %r" % (key, minimum, value))
    return value


def finite_number(name, value, limit=None):
    """A finite float from a number or numeric string (at most ``limit`` in absolute value), else
    SchedulerInputError naming ``name``."""
    if isinstance(value, bool):
        raise SchedulerInputError("%s must be a number, got %r" % (name, value))
    try:
        number = float(value)
    except OverflowError:  # float(10**400)
        raise SchedulerInputError("%s is too large (%s)" % (name, show(value)))
    except (TypeError, ValueError):
        raise SchedulerInputError("%s must be a number, got %r" % (name, value))
    if not math.isfinite(number):
        raise SchedulerInputError("%s must be a finite number, got %r" % (name, value))
    if limit is not None and abs(number) > limit:
        raise SchedulerInputError("%s is too large (%s), at most %g in absolute value" % (name, show(value), limit))
    return number


def _check_options(config):
    for key in ("host_subset_size", "max_attempts"):
        _positive_int(config, key)
    for key in ("max_instances_per_host", "max_io_ops_per_host"):
        _positive_int(config, key, 0)
    if finite_number("service_down_time", config["service_down_time"]) < 0:
        raise SchedulerInputError("service_down_time must not be negative, got %r" % (config["service_down_time"],))
    config["service_down_time"] = finite_number("service_down_time", config["service_down_time"])
    if config["now"] is not None:
        config["now"] = finite_number("now", config["now"])
    seed = config["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
        raise SchedulerInputError("seed must be a whole number, got %r" % (seed,))
    rules = config["rules"]
    if not isinstance(rules, (list, tuple)) or not all(isinstance(r, str) for r in rules):
        raise SchedulerInputError("rules must be a list of JMESPath expression strings, got %r" % (rules,))
    setting = config["metrics_weight_setting"]
    if not isinstance(setting, dict):
        raise SchedulerInputError("metrics_weight_setting must be a dict {metric name: ratio}, got %r" % (setting,))
    config["metrics_weight_setting"] = {
        str(name): finite_number("metrics_weight_setting ratio of %s" % name, ratio, MAX_RATIO)
        for name, ratio in setting.items()
    }
    config["metrics_weight_of_unavailable"] = finite_number("metrics_weight_of_unavailable",
                                                            config["metrics_weight_of_unavailable"], MAX_QUANTITY)
    if not isinstance(config["metrics_required"], bool):
        raise SchedulerInputError("metrics_required must be true or false, got %r" % (config["metrics_required"],))
    arch = config["image_properties_default_architecture"]
    if arch is not None and not isinstance(arch, str):
        raise SchedulerInputError("image_properties_default_architecture must be a string, got %r" % (arch,))


class Scheduler:
    """Configured once (filters, weighers, multipliers, options); ``schedule`` places servers."""

    def __init__(self, filters=None, weighers=None, weight_multipliers=None, incremental=True, **options):
        unknown = sorted(set(options) - set(OPTION_DEFAULTS))
        if unknown:
            raise SchedulerInputError("unknown scheduler option(s) %s" % ", ".join(unknown))
        config = dict(OPTION_DEFAULTS)
        config.update({k: v for k, v in options.items() if v is not None})
        _check_options(config)
        self.config = config
        self.incremental = incremental
        multipliers = weight_multipliers or {}
        if not isinstance(multipliers, dict):
            raise SchedulerInputError("weight_multipliers must be a dict {weigher or option name: number}")
        registry.check_multiplier_names(multipliers)
        classes = registry.filter_classes(filters)
        self.filters = [cls(config) for cls in classes]
        self._hint_filters = {
            hint: registry.FILTERS[name](config) for hint, name in registry.HINT_FILTERS.items()
            if registry.FILTERS[name] not in classes
        }
        if config["rules"] and "query" in self._hint_filters:
            self.filters.append(self._hint_filters.pop("query"))
        self.weighers = [cls(config, registry.multiplier_for(cls, multipliers)) for cls in registry.weigher_classes(weighers)]

    def schedule(self, hosts, spec, explain=False):
        """Place ``spec.instance_uuids`` on ``hosts`` (dicts are copied; HostStates are consumed in place)."""
        if isinstance(hosts, list) and hosts and all(isinstance(h, HostState) for h in hosts):
            states = hosts
        else:
            states = host_states(hosts)  # validates: a list of dicts
        return _Request(self, states, spec, explain).run()


class _Request:
    """One request: the candidates, the weight vectors and the history that orders ties."""

    def __init__(self, scheduler, hosts, spec, explain):
        self.config = scheduler.config
        self.incremental = scheduler.incremental
        self.hosts = hosts
        self.spec = spec
        self.explain = explain
        self.rng = random.Random(self.config["seed"])
        self.by_index = {h.index: h for h in hosts}
        hinted = [f for hint, f in scheduler._hint_filters.items()
                  if (spec.query if hint == "query" else spec.get_scheduler_hint(hint))]
        self.filters = [f for f in scheduler.filters + hinted if f.is_active(spec)]
        self.all_filters = scheduler.filters + hinted
        self.weighers = scheduler.weighers
        self.history = []  # per step: (chosen host index, weigh terms)
        self.chosen_steps = {}  # host index -> steps at which it was chosen
        self.vector_history = {}  # host index -> [(first step, vector)] once it changed
        self.vectors = {}
        self.fast = None
        spec.fill_group_hosts(hosts)

    # -- filters ---------------------------------------------------------------------------
    def _filter(self, candidates, step, changed):
        """Nova's filter handler; after the first server only ``changed`` needs re-checking."""
        report = []
        for f in self.filters:
            if f.run_filter_once_per_request and step > 0:
                continue
            before, previous = len(candidates), candidates
            if step == 0 or f.global_state:
                kept = f.filter_all(list(candidates.values()), self.spec)
                if len(kept) != before:
                    candidates = {h.index: h for h in kept}
            elif changed is not None and changed.index in candidates and not f.host_passes(changed, self.spec):
                del candidates[changed.index]  # in place (previous is the same dict): O(1) per placement
            report.append({"filter": f.name, "label": f.label, "hosts_in": before, "removed": before - len(candidates)})
            if not candidates:
                self._no_valid_host(f, list(previous.values()) or [changed], step)
        return candidates, report

    def _no_valid_host(self, f, removed, step):
        count, before = len(self.spec.instance_uuids), len(removed)
        which = " for server %d of %d" % (step + 1, count) if count > 1 else ""
        msg = "No valid host%s: %s (%s) removed %d of %d hosts" % (which, f.label, f.name, before, before)
        hint = f.why_none_passed(removed, self.spec)
        raise NoValidHost(msg + ("; " + hint if hint else ""), filter_name=f.name, removed=before, candidates=before)

    # -- weights ---------------------------------------------------------------------------
    def _setup_weighers(self, candidates):
        """Active weighers, their per-host multipliers and every candidate's raw weight vector."""
        hosts = list(candidates.values())
        in_aggregates = [h for h in hosts if h.aggregates]
        self.active = []
        self.columns = columns = []
        for w in self.weighers:
            if not w.is_active(self.spec) or (w.name == "PCIWeigher" and not any(h.pci_stats for h in hosts)):
                continue
            default = -w.multiplier if w.negate_multiplier else w.multiplier
            overrides = {h.index: m for h in in_aggregates for m in (w.weight_multiplier(h),) if m != default}
            if default == 0 and not overrides:
                continue
            self.active.append((w, default, overrides or None))
            columns.append(self._clamp(w, w.raw_weights(hosts, self.spec)))
        rows = zip(*columns, strict=True) if columns else [()] * len(candidates)
        self.vectors = dict(zip(candidates, rows, strict=True))
        self.base_vectors = dict(self.vectors)

    @staticmethod
    def _clamp(w, raws):
        if w.minval is not None:
            raws = [x if x >= w.minval else w.minval for x in raws]
        if w.maxval is not None:
            raws = [x if x <= w.maxval else w.maxval for x in raws]
        return raws

    def _vector(self, host):
        return tuple(self._clamp(w, [w.raw_weight(host, self.spec)])[0] for w, _d, _o in self.active)

    def _terms(self, lows, highs, count):
        """The (position, min, range, multiplier, per-host overrides) of weighers that are not flat."""
        if count <= 1:
            return ()  # Nova does not weigh a single host
        terms = []
        for pos, (w, default, overrides) in enumerate(self.active):
            lo = float(w.minval) if w.minval is not None else float(lows[pos])
            hi = float(w.maxval) if w.maxval is not None else float(highs[pos])
            if lo != hi:
                terms.append((pos, lo, hi - lo, default, overrides))
        return terms

    @staticmethod
    def _weight(vector, terms, index=None):
        total = 0.0
        for pos, lo, span, default, overrides in terms:
            m = default if overrides is None else overrides.get(index, default)
            total += m * ((vector[pos] - lo) / span)
        return total

    def _vector_at(self, index, step):
        for first, vector in reversed(self.vector_history.get(index, ())):
            if first <= step:
                return vector
        return self.base_vectors[index]

    # -- order -----------------------------------------------------------------------------
    def _precedes(self, a, b, step):
        """True when host index ``a`` came before ``b`` in the list Nova sorted at ``step`` - 1."""
        j = step - 1
        while j >= 0:
            chosen, terms = self.history[j]
            if chosen in (a, b):
                return chosen == a
            va, vb = self._vector_at(a, j), self._vector_at(b, j)
            if va == vb and not any(t[4] for t in terms):
                # Same weights at every step back to the last time one of them was chosen.
                j = max(self._last_chosen(a, j), self._last_chosen(b, j))
                continue
            wa, wb = self._weight(va, terms, a), self._weight(vb, terms, b)
            if wa != wb:
                return wa > wb
            j -= 1
        return a < b

    def _last_chosen(self, index, before):
        steps = self.chosen_steps.get(index, ())
        pos = bisect_left(steps, before)
        return steps[pos - 1] if pos else -1

    def _tie_order(self, indexes, step):
        if step == 0 or len(indexes) < 2:
            return sorted(indexes)

        def compare(a, b):
            return -1 if self._precedes(a, b, step) else 1

        return sorted(indexes, key=functools.cmp_to_key(compare))

    def _ordered(self, weighted, step):
        """[(weight, index)] -> indexes by weight (highest first), ties in the previous order."""
        weighted.sort(key=lambda wi: -wi[0])
        out, i, n = [], 0, len(weighted)
        while i < n:
            j = i + 1
            while j < n and weighted[j][0] == weighted[i][0]:
                j += 1
            out.extend(self._tie_order([wi[1] for wi in weighted[i:j]], step) if j - i > 1 else [weighted[i][1]])
            i = j
        return out

    def _top(self, candidates, k, step):
        """The best ``k`` candidates in Nova's order, weighing every candidate (column by column)."""
        idx = list(candidates)
        if step == 0:
            columns = self.columns
        else:
            columns = list(zip(*(self.vectors[i] for i in idx), strict=True)) if self.active else []
        terms = self._terms([min(c) for c in columns], [max(c) for c in columns], len(idx))
        weights = [0.0] * len(idx)
        # Same float operations, in the same order, as _weight (and as Nova).
        for pos, lo, span, default, overrides in terms:
            if overrides is None:
                weights = [acc + default * ((x - lo) / span) for acc, x in zip(weights, columns[pos], strict=True)]
            else:
                ms = [overrides.get(i, default) for i in idx]
                weights = [acc + m * ((x - lo) / span) for acc, m, x in zip(weights, ms, columns[pos], strict=True)]
        weighted = list(zip(weights, idx, strict=True))
        if k < len(idx):
            kth = heapq.nlargest(k, weights)[-1]
            weighted = [wi for wi in weighted if wi[0] >= kth]
        return self._ordered(weighted, step)[:k], terms, {i: w for w, i in weighted}

    # -- the request -----------------------------------------------------------------------
    def run(self):
        spec, hosts = self.spec, self.hosts
        subset = self.config["host_subset_size"]
        num_alts = self.config["max_attempts"] - 1
        count = len(spec.instance_uuids)
        want = max(subset, EXPLAIN_TOP if self.explain else 1)
        candidates = dict(self.by_index)
        if len(candidates) != len(hosts):
            raise SchedulerInputError("host indexes are not unique")
        placements, selected, changed, first_order = [], [], None, None
        for step, instance_uuid in enumerate(spec.instance_uuids):
            spec.instance_uuid = instance_uuid
            candidates, report = self._filter(candidates, step, changed)
            if step == 0:
                self._setup_weighers(candidates)
            use_fast = (step > 0 and self.incremental and subset <= _FAST_MAX_SUBSET
                        and not any(o for _w, _d, o in self.active))
            if use_fast:
                if self.fast is None:
                    self.fast = _RankedGroups(self, candidates)
                self.fast.sync(candidates)
                top, terms, weights = self.fast.top(want, step)
            else:
                self.fast = None
                # A single server also needs its alternates from this ordering.
                top, terms, weights = self._top(candidates, want + (num_alts if count == 1 else 0), step)
                if step == 0:
                    first_order = top
            chosen = self.rng.choice(top[:subset])
            self.history.append((chosen, terms))
            self.chosen_steps.setdefault(chosen, []).append(step)
            host = candidates[chosen]
            placement = {"instance_uuid": instance_uuid, "host": host.hostname, "weight": weights[chosen], "alternates": []}
            if self.explain:
                placement["explain"] = self._explain(report, [chosen] + [i for i in top if i != chosen], terms, weights)
            placements.append(placement)
            selected.append(chosen)
            old = self.vectors[chosen]
            host.consume(spec, instance_uuid)
            if spec.instance_group is not None:
                spec.instance_group.hosts.append(host.hostname)
            new = self._vector(host)
            self.vectors[chosen] = new
            self.vector_history.setdefault(chosen, []).append((step + 1, new))
            if self.fast is not None:
                self.fast.move(chosen, old, new)
            changed = host
        self._alternates(placements, selected, candidates, changed, first_order)
        return placements

    def _alternates(self, placements, selected, candidates, changed, first_order):
        num_alts = self.config["max_attempts"] - 1
        if num_alts <= 0:
            return
        if len(placements) == 1:
            order = [i for i in first_order if i != selected[0]]
        else:
            # Nova filters and weighs once more after the last placement (and picks again).
            step = len(placements)
            try:
                candidates, _report = self._filter(candidates, step, changed)
            except NoValidHost:
                return
            subset = self.config["host_subset_size"]
            order, _terms, _weights = self._top(candidates, subset + num_alts + len(set(selected)), step)
            pick = self.rng.choice(order[:subset])
            order = [pick] + [i for i in order if i != pick]
        taken = set(selected)
        names = [self.by_index[i].hostname for i in order if i not in taken][:num_alts]
        for placement in placements:
            placement["alternates"] = list(names)

    def _explain(self, report, top, terms, weights):
        weighed = []
        for i in top[:EXPLAIN_TOP]:
            vector = self.vectors[i]
            contributions = {}
            for pos, lo, span, default, overrides in terms:
                m = default if overrides is None else overrides.get(i, default)
                contributions[self.active[pos][0].name] = m * ((vector[pos] - lo) / span)
            weighed.append({"host": self.by_index[i].hostname, "weight": weights[i], "weighers": contributions})
        return {"filters": report, "weighed": weighed}


class _RankedGroups:
    """The candidates kept ranked by weight between placements.

    Hosts with the same raw weight vector form a group (equal weights at every step). Groups stay
    sorted by weight; a placement moves one host to another group. Weights only need recomputing
    when a weigher's min or max over the candidates moves, which is rare (a few times per
    hundred placements on a large random fleet), so most placements cost O(log n).
    """

    def __init__(self, request, candidates):
        self.request = request
        self.groups = {}
        self.values = [{} for _w in request.active]  # per weigher: raw value -> how many hosts
        self.distinct = [[] for _w in request.active]  # per weigher: sorted distinct raw values
        self.terms = None
        self.ranked = []
        self.size = 0
        for index in candidates:
            self._add(index, request.vectors[index])

    def _member_key(self, index):
        # Inside a group Nova's order is: most recently chosen first, then input order.
        steps = self.request.chosen_steps.get(index)
        return (-steps[-1] if steps else 1, index)

    def _rank_key(self, vector):
        return (-self.request._weight(vector, self.terms), vector)

    def _drop(self, index, vector):
        members = self.groups[vector]
        members.remove(next(k for k in members if k[1] == index))
        self.size -= 1
        if not members:
            del self.groups[vector]
            if self.terms is not None:
                del self.ranked[bisect_left(self.ranked, self._rank_key(vector))]
        for counts, distinct, value in zip(self.values, self.distinct, vector, strict=True):
            counts[value] -= 1
            if not counts[value]:
                del counts[value]
                del distinct[bisect_left(distinct, value)]

    def _add(self, index, vector):
        members = self.groups.get(vector)
        if members is None:
            self.groups[vector] = [self._member_key(index)]
            if self.terms is not None:
                insort(self.ranked, self._rank_key(vector))
        else:
            insort(members, self._member_key(index))
        self.size += 1
        for counts, distinct, value in zip(self.values, self.distinct, vector, strict=True):
            if value not in counts:
                counts[value] = 0
                insort(distinct, value)
            counts[value] += 1

    def move(self, index, old, new):
        self._drop(index, old)
        self._add(index, new)

    def sync(self, candidates):
        """Drop hosts the filters removed since the last placement."""
        if self.size == len(candidates):
            return
        for vector, members in list(self.groups.items()):
            for _key, index in list(members):
                if index not in candidates:
                    self._drop(index, vector)

    def top(self, k, step):
        request = self.request
        terms = request._terms([d[0] for d in self.distinct], [d[-1] for d in self.distinct], self.size)
        if terms != self.terms:
            self.terms = terms
            self.ranked = sorted(self._rank_key(v) for v in self.groups)
        ranked, groups = self.ranked, self.groups
        out, weights, i, n = [], {}, 0, len(ranked)
        while i < n and len(out) < k:
            j = i + 1
            while j < n and ranked[j][0] == ranked[i][0]:
                j += 1
            tied = []
            for negative, vector in ranked[i:j]:
                for _key, index in groups[vector][:k]:
                    tied.append(index)
                    weights[index] = -negative
            if j - i > 1:
                tied = request._tie_order(tied, step)
            out.extend(tied)
            i = j
        return out[:k], terms, weights
