"""Question branch: frozen word vectors -> projection -> bi-LSTM -> word features and sentence."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import MASNConfig


class QuestionEncoder(nn.Module):
    """Encodes token ids into word features ``F_q`` (N, L, d) and a sentence vector ``q`` (N, d).

    L is the longest question in the batch. Padded word rows are exactly zero. The sentence vector
    compresses the concatenated final forward and backward LSTM states.
    """

    def __init__(self, config: MASNConfig, word_vectors: Tensor | None = None):
        super().__init__()
        hidden = config.hidden
        self.embedding = nn.Embedding(config.vocab_size, config.word_dim)
        if word_vectors is not None:
            if tuple(word_vectors.shape) != (config.vocab_size, config.word_dim):
                raise ValueError(
                    f"word vectors have shape {tuple(word_vectors.shape)}, expected "
                    f"({config.vocab_size}, {config.word_dim}) for this vocabulary"
                )
            self.embedding.weight.data.copy_(word_vectors)
        self.embedding.weight.requires_grad_(False)
        self.input_proj = nn.Linear(config.word_dim, hidden, bias=False)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.word_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.sentence_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (N, S) int64 right-padded; lengths (N,) in [1, S], on any device."""
        embedded = F.relu(self.input_proj(self.dropout(self.embedding(tokens))))
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, (final, _) = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True)
        words = self.dropout(F.relu(self.word_proj(states)))
        both_directions = final.transpose(0, 1).reshape(tokens.shape[0], -1)
        sentence = self.dropout(F.relu(self.sentence_proj(both_directions)))
        return words, sentence
