"""Backup sources: the built-in "files" source and the descriptor every source plugin fills in."""
