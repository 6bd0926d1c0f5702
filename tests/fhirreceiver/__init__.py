"""A small FHIR receiver for ``prpgate send`` tests (Starlette, run by uvicorn)."""
