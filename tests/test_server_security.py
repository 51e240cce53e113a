"""Bearer-token auth (health stays open) and TLS / mutual TLS, with certificates made by `openssl`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from asr.inference import Recognizer
from client import AsrClient, RecognitionError, TlsConfig
from server.app import ServerThread
from server.config import ServerConfig

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
TOKEN = "s3cret-token"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(extension + "\n" if extension else "basicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    (d / "tokens.txt").write_text(f"# one per line\n{TOKEN}\nanother-token\n")
    return d


@pytest.fixture(scope="module")
def recognizer(tiny_model_path: Path) -> Recognizer:
    return Recognizer.from_checkpoint(tiny_model_path, device="cpu")


def _server(recognizer: Recognizer, model: Path, **settings) -> ServerThread:
    cfg = ServerConfig(host="127.0.0.1", port=0, metrics_port=-1, model=str(model), **settings)
    return ServerThread(cfg, recognizer)


@pytest.fixture(scope="module")
def tls_auth_server(recognizer, tiny_model_path, certs) -> Iterator[ServerThread]:
    settings = {"tokens_file": str(certs / "tokens.txt"), "tls_cert_file": str(certs / "server.pem"),
                "tls_key_file": str(certs / "server.key")}
    with _server(recognizer, tiny_model_path, **settings) as server:
        yield server


def test_tokens_are_required_except_for_health(tls_auth_server, certs, samples):
    tls = TlsConfig(ca_file=str(certs / "ca.pem"))
    with AsrClient(tls_auth_server.address, tls=tls, timeout_s=20) as anonymous:
        assert anonymous.health() == "SERVING"
        with pytest.raises(RecognitionError) as missing:
            anonymous.transcribe(samples.paths[0])
        assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED
    with AsrClient(tls_auth_server.address, tls=tls, token="wrong", timeout_s=20) as wrong:
        with pytest.raises(RecognitionError) as invalid:
            wrong.list_models()
        assert invalid.value.code == grpc.StatusCode.UNAUTHENTICATED and "invalid" in invalid.value.message
    with AsrClient(tls_auth_server.address, tls=tls, token=TOKEN, timeout_s=20) as authorised:
        assert authorised.transcribe(samples.paths[0]).text


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_auth_server):
    with AsrClient(tls_auth_server.address, token=TOKEN, timeout_s=2, max_attempts=1) as plaintext:
        with pytest.raises(RecognitionError) as info:
            plaintext.health()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(recognizer, tiny_model_path, certs, samples):
    settings = {"tls_cert_file": str(certs / "server.pem"), "tls_key_file": str(certs / "server.key"),
                "tls_client_ca_file": str(certs / "ca.pem")}
    with _server(recognizer, tiny_model_path, **settings) as server:
        without = TlsConfig(ca_file=str(certs / "ca.pem"))
        with AsrClient(server.address, tls=without, timeout_s=2, max_attempts=1) as anonymous:
            with pytest.raises(RecognitionError) as info:
                anonymous.health()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        with_cert = TlsConfig(ca_file=str(certs / "ca.pem"), cert_file=str(certs / "client.pem"),
                              key_file=str(certs / "client.key"))
        with AsrClient(server.address, tls=with_cert, timeout_s=20) as trusted:
            assert trusted.transcribe(samples.paths[0]).text
