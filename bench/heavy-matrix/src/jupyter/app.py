"""heavy-matrix's Python service (as AI-Infra-Matrix's jupyterhub image: a pip install)."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/version")
def version() -> dict:
    return {"version": os.environ.get("APP_VERSION", "dev")}
