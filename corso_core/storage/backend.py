"""What a plugin registers to add a storage backend: its name, its flags and a factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from corso_core.storage.interface import BlobStorage


@dataclass(frozen=True)
class StorageBackend:
    """A storage backend as the CLI sees it.

    - `options`: click options of ``repo init NAME`` / ``repo connect NAME``. Commands that use
      a connected repository accept them too (except `init_only`), so a flag can supply a secret
      or be checked against the connection; normalise values in the option's callback (an
      absolute path, a prefix ending in "/") so that comparisons are exact.
    - `open`: builds the storage from the option values (by option name; None when not given).
    - `secret_options`: values that are never written to corso.toml or a log.
    - `init_only`: values used when the repository is created and not afterwards.
    - `check_access`: optional; probes, before init, every action a repository needs and
      returns rows {action, permission, ok, error} for ``corso repo check-access NAME``.
    Every other option's value is saved in corso.toml as the connection's settings.
    """

    name: str
    description: str
    options: Sequence[click.Option]
    open: Callable[[Mapping[str, Any]], BlobStorage]
    secret_options: frozenset[str] = field(default_factory=frozenset)
    init_only: frozenset[str] = field(default_factory=frozenset)
    check_access: Callable[[Mapping[str, Any]], list[dict]] | None = None

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The non-secret values that identify the connection, as saved in corso.toml."""
        keep = {o.name for o in self.options} - self.secret_options - self.init_only
        return {k: v for k, v in values.items() if k in keep and v is not None}
