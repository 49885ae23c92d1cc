"""The one place that loads plugins: entry points of the group "corso", built-ins included."""

from __future__ import annotations

import pluggy

from corso_core import hookspecs
from corso_core.errors import CorsoError, UsageError
from corso_core.sources.source import Source
from corso_core.storage.backend import StorageBackend

ENTRY_POINT_GROUP = "corso"

#: Backends published as separate distributions, so a missing one gets an install hint.
KNOWN_BACKEND_DISTRIBUTIONS = {"s3": "corso-s3"}

pm = pluggy.PluginManager("corso")
pm.add_hookspecs(hookspecs)
_loaded = False


def load() -> pluggy.PluginManager:
    global _loaded
    if not _loaded:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        _loaded = True
    return pm


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
    """The named backend, or an error that says how to get it."""
    installed = backends()
    if name in installed:
        return installed[name]
    if name in KNOWN_BACKEND_DISTRIBUTIONS:
        raise UsageError(
            f'backend "{name}" is not installed; add it with: '
            f"pip install {KNOWN_BACKEND_DISTRIBUTIONS[name]}"
        )
    raise UsageError(f'unknown backend "{name}"; installed: {", ".join(installed) or "none"}')


def installed_plugins() -> list[dict]:
    """Name, version and hooks of every loaded plugin, as `corso plugins` shows them."""
    load()
    rows = []
    for plugin, dist in pm.list_plugin_distinfo():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": pm.get_name(plugin),
                "module": plugin.__name__,
                "distribution": dist.project_name,
                "version": dist.version,
                "hooks": hooks,
            }
        )
    return sorted(rows, key=lambda r: r["name"])
