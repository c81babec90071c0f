#!/usr/bin/env python3
"""Drives `swarm repl` through a real pseudo-terminal (Python's pty module).

Usage: pty_repl.py SWARM_BINARY HISTORY_FILE
Checks expression printing, a multi-line function, table printing, tab
completion of `swarm.en` and `swarm.paral`, Ctrl-C stopping `while true do end` with the REPL
still answering, the observer refused `start_task`, and history surviving
into a second session. Exits 0 when all pass, 1 with a message otherwise.
"""
import os
import pty
import re
import select
import sys
import time

BIN, HISTORY = sys.argv[1], sys.argv[2]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Term:
    def __init__(self, *args):
        env = dict(os.environ, SWARM_HISTORY=HISTORY, TERM="xterm")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(BIN, [BIN, "repl", *args], env)
        self.seen = b""

    def read_until(self, pattern, timeout=60.0):  # a hang guard only
        deadline = time.time() + timeout
        while True:
            text = ANSI.sub(b"", self.seen).replace(b"\r", b"")
            m = re.search(pattern.encode(), text)
            if m:
                # Keep what came after the match: the next wait may be for
                # it (output arrives in chunks of any size).
                self.seen = text[m.end():]
                return text[: m.end()].decode(errors="replace")
            left = deadline - time.time()
            if left <= 0:
                fail(f"timed out waiting for {pattern!r}; screen so far:\n{text.decode(errors='replace')}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    fail(f"the REPL exited while waiting for {pattern!r}")

    def send(self, data):
        os.write(self.fd, data.encode())

    def close(self):
        self.send(":quit\r")
        deadline = time.time() + 60
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return
            try:
                select.select([self.fd], [], [], 0.1)
                os.read(self.fd, 4096)
            except OSError:
                pass
        fail("the REPL did not exit on :quit")


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


t = Term("--role", "operator")
t.read_until(r"\n> $")
t.send("1 + 1\r")
t.read_until(r"\n2\n> $")
t.send("function triple(x)\r")
t.read_until(r">> $")
t.send("  return x * 3\r")
t.read_until(r">> $")
t.send("end\r")
t.read_until(r"\n> $")
t.send("triple(14)\r")
t.read_until(r"\n42\n> $")
t.send("{ name = 'swarm', list = { 1, 2 } }\r")
t.read_until(r"\{ list = \{ 1, 2 \}, name = \"swarm\" \}\n> $")
t.send("swarm.en\t")
t.read_until(r"swarm\.engine")
t.send("\x15")  # Ctrl-U: clear the line
# The flow library joins `swarm` on first read; completion lists it anyway.
t.send("swarm.paral\t")
t.read_until(r"swarm\.parallel")
t.send("\x15")
t.send("print('spinning') while true do end\r")
t.read_until(r"\nspinning\n")  # the loop is running: no sleep needed
t.send("\x03")  # Ctrl-C
t.read_until(r"interrupted\n> $")
t.send("6 * 7\r")
t.read_until(r"\n42\n> $")
t.close()

# The observer is refused start_task with a clear message.
o = Term("--role", "observer")
o.read_until(r"\n> $")
o.send("swarm.engine.start_task{ agent = 'x' }\r")
o.read_until(r"role `observer` may not call `start_task`")
o.read_until(r"> $")
# History: Up recalls this session's line, then the first session's
# meta-command (they are history too), then its last expression.
o.send("\x1b[A")
o.read_until(r"start_task\{ agent = 'x' \}")
o.send("\x1b[A")
o.read_until(r":quit")
o.send("\x1b[A")
o.read_until(r"6 \* 7")
o.send("\r")
o.read_until(r"\n42\n> $")
o.close()
print("ok")
