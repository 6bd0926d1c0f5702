"""The FHIR half of the bad-input catalogue: named requests POSTed to ``prpgate serve``'s
FHIR listener, each with the answer it must get.

Expectations come from the documentation, not from a run: README.md ("FHIR input": the
table of requests and answers, "What is read", "Retransmits"), DESIGN.md ("FHIR R4 over
HTTP": errors as OperationOutcome with the right status), and the FHIR R4 IssueType
value set where those name no code (``structure``: content that cannot be parsed, or
a shape that is not a resource's; ``required``: a required element missing; ``value``:
an element whose value is invalid; ``code-invalid``: a code outside its required value
set; ``not-found``: a reference that resolves to nothing; ``not-supported``: a content
type, resource or interaction the server does not take; ``too-long``: content over a
size limit). ``why`` says which.

``status`` is the HTTP status; ``issue`` the code of the first error issue of the
OperationOutcome; ``warns`` that a 2xx answer carries a warning issue;
``location`` its FHIRPath expression when one is named; ``entries`` the statuses of a
batch-response's entries. Every request's raw input (a request record: request line,
content headers, body) must be in the store afterwards, its body whole or, over the
limit, its first 64 KiB (``stored_body``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.bad_inputs.hl7_cases import LIMIT

__all__ = ["CASES", "FhirCase", "good_observation"]

KEEP = 64 * 1024
FHIR_JSON = "application/fhir+json"
NORTHHOSP = "urn:oid:2.16.840.1.113883.3.9999.2"
MRN = "ZQ78002"  # the catalogue's FHIR patient (synthetic; not in any fixture)


def observation(ident: str, **changes: Any) -> dict[str, Any]:
    """A valid WBC Observation (normal value) identified by ``ident``; ``changes`` set
    (or, with None, remove) top-level elements."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:lab:badinput:obs", "value": ident}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"identifier": {"system": NORTHHOSP, "value": MRN}},
        "effectiveDateTime": "2025-03-20T07:00:00+01:00",
        "valueQuantity": {
            "value": 7.2,
            "unit": "10*3/uL",
            "system": "http://unitsofmeasure.org",
            "code": "10*3/uL",
        },
    }
    for key, value in changes.items():
        if value is None:
            obs.pop(key, None)
        else:
            obs[key] = value
    return obs


def good_observation(ident: str) -> bytes:
    """The good request sent after every bad one: answered 201."""
    return json.dumps(observation(ident)).encode()


def bundle(kind: str, *resources: dict[str, Any], full_urls: list[str] | None = None) -> bytes:
    entries = []
    for i, res in enumerate(resources):
        entry: dict[str, Any] = {
            "resource": res,
            "request": {"method": "POST", "url": res.get("resourceType", "Observation")},
        }
        if full_urls:
            entry["fullUrl"] = full_urls[i]
        entries.append(entry)
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).encode()


@dataclass(frozen=True)
class FhirCase:
    """One request and the answer it must get (see the module docstring)."""

    name: str
    body: bytes
    status: int
    why: str
    path: str = "/Observation"  # under the FHIR base; "" is the base itself
    content_type: str | None = FHIR_JSON
    headers: dict[str, str] = field(default_factory=dict)
    issue: str | None = None
    location: str | None = None
    entries: tuple[int, ...] | None = None
    warns: bool = False
    stored_body: bytes | None = None  # None: the body whole
    chunked: bool = False


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> Any:
    value: Any = 7.2
    for _ in range(depth):
        value = [value]
    return value


def _cases() -> list[FhirCase]:
    c: list[FhirCase] = []

    def add(name: str, body: bytes, status: int, why: str, **kw: Any) -> None:
        c.append(FhirCase(name, body, status, why, **kw))

    # ---------------------------------------------------------------- JSON
    add(
        "json_cut_short",
        good_observation("json_cut_short")[:60],
        400,
        "README: malformed JSON is 400 with the line and column; IssueType structure",
        issue="structure",
    )
    add(
        "json_trailing_comma",
        b'{"resourceType": "Observation", "status": "final",}',
        400,
        "README: malformed JSON is 400 (structure)",
        issue="structure",
    )
    add(
        "json_empty_body",
        b"",
        400,
        "malformed JSON: nothing to read (structure)",
        issue="structure",
    )
    add(
        "json_whitespace_only",
        b" \r\n\t ",
        400,
        "malformed JSON: nothing to read (structure)",
        issue="structure",
    )
    add(
        "json_not_utf8",
        good_observation("json_not_utf8").replace(b"final", "fïnal".encode("latin-1")),
        400,
        "FHIR JSON is UTF-8; bytes that are not cannot be parsed (400, structure)",
        issue="structure",
    )
    add(
        "json_utf16",
        json.dumps(observation("json_utf16")).encode("utf-16"),
        400,
        "FHIR JSON is UTF-8; UTF-16 cannot be parsed as it (400, structure)",
        issue="structure",
    )
    add(
        "json_declared_latin1",
        json.dumps(observation("json_declared_latin1", status="fïnal"), ensure_ascii=False).encode(
            "latin-1"
        ),
        400,
        "FHIR JSON is UTF-8 whatever charset the Content-Type names (400, structure)",
        content_type=f"{FHIR_JSON}; charset=iso-8859-1",
        issue="structure",
    )
    add(
        "json_nan",
        good_observation("json_nan").replace(b"7.2", b"NaN"),
        400,
        "NaN is not JSON (RFC 8259): malformed (400, structure)",
        issue="structure",
    )
    add(
        "json_top_level_array",
        b"[" + good_observation("json_top_level_array") + b"]",
        400,
        "README: an invalid resource is 400; a JSON array is not a resource (structure)",
        issue="structure",
    )
    add(
        "json_top_level_string",
        b'"Observation"',
        400,
        "a JSON string is not a resource (400, structure)",
        issue="structure",
    )
    add(
        "json_object_without_resource_type",
        b"{}",
        400,
        "an object without resourceType is not a resource (400, structure)",
        issue="structure",
    )
    add(
        "json_resource_type_is_a_number",
        b'{"resourceType": 5, "status": "final"}',
        400,
        "resourceType must be a string naming a resource (400, structure)",
        issue="structure",
    )
    add(
        "json_100k_nested_arrays",
        b"[" * 100_000 + b"]" * 100_000,
        400,
        "README: malformed JSON is 400; nesting too deep to read is not a resource "
        "(structure); never a 500",
        issue="structure",
    )
    add(
        "json_lone_surrogate",
        good_observation("json_lone_surrogate").replace(b'"final"', b'"fin\\ud800al"'),
        400,
        "an unpaired surrogate escape is not Unicode text (RFC 8259 section 8.2: "
        "unpredictable); FHIR strings are Unicode: cannot be parsed (400, structure)",
        issue="structure",
    )
    add(
        "json_two_documents",
        good_observation("json_two_documents_a") + b"\n" + good_observation("json_two_documents_b"),
        400,
        "over HTTP a body is one resource; NDJSON is for files (README): malformed JSON "
        "(400, structure)",
        issue="structure",
    )
    add(
        "json_after_a_bom",
        b"\xef\xbb\xbf" + good_observation("json_after_a_bom"),
        201,
        "README (What is read): a UTF-8 BOM is read",
    )

    # ----------------------------------------------------- invalid resources
    add(
        "observation_without_status",
        _dumps(observation("observation_without_status", status=None)),
        400,
        "README: an invalid resource is 400 with FHIRPath locations; status is 1..1 (required)",
        issue="required",
        location="Observation.status",
    )
    add(
        "observation_without_code",
        _dumps(observation("observation_without_code", code=None)),
        400,
        "Observation.code is 1..1 (400, required)",
        issue="required",
        location="Observation.code",
    )
    add(
        "observation_status_not_in_its_value_set",
        _dumps(observation("observation_status_not_in_its_value_set", status="done")),
        400,
        "README: Observation.status is checked against its required value set (code-invalid)",
        issue="code-invalid",
        location="Observation.status",
    )
    obs = observation("observation_value_is_text")
    obs["valueQuantity"]["value"] = "high"
    add(
        "observation_value_is_text",
        _dumps(obs),
        400,
        "README's own example: 400 at Observation.valueQuantity.value (an invalid value)",
        issue="value",
        location="Observation.valueQuantity.value",
    )
    add(
        "observation_subject_is_a_number",
        _dumps(observation("observation_subject_is_a_number", subject=5)),
        400,
        "a Reference that is a number is an invalid value (400)",
        issue="value",
        location="Observation.subject",
    )
    add(
        "observation_unknown_element",
        _dumps(observation("observation_unknown_element", colour="red")),
        400,
        "FHIR JSON: unknown elements are an error (400, structure)",
        issue="structure",
        location="Observation.colour",
    )
    add(
        "observation_effective_not_a_date",
        _dumps(observation("observation_effective_not_a_date", effectiveDateTime="yesterday")),
        400,
        "a dateTime that is not one is an invalid value (400)",
        issue="value",
        location="Observation.effectiveDateTime",
    )
    deep = observation("observation_value_nested_800_deep")
    deep["valueQuantity"]["value"] = _nested(800)
    add(
        "observation_value_nested_800_deep",
        _dumps(deep),
        400,
        "nested arrays where a decimal goes: an invalid value (400), never a 500",
        issue="value",
        location="Observation.valueQuantity.value",
    )

    # ------------------------------------------- valid, but cannot be processed
    add(
        "observation_without_subject",
        _dumps(observation("observation_without_subject", subject=None)),
        422,
        "README: not processable (no usable subject) is 422; the subject prpgate needs is "
        "missing (required)",
        issue="required",
    )
    add(
        "observation_subject_contained_reference_to_nothing",
        _dumps(
            observation(
                "observation_subject_contained_reference_to_nothing",
                subject={"reference": "#nobody"},
            )
        ),
        422,
        "a contained reference must resolve inside the resource; it goes nowhere: 422 "
        "(no usable subject), not-found",
        issue="not-found",
    )
    add(
        "observation_subject_literal_reference",
        _dumps(
            observation(
                "observation_subject_literal_reference", subject={"reference": "Patient/nowhere"}
            )
        ),
        201,
        "README (Subject): else the reference itself, with a warning",
        warns=True,
    )
    patient_ref = "urn:uuid:3f0b1c7e-0000-4000-8000-00000000dead"
    add(
        "transaction_subject_fullurl_not_in_the_bundle",
        bundle(
            "transaction",
            observation(
                "transaction_subject_fullurl_not_in_the_bundle",
                subject={"reference": patient_ref},
            ),
        ),
        422,
        "README: a transaction is all or nothing; a failed entry is 422; a urn:uuid "
        "reference names a Bundle entry, and there is none (not-found)",
        path="",
        issue="not-found",
    )
    add(
        "value_string_not_a_number",
        _dumps(
            observation("value_string_not_a_number", valueQuantity=None, valueString="see comment")
        ),
        201,
        "README (What is read): valueString is read like OBX-5 text; text that is not a "
        "number is recorded unmapped: README, POST Observation: unmapped results as warnings",
        warns=True,
    )
    huge = observation("value_with_a_huge_exponent")
    huge_body = _dumps(huge).replace(b"7.2", b"7.2e400")
    add(
        "value_with_a_huge_exponent",
        huge_body,
        201,
        "DESIGN: a value outside the analyte's plausible range is recorded as implausible "
        "and decides nothing; README: unmapped results as warnings",
        warns=True,
    )

    # ----------------------------------------------------- wrong resource types
    add(
        "bundle_posted_to_observation",
        bundle("transaction", observation("bundle_posted_to_observation")),
        422,
        "README: a wrong resource type is 422 (not-supported)",
        issue="not-supported",
    )
    add(
        "observation_posted_to_the_base",
        good_observation("observation_posted_to_the_base"),
        422,
        "README: POST [base] takes a transaction or batch Bundle; wrong type is 422",
        path="",
        issue="not-supported",
    )
    add(
        "patient_posted_to_observation",
        _dumps({"resourceType": "Patient", "identifier": [{"value": MRN}]}),
        422,
        "README: a wrong resource type is 422 (not-supported)",
        issue="not-supported",
    )
    add(
        "unknown_resource_type",
        _dumps({"resourceType": "Spaceship", "status": "final"}),
        422,
        "README: a wrong resource type is 422 (not-supported)",
        issue="not-supported",
    )
    add(
        "collection_bundle_posted_to_the_base",
        bundle("collection", observation("collection_bundle_posted_to_the_base")),
        422,
        "README: POST [base] takes a transaction or batch Bundle (not-supported)",
        path="",
        issue="not-supported",
        location="Bundle.type",
    )

    # ------------------------------------------------------------------ bundles
    bad_entry = observation("transaction_with_one_invalid_entry_b", status=None)
    add(
        "transaction_with_one_invalid_entry",
        bundle("transaction", observation("transaction_with_one_invalid_entry_a"), bad_entry),
        400,
        "README: a transaction is all or nothing; 400 when an entry is invalid",
        path="",
        issue="required",
    )
    add(
        "batch_with_one_invalid_entry",
        bundle(
            "batch",
            observation("batch_with_one_invalid_entry_a", status=None),
            observation("batch_with_one_invalid_entry_b"),
        ),
        200,
        "README: batch entries stand alone: 400 for the invalid one, 201 for the other",
        path="",
        entries=(400, 201),
    )
    add(
        "batch_with_one_entry_without_subject",
        bundle(
            "batch",
            observation("batch_with_one_entry_without_subject_a"),
            observation("batch_with_one_entry_without_subject_b", subject=None),
        ),
        200,
        "README: batch entries stand alone: 201, then 422 for the one with no subject",
        path="",
        entries=(201, 422),
    )
    add(
        "bundle_entry_is_an_object",
        _dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": {"resource": observation("bundle_entry_is_an_object")},
            }
        ),
        400,
        "Bundle.entry is a list; an object there is the Bundle's shape gone wrong: an "
        "invalid resource (400), a structural issue (structure)",
        path="",
        issue="structure",
        location="Bundle.entry",
    )
    add(
        "bundle_entry_resource_is_a_number",
        _dumps({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": 5}]}),
        400,
        "an entry's resource must be a resource (a JSON object): a structural issue (400, "
        "structure) at Bundle.entry[0].resource",
        path="",
        issue="structure",
        location="Bundle.entry[0].resource",
    )
    n = 2000
    add(
        "transaction_with_2000_entries",
        bundle("transaction", *(observation(f"transaction_2000_{i}") for i in range(n))),
        200,
        "README: a transaction Bundle is answered 200 with a transaction-response, each "
        "Observation 201 (within max_message_bytes)",
        path="",
        entries=(201,) * n,
    )
    over = bundle("transaction", *(observation(f"transaction_over_limit_{i}") for i in range(5000)))
    assert len(over) > LIMIT
    add(
        "bundle_over_the_limit",
        over,
        413,
        "README: a body over max_message_bytes is 413, its first 64 KiB stored (too-long)",
        path="",
        issue="too-long",
        stored_body=over[:KEEP],
    )
    add(
        "bundle_over_the_limit_chunked",
        over,
        413,
        "README: a body over the limit is 413 whether or not it declares its length",
        path="",
        issue="too-long",
        stored_body=over[:KEEP],
        chunked=True,
    )

    # ------------------------------------------------------------ media types
    xml = (
        b'<Observation xmlns="http://hl7.org/fhir"><status value="final"/>'
        b'<code><coding><system value="http://loinc.org"/><code value="6690-2"/></coding>'
        b"</code></Observation>"
    )
    add(
        "xml_observation",
        xml,
        415,
        "README: XML or another media type is 415 (not-supported), stored",
        content_type="application/fhir+xml",
        issue="not-supported",
    )
    add(
        "json_sent_as_text_plain",
        good_observation("json_sent_as_text_plain"),
        415,
        "README: another media type is 415",
        content_type="text/plain",
        issue="not-supported",
    )
    add(
        "json_without_content_type",
        good_observation("json_without_content_type"),
        415,
        "README: another media type (none) is 415",
        content_type=None,
        issue="not-supported",
    )
    add(
        "xml_answer_asked_with_accept",
        good_observation("xml_answer_asked_with_accept"),
        406,
        "README: XML answers asked for with Accept are 406; every POST is stored",
        headers={"Accept": "application/fhir+xml"},
        issue="not-supported",
    )
    add(
        "xml_answer_asked_with_format",
        good_observation("xml_answer_asked_with_format"),
        406,
        "README: XML answers asked for with _format are 406; every POST is stored",
        path="/Observation?_format=xml",
        issue="not-supported",
    )
    return c


CASES: tuple[FhirCase, ...] = tuple(_cases())
