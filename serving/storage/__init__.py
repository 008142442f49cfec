"""Stored objects of the API: files (bytes on disk, metadata in the database) and batches with their lines.

The tables share :class:`serving.storage.db.Base`; each store calls :func:`serving.storage.db.ensure_tables` so
that they exist even when the database engine was first opened by code that did not import them.
"""
