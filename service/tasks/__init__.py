"""Tasks: per model kind, the API side of `decode -> run -> encode`.

Each task module holds the request and response schemas, ``decode`` (validated request -> rows the
batcher may place in any batch), ``collate`` (rows -> the model's named input arrays) and ``encode``
(the model's outputs for this request's rows -> response). The numeric pre-processing they call lives
in ``service.preprocessing`` and is shared with training.
"""

from service.tasks.base import Decoded, Task

__all__ = ["Decoded", "Task"]
