"""Reviewed expectations: what each message of a sample file must decide.

One document (YAML, or JSON for ``*.json``) per input file, named after it
(``correction.hl7.yaml``), holding one entry per message of that file::

    source: correction.hl7          # the input file's name
    reviewed: true                  # false until a person has checked every entry
    messages:
      - message: 2                  # position in the file, 1-based
        control_id: PRPFX0053       # optional: MSH-10, checked when given
        disposition: accepted       # optional: accepted, error, rejected, duplicate
        outputs:                    # DetectedIssue/Flag versions the message emitted
          - {resource: DetectedIssue, rule: leukocytosis, severity: moderate,
             status: entered-in-error, patient: ZQ70051}
          - {resource: Flag, rule: leukocytosis, status: inactive, patient: ZQ70051}

``outputs`` lists what the message created or changed (as ``replay --json`` emits
it); ``patient`` is the patient identifier's value (the MRN). Outputs are compared
field by field, paired by resource, rule and patient; the differences come back as
findings and as a unified diff. ``--update-expectations`` writes documents with
``reviewed: false``: such a document fails its checks until a person reviews it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prpgate.errors import PrpgateError
from prpgate.validation.report import CheckKind, CheckResult, Finding, OutputSummary, Status

__all__ = [
    "ExpectationError",
    "ExpectationFile",
    "ExpectedMessage",
    "compare_message",
    "load_expectations",
    "render_document",
    "write_document",
]

_SUFFIXES = (".yaml", ".yml", ".json")
_HEADER = """\
# Expectations for {source}, written by `prpgate validate --update-expectations`
# from what prpgate decided. Nobody has reviewed them yet: check every entry against
# the sample's documentation, then set `reviewed: true`. Until then `validate --expect`
# fails the expectations check of these messages.
"""


class ExpectationError(PrpgateError):
    """An expectations file that cannot be used; names the file, the key and the reason."""

    def __init__(self, reason: str, *, file: str, key: str | None = None) -> None:
        where = ":".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.file = file
        self.key = key


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: Literal["DetectedIssue", "Flag"]
    rule: str = Field(min_length=1)
    severity: Literal["moderate", "high"] | None = None
    status: Literal["final", "entered-in-error", "active", "inactive"]
    patient: str = Field(min_length=1)

    @model_validator(mode="after")
    def _fits_resource(self) -> _Output:
        issue = self.resource == "DetectedIssue"
        if issue != (self.status in ("final", "entered-in-error")):
            raise ValueError(f"status {self.status!r} is not a {self.resource} status")
        if issue and self.severity is None:
            raise ValueError("a DetectedIssue needs a severity")
        if not issue and self.severity is not None:
            raise ValueError("a Flag has no severity")
        return self


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: int = Field(ge=1)
    control_id: str | None = None
    disposition: Literal["accepted", "error", "rejected", "duplicate"] | None = None
    outputs: list[_Output] = Field(default_factory=list)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    reviewed: bool
    messages: list[_Message]


@dataclass(frozen=True, slots=True)
class ExpectedMessage:
    """What one message must decide."""

    number: int
    outputs: tuple[OutputSummary, ...]
    control_id: str | None = None
    disposition: str | None = None

    def to_json(self) -> dict[str, object]:
        """The entry as written in an expectations document."""
        out: dict[str, object] = {"message": self.number}
        if self.control_id is not None:
            out["control_id"] = self.control_id
        if self.disposition is not None:
            out["disposition"] = self.disposition
        out["outputs"] = [o.to_json() for o in self.outputs]
        return out


@dataclass(frozen=True, slots=True)
class ExpectationFile:
    """One expectations document: ``source`` is the input file's name."""

    path: Path
    source: str
    reviewed: bool
    messages: Mapping[int, ExpectedMessage]


def _read(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExpectationError(f"cannot read file: {exc}", file=str(path)) from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ExpectationError(
            f"not valid {path.suffix[1:].upper()}: {exc}", file=str(path)
        ) from exc


def _load_one(path: Path) -> ExpectationFile:
    try:
        doc = _Document.model_validate(_read(path))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        raise ExpectationError(first["msg"], file=str(path), key=key) from exc
    messages: dict[int, ExpectedMessage] = {}
    for i, m in enumerate(doc.messages):
        if m.message in messages:
            raise ExpectationError(
                f"message {m.message} is listed twice", file=str(path), key=f"messages.{i}.message"
            )
        outputs = tuple(
            OutputSummary(o.resource, o.rule, o.status, o.patient, o.severity or "")
            for o in m.outputs
        )
        messages[m.message] = ExpectedMessage(m.message, outputs, m.control_id, m.disposition)
    return ExpectationFile(path, doc.source, doc.reviewed, messages)


def load_expectations(paths: Iterable[Path]) -> dict[str, ExpectationFile]:
    """Load expectation documents from files and folders (``*.yaml``, ``*.yml``,
    ``*.json`` directly in a folder), keyed by the input file name they describe.

    Raises ExpectationError (file, key, reason) for a path that does not exist, a
    document that does not validate, or two documents for the same input file.
    """
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix in _SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise ExpectationError("no such file or folder", file=str(p))
    out: dict[str, ExpectationFile] = {}
    for path in found:
        doc = _load_one(path)
        if doc.source in out:
            other = out[doc.source].path
            raise ExpectationError(
                f"a second document for {doc.source!r} (the first is {other})",
                file=str(path),
                key="source",
            )
        out[doc.source] = doc
    return out


def _describe(o: OutputSummary) -> str:
    parts = [f"severity {o.severity}"] if o.severity else []
    return ", ".join([*parts, f"status {o.status}"])


def _sort_key(o: OutputSummary) -> tuple[str, str, str, str, str]:
    return (o.resource, o.rule, o.patient, o.severity, o.status)


def _pair(
    expected: Sequence[OutputSummary], actual: Sequence[OutputSummary]
) -> list[tuple[OutputSummary | None, OutputSummary | None]]:
    """Pair outputs by (resource, rule, patient); exact matches first, then the rest in order."""
    left = sorted(expected, key=_sort_key)
    right = sorted(actual, key=_sort_key)
    pairs: list[tuple[OutputSummary | None, OutputSummary | None]] = []
    for e in list(left):
        if e in right:
            right.remove(e)
            left.remove(e)
            pairs.append((e, e))
    for e in list(left):
        match = next((a for a in right if a.label == e.label), None)
        if match is not None:
            right.remove(match)
            left.remove(e)
            pairs.append((e, match))
    pairs += [(e, None) for e in left]
    pairs += [(None, a) for a in right]
    return pairs


def _output_findings(
    expected: Sequence[OutputSummary], actual: Sequence[OutputSummary]
) -> list[Finding]:
    out: list[Finding] = []
    for e, a in _pair(expected, actual):
        if e is not None and a is not None:
            for name in ("severity", "status"):
                want, got = getattr(e, name), getattr(a, name)
                if want != got:
                    out.append(Finding(e.label, f"{name}: expected {want!r}, got {got!r}"))
        elif e is not None:
            out.append(Finding(e.label, f"missing: expected ({_describe(e)}), not emitted"))
        elif a is not None:
            out.append(Finding(a.label, f"unexpected: emitted ({_describe(a)})"))
    return out


def _yaml(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def compare_message(
    doc: ExpectationFile | None,
    actual: ExpectedMessage,
    *,
    source: str,
) -> CheckResult:
    """Compare one message's actual decisions with its reviewed expectation.

    Skipped when ``doc`` is None (no document for the input file). Fails when the
    document has no entry for the message, is not reviewed, or any field differs;
    the findings name each difference and ``diff`` shows it as a unified diff.
    """
    kind = CheckKind.EXPECTATIONS
    if doc is None:
        return CheckResult(kind, Status.SKIPPED, note=f"no expectations document for {source}")
    want = doc.messages.get(actual.number)
    if want is None:
        finding = Finding("message", f"{doc.path} has no entry for message {actual.number}")
        return CheckResult(kind, Status.FAILED, (finding,), note=str(doc.path))
    findings: list[Finding] = []
    if not doc.reviewed:
        findings.append(
            Finding("document", f"{doc.path} is not reviewed (reviewed: false): check it first")
        )
    if want.control_id is not None and want.control_id != actual.control_id:
        reason = f"expected {want.control_id!r}, got {actual.control_id!r}"
        findings.append(Finding("control_id", reason))
    if want.disposition is not None and want.disposition != actual.disposition:
        reason = f"expected {want.disposition!r}, got {actual.disposition!r}"
        findings.append(Finding("disposition", reason))
    findings += _output_findings(want.outputs, actual.outputs)
    diff = ""
    if findings:
        shown = ExpectedMessage(
            actual.number,
            tuple(sorted(actual.outputs, key=_sort_key)),
            actual.control_id if want.control_id is not None else None,
            actual.disposition if want.disposition is not None else None,
        )
        expected_entry = ExpectedMessage(
            want.number,
            tuple(sorted(want.outputs, key=_sort_key)),
            want.control_id,
            want.disposition,
        )
        diff = "".join(
            difflib.unified_diff(
                _yaml(expected_entry.to_json()).splitlines(keepends=True),
                _yaml(shown.to_json()).splitlines(keepends=True),
                fromfile=f"expected ({doc.path}, message {actual.number})",
                tofile=f"actual ({source})",
            )
        )
    status = Status.FAILED if findings else Status.PASSED
    return CheckResult(kind, status, tuple(findings), note=str(doc.path), diff=diff)


def render_document(source: str, messages: Sequence[ExpectedMessage]) -> str:
    """An expectations document (YAML, ``reviewed: false``) for a person to review."""
    body = {
        "source": source,
        "reviewed": False,
        "messages": [m.to_json() for m in messages],
    }
    return _HEADER.format(source=source) + _yaml(body)


def write_document(path: Path, source: str, messages: Sequence[ExpectedMessage]) -> None:
    """Write ``render_document`` to ``path`` (JSON when it ends in ``.json``), creating
    its folder. Raises ExpectationError when it cannot be written."""
    if path.suffix == ".json":
        data = {"source": source, "reviewed": False, "messages": [m.to_json() for m in messages]}
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_document(source, messages)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExpectationError(f"cannot write file: {exc}", file=str(path)) from exc
