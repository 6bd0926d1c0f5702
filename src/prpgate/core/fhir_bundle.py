"""A FHIR Bundle's entries -> LabResult values, entry by entry (see ``fhir_in``).

Observations are the results; a DiagnosticReport lends the Observations it lists its
subject, effective time and panel code, and its contained Observations are read; a
Patient is read when a subject points at it; other resources are left alone. A
``transaction`` is all or nothing; other Bundle types report a bad entry and go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prpgate.core.fhir_observation import ObservationContext, read_observation
from prpgate.core.fhir_subject import SubjectContext
from prpgate.core.fhir_validate import Issue, validate, validate_entry
from prpgate.core.fhir_verdicts import (
    EntryKind,
    EntryVerdict,
    FhirInput,
    input_with,
    refuse,
    with_entries,
)
from prpgate.core.json_shape import as_dict, as_list, as_str
from prpgate.core.model import LabResult, Patient

__all__ = ["HTTP_BUNDLE_TYPES", "ResourceReader", "read_bundle"]

HTTP_BUNDLE_TYPES = ("transaction", "batch")
_WRITES = ("POST", "PUT")


@dataclass(slots=True)
class _Lent:
    """What a DiagnosticReport lends an Observation it lists."""

    order_code: str
    subject: object
    effective: str


@dataclass(slots=True)
class ResourceReader:
    """Mutable state while reading one input's resources (Observations, reports)."""

    facility: str
    system_base: str
    default_offset: str
    bundle: dict[str, dict[str, Any]]
    results: list[LabResult] = field(default_factory=list)
    patients: dict[str, Patient] = field(default_factory=dict)
    verdicts: list[EntryVerdict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def _observation_results(
        self,
        obs: dict[str, Any],
        where: str,
        full_url: str,
        lent: _Lent | None,
        outer_contained: dict[str, dict[str, Any]],
    ) -> tuple[int, Issue | None]:
        contained = dict(outer_contained)
        for c in as_list(obs.get("contained")):
            c = as_dict(c)
            if as_str(c.get("id")):
                contained[as_str(c["id"])] = c
        ctx = ObservationContext(
            where=where,
            full_url=full_url,
            facility=self.facility,
            subjects=SubjectContext(contained, self.bundle, self.system_base, self.facility),
            default_offset=self.default_offset,
            order_code=lent.order_code if lent else "",
            fallback_subject=lent.subject if lent else None,
            fallback_effective=lent.effective if lent else "",
        )
        read = read_observation(obs, ctx)
        self.warnings.extend(read.warnings)
        if read.problem is not None:
            return 0, read.problem
        if read.patient is not None:
            self.patients.setdefault(read.patient.identifier.key, read.patient)
        self.results.extend(read.results)
        return len(read.results), None

    def observation(
        self, index: int, obs: dict[str, Any], where: str, full_url: str, lent: _Lent | None
    ) -> None:
        count, problem = self._observation_results(obs, where, full_url, lent, {})
        if problem is not None:
            self.verdicts.append(EntryVerdict(index, "Observation", EntryKind.FAILED, (problem,)))
        else:
            self.verdicts.append(
                EntryVerdict(index, "Observation", EntryKind.PROCESSED, results=count)
            )

    def report(
        self, index: int, report: dict[str, Any], where: str, full_urls: dict[str, int]
    ) -> None:
        """A DiagnosticReport: its contained Observations are read; results listed
        that are neither contained nor in the Bundle are reported."""
        contained: dict[str, dict[str, Any]] = {}
        position: dict[str, int] = {}
        for k, c in enumerate(as_dict(x) for x in as_list(report.get("contained"))):
            if as_str(c.get("id")):
                contained.setdefault(as_str(c["id"]), c)
                position.setdefault(as_str(c["id"]), k)
        lent = _lend(report)
        count = 0
        problems: list[Issue] = []
        for j, ref in enumerate(as_list(report.get("result"))):
            target = as_str(as_dict(ref).get("reference"))
            if target.startswith("#"):
                obs = contained.get(target[1:])
                if obs is None or obs.get("resourceType") != "Observation":
                    self.warnings.append(
                        f"{where}.result[{j}]: {target} is not a contained Observation"
                    )
                    continue
                n, problem = self._observation_results(
                    obs, f"{where}.contained[{position[target[1:]]}]", "", lent, contained
                )
                count += n
                if problem is not None:
                    problems.append(problem)
            elif _entry_of(target, full_urls) is None:
                self.warnings.append(
                    f"{where}.result[{j}]: {target or 'a result'} is not in this input; not read"
                )
        kind = EntryKind.PROCESSED if count else EntryKind.CONTEXT
        if problems and not count:
            kind = EntryKind.FAILED
        self.verdicts.append(EntryVerdict(index, "DiagnosticReport", kind, tuple(problems), count))

    def finish(self, base: FhirInput, *, atomic: bool) -> FhirInput:
        verdicts = tuple(sorted(self.verdicts, key=lambda v: v.index))
        bad = [v for v in verdicts if v.kind in (EntryKind.INVALID, EntryKind.UNSUPPORTED)]
        failed = [
            v
            for v in verdicts
            if v.kind is EntryKind.FAILED or (v.issues and v.kind is EntryKind.PROCESSED)
        ]
        warnings = list(self.warnings)
        errors: tuple[Issue, ...] = ()
        if atomic and bad:
            return refuse(with_entries(base, verdicts), *(i for v in bad for i in v.issues))
        if atomic and failed:
            errors = tuple(i for v in failed for i in v.issues)
        else:
            for v in (*bad, *failed):
                warnings.extend(f"{i.location}: {i.reason} (entry not processed)" for i in v.issues)
        return input_with(
            base,
            results=tuple(self.results),
            patients=tuple(self.patients.values()),
            errors=errors,
            warnings=tuple(warnings),
            entries=verdicts,
        )


def _lend(report: dict[str, Any]) -> _Lent:
    codes = [
        as_str(as_dict(c).get("code"))
        for c in as_list(as_dict(report.get("code")).get("coding"))
        if as_str(as_dict(c).get("code"))
    ]
    effective = as_str(report.get("effectiveDateTime")) or as_str(
        as_dict(report.get("effectivePeriod")).get("start")
    )
    return _Lent(
        codes[0] if codes else "", report.get("subject"), effective or as_str(report.get("issued"))
    )


def _entry_of(ref: str, full_urls: dict[str, int]) -> int | None:
    """The Bundle entry a reference names (by fullUrl, or ``Type/id``), if any."""
    if ref in full_urls:
        return full_urls[ref]
    parts = ref.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2:
        return full_urls.get(f"{parts[-2]}/{parts[-1]}")
    return None


def read_bundle(
    bundle: dict[str, Any], base: FhirInput, system_base: str, default_offset: str
) -> FhirInput:
    entries = as_list(bundle.get("entry"))
    if "entry" in bundle and not isinstance(bundle["entry"], list):
        return refuse(base, Issue("Bundle.entry", "Bundle.entry must be a list", 100, "structure"))
    issues = validate({k: v for k, v in bundle.items() if k != "entry"}, "Bundle")
    if issues:
        return refuse(base, *issues)
    index: dict[str, dict[str, Any]] = {}
    positions: dict[str, int] = {}
    for i, e in enumerate(entries):
        res = as_dict(as_dict(e).get("resource"))
        if not res:
            continue
        url = as_str(e.get("fullUrl"))
        keys = [url] if url else []
        if as_str(res.get("resourceType")) and as_str(res.get("id")):
            keys.append(f"{res['resourceType']}/{res['id']}")
        for k in keys:
            index.setdefault(k, res)
            positions.setdefault(k, i)
    atomic = base.bundle_type == "transaction"
    is_request = base.bundle_type in HTTP_BUNDLE_TYPES
    reader = ResourceReader(base.facility, system_base, default_offset, index)
    lent: dict[int, _Lent] = {}
    valid: dict[int, dict[str, Any]] = {}
    for i, e in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        res = as_dict(as_dict(e).get("resource"))
        rtype = as_str(res.get("resourceType"))
        shape = validate_entry(
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e, where
        )
        if shape:
            reader.verdicts.append(EntryVerdict(i, rtype, EntryKind.INVALID, tuple(shape)))
            continue
        method = as_str(as_dict(as_dict(e).get("request")).get("method"))
        if is_request and method and method not in _WRITES:
            issue = Issue(
                f"{where}.request.method",
                f"{method} is not supported in a {base.bundle_type}: prpgate takes POST and PUT",
                200,
                "not-supported",
            )
            reader.verdicts.append(EntryVerdict(i, rtype, EntryKind.UNSUPPORTED, (issue,)))
            continue
        if not res:
            sent = e.get("resource")  # e is a dict: validate_entry said so
            if sent is not None and not isinstance(sent, dict):
                reason = "entry.resource is not a resource (a JSON object)"
                issue = Issue(f"{where}.resource", reason, 100, "structure")
                reader.verdicts.append(EntryVerdict(i, "", EntryKind.INVALID, (issue,)))
            elif is_request:
                issue = Issue(f"{where}.resource", "the entry has no resource", 101, "required")
                reader.verdicts.append(EntryVerdict(i, "", EntryKind.INVALID, (issue,)))
            else:
                reader.verdicts.append(EntryVerdict(i, "", EntryKind.EMPTY))
            continue
        if rtype not in ("Observation", "DiagnosticReport", "Patient"):
            reader.verdicts.append(EntryVerdict(i, rtype, EntryKind.IGNORED))
            continue
        found = validate(res, f"{where}.resource")
        if found:
            reader.verdicts.append(EntryVerdict(i, rtype, EntryKind.INVALID, tuple(found)))
            continue
        valid[i] = res
        if rtype == "DiagnosticReport":
            for ref in as_list(res.get("result")):
                target = _entry_of(as_str(as_dict(ref).get("reference")), positions)
                if target is not None:
                    lent.setdefault(target, _lend(res))
    for i, res in valid.items():
        rtype = as_str(res["resourceType"])
        where = f"Bundle.entry[{i}].resource"
        if rtype == "Observation":
            url = as_str(as_dict(entries[i]).get("fullUrl"))
            reader.observation(i, res, where, url, lent.get(i))
        elif rtype == "DiagnosticReport":
            reader.report(i, res, where, positions)
        else:
            reader.verdicts.append(EntryVerdict(i, rtype, EntryKind.CONTEXT))
    return reader.finish(base, atomic=atomic)
