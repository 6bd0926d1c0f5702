"""A small FHIR R4 server for delivery tests, run as a real uvicorn process (see ``app``)."""
