"""prpgate: HL7 v2 / FHIR R4 lab results to PRP-safety DetectedIssue and Flag resources."""

__all__ = ["__version__"]

__version__ = "0.1.0"
