# Copyright: nimbus.compute contributors
# Apache License 2.0 (see LICENSE)
"""Safe XML parsing and the semantic comparison behind idempotence and diff mode.

libvirt hands back more than it was given (defaults, PCI addresses, controllers, aliases) and
orders devices its own way, so byte comparison of ``XMLDesc`` with our XML never matches. Instead we
*project* libvirt's XML onto the fields our XML sets (the same elements and attributes, matched in
order per tag) and compare the canonical forms: what we set is what libvirt has, or not.
"""

from __future__ import annotations

from ansible_collections.nimbus.compute.plugins.module_utils._domain.connection import DomainError

# Devices whose presence is ours alone: one more or one less in libvirt than in our XML is a
# difference even when our XML has none of that kind (libvirt adds controllers, inputs, video, ...).
OWNED_DEVICES = ("disk", "interface", "serial", "console", "graphics", "filesystem", "hostdev")


def _etree():
    try:
        from lxml import etree
    except ImportError:
        raise DomainError("the lxml Python library is not installed on this host")
    return etree


def parse(xml, step="domain"):
    """Parse XML text without entity expansion, DTD loading or network access."""
    etree = _etree()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=True, remove_comments=True
    )
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise DomainError("domain XML is not well-formed: %s" % exc, step=step)
    if root.tag != "domain":
        raise DomainError("XML root element is <%s>, expected <domain>" % root.tag, step=step)
    return root


def to_string(element):
    etree = _etree()
    return etree.tostring(element, pretty_print=True, encoding="unicode")


def _text(element):
    return (element.text or "").strip()


def project(actual, template):
    """A copy of ``actual`` keeping only the attributes, texts and children that ``template`` sets."""
    etree = _etree()
    out = etree.Element(actual.tag, nsmap=actual.nsmap)
    for key in template.attrib:
        if key in actual.attrib:
            out.set(key, actual.get(key))
    if _text(template):
        out.text = _text(actual)
    by_tag = {}
    for child in template:
        if isinstance(child.tag, str):
            by_tag.setdefault(child.tag, []).append(child)
    owned = actual.tag == "devices"
    seen = {}
    for child in actual:
        if not isinstance(child.tag, str):
            continue
        models = by_tag.get(child.tag)
        if models is None and not (owned and child.tag in OWNED_DEVICES):
            continue
        index = seen.get(child.tag, 0)
        seen[child.tag] = index + 1
        if models:
            model = models[index] if index < len(models) else models[0]
        else:
            model = etree.Element(child.tag)
        out.append(project(child, model))
    return out


def canonical(element):
    """A copy with children sorted by tag (stable: the order of disks or NICs is kept) and texts stripped."""
    etree = _etree()
    out = etree.Element(element.tag, nsmap=element.nsmap)
    for key in sorted(element.attrib):
        out.set(key, element.get(key))
    if _text(element):
        out.text = _text(element)
    children = [c for c in element if isinstance(c.tag, str)]
    for child in sorted(children, key=lambda c: c.tag):
        out.append(canonical(child))
    return out


def compare(actual_xml, wanted_xml):
    """``(same, before, after)``: whether libvirt's XML has every field of ours, and both sides as
    canonical text limited to our fields (for a readable diff)."""
    wanted = parse(wanted_xml) if not hasattr(wanted_xml, "tag") else wanted_xml
    actual = parse(actual_xml) if not hasattr(actual_xml, "tag") else actual_xml
    before = to_string(canonical(project(actual, wanted)))
    after = to_string(canonical(wanted))
    return before == after, before, after
