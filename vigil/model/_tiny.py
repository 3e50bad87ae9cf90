"""A small, deterministic perceptron mapping a 64-feature frame to 8 scores: a float-input
model for tests and worker examples (the reference model is :class:`vigil.model.Decoder`)."""

from __future__ import annotations

import torch
from torch import nn

IN_FEATURES = 64
OUT_FEATURES = 8


class TinyReference(nn.Module):
    """``(N, 64) float32 -> (N, 8) float32``, weights fixed by ``seed``."""

    def __init__(self, seed: int = 0, hidden: int = 128) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(IN_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, OUT_FEATURES)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return out


class TinyFallback(nn.Module):
    """A linear model distilled crudely from :class:`TinyReference`: cheaper, less accurate."""

    def __init__(self, reference: TinyReference) -> None:
        super().__init__()
        self.fc = nn.Linear(IN_FEATURES, OUT_FEATURES)
        with torch.no_grad():
            self.fc.weight.copy_(reference.fc2.weight @ reference.fc1.weight * 0.5)
            self.fc.bias.copy_(reference.fc2.bias)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out
