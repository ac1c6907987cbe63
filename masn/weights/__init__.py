"""Published weights: what exists, getting it safely, and turning it into our modules' weights.

- ``manifest`` (+ ``manifest.json``): every published file we support (URLs, checksums,
  licence, format);
- ``cache``: the weights folder and the lock that lets processes share it;
- ``download``: resumable HTTP downloads (``fetch``); ``verification``: checksums, the lock
  file of first-download checksums, and validation before a file is trusted; ``validate``:
  whether a file reads as its format;
- ``formats/``: the formats and their converters, registered as entry points
  (docs/extending.md); ``installed``: converted weights, one ``<cache>/<role>-<network>.pt``
  per network, for the extractor;
- ``status`` and ``commands``: `masn weights list` and `masn weights fetch` (their settings:
  ``settings``);
- ``glove``: the GloVe rows of a vocabulary, streamed from a GloVe file.
"""
