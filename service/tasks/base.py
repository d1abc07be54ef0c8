"""The task contract in code: what every task provides to the dataplane."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel

from service.limits import DEFAULT_LIMITS, InputLimits



@dataclass
class Decoded:
    """A request turned into rows: independent items a batcher may place in any batch, in order."""

    rows: list[Any]
    context: dict[str, Any] = field(default_factory=dict)  # what encode needs to undo decode


@dataclass(frozen=True)
class HttpBinding:
    """How a task's request travels on its typed REST endpoint: the body's media type, and which fields of
    the request model come from the query string instead (a multipart body's files arrive as bytes)."""

    media_type: str = "application/json"  # or "multipart/form-data"
    query: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorDeclaration:
    """A tensor of the Open Inference Protocol view of a task (-1 = any size)."""

    name: str
    datatype: str  # V2 datatype: FP32, BYTES, ...
    shape: tuple[int, ...]
    description: str = ""


class Task(ABC):
    kind: ClassVar[str]  # the manifest's `task`
    request_model: ClassVar[type[BaseModel]]
    response_model: ClassVar[type[BaseModel]]
    tensor_inputs: ClassVar[tuple[TensorDeclaration, ...]]  # what V2 clients send
    tensor_outputs: ClassVar[tuple[TensorDeclaration, ...]]  # what V2 clients get back
    # Decode on the bounded decode pool (e.g. image decompression) instead of on the event loop.
    blocking_decode: ClassVar[bool] = False
    http: ClassVar[HttpBinding] = HttpBinding()
    summary: ClassVar[str] = ""  # one line for the endpoint's documentation

    def __init__(
        self, preprocessing: Any, labels: Sequence[str], version_dir: Path, *, limits: InputLimits = DEFAULT_LIMITS
    ):
        """The manifest's preprocessing and labels; version_dir holds any asset file (a tokenizer);
        limits: what one request may ask (the service's settings), enforced in decode."""
        self.preprocessing = preprocessing
        self.labels = list(labels)
        self.limits = limits

    _by_kind: ClassVar[dict[str, type["Task"]]] = {}

    @classmethod
    def by_kind(cls) -> dict[str, type["Task"]]:
        """Every Task subclass imported so far, by the manifest task it serves."""
        return dict(Task._by_kind)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attribute, base in (("request_model", BaseModel), ("response_model", BaseModel)):
            value = getattr(cls, attribute, None)
            if not (isinstance(value, type) and issubclass(value, base)):
                raise TypeError(f"{cls.__name__}.{attribute} must be a pydantic model class")
        if not isinstance(getattr(cls, "kind", None), str):
            raise TypeError(f"{cls.__name__}.kind must name the manifest task")
        for attribute in ("tensor_inputs", "tensor_outputs"):
            declared = getattr(cls, attribute, None)
            if not declared or not all(isinstance(t, TensorDeclaration) for t in declared):
                raise TypeError(f"{cls.__name__}.{attribute} must declare its tensors")
        if cls.kind in Task._by_kind and Task._by_kind[cls.kind].__qualname__ != cls.__qualname__:
            raise TypeError(f"{cls.__name__} and {Task._by_kind[cls.kind].__name__} both serve {cls.kind!r}")
        Task._by_kind[cls.kind] = cls

    @abstractmethod
    def decode(self, request: BaseModel) -> Decoded:
        """Validated request -> rows; raise a ServiceError (4xx) for input the model cannot take."""

    @abstractmethod
    def collate(self, rows: Sequence[Any]) -> dict[str, np.ndarray]:
        """Rows (from any requests) -> named input arrays with a leading batch axis, one entry per row."""

    def row_length(self, row: Any) -> int:
        """A row's sequence length, for grouping rows of similar length; 0 when the input has no sequence axis."""
        return 0

    @abstractmethod
    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> BaseModel:
        """The model's outputs for this request's rows (leading axis = its rows, in order) -> response."""

    def check_tensor_shape(self, tensor: str, shape: list[int]) -> None:
        """Refuse (InvalidInput), from its declared shape alone and before its data is read, a V2 input
        larger than one request may be. By default nothing beyond the body size limit."""

    @abstractmethod
    def decode_tensors(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> Decoded:
        """V2 input tensors (names, datatypes and shapes already checked against tensor_inputs) -> rows."""

    @abstractmethod
    def encode_tensors(self, outputs: list[np.ndarray], decoded: Decoded) -> dict[str, np.ndarray]:
        """The model's outputs for this request's rows -> the V2 output tensors, by name."""
