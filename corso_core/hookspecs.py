"""The hooks a plugin implements. Each hook receives a `register` callable and calls it once
per thing it contributes, so one plugin can add several backends (or, later, sources).

New hooks are added here with a docstring and a line in the README's plugin section; a
meta-test checks both.
"""

import pluggy

hookspec = pluggy.HookspecMarker("corso")
hookimpl = pluggy.HookimplMarker("corso")


@hookspec
def register_backends(register):
    """Register storage backends.

    Call ``register(StorageBackend(...))`` for each backend this plugin provides. The backend's
    name becomes the subcommand of ``corso repo init NAME`` and ``corso repo connect NAME``.
    """


@hookspec
def register_sources(register):
    """Register backup sources.

    Call ``register(Source(...))`` for each source this plugin provides (see
    `corso_core.sources.source`). The source's name becomes the subcommand of
    ``corso backup create NAME`` and ``corso restore NAME``. A source enumerates items and
    writes them back; it never sees packs, chunks or keys.
    """
