"""``prpgate send`` as a process: against ``prpgate serve`` (original and enhanced mode,
mutual TLS), against python-hl7's asyncio MLLP server, and its usage errors.

Expected codes for the bad fixtures come from fixtures/README.md ("Bad inputs").
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import hl7
import hl7.mllp
import trustme

from tests.conftest import FIXTURES, PRPGATE, ndjson, run_prpgate
from tests.integration.test_mllp_serve import START_TIMEOUT, rows, serving
from tests.integration.test_mllp_tls import write_pems

GOOD = sorted(str(p) for p in FIXTURES.glob("*.hl7"))
# fixtures/README.md, "Bad inputs": code, HL7 table 0357 error code
BAD = {
    "adt_a01.hl7": ("AR", "200"),
    "bad_version.hl7": ("AR", "203"),
    "missing_pid.hl7": ("AE", "100"),
    "no_msh.hl7": ("AR", "100"),
    "not_a_number.hl7": ("AE", "102"),
    "truncated.hl7": ("AE", "101"),
}


def send(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``prpgate send ... --json``: (exit code, per-message objects + summary, stderr)."""
    proc = run_prpgate("send", *args, "--json", env=env, timeout=timeout)
    return proc.returncode, ndjson(proc.stdout), proc.stderr


def by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {Path(o["file"]).name + f"#{o['number']}": o for o in lines if "summary" not in o}


# ------------------------------------------------------------- prpgate serve


def test_send_every_fixture_to_serve_in_original_mode(tmp_path: Path) -> None:
    with serving(tmp_path, PRPGATE_MLLP_ENHANCED_ACKS="false") as server:
        code, lines, err = send(f"mllp://127.0.0.1:{server.mllp_port}", str(FIXTURES), "-c", "3")
        assert server.stop() == 0
    assert code == 1, err  # the bad fixtures are answered AE/AR, garbage.bin cannot be framed
    summary = lines[-1]
    results = by_name(lines)
    assert summary["messages"] == len(results) == 74  # 67 ORU messages + 7 bad files
    for name, r in results.items():
        file = name.split("#")[0]
        if file == "garbage.bin":
            assert (r["status"], r["attempts"]) == ("not-sent", 0)
            assert "framing bytes" in r["error"]
        elif file in BAD:
            want_code, want_error = BAD[file]
            assert (r["status"], r["ack_code"], r["positive"]) == ("answered", want_code, False)
            assert want_error in r["error_codes"], name
            assert r["error"], name  # the ERR text is reported
        else:
            assert (r["status"], r["ack_code"], r["positive"]) == ("answered", "AA", True), name
            assert r["error"] == ""
    assert summary["codes"] == {"AA": 67, "AE": 3, "AR": 3}
    assert summary["sent"] == 73
    assert (summary["timeouts"], summary["mismatches"], summary["late_acks"]) == (0, 0, 0)
    stored = rows(server.store)
    assert len(stored) == 73  # every message sent is stored, once
    assert sorted(r["control_id"] for r in stored if r["control_id"]) == sorted(
        r["control_id"] for r in results.values() if r["control_id"]
    )
    assert "truncated.hl7#1" in results
    assert "OBX" in results["truncated.hl7#1"]["error"]


def test_send_to_serve_in_enhanced_mode_waits_for_what_msh15_msh16_ask(tmp_path: Path) -> None:
    # MSH-15/16 AL/NE in the fixtures: a commit accept is the whole answer; with MSH-16 AL
    # the application ACK follows it and decides.
    app = tmp_path / "app"
    app.mkdir()
    for name in ("cbc_high_wbc.hl7", "bad/not_a_number.hl7"):
        data = (FIXTURES / name).read_bytes()
        assert data.count(b"|AL|NE") == 1
        (app / Path(name).name).write_bytes(data.replace(b"|AL|NE", b"|AL|AL"))
    with serving(tmp_path) as server:
        port = server.mllp_port
        code, lines, err = send(f"mllp://127.0.0.1:{port}", *GOOD)
        assert code == 0, err
        assert lines[-1]["codes"] == {"AA": 1, "CA": 66}  # v23_cbc.hl7: no MSH-15/16
        assert lines[-1]["positive"] == 67
        code, lines, err = send(f"mllp://127.0.0.1:{port}", str(app))
        assert server.stop() == 0
    assert code == 1, err
    results = by_name(lines)
    high = results["cbc_high_wbc.hl7#1"]
    assert (high["acks"], high["ack_code"], high["positive"]) == (["CA", "AA"], "AA", True)
    nan = results["not_a_number.hl7#1"]
    assert (nan["acks"], nan["ack_code"], nan["positive"]) == (["CA", "AE"], "AE", False)
    assert "102" in nan["error_codes"]


def test_send_over_mutual_tls_to_serve(tmp_path: Path) -> None:
    ca = trustme.CA()
    chain, key = write_pems(tmp_path, ca, "server")
    client_chain, client_key = write_pems(tmp_path, ca, "client")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    env = {
        "PRPGATE_MLLP_TLS_CERT": str(chain),
        "PRPGATE_MLLP_TLS_KEY": str(key),
        "PRPGATE_MLLP_TLS_CLIENT_CA": str(ca_file),
    }
    one = str(FIXTURES / "cbc_high_wbc.hl7")
    with serving(tmp_path, **env) as server:
        target = f"mllps://127.0.0.1:{server.mllp_port}"
        tls = ["--ca", str(ca_file), "--server-name", "localhost"]
        code, lines, err = send(
            target, one, *tls, "--cert", str(client_chain), "--key", str(client_key)
        )
        assert code == 0, err
        assert lines[0]["ack_code"] == "CA"
        # without a client certificate the server refuses: reported, not a crash
        code, lines, err = send(target, one, *tls, "--timeout", "5")
        assert code == 1, err
        assert lines[0]["status"] in ("closed", "not-sent")
        assert lines[0]["positive"] is False
        # a plaintext sender to a TLS listener gets no ACK
        code, lines, err = send(f"mllp://127.0.0.1:{server.mllp_port}", one, "--timeout", "2")
        assert code == 1, err
        assert lines[0]["status"] in ("closed", "timeout")
        assert server.stop() == 0
    assert len(rows(server.store)) == 1


# ------------------------------------------------------------------ interop


def test_send_to_python_hl7_asyncio_server_gets_its_acks(tmp_path: Path) -> None:
    received: list[str] = []

    async def handler(reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                received.append(str(msg.segment("MSH")[10]))
                writer.writemessage(msg.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def run() -> tuple[int | None, bytes, bytes]:
        server = await hl7.mllp.start_hl7_server(handler, "127.0.0.1", 0, encoding="latin-1")
        port = server.sockets[0].getsockname()[1]
        try:
            proc = await asyncio.create_subprocess_exec(
                PRPGATE,
                "send",
                f"mllp://127.0.0.1:{port}",
                *GOOD,
                "-c",
                "2",
                "--json",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT * 4)
            return proc.returncode, out, err
        finally:
            server.close()

    code, out, err = asyncio.run(run())
    lines = [json.loads(ln) for ln in out.decode().splitlines()]
    assert code == 0, err.decode()
    assert lines[-1]["codes"] == {"AA": 67}
    # v23_cbc.hl7 has LF segment ends: python-hl7 parses only CR, so it got CRs
    assert sorted(received) == sorted(o["control_id"] for o in lines[:-1])
    assert len(received) == 67


# -------------------------------------------------------------------- usage


def test_send_usage_errors_exit_2(tmp_path: Path) -> None:
    one = str(FIXTURES / "cbc_normal.hl7")
    for args in (
        ["ftp://127.0.0.1:1", one],
        ["mllp://127.0.0.1:1", str(tmp_path / "missing.hl7")],
        ["mllp://127.0.0.1:1", one, "--bearer-token", "t"],
        ["https://127.0.0.1/fhir", one, "--window", "4"],
        ["mllp://127.0.0.1:1", one, "--ca", one],
        ["mllp://127.0.0.1:1", one, "--rate", "fast"],
        ["mllp://127.0.0.1:1", one, "-c", "0"],
        ["mllp://127.0.0.1:1", str(tmp_path)],  # an empty folder: nothing to send
    ):
        proc = run_prpgate("send", *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "error" in proc.stderr.lower() or "usage" in proc.stderr.lower(), args


def test_send_dry_run_shows_what_would_be_sent_and_sends_nothing() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # a listener nobody accepts on: a real send would time out
        port = s.getsockname()[1]
        code, lines, _ = send(f"mllp://127.0.0.1:{port}", str(FIXTURES / "bad"), "--dry-run")
        assert code == 1  # garbage.bin cannot be framed
        rows_ = by_name(lines)
        assert rows_["adt_a01.hl7#1"]["control_id"] == "PRPFX0070"
        assert rows_["adt_a01.hl7#1"]["waits_for"] == "accept"
        assert rows_["garbage.bin#1"]["sendable"] is False
        assert lines[-1] == {
            "summary": "send-dry-run",
            "target": f"mllp://127.0.0.1:{port}",
            "messages": 7,
            "sendable": 6,
            "exit_code": 1,
        }
        code, lines, _ = send(
            f"mllp://127.0.0.1:{port}", str(FIXTURES / "v23_cbc.hl7"), "--dry-run"
        )
        assert code == 0
        assert lines[0]["waits_for"] == "original"


def test_send_nobody_listening_exits_1_with_every_message_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code, lines, _ = send(f"mllp://127.0.0.1:{port}", str(FIXTURES / "correction.hl7"))
    assert code == 1
    assert [o["status"] for o in lines[:-1]] == ["not-sent", "not-sent"]
    assert lines[-1]["sent"] == 0
