"""Security checks: TLS 1.2 at least on both listeners of a ``prpgate serve`` process, mutual
TLS refusing clients without a trusted certificate, the bearer token compared in constant
time, YAML read only with safe loaders, and every SQL statement of the store built from
constants (values only as parameters)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import shutil
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from prpgate.config import Settings
from prpgate.errors import MappingError
from prpgate.listeners.asgi_server import AsgiServer
from prpgate.mappings_loader import load_mappings
from prpgate.serve import tls_context
from prpgate.validation.expectations import ExpectationError, load_expectations
from tests.conftest import MAPPINGS, ROOT
from tests.faults.inputs import cbc_message
from tests.faults.load import ack_of
from tests.faults.serve_process import ServeProcess
from tests.faults.sqlscan import EXECUTE, scan_module, scan_source

SRC = ROOT / "src" / "prpgate"


# ------------------------------------------------------------------------ TLS


def _pems(folder: Path, ca: trustme.CA, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
    chain, key = folder / f"{name}.chain.pem", folder / f"{name}.key.pem"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def _client(
    ca_file: Path, versions: tuple[ssl.TLSVersion, ssl.TLSVersion], cert: tuple[Path, Path] | None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with warnings.catch_warnings():  # naming TLS 1.0/1.1 is deprecated: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = versions
    if versions[1] < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer what it may
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The TLS version agreed, or None when the server refused the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"\x0b")  # TLS 1.3 reports a refused certificate on first use
                tls.settimeout(2)
                with contextlib.suppress(TimeoutError):
                    if tls.recv(1) == b"":
                        return None
                return tls.version()
        except (ssl.SSLError, ConnectionError):
            return None


def _offers(version: ssl.TLSVersion, folder: Path) -> bool:
    """Whether this Python's OpenSSL can still complete a ``version`` handshake: tried
    against a throwaway server that allows it."""
    ca = trustme.CA()
    chain, key = _pems(folder, ca, f"control-{version.name}")
    ca_file = folder / f"control-{version.name}-ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = version
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(chain, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def accept() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn, server.wrap_socket(conn, server_side=True) as tls:
                    while tls.recv(1):  # until the client is done (a close is no refusal)
                        pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        agreed = _handshake(listener.getsockname()[1], _client(ca_file, (version, version), None))
        thread.join(10)
    return agreed is not None


@contextlib.contextmanager
def tls_serve(tmp_path: Path, logs: Path, *, mutual: bool) -> Iterator[tuple[ServeProcess, Path]]:
    ca, client_ca = trustme.CA(), trustme.CA()
    chain, key = _pems(tmp_path, ca, "server")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca_file.write_bytes(client_ca.cert_pem.bytes())
    env = {
        "PRPGATE_MLLP_TLS_CERT": str(chain),
        "PRPGATE_MLLP_TLS_KEY": str(key),
        "PRPGATE_FHIR_HTTP_TLS_CERT": str(chain),
        "PRPGATE_FHIR_HTTP_TLS_KEY": str(key),
    }
    if mutual:
        env["PRPGATE_MLLP_TLS_CLIENT_CA"] = str(client_ca_file)
        _pems(tmp_path, client_ca, "lab")  # a client certificate the server trusts
        _pems(tmp_path, trustme.CA(), "stranger")  # one it does not
    serve = ServeProcess(tmp_path, logs, **env)
    try:
        serve.start()
        yield serve, ca_file
        assert serve.stop() == 0
    finally:
        serve.kill()


@pytest.mark.slow
def test_security_tls_below_1_2_refused_on_mllp_and_fhir(tmp_path: Path, fault_logs: Path) -> None:
    tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    tls13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
    old = [v for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1) if _offers(v, tmp_path)]
    print("TLS versions this OpenSSL still offers:", [v.name for v in old])
    with tls_serve(tmp_path, fault_logs, mutual=False) as (serve, ca):
        for port in (serve.mllp_port, serve.fhir_port):
            assert _handshake(port, _client(ca, tls12, None)) == "TLSv1.2"
            assert _handshake(port, _client(ca, tls13, None)) == "TLSv1.3"
            for version in old:  # offered by this OpenSSL: the server must refuse it
                assert _handshake(port, _client(ca, (version, version), None)) is None
    # and the contexts say so, whatever the local OpenSSL can still offer
    chain, key = _pems(tmp_path, trustme.CA(), "check")
    mllp = tls_context(Settings(mllp_tls_cert=chain, mllp_tls_key=key))
    assert mllp is not None
    assert mllp.minimum_version >= ssl.TLSVersion.TLSv1_2
    fhir = AsgiServer(object(), "127.0.0.1", 0, tls_cert=chain, tls_key=key)

    async def started() -> ssl.SSLContext | None:
        await fhir.start()
        try:
            return fhir.tls
        finally:
            await fhir.stop()

    context = asyncio.run(started())
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_security_mutual_tls_refuses_clients_without_a_trusted_certificate(
    tmp_path: Path, fault_logs: Path
) -> None:
    tls = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    with tls_serve(tmp_path, fault_logs, mutual=True) as (serve, ca):
        lab = (tmp_path / "lab.chain.pem", tmp_path / "lab.key.pem")
        stranger = (tmp_path / "stranger.chain.pem", tmp_path / "stranger.key.pem")
        assert _handshake(serve.mllp_port, _client(ca, tls, None)) is None
        assert _handshake(serve.mllp_port, _client(ca, tls, stranger)) is None
        ctx = _client(ca, tls, lab)
        with (
            socket.create_connection(("127.0.0.1", serve.mllp_port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            msg = cbc_message("MTLS", 0)
            conn.sendall(b"\x0b" + msg.raw + b"\x1c\r")
            data = b""
            while not data.endswith(b"\x1c\r"):
                chunk = conn.recv(65536)
                assert chunk, "the server closed the connection"
                data += chunk
        assert ack_of(data.strip(b"\x0b\x1c\r"))[:2] == ("AA", msg.key)


# -------------------------------------------------------------- bearer token


def _calls(tree: ast.AST) -> list[str]:
    return [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_security_bearer_token_compared_in_constant_time() -> None:
    tree = ast.parse((SRC / "listeners" / "fhir_http.py").read_text())
    authorised = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "authorised"
    )
    assert "hmac.compare_digest" in _calls(authorised)
    # nowhere in src/ is a token, secret or password compared with == or !=
    secretive = ("token", "secret", "password", "credential")
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            names = [ast.unparse(s).lower() for s in sides if not isinstance(s, ast.Constant)]
            if len(names) == len(sides):  # two values compared: neither may be a secret
                assert not any(w in n for n in names for w in secretive), (
                    f"{path}:{node.lineno}: {ast.unparse(node)}"
                )


# ---------------------------------------------------------------------- YAML

_UNSAFE_LOADERS = {
    "Loader",
    "UnsafeLoader",
    "FullLoader",
    "CLoader",
    "CUnsafeLoader",
    "CFullLoader",
}
_SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
_LOADING = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
_LOADING |= {"compose", "compose_all", "parse", "scan"}


def test_security_yaml_read_only_with_safe_loaders() -> None:
    checked = 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        safe_classes = {
            n.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef)
            and n.bases
            and all(ast.unparse(b) in {f"yaml.{s}" for s in _SAFE_LOADERS} for b in n.bases)
        }
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "yaml":
                assert node.attr not in _UNSAFE_LOADERS, f"{where}: yaml.{node.attr}"
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if ast.unparse(node.func.value) != "yaml":
                continue
            checked += 1
            if node.func.attr in _LOADING:
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                named = ast.unparse(loader) if loader is not None else ""
                assert named in safe_classes | {f"yaml.{s}" for s in _SAFE_LOADERS}, (
                    f"{where}: yaml.{node.func.attr} with Loader={named or 'default'}"
                )
            else:
                assert node.func.attr.startswith("safe_"), f"{where}: yaml.{node.func.attr}"
    assert checked >= 3  # the mappings loader and the expectations reader were looked at


def test_security_yaml_python_tags_refused_not_run(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    payload = f'!!python/object/apply:os.system ["touch {witness}"]\n'
    mappings = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, mappings)
    (mappings / "units.yaml").write_text(f"units: {payload}")
    with pytest.raises(MappingError, match=r"units\.yaml"):
        load_mappings(mappings)
    (tmp_path / "x.hl7.yaml").write_text(f"source: x.hl7\nreviewed: {payload}")
    with pytest.raises(ExpectationError):
        load_expectations([tmp_path / "x.hl7.yaml"])
    assert not witness.exists()


# ----------------------------------------------------------------------- SQL


def test_security_every_store_statement_is_built_from_constants() -> None:
    modules = sorted((SRC / "store").glob("*.py"))
    statements = sum(
        1
        for path in modules
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in EXECUTE
    )
    assert statements >= 80  # the scan had the store's statements to look at
    assert [f for path in modules for f in scan_module(path)] == []


@pytest.mark.parametrize(
    "body",
    [
        'db.execute(f"SELECT raw FROM messages WHERE id={message_id}")',
        'db.execute("SELECT raw FROM messages WHERE id=" + str(message_id))',
        'db.execute("SELECT raw FROM messages WHERE id=%s" % message_id)',
        'db.execute("SELECT raw FROM messages WHERE id={}".format(message_id))',
        'sql = "SELECT raw FROM messages"\n    sql += f" WHERE control_id=\'{control}\'"\n'
        "    db.execute(sql)",
        "where = []\n    where.append(f\"control_id='{control}'\")\n"
        '    db.execute("SELECT raw FROM messages WHERE " + " AND ".join(where))',
        'run(db, f"DELETE FROM outbox WHERE id={message_id}")',
        'db.execute("SELECT raw FROM messages WHERE id=?".replace("?", str(message_id)))',
        'marks = ",".join("?" * message_id)\n'
        '    db.execute(f"SELECT raw FROM messages WHERE id IN ({marks})", ())',
    ],
)
def test_security_sql_scan_finds_values_in_statement_text(body: str) -> None:
    source = (
        "def run(db, sql):\n    db.execute(sql)\n\n\n"
        f"def read(db, message_id, control):\n    {body}\n"
    )
    assert scan_source("example.py", source) != []


def test_security_sql_scan_passes_parameters_constants_and_marked_placeholders() -> None:
    source = """
_COLS = "id, raw"
_STATES = "('pending', 'retry')"


class Store:
    _MORE = "status"

    def __init__(self, db):
        self.db = db
        self._n = 0

    def read(self, ids, since, durable):
        self._n += 1
        marks = ",".join("?" * len(ids)) or "NULL"
        self.db.execute(
            f"SELECT {_COLS} FROM messages WHERE id IN ({marks})",  # noqa: S608 - placeholders
            ids,
        )
        sql = f"SELECT {self._MORE} FROM outbox WHERE state IN {_STATES}"
        where = []
        if since:
            where.append("received_at >= ?")
        if where:
            sql += " AND " + " AND ".join(where)
        self.db.execute(sql, (since,))
        self.db.execute(f"SAVEPOINT sp{self._n}")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._mark("state='done'", 1)

    def _mark(self, assignments, oid):
        self.db.execute(
            f"UPDATE outbox SET {assignments} WHERE id=?",  # noqa: S608 - literals of this module
            (oid,),
        )


class Qmark:
    def execute(self, sql, params):
        return self.conn.execute(sql.replace("?", "%s"), params)
"""
    assert scan_source("example.py", source) == []
