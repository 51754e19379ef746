"""`prefkit serve` in a child process, for scripts, notebooks, benchmarks and tests:

    with ServerProcess(["--model", "smollm2-135m-instruct"]) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="-")

It binds a free loopback port (``--port 0``), waits until ``/health`` answers, and on exit stops the
server with SIGTERM (SIGKILL if it does not stop in time). The server's output goes to ``log``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

_LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    def __init__(
        self,
        args: list[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.args = args
        self._own_log = log is None  # a temporary file, removed on stop
        self.log_path = log or Path(tempfile.mkstemp(prefix="prefkit-serve-", suffix=".log")[1])
        self.env = env
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServerProcess:
        log_path = self.log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "prefkit", "serve", "--host", "127.0.0.1", "--port", "0", *self.args]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})}
        )
        deadline = time.monotonic() + self.startup_timeout
        while self.port is None:
            if self.process.poll() is not None:
                tail = self._tail()
                self.stop()
                raise RuntimeError(f"prefkit serve exited with {self.process.returncode}: {tail}")
            if time.monotonic() > deadline:
                tail = self._tail()
                self.stop()
                raise RuntimeError(f"prefkit serve did not start within {self.startup_timeout:g} s: {tail}")
            match = _LISTENING.search(log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
            time.sleep(0.1)
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("prefkit serve is listening but /health does not answer")
            time.sleep(0.1)
        return self

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as response:
                return response.status == 200
        except OSError:
            return False

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
