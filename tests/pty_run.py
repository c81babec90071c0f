#!/usr/bin/env python3
"""Runs a command on a real pseudo-terminal and prints what it wrote.

Usage: pty_run.py [--wait PATTERN --post URL] -- COMMAND ARGS...
With --wait, once PATTERN (a regex, ANSI sequences stripped) shows on the
terminal, an empty POST goes to URL (a test server's "go on" switch).
Prints the raw transcript on stdout and exits with the command's status;
exits 99 if PATTERN never shows before the hang guard.
"""
import os
import pty
import re
import select
import sys
import time
import urllib.request

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def main():
    args = sys.argv[1:]
    wait = post = None
    while args and args[0] != "--":
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--wait":
            wait = re.compile(value.encode())
        elif flag == "--post":
            post = value
    cmd = args[1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(cmd[0], cmd, dict(os.environ, TERM="xterm", COLUMNS="100"))
    seen = b""
    deadline = time.time() + 120  # a hang guard only
    while True:
        if wait is not None and wait.search(ANSI.sub(b"", seen)):
            wait = None
            urllib.request.urlopen(urllib.request.Request(post, data=b"", method="POST"))
        if time.time() > deadline:
            sys.stdout.write(seen.decode(errors="replace"))
            os.kill(pid, 9)
            sys.exit(99)
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(seen.decode(errors="replace"))
    sys.exit(99 if wait is not None else os.waitstatus_to_exitcode(status))


main()
