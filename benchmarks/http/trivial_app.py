"""The reference for `make bench`'s HTTP ratios: a trivial FastAPI endpoint."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/trivial")
async def trivial() -> dict[str, bool]:
    return {"ok": True}
