"""``POST /v1/quantum/qaoa``: a QUBO in (see ``quantum_kernels.schema``), QAOA samples and baselines out.

Malformed or oversized problems get an OpenAI-shaped 400 (``APIError``); the solver runs in a worker
thread so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from quantum_kernels.schema import EXAMPLE_PROBLEM, QAOARequest, QAOAResponse
from quantum_kernels.service import ProblemTooLarge, QuantumUnavailable, run_qaoa_request
from serving.errors import APIError

MAX_SERVER_VARIABLES = 20
"""Largest problem the server simulates (a 2^20 statevector; seconds per request)."""
MAX_CONCURRENT_JOBS = 2
"""QAOA jobs simulated at once; further requests wait for a slot (each job is CPU-bound)."""
_job_slots = asyncio.Semaphore(MAX_CONCURRENT_JOBS)
MAX_MAGNITUDE = 1e12
"""Largest |coefficient|, offset or penalty accepted: near float64's limit the energies overflow to NaN."""


def _check_magnitudes(body: QAOARequest) -> None:
    problem = body.problem
    values = [*problem.linear, problem.offset, *(w for _, _, w in problem.quadratic), body.penalty or 0.0]
    if any(abs(v) > MAX_MAGNITUDE for v in values):
        raise APIError(f"problem coefficients, offset and penalty must lie within ±{MAX_MAGNITUDE:g}", 400,
                       param="problem")


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


class QuantumRoute(APIRoute):
    """Turns request-validation failures into a 400 with OpenAI's error shape (FastAPI would send 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
                message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
                param = _param(tuple(first.get("loc", ())))
                raise APIError(f"{param + ': ' if param else ''}{message}", 400, param=param) from exc

        return route_handler


router = APIRouter(route_class=QuantumRoute, tags=["quantum"])


@router.post("/v1/quantum/qaoa", response_model=QAOAResponse, summary="Solve a QUBO with QAOA")
async def qaoa(
    body: Annotated[QAOARequest, Body(openapi_examples={
        "keep-2-of-4-heads": {"summary": "Keep 2 of 4 attention heads",
                              "value": {"problem": EXAMPLE_PROBLEM, "reps": 2, "shots": 1024}}})],
) -> QAOAResponse:
    """Run QAOA (exact statevector kernel) on the problem, with a classical baseline and quality measures."""
    _check_magnitudes(body)
    try:
        async with _job_slots:
            return await asyncio.to_thread(run_qaoa_request, body, MAX_SERVER_VARIABLES)
    except ProblemTooLarge as exc:
        raise APIError(str(exc), 400, param=exc.param) from exc
    except QuantumUnavailable as exc:
        raise APIError(str(exc), 501, "server_error", code="quantum_unavailable") from exc
