"""Extraction runs: a video collection -> the feature store, resumable and sharded.
Import names from the module that defines them:

- ``collection``: ``run_extraction``, the body of ``masn extract`` (list a dataset's videos,
  take this rank's share, load the networks, extract, merge the shards).
- ``runner``: ``extract_features``, the run loop (decode workers -> batched networks ->
  background writer) with per-video bookkeeping, and its ``RunSummary``.
- ``batching``: ``Batcher``, sampled frames of several videos packed into network batches,
  a failed batch rerun one video at a time.
- ``background_writer``: ``BackgroundWriter``, the thread that streams rows to part files and
  commits them.
- ``failure_log``: ``FailureLog`` (``OUT.failures.jsonl``) and the retry-once policy.
- ``sharding``: ``Shard``, the rank under torchrun / SLURM, its deterministic share and shard
  store, and the final merge.
"""
