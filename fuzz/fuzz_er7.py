"""atheris (libFuzzer, coverage-guided) harness for the HL7 v2 tokenizer and the ACK that
answers what it reads.

For every input: ``split_messages`` never raises; for each piece ``parse`` raises only
ParseError, and a parsed message's fields, repetitions, components and escapes are all
read; the ACK built for the piece (AA when it parses, else AR with the parse error) is
itself an HL7 message the tokenizer reads, whose MSA-2 echoes the piece's MSH-10. Any
other exception is a crash: libFuzzer saves the input and stops.

Run it with ``fuzz/run --minutes N`` (README, "Fuzzing and bad input"); directly:
``python fuzz/fuzz_er7.py [libFuzzer flags] CORPUS_DIR...``. ``check`` is plain Python
and needs no atheris (tests/unit/test_fuzz_harness.py runs it on the fixtures).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def check(data: bytes) -> None:
    """The harness's property for one input (raises on a violation)."""
    from prpgate.core import er7
    from prpgate.core.ack import build_ack, read_context
    from prpgate.core.pipeline import AckCode, ErrorInfo
    from prpgate.errors import ParseError

    for raw in er7.split_messages(data) or [er7.RawMessage(data, 0, 1)]:
        ctx = read_context(raw.data)
        errors: list[ErrorInfo] = []
        try:
            msg = er7.parse(raw.data)
        except ParseError as exc:
            errors.append(ErrorInfo(exc.code, exc.location, exc.reason))
        else:
            d = msg.delimiters
            for seg in msg.segments:
                for n in range(len(seg.fields) + 1):
                    er7.field_tree(seg, n, d)
                    for rep in er7.repetitions(seg, n, d):
                        er7.components(rep, d)
                    er7.value(seg, n, 2, 2, 2, delims=d)
        code = AckCode.AR if errors else AckCode.AA
        ack = build_ack(ctx, code, errors, raw=raw.data, control_id="FUZZ1", now=NOW)
        answer = er7.parse_message(ack.data.decode(ctx.codec))
        msa = answer.first("MSA")
        if msa is None or msa.field(2) != (ctx.control_id or '""'):
            raise AssertionError(f"the ACK does not echo MSH-10 {ctx.control_id!r}")


def main() -> None:
    """Instrument prpgate's modules for coverage, then hand ``check`` to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["prpgate"]):
        import prpgate.core.ack
        import prpgate.core.charset
        import prpgate.core.er7
        import prpgate.errors  # noqa: F401  (imported here to be instrumented)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
