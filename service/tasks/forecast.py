"""Sequence forecasting API: a numeric series -> one scaled row (and its Theta forecast) -> the next `horizon`
values with 80% and 95% prediction intervals."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Sequence

import numpy as np
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator

from service.errors import InvalidInput
from service.limits import DEFAULT_LIMITS, checked_items, limits_of
from service.manifest import ForecastPreprocessing
from service.preprocessing.series import (
    INTERVAL_LEVELS,
    MIN_HISTORY,
    detect_period,
    residual_scale,
    right_aligned,
    scale_windows,
    theta_changes,
    unscale,
    unscale_intervals,
)
from service.tasks.base import Decoded, Task, TensorDeclaration

MAX_HISTORY = DEFAULT_LIMITS.series_length  # the default of max_series_length; decode enforces the configured one
FEEDS = ("window", "context", "theta")  # the graph's inputs, in the order of a decoded row


VALUE = TypeAdapter(Annotated[float, AllowInfNan(False)])


def _finite_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    series: list[float] = Field(
        min_length=MIN_HISTORY,
        description=f"observations, oldest first, equally spaced; at most max_series_length (default {MAX_HISTORY:,})",
        json_schema_extra={"example": [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126]},
    )
    horizon: int = Field(12, ge=1, description="steps to forecast (at most the model's horizon_max)")
    period: Optional[Literal[1, 4, 12]] = Field(
        None, description="seasonal period: 12 monthly, 4 quarterly, 1 yearly/none; detected when omitted"
    )

    @field_validator("series", mode="before")
    @classmethod
    def _count_first(cls, series: Any, info: ValidationInfo) -> Any:
        """The length is checked before any value is, and at most a few bad values are reported."""
        return checked_items(series, "series", limits_of(info).series_length,
                             "the series has {count:,} values; at most {limit:,}", _finite_number, VALUE)


class PredictionInterval(BaseModel):
    level: float = Field(description="nominal coverage of each step's interval, e.g. 0.8")
    lower: list[float] = Field(description="lower bound per step, in the units of the series")
    upper: list[float] = Field(description="upper bound per step, in the units of the series")


class ForecastResponse(BaseModel):
    model: str
    version: str
    forecast: list[float] = Field(description="the next `horizon` values, in the units of the series")
    period: Literal[1, 4, 12] = Field(description="the seasonal period used: as given, or as detected")
    intervals: list[PredictionInterval] = Field(
        description="80% and 95% prediction intervals per step (conformal, calibrated on validation tails)"
    )


class ForecastTask(Task):
    kind = "sequence-forecast"
    summary = "Forecast the next values of a series, with prediction intervals"
    request_model = ForecastRequest
    response_model = ForecastResponse
    tensor_inputs = (
        TensorDeclaration("history", "FP32", (1, -1), "one series, oldest first; parameters: horizon, period"),
    )
    tensor_outputs = (TensorDeclaration("forecast", "FP32", (1, -1), "the next `horizon` values"),)

    preprocessing: ForecastPreprocessing

    def decode(self, request: ForecastRequest) -> Decoded:
        spec = self.preprocessing
        if request.horizon > spec.horizon_max:
            raise InvalidInput(f"horizon {request.horizon} is above this model's maximum of {spec.horizon_max}")
        if len(request.series) > self.limits.series_length:
            raise InvalidInput(f"the series has {len(request.series):,} values; at most {self.limits.series_length:,}")
        series = np.asarray(request.series, dtype=np.float64)
        if len(series) < spec.min_history:
            raise InvalidInput(f"the series needs at least {spec.min_history} values, got {len(series)}")
        if not np.all(np.isfinite(series)):
            raise InvalidInput("the series must contain only finite numbers")
        period = request.period or detect_period(series, spec.context_window)
        steps, context, scaling = scale_windows(
            right_aligned([series], spec.context_window), np.array([period]), keep=spec.window
        )
        theta = theta_changes(scaling.history, spec.horizon_max).astype(np.float32)
        return Decoded(
            rows=[(steps[0], context[0], theta[0])],
            context={
                "scaling": scaling,
                "horizon": request.horizon,
                "period": period,
                "scale": residual_scale(scaling.history, scaling.period),  # the unit of the interval half-widths
            },
        )

    def collate(self, rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        return {name: np.stack([row[i] for row in rows]) for i, name in enumerate(FEEDS)}

    def check_tensor_shape(self, tensor: str, shape: list[int]) -> None:
        count = math.prod(shape)
        if count > self.limits.series_length:
            raise InvalidInput(f"{tensor}: the series has {count:,} values; at most {self.limits.series_length:,}")

    def decode_tensors(self, inputs: dict[str, np.ndarray], parameters: dict) -> Decoded:
        unknown = set(parameters) - {"horizon", "period"}
        if unknown:
            raise InvalidInput(f"unknown parameters {sorted(unknown)}; this model takes horizon and period")
        try:
            request = ForecastRequest.model_validate(
                {
                    "series": inputs["history"][0].astype(np.float64).tolist(),
                    "horizon": parameters.get("horizon", 12),
                    "period": parameters.get("period"),
                },
                context={"limits": self.limits},
            )
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"]).replace("series", "history")
            raise InvalidInput(f"{where}: {first['msg']}") from None
        return self.decode(request)

    def encode_tensors(self, outputs: list[np.ndarray], decoded: Decoded) -> dict[str, np.ndarray]:
        horizon = decoded.context["horizon"]
        return {"forecast": unscale(outputs[0][:, 0, :horizon], decoded.context["scaling"]).astype(np.float32)}

    def encode(self, outputs: list[np.ndarray], decoded: Decoded, model: str, version: str) -> ForecastResponse:
        horizon = decoded.context["horizon"]
        scaling = decoded.context["scaling"]
        forecast = unscale(outputs[0][:, 0, :horizon], scaling)[0]
        bounds = unscale_intervals(outputs[0][:, :, :horizon], scaling, decoded.context["scale"])
        return ForecastResponse(
            model=model,
            version=version,
            forecast=[float(v) for v in forecast],
            period=int(decoded.context["period"]),
            intervals=[
                PredictionInterval(level=level, lower=[float(v) for v in bounds[level][0][0]],
                                   upper=[float(v) for v in bounds[level][1][0]])
                for level in INTERVAL_LEVELS
            ],
        )
