"""What one request may ask of a model: the input limits that tasks enforce in their decode.

The values come from Settings (flags or ORTSERVE_* variables); tasks receive them when the registry
builds them, so the request schemas stay the same whatever the limits are. The request models read them
from the validation context (`{"limits": ...}`) to refuse an oversized list before validating its items.
This module imports nothing from the service, so a change to Settings never changes a model's build key.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

# A refused list reports at most this many of its items' problems: a million bad items cost ten.
MAX_ITEM_PROBLEMS = 10


class InputLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_pixels: int = Field(16_000_000, ge=1, description="width x height of an uploaded image (413 beyond)")
    texts: int = Field(64, ge=1, description="texts in one sentiment request (422 beyond)")
    text_chars: int = Field(10_000, ge=1, description="characters in one text (422 beyond)")
    series_length: int = Field(100_000, ge=1, description="values in one forecast series (422 beyond)")
    # A request of more rows than a model's queue holds (max_queue_rows) could never be admitted.
    images: int = Field(256, ge=1, description="images in one V2 request to the image model (400 beyond)")
    # One decode thread's share of the decode memory budget (max_decode_mb / decode_workers).
    decode_bytes: int = Field(384 * 1024 * 1024, ge=1, description="memory decoding one image may take (413 beyond)")


DEFAULT_LIMITS = InputLimits()


def limits_of(info: ValidationInfo) -> InputLimits:
    """The limits a request is validated against: the service's, else the defaults."""
    context = info.context
    found = context.get("limits") if isinstance(context, dict) else None
    return found if isinstance(found, InputLimits) else DEFAULT_LIMITS


def checked_items(
    value: Any, field: str, limit: int, too_many: str, fast: Callable[[Any], bool], item: TypeAdapter
) -> Any:
    """A list field checked before pydantic validates its items one by one: its length against `limit`
    first (refused with `too_many`, formatted with count and limit), then, unless every item passes the
    cheap `fast` test, each item with `item` until MAX_ITEM_PROBLEMS have failed. Anything that is not a
    list is left to pydantic."""
    if not isinstance(value, list):
        return value
    if len(value) > limit:
        raise PydanticCustomError("too_long", too_many.format(count=len(value), limit=limit))
    if all(fast(v) for v in value):
        return value
    problems = []
    for index, v in enumerate(value):
        if fast(v):
            continue
        try:
            item.validate_python(v)
        except ValidationError as exc:
            problems.append(f"{field}[{index}]: {exc.errors(include_url=False)[0]['msg']}")
            if len(problems) > MAX_ITEM_PROBLEMS:
                break
    if problems:
        shown = "; ".join(problems[:MAX_ITEM_PROBLEMS])
        raise PydanticCustomError("invalid_items", shown + ("; and more" if len(problems) > MAX_ITEM_PROBLEMS else ""))
    return value
