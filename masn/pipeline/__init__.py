"""QA datasets over the feature store, training, evaluation, answering and the `masn` CLI."""
