"""The one place that loads plugins: entry points of the group "corso", built-ins included.

Finding entry points takes importlib.metadata (and the email package it parses metadata with)
and a read of every installed distribution's entry_points.txt: ~90 ms of a command's cold start,
~40 ms warm. So the entry points found are kept in the cache directory (ENTRY_POINTS_CACHE),
with the sys.path they were found on and the modification times of its directories, which
change whenever a distribution is installed there or removed; while those are the same, the
next command imports the plugin modules straight away. A cached module that fails to import
means a fresh look; `corso plugins` always looks afresh.
"""

from __future__ import annotations

import importlib
import os
import sys

import pluggy

from corso_core import hookspecs
from corso_core.cache_root import read_root_file, write_root_file
from corso_core.errors import CorsoError, UsageError
from corso_core.sources.source import Source
from corso_core.storage.backend import StorageBackend

ENTRY_POINT_GROUP = "corso"

#: Backends published as separate distributions, so a missing one gets an install hint:
#: (distribution, its folder in a checkout of corso).
KNOWN_BACKEND_DISTRIBUTIONS = {"s3": ("corso-s3", "plugins/corso_s3")}

#: Under the cache root: {"sys_path": [[entry, mtime_ns], …], "entry_points": [[name,
#: module, attr], …]}, rewritten atomically whenever the entry points are looked for afresh.
ENTRY_POINTS_CACHE = "entry-points.json"

pm = pluggy.PluginManager("corso")
pm.add_hookspecs(hookspecs)
_loaded = False

EntryPoint = tuple[str, str, str]  # name, module, attribute path ("" for the module itself)
#: The distribution of each entry point the last look found (by name).
_distributions: dict = {}


def load(fresh: bool = False) -> pluggy.PluginManager:
    """Register every installed plugin, once (the first of two with one name, as pluggy);
    `fresh`: from the installed distributions, whatever the cache says."""
    global _loaded
    if _loaded and not fresh:
        return pm
    stamp = _sys_path_stamp()
    cached = None if fresh else _cached_entry_points(stamp)
    try:
        plugins = [(name, _resolve(module, attr)) for name, module, attr in cached or ()]
    except (ImportError, AttributeError):  # changed in place, unseen by the stamp: look afresh
        cached = None
    if cached is None:
        found = _scan()
        plugins = [(name, _resolve(module, attr)) for name, module, attr in found]
        _remember_entry_points(stamp, found)
    seen: set[str] = set()
    for name, plugin in plugins:
        if name in seen or pm.is_blocked(name):
            continue  # the first of two with one name counts
        seen.add(name)
        registered = pm.get_plugin(name)
        if registered is plugin:
            continue
        if registered is not None:  # from a stale cache, now looked up afresh
            pm.unregister(name=name)
        pm.register(plugin, name=name)
    _loaded = True
    return pm


def _scan() -> list[EntryPoint]:
    """The group's entry points in the installed distributions, first on sys.path first;
    each one's distribution is kept for `corso plugins`."""
    import importlib.metadata  # only here: see the module's docstring

    _distributions.clear()
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _distributions.setdefault(ep.name, ep.dist)
        found.append((ep.name, ep.module, ep.attr or ""))
    return found


def _resolve(module: str, attr: str):
    found = importlib.import_module(module)
    for name in filter(None, attr.split(".")):
        found = getattr(found, name)
    return found


def _sys_path_stamp() -> list[list]:
    """sys.path with each entry's modification time (None where there is nothing)."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append([entry, os.stat(entry or os.curdir).st_mtime_ns])
        except OSError:
            stamp.append([entry, None])
    return stamp


def _cached_entry_points(stamp: list[list]) -> list[EntryPoint] | None:
    """The cached entry points if they were found on this very sys.path; else None."""
    cached = read_root_file(ENTRY_POINTS_CACHE)
    try:
        if cached["sys_path"] != stamp:
            return None
        found = [tuple(point) for point in cached["entry_points"]]
    except (KeyError, TypeError):
        return None  # none yet, or unreadable: only costs a fresh look
    if not all(len(point) == 3 and all(isinstance(part, str) for part in point)
               for point in found):
        return None
    return found


def _remember_entry_points(stamp: list[list], found: list[EntryPoint]) -> None:
    write_root_file(ENTRY_POINTS_CACHE, {"sys_path": stamp, "entry_points": found})


def _registered(hook, what: str) -> dict:
    """What plugins register through one hook, by name; a name claimed twice is an error."""
    found: dict = {}

    def register(item) -> None:
        if item.name in found:
            raise CorsoError(f'two plugins register a {what} named "{item.name}"')
        found[item.name] = item

    hook(register=register)
    return dict(sorted(found.items()))


def backends() -> dict[str, StorageBackend]:
    """Every installed backend by name."""
    return _registered(load().hook.register_backends, "backend")


def sources() -> dict[str, Source]:
    """Every installed backup source by name."""
    return _registered(load().hook.register_sources, "source")


def backend(name: str) -> StorageBackend:
    """The named backend, or an error that says how to get it (after a fresh look: the entry
    points cached may be damaged)."""
    installed = backends()
    if name not in installed:
        load(fresh=True)
        installed = backends()
    if name in installed:
        return installed[name]
    if name in KNOWN_BACKEND_DISTRIBUTIONS:
        distribution, folder = KNOWN_BACKEND_DISTRIBUTIONS[name]
        raise UsageError(f'backend "{name}" is not installed; add it with: pip install '
                         f"{distribution} (from a checkout of corso: pip install ./{folder})")
    raise UsageError(f'unknown backend "{name}"; installed: {", ".join(installed) or "none"}')


def installed_plugins() -> list[dict]:
    """Name, version and hooks of every installed plugin, as `corso plugins` shows them
    (found afresh: this is where a user looks after installing one)."""
    load(fresh=True)
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist = _distributions.get(name)
        if dist is None:
            continue  # registered in-process (tests), not installed
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "module": plugin.__name__,
                "distribution": dist.name,
                "version": dist.version,
                "hooks": hooks,
            }
        )
    return sorted(rows, key=lambda r: r["name"])
