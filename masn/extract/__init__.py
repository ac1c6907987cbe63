"""Feature extraction: decoding, frame sampling, the networks of each role, the feature store and
sharded, resumable extraction runs (docs/extraction.md; the store: docs/design.md)."""
