"""SpotOn results API: FastAPI app, persistence and the live feed (see docs/architecture.md)."""
