"""FHIR R4 input -> LabResult values: a lone Observation or DiagnosticReport, or a
Bundle (transaction, batch, collection, searchset, batch-response), from a file, an
NDJSON line or an HTTP request record (``core.fhir_request``).

Every resource this adapter reads is validated with its R4B model first
(``core.fhir_validate``). In a Bundle, Observations are the results; a Patient is
read when an Observation's subject points at it; a DiagnosticReport lends the
Observations it lists its subject, effective time and panel code, and its contained
Observations are read too; other resources are acknowledged and left alone.

A ``transaction`` is all or nothing: one invalid entry rejects the whole input. In
every other Bundle type, entries stand alone: an entry that is invalid or cannot be
processed is reported (``entries``, ``warnings``) and the others go on.

The retransmit key (``FhirInput.key``): the client's ``X-Request-Id``, else its
``If-None-Exist``, else the resource's own identity (identifier, else id), else a hash
of its content. With the content hash it plays the part of HL7 v2's (MSH-3, MSH-4,
MSH-10): the same key and content is a retransmit, not processed again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from prpgate.core.fhir_bundle import HTTP_BUNDLE_TYPES, ResourceReader, read_bundle
from prpgate.core.fhir_request import (
    FhirRequest,
    JsonProblem,
    canonical_hash,
    decode_json,
    unwrap,
)
from prpgate.core.fhir_validate import Issue, validate
from prpgate.core.fhir_verdicts import EntryKind, EntryVerdict, FhirInput, refuse, with_entries
from prpgate.core.json_shape import as_dict, as_list, as_str

__all__ = [
    "FILE_BUNDLE_TYPES",
    "HTTP_BUNDLE_TYPES",
    "EntryKind",
    "EntryVerdict",
    "FhirInput",
    "read_input",
]

FILE_BUNDLE_TYPES = ("transaction", "batch", "collection", "searchset", "batch-response")


def _key(request: FhirRequest, resource: dict[str, Any], digest: str) -> str:
    request_id = request.header("x-request-id")
    if request_id:
        return f"request:{request_id}"
    condition = request.header("if-none-exist")
    if condition:
        return f"if-none-exist:{condition}"
    rtype = as_str(resource.get("resourceType"))
    ident = as_dict(resource.get("identifier"))  # Bundle.identifier is single
    if not ident:
        ident = next(
            (as_dict(i) for i in as_list(resource.get("identifier")) if as_dict(i).get("value")),
            {},
        )
    if as_str(ident.get("value")):
        return f"{rtype}?identifier={as_str(ident.get('system'))}|{ident['value']}"
    if as_str(resource.get("id")):
        return f"{rtype}/{resource['id']}"
    return f"sha256:{digest}"


def read_input(
    raw: bytes,
    *,
    system_base: str,
    default_offset: str = "+00:00",
    max_entries: int | None = None,
) -> FhirInput:
    """Read FHIR input (see the module docstring). Never raises.

    ``system_base`` scopes identifiers sent without a system (and bare references), as
    ``identifier_system_base`` does for HL7 v2. A Bundle of more than ``max_entries``
    entries is refused whole, unread.
    """
    request = unwrap(raw)
    value = decode_json(request.body)
    if isinstance(value, JsonProblem):
        digest = hashlib.sha256(request.body).hexdigest()
        return FhirInput(
            request,
            digest,
            errors=(Issue(value.location, value.reason, 100, "structure"),),
            rejected=True,
        )
    digest = canonical_hash(value)
    if not isinstance(value, dict) or not as_str(value.get("resourceType")):
        what = "a JSON object" if isinstance(value, dict) else f"JSON {type(value).__name__}"
        base = FhirInput(request, digest)
        return refuse(
            base,
            Issue("$", f"{what} without resourceType is not a FHIR resource", 100, "structure"),
        )
    rtype = as_str(value["resourceType"])
    btype = as_str(value.get("type")) if rtype == "Bundle" else ""
    base = FhirInput(
        request,
        digest,
        resource_type=rtype,
        bundle_type=btype,
        key=_key(request, value, digest),
        facility=as_str(as_dict(value.get("meta")).get("source")),
    )
    refusal = _check_type(request.interaction, rtype, btype)
    if refusal is not None:
        return refuse(base, refusal)
    if rtype == "Bundle":
        entries = value.get("entry")
        if max_entries is not None and isinstance(entries, list) and len(entries) > max_entries:
            reason = f"the Bundle has {len(entries)} entries; the limit is {max_entries}"
            return refuse(base, Issue("Bundle.entry", reason, 100, "too-costly"))
        return read_bundle(value, base, system_base, default_offset)
    issues = validate(value, rtype)
    if issues:
        verdict = EntryVerdict(0, rtype, EntryKind.INVALID, tuple(issues))
        return refuse(with_entries(base, (verdict,)), *issues)
    reader = ResourceReader(base.facility, system_base, default_offset, {})
    if rtype == "Observation":
        reader.observation(0, value, rtype, "", None)
    else:
        reader.report(0, value, rtype, {})
    return reader.finish(base, atomic=True)


def _check_type(interaction: str, rtype: str, btype: str) -> Issue | None:
    if interaction == "create":
        if rtype != "Observation":
            return Issue(
                "Observation.resourceType",
                f"POST [base]/Observation takes an Observation, not a {rtype}",
                200,
                "not-supported",
            )
        return None
    if interaction == "bundle":
        if rtype != "Bundle" or btype not in HTTP_BUNDLE_TYPES:
            what = f"a {btype or 'typeless'} Bundle" if rtype == "Bundle" else f"a {rtype}"
            return Issue(
                "Bundle.type" if rtype == "Bundle" else "Bundle.resourceType",
                f"POST [base] takes a transaction or batch Bundle, not {what}",
                200,
                "not-supported",
            )
        return None
    if rtype in ("Observation", "DiagnosticReport"):
        return None
    if rtype == "Bundle":
        if btype in FILE_BUNDLE_TYPES:
            return None
        return Issue(
            "Bundle.type",
            f"a {btype or 'typeless'} Bundle is not read; prpgate reads "
            + ", ".join(FILE_BUNDLE_TYPES)
            + " Bundles",
            200,
            "not-supported",
        )
    return Issue(
        f"{rtype}.resourceType",
        f"{rtype} is not a lab result: prpgate reads Observation, DiagnosticReport and Bundle",
        200,
        "not-supported",
    )
