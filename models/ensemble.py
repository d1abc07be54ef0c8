"""Several trained seeds as one graph."""

from __future__ import annotations

import torch
from torch import nn


class Averaged(nn.Module):
    """The mean of the members' outputs (logits for a classifier, forecasts for a forecaster)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(*inputs) for member in self.members]).mean(0)


def averaged(members: list[nn.Module]) -> nn.Module:
    """One member as itself, several as their average."""
    return (Averaged(members) if len(members) > 1 else members[0]).eval()
