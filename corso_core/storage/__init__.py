"""Blob storage: the interface every backend implements, and the built-in filesystem backend."""
