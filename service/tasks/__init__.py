"""One module per task, each reading like `decode -> run -> encode`.

A task turns a validated request into the model's input arrays (``decode``) and the model's
output arrays back into a response (``encode``). The export step evaluates held-out metrics
through these same functions, so training, evaluation and serving share one pre-processing.

Every task module defines:

- ``<X>Request`` / ``<X>Response``: pydantic models (the OpenAPI schema comes from them);
- ``class <X>Task`` with
    ``__init__(self, preprocessing, labels: list[str], version_dir: Path)`` (load any asset file),
    ``decode(self, request) -> Decoded`` (raise ``service.errors.InvalidInput`` etc. on bad input),
    ``encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> <X>Response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Decoded:
    feeds: dict[str, np.ndarray]  # input name -> array with a leading batch axis
    context: dict[str, Any] = field(default_factory=dict)  # what encode needs to undo decode
