"""Drives headless Chromium through the DevTools protocol over a pipe
(--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4), standard
library only. Used by tests/browser.rs:

    browser.py URL TOKEN RUN QUESTION ANSWER

Loads the page, enters the token in its form, opens RUN from the runs
list, waits for the question's answer form, answers through it, and waits
until the page shows the run `pass`. Exit 0 on success; otherwise prints
what it was waiting for and the page's text."""

import json, os, shutil, subprocess, sys, time

URL, TOKEN, RUN, QUESTION, ANSWER = sys.argv[1:6]
GUARD = 60  # seconds per wait: a hang guard, not a timer


def chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium on PATH (.ci/run installs it)")


class Browser:
    def __init__(self):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Out of the way first (the pipes may already sit on 3 or 4),
            # then onto 3 and 4, which dup2 leaves inheritable.
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={os.environ['PROFILE']}",
             "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next, self.buf, self.session = 0, b"", None

    def call(self, method, params=None, session=True):
        self.next += 1
        msg = {"id": self.next, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        raise RuntimeError(f"no reply to {method}")

    def attach(self):
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def until(self, what, expr):
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            if self.js(expr):
                print(f"browser: {what}", flush=True)
                return
            time.sleep(0.05)
        text = self.js("document.body.innerText")
        sys.exit(f"browser: waited in vain for {what}; the page says:\n{text}")


def main():
    b = Browser()
    try:
        b.attach()
        b.call("Page.enable")
        b.call("Page.navigate", {"url": URL})
        b.until("the page", "!!document.querySelector('#token-form')")
        b.js(f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
             "document.querySelector('#token-save').click(); true")
        sel = json.dumps(f'#runs a[data-run="{RUN}"]')
        b.until("the run in the list", f"!!document.querySelector({sel})")
        b.js(f"document.querySelector({sel}).click(); true")
        form = json.dumps(f'form.answer[data-question="{QUESTION}"]')
        b.until("the waiting question", f"!!document.querySelector({form})")
        b.js(f"const f = document.querySelector({form});"
             f"f.querySelector('input').value = {json.dumps(ANSWER)};"
             "f.querySelector('button').click(); true")
        b.until("the run passing", "document.querySelector('#run-status')?.textContent === 'pass'")
        b.until("its step in the timeline", "document.querySelectorAll('#timeline tr[data-task]').length > 0")
    finally:
        b.proc.kill()
        b.proc.wait()


main()
