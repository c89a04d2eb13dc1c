"""bench.common.served_answers, bench.llamacpp_agreement and bench.vllm_agreement, without llama.cpp or vLLM: a stand-in
Python answers for llama.cpp and a stand-in HTTP server for vLLM, so the plumbing (JSON in and out, a server
bounded in time, on 127.0.0.1, stopped afterwards, the README's command) is checked."""
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.llamacpp_agreement import llama_cpp_texts
from bench.common.served_answers import compare_rows
from bench.vllm_agreement import complete, free_port, serving, vllm_command

REPO = Path(__file__).resolve().parent.parent
# Answers /v1/models, and /v1/completions with the prompt's length as a padded price.
STUB = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self._send({"data": [{"id": "pricer"}]})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["temperature"] == 0 and body["model"] == "pricer"
        self._send({"choices": [{"text": "%04d.00" % len(body["prompt"])}]})
    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_compare_rows_reads_padded_prices():
    items = [SimpleNamespace(title="a", price=12.0), SimpleNamespace(title="b", price=50.0)]
    rows, summary = compare_rows(items, ["0012.00", "0050.00"], ["0012.00", "50.00 and"], ("x", "y"))
    assert summary == {"listings": 2, "same_text": 1, "same_price": 2}
    assert rows[1]["x_price"] == rows[1]["y_price"] == 50.0 and not rows[1]["same_text"]


def test_llama_cpp_runs_in_the_python_it_is_given(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\ncat > /dev/null\necho '{\"texts\": [\"0012.00\"], \"llama_cpp_python\": \"0.0\"}'\n")
    fake.chmod(0o755)
    assert llama_cpp_texts(str(fake), tmp_path / "m.gguf", ["p"], 8) == (["0012.00"], "0.0")
    fake.write_text("#!/bin/sh\necho 'Illegal instruction' >&2\nexit 132\n")
    with pytest.raises(RuntimeError, match="failed: Illegal instruction"):
        llama_cpp_texts(str(fake), tmp_path / "m.gguf", ["p"], 8)


def test_the_server_answers_on_localhost_and_is_stopped(tmp_path):
    port = free_port()
    with serving([sys.executable, "-c", STUB, str(port)], port, 60, tmp_path / "log") as url:
        assert url == f"http://127.0.0.1:{port}"
        assert complete(url, "abc", 8) == "0003.00"
    with pytest.raises(OSError):   # stopped with the block
        complete(url, "abc", 8)
    with pytest.raises(RuntimeError, match="exited with status 3"):
        with serving([sys.executable, "-c", "raise SystemExit(3)"], free_port(), 60, tmp_path / "log"):
            pass


def test_the_bench_serves_as_the_readme_says():
    """The bench's server command is the README's CPU command for the shipped adapter, word for word."""
    command = " ".join(vllm_command("python", "~/.cache/pricer/smollm2-135m-instruct", "adapters/smollm2-135m-pricer",
                                    16, 8000, 1_000_000_000))
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^" + re.escape(command), readme, flags=re.M), command
