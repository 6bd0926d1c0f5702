"""``prpgate send``: a client that sends messages to a live MLLP or FHIR listener and
checks every answer (see ``mllp_client``, ``fhir_client`` and ``report``)."""
