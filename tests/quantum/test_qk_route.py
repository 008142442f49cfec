"""POST /v1/quantum/qaoa through a small FastAPI app with the router and the APIError handler."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quantum_kernels.schema import EXAMPLE_PROBLEM
from serving.errors import APIError
from serving.routes.quantum import router


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return exc.response()

    return TestClient(app)


def test_qaoa_returns_samples_baseline_and_honest_measures(client):
    r = client.post("/v1/quantum/qaoa", json={"problem": EXAMPLE_PROBLEM, "reps": 1, "shots": 400,
                                              "maxiter": 30, "baseline": "exact"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "quantum.qaoa" and body["backend"] == "statevector_kernel"
    assert body["optimum"] == pytest.approx(-1.5)
    assert body["baseline"]["energy"] == pytest.approx(-1.5) and body["baseline"]["bitstring"] == "1010"
    assert 0 <= body["p_optimum"] <= 1 and body["uniform_p_optimum"] == pytest.approx(1 / 6)
    assert body["p_feasible"] == pytest.approx(1.0)
    assert sum(s["count"] for s in body["samples"]) <= 400
    assert all(s["bitstring"].count("1") == 2 for s in body["samples"])


@pytest.mark.parametrize(("payload", "param", "fragment"), [
    ({"problem": {**EXAMPLE_PROBLEM, "quadratic": [[0, 7, 1.0]]}}, "problem", "outside"),
    ({"problem": {"num_variables": 22}}, "problem.num_variables", "limit of 20"),
    ({"problem": {"num_variables": 99}}, "problem.num_variables", "less than or equal"),
    ({"problem": EXAMPLE_PROBLEM, "reps": 9}, "reps", "less than or equal"),
    ({"problem": EXAMPLE_PROBLEM, "colour": "blue"}, "colour", "Extra inputs"),
    ({"problem": {**EXAMPLE_PROBLEM, "hamming_weight": 5}}, "problem", "exceeds"),
])
def test_malformed_or_oversized_problems_get_400(client, payload, param, fragment):
    r = client.post("/v1/quantum/qaoa", json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"]


def test_invalid_json_gets_400(client):
    r = client.post("/v1/quantum/qaoa", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_openapi_documents_schema_and_example(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/quantum/qaoa"]["post"]
    examples = op["requestBody"]["content"]["application/json"]["examples"]
    assert examples["keep-2-of-4-heads"]["value"]["problem"] == EXAMPLE_PROBLEM
    assert "QUBOProblem" in spec["components"]["schemas"]
