# Makes the checkout importable as ansible_collections.nimbus.compute (DESIGN.md §2 note):
# a symlink .collections/ansible_collections/nimbus/compute -> repo root, never a move.
from __future__ import annotations

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "nimbus", "compute")

if not (os.path.islink(LINK) and os.path.realpath(LINK) == ROOT):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    if os.path.islink(LINK):
        os.unlink(LINK)
    os.symlink(ROOT, LINK)
    # pytest put .collections on sys.path before it existed: drop the cached "not found".
    sys.path_importer_cache.pop(COLLECTIONS, None)
    importlib.invalidate_caches()
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
# Shared test helpers (moduletools.py) import by name under --import-mode=importlib.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
