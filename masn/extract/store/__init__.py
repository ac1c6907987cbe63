"""The feature store: one HDF5 file of per-video MASN features, written crash-safely, and the
official MASN four-file layout. Import names from the module that defines them:

- ``schema``: the fields, their shapes and stored dtypes, ``VideoRecord``, ``Provenance``,
  video-key escaping and the checks every array passes before it is written.
- ``store_file``: the store's HDF5 file: root attributes, atomic replacement, opening for
  reading (format and version checks), ``DamagedStore``.
- ``parts``: ``PartWriter`` and the per-video part files a writer commits.
- ``writer``: ``StoreWriter`` (parts, consolidation, the one-writer lock, damaged stores moved
  aside) and ``check_output``, the checks of an output path before any work.
- ``reader``: ``FeatureStore``, read-only access from any process.
- ``handle``: ``ProcessLocalFiles``, the lazy per-process HDF5 handle both readers use.
- ``merge``: ``merge_stores``, one store from the shards of a sharded run.
- ``official_layout``: the official four-file layout (names, keys, where each field lives) and
  the checks of its files.
- ``official_reader``: ``OfficialFeatures`` (the official files read in place) and
  ``open_features`` (either reader from a path).
- ``official_transfer``: ``export_official``, ``import_official`` and ``read_key_map``.
"""
