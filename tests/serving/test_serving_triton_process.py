from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from serving.errors import TritonStartError, TritonUnavailableError
from serving.triton_process import (
    TritonServer,
    find_tritonserver,
    pick_free_ports,
    prepare_backend_directory,
    pytriton_root,
)


def test_find_tritonserver_when_wheel_installed_then_executable_path() -> None:
    binary = find_tritonserver()
    assert binary.name == "tritonserver" and os.access(binary, os.X_OK)


def test_prepare_backend_directory_when_called_then_stub_sits_next_to_backend_library(tmp_path: Path) -> None:
    backends = prepare_backend_directory(tmp_path)
    python_backend = backends / "python"
    assert (python_backend / "libtriton_python.so").is_file()
    assert (python_backend / "triton_python_backend_utils.py").is_file()
    stub = python_backend / "triton_python_backend_stub"
    assert stub.is_file() and os.access(stub, os.X_OK)
    wheel_stub = (
        pytriton_root()
        / "tritonserver"
        / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub"
    )
    assert stub.read_bytes() == wheel_stub.read_bytes()


def test_start_when_repository_missing_then_start_error_names_it(tmp_path: Path) -> None:
    http, grpc, metrics = pick_free_ports(3)
    server = TritonServer(tmp_path / "absent", http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=tmp_path)
    with pytest.raises(TritonStartError, match="absent is not a directory"):
        server.start()


def test_start_when_http_port_taken_then_start_error_with_log_tail(tmp_path: Path) -> None:
    (tmp_path / "repository").mkdir()
    http, grpc, metrics = pick_free_ports(3)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", http))
        squatter.listen()
        server = TritonServer(
            tmp_path / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=tmp_path / "work"
        )
        with pytest.raises(
            TritonStartError, match=r"(?s)tritonserver exited with code \d+ during start:.*failed to start HTTP service"
        ):
            server.start(timeout_s=60)
    assert not server.is_running()
    assert server.log_path.is_file()


def test_load_model_when_server_not_started_then_unavailable_error(tmp_path: Path) -> None:
    http, grpc, metrics = pick_free_ports(3)
    server = TritonServer(tmp_path, http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=tmp_path / "work")
    with pytest.raises(TritonUnavailableError, match="tritonserver is not running"):
        server.load_model("symbol_agent")
