"""Shared bases of the OpenAI protocol models: strict requests, ids, the model list."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ID_BYTES = 12


def random_id(prefix: str) -> str:
    """An OpenAI-style object id such as ``chatcmpl-<hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[: ID_BYTES * 2]}"


class RequestModel(BaseModel):
    """Base for request bodies: strict about unknown fields and non-finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


class ResponseModel(BaseModel):
    """Base for response bodies."""

    model_config = ConfigDict(protected_namespaces=())


# ---------------------------------------------------------------------------------------------- Models


class Model(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "nexus-k"
    # --- Nexus-K extensions
    root: str | None = None
    """The base model's path or hub id."""
    parent: str | None = None
    """For a LoRA adapter: the model it applies to."""
    max_model_len: int | None = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Model]
