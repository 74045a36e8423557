"""A real `keyward serve` for the tests: port 0 (or a given port, to restart
in place), a fresh SQLite file, the bound address read from the JSON log
line "keyward listening". The stubs are generated first when missing or
older than the proto."""

import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import generate  # noqa: E402

if generate.stale():
    generate.generate()


def keyward_binary() -> str:
    binary = os.environ.get("KEYWARD_BIN") or str(HERE.parents[2] / "target" / "debug" / "keyward")
    if not os.path.exists(binary):
        pytest.fail(f"no keyward binary at {binary}: run `cargo build` or set KEYWARD_BIN")
    return binary


class KeywardServer:
    def __init__(self, database: pathlib.Path, port: int = 0):
        self.database = database
        self.process = subprocess.Popen(
            [
                keyward_binary(),
                "--log-format",
                "json",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--database-url",
                f"sqlite://{database}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        listening = threading.Event()

        def read():
            for line in self.process.stderr:
                self.log.append(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("message") == "keyward listening":
                    self.address = entry["addr"]
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(30):
            self.process.kill()
            raise RuntimeError("keyward did not start in 30 s:\n" + "".join(self.log))

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def start_keyward(tmp_path):
    started = []

    def start(database=None, port=0):
        server = KeywardServer(database or tmp_path / "keyward.db", port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def keyward(start_keyward):
    return start_keyward()


def eventually(what, check, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
