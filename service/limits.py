"""What one request may ask of a model: the input limits that tasks enforce in their decode.

The values come from Settings (flags or ORTSERVE_* variables); tasks receive them when the registry
builds them, so the request schemas stay the same whatever the limits are. This module imports nothing
from the service, so a change to Settings never changes a model's build key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InputLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_pixels: int = Field(16_000_000, ge=1, description="width x height of an uploaded image (413 beyond)")
    texts: int = Field(64, ge=1, description="texts in one sentiment request (422 beyond)")
    text_chars: int = Field(10_000, ge=1, description="characters in one text (422 beyond)")
    series_length: int = Field(100_000, ge=1, description="values in one forecast series (422 beyond)")
    # A request of more rows than a model's queue holds (max_queue_rows) could never be admitted.
    images: int = Field(256, ge=1, description="images in one V2 request to the image model (400 beyond)")


DEFAULT_LIMITS = InputLimits()
