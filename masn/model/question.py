"""Question branch: frozen word vectors -> projection -> bi-LSTM -> word features and sentence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.model.config import MASNConfig


class QuestionEncoder(nn.Module):
    """Encodes token ids into word features ``F_q`` (N, S, d) and a sentence vector ``q`` (N, d).

    The bi-LSTM runs as two one-directional LSTMs over the padded batch: the backward one reads
    each question reversed within its own length, so padding never enters a valid state. This
    equals a packed bidirectional LSTM without the host synchronisation packing needs. Word rows
    beyond a question's length are exactly zero. The sentence vector compresses the concatenated
    final forward and backward states.
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
        self.forward_lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.word_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.sentence_proj = nn.Linear(2 * hidden, hidden, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (N, S) int64 right-padded; lengths (N,) in [1, S] on the tokens' device."""
        embedded = F.relu(self.input_proj(self.dropout(self.embedding(tokens))))
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        valid = steps < lengths.unsqueeze(1)
        # Reversal within each length; an involution, so it also maps the outputs back.
        order = torch.where(valid, lengths.unsqueeze(1) - 1 - steps, steps)
        forward_states, _ = self.forward_lstm(embedded)
        backward_states, _ = self.backward_lstm(_gather_steps(embedded, order))
        backward_states = _gather_steps(backward_states, order)
        states = torch.cat([forward_states, backward_states], dim=-1) * valid.unsqueeze(-1)
        words = self.dropout(F.relu(self.word_proj(states)))
        last = _gather_steps(forward_states, (lengths - 1).unsqueeze(1)).squeeze(1)
        finals = torch.cat([last, backward_states[:, 0]], dim=-1)
        sentence = self.dropout(F.relu(self.sentence_proj(finals)))
        return words, sentence


def _gather_steps(sequence: Tensor, index: Tensor) -> Tensor:
    """sequence (N, S, d) at time steps index (N, S') -> (N, S', d)."""
    return sequence.gather(1, index.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))
