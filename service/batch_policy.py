"""Dynamic batching policy of a model: its manifest's default (chosen by measurement at export), or the settings'."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchPolicy(BaseModel):
    """Dynamic batching for one model (Triton's max_batch_size and max_queue_delay_microseconds)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(ge=1, le=1024, description="most rows in one session run")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a loaded model may wait for a fuller batch (an idle one never waits)"
    )
