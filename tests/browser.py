"""Drives headless Chromium through the DevTools protocol over a pipe
(--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4), standard
library only. Used by tests/browser.rs and tests/browser_runs.rs, one
scenario per call:

    browser.py SCENARIO URL TOKEN [ARGS...]

Each scenario loads the page, acts through it as a user would, and waits
for what the page must show. Exit 0 on success; otherwise prints what it
was waiting for and the page's text. A scenario with findings for the
Rust side to check prints them as one line `RESULT <json>`."""

import json, os, shutil, subprocess, sys, time, urllib.request

GUARD = 60  # seconds per wait: a hang guard, not a timer


def chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium on PATH (.ci/run installs it)")


class Browser:
    def __init__(self, width=1280, height=900):
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
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next, self.buf, self.session = 0, b"", None
        self.errors = []
        # Requests held by `serve` (Fetch.requestPaused), answered between calls.
        self.paused, self.served, self.answering = [], {}, False

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
                    self.answer_paused()
                    return reply["result"]
                self.note(reply)
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        raise RuntimeError(f"no reply to {method}")

    def note(self, event):
        """Keeps the page's script errors and policy violations to report."""
        method, params = event.get("method"), event.get("params", {})
        if method == "Fetch.requestPaused":
            self.paused.append(params)
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("exception", {}).get("description")
                               or params["exceptionDetails"].get("text"))
        elif (method == "Log.entryAdded" and params["entry"].get("level") == "error"
              and params["entry"].get("source") != "network"):  # refusals the page shows
            self.errors.append(params["entry"].get("text"))

    def serve(self, pattern, body):
        """Answers the page's requests to URLs matching `pattern` with the
        JSON `body`: what a server would say that this one cannot yet."""
        self.served[pattern] = body
        self.call("Fetch.enable", {"patterns": [{"urlPattern": p} for p in self.served]})

    def answer_paused(self):
        if self.answering:
            return
        self.answering = True
        try:
            while self.paused:
                params = self.paused.pop(0)
                import base64, fnmatch
                body = next(b for p, b in self.served.items() if fnmatch.fnmatch(params["request"]["url"], p))
                self.call("Fetch.fulfillRequest", {
                    "requestId": params["requestId"], "responseCode": 200,
                    "responseHeaders": [{"name": "Content-Type", "value": "application/json"}],
                    "body": base64.b64encode(json.dumps(body).encode()).decode()})
        finally:
            self.answering = False

    def attach(self):
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")

    def go(self, url):
        self.call("Page.navigate", {"url": url})

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def until(self, what, expr):
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            # An element is not a value over the protocol: read it as true.
            value = self.js(f"(() => {{ const v = ({expr}); return v instanceof Node ? true : v; }})()")
            if value:
                print(f"browser: {what}", flush=True)
                return value
            time.sleep(0.05)
        self.fail(f"waited in vain for {what}")

    def fail(self, why):
        text = self.js("document.body.innerText")
        errors = "\n".join(str(e) for e in self.errors)
        sys.exit(f"browser: {why}; the page says:\n{text}\nscript errors:\n{errors}")

    def check(self, what, ok):
        if not ok:
            self.fail(what)
        print(f"browser: {what}", flush=True)

    def click(self, sel):
        self.js(f"document.querySelector({json.dumps(sel)}).click(); true")

    def set_value(self, sel, value):
        """Types `value` into a field and tells the page, as typing does."""
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(sel)}); e.value = {json.dumps(value)};"
                "e.dispatchEvent(new Event('input', { bubbles: true })); e.dispatchEvent(new Event('change', { bubbles: true })); return true; })()")

    def use_token(self, token):
        self.until("the page", "document.body?.dataset.ready === '1'")
        self.js(f"document.querySelector('#token').value = {json.dumps(token)}; true")
        self.click("#token-save")

    def screenshot(self, path):
        import base64
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"browser: wrote {path}", flush=True)


def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=GUARD) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def row(agent):
    return f"document.querySelector('#steps tr[data-agent={json.dumps(agent)}]')"


def status_is(status):
    return f"document.querySelector('#run-status')?.textContent === {json.dumps(status)}"


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
def answer(b, url, token, run, question, value):
    """Opens RUN from the runs list, answers QUESTION with VALUE through its
    form, and waits until the page shows the run `pass`."""
    b.go(url)
    b.use_token(token)
    sel = json.dumps(f'#runs a[data-run="{run}"]')
    b.until("the run in the list", f"!!document.querySelector({sel})")
    b.js(f"document.querySelector({sel}).click(); true")
    form = f'form.answer[data-question="{question}"]'
    b.until("the waiting question", f"!!document.querySelector({json.dumps(form)})")
    b.set_value(form + " textarea", value)
    b.click(form + " button")
    b.until("the run passing", status_is("pass"))
    b.until("its step in the table", "document.querySelectorAll('#steps tr[data-task]').length > 0")


import browser_runs  # noqa: E402  (the runs-list, stream and form scenarios)

SCENARIOS.update(browser_runs.scenarios(sys.modules[__name__]))


def main():
    name, args = sys.argv[1], sys.argv[2:]
    b = Browser()
    try:
        b.attach()
        SCENARIOS[name](b, *args)
        if b.errors:
            sys.exit("browser: the page's script failed:\n" + "\n".join(map(str, b.errors)))
    finally:
        b.proc.kill()
        b.proc.wait()


if __name__ == "__main__":
    main()
