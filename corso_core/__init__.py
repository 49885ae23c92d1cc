"""corso: encrypted, deduplicated backups to object storage."""

#: The distribution's version too (pyproject.toml reads it from here): a command never needs
#: importlib.metadata to know it (see corso_core/plugins.py for why that matters).
__version__ = "0.1.0"
