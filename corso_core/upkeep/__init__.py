"""Integrity and upkeep of a repository: verify, maintenance, repair (issue 7).

These read the repository through the data layer's codecs (index, packs, manifests, trees) but
never through a ChunkStore: a check must not write a session record, and it must see every
blob on its own, damaged ones included, rather than the union a backup works from.
"""
