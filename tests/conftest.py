from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _mlflow_to_temporary_stores(monkeypatch):
    "MLflow runs of tests go to temporary stores (each test's runs/ or its own URI), never to a server set in the environment."
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
