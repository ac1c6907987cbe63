"""MASN video question answering: raw videos to features, training, evaluation and answers."""

__version__ = "0.1.0"
