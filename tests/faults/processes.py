"""Long-running service processes of a fault test (listeners, the job worker), their output collected.

``LoggedProcess.start(argv, env)`` starts one (stdout and stderr merged, read by a thread);
``wait_for(text)`` waits until a line containing ``text`` appears after a given point of the output and
returns that line; ``stop()`` sends SIGTERM (SIGKILL after ``timeout``) and returns the exit status.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


@dataclass
class LoggedProcess:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str]) -> LoggedProcess:
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        running = cls(process)
        threading.Thread(target=running._pump, daemon=True).start()
        return running

    def _pump(self) -> None:
        assert self.process.stdout
        for line in iter(self.process.stdout.readline, ""):
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def mark(self) -> int:
        """The current end of the output, for :meth:`wait_for` and :meth:`count` ``since``."""
        return len(self.lines)

    def count(self, text: str, since: int = 0) -> int:
        return sum(text in line for line in self.lines[since:])

    def wait_for(self, text: str, *, since: int = 0, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[since:]:
                if text in line:
                    return line
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)  # the last lines
                for line in self.lines[since:]:
                    if text in line:
                        return line
                state = f"exited {self.process.returncode}" if self.process.poll() is not None else "timed out"
                raise AssertionError(f"{text!r} not seen ({state}):\n" + "\n".join(self.lines[-60:]))
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)
