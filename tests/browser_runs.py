"""The web page's scenarios beyond answering a question (see browser.py,
which drives Chromium and calls these): paging the runs list, one stream
per open run, the LLM output cell, a question's context, the timeline of a
parallel run, and starting a run from the form."""

import json


def scenarios(m):
    """The scenarios, given browser.py's module `m` (its helpers)."""
    rows = "[...document.querySelectorAll('#runs a[data-run]')].map(a => a.dataset.run)"

    def paging(b, url, token, count, blueprint, other):
        """COUNT runs of BLUEPRINT exist: the list shows the newest first, a
        page at a time; "load more" reaches the oldest; a run started
        elsewhere appears at the top without a reload; the blueprint
        filter keeps only its runs. First, without a token, the list says
        which role is enough instead of loading forever."""
        count = int(count)
        b.go(url)
        b.until("advice instead of loading", "document.querySelector('#runs-advice')?.textContent.includes('--role observer')")
        b.check("no `loading runs` left", "loading runs" not in b.js("document.querySelector('#runs').innerText"))
        b.use_token(token)
        newest = f"r{count:03}"
        b.until("the newest run first", f"{rows}[0] === {json.dumps(newest)}")
        first = b.js(rows)
        b.check(f"one page of {len(first)} runs, fewer than {count}", 0 < len(first) < count)
        while not b.js("document.querySelector('#more').hidden"):
            n = len(b.js(rows))
            b.click("#more")
            b.until("another page", f"{rows}.length > {n}")
        shown = b.js(rows)
        want = [f"r{i:03}" for i in range(count, 0, -1)]
        b.check(f"all {count} runs, newest first, each once", shown == want)
        m.post(url + "v1/runs", {"blueprint": other, "id": "elsewhere", "input": {"n": 0}}, token)
        b.until("a run started elsewhere on top", f"{rows}[0] === 'elsewhere'")
        b.check("the pages read so far still shown", len(b.js(rows)) == count + 1)
        b.until("the blueprint filter offers it", f"!!document.querySelector('#filter-blueprint option[value={json.dumps(other)}]')")
        b.set_value("#filter-blueprint", other)
        b.until("only its runs", f"JSON.stringify({rows}) === '[\"elsewhere\"]'")
        b.set_value("#filter-blueprint", "")
        b.set_value("#open-id", "r001")
        b.click("#open-form button")
        b.until("a run opened by its id", "document.querySelector('#run-id')?.textContent === 'r001'")
        b.until("its status", m.status_is("pass"))

    def stream(b, url, token, run, release):
        """Opens RUN by `#id` in a fresh page with the token already kept,
        resubmits the token (twice) and re-enters the hash while the model's
        answer is held mid-stream, then lets it finish: the step's
        streamed text must be the journal's, once."""
        b.go(url)
        b.js(f"localStorage.setItem('swarm.token', {json.dumps(token)}); true")
        b.go("about:blank")
        b.go(url + "#" + run)
        cell = m.row("model") + "?.querySelector('td.out')"
        b.until("the first half streamed", f"({cell}?.dataset.streamed || '').length > 0")
        for _ in range(2):
            b.click("#token-save")
        b.js(f"location.hash = ''; location.hash = {json.dumps('#' + run)}; true")
        b.until("the page settled on the run", f"document.querySelector('#run-id')?.textContent === {json.dumps(run)}")
        m.post(release, {})
        b.until("the run passing", m.status_is("pass"))
        b.until("the step's recorded text", f"{cell}?.querySelector('pre')?.textContent.length > 0 && {m.row('model')}.querySelector('td.pass')")
        found = b.js(f"({{ streamed: {cell}.dataset.streamed, shown: {cell}.querySelector('pre').textContent }})")
        print("RESULT " + json.dumps(found), flush=True)

    def llm(b, url, token, run, failed, bare):
        """A finished LLM step shows its text (wrapped), its usage, the flow
        apart from the steps and a count that agrees with the table; a
        failed run's traceback reads as lines; usage the server did not
        report (BARE) is marked estimated, reported usage is not."""
        b.go(url + "#" + run)
        b.use_token(token)
        b.until("the run passing", m.status_is("pass"))
        cell = m.row("model") + "?.querySelector('td.out pre')"
        b.until("the model's text in its cell", f"{cell}?.textContent.startsWith('Once upon')")
        b.check("no progress JSON in the cell", '"llm"' not in b.js(f"{cell}.textContent"))
        b.check("the long text wraps", b.js(f"{cell}.scrollWidth <= {cell}.clientWidth + 1"))
        usage = b.js(m.row("model") + ".querySelectorAll('td')[4].textContent")
        b.check(f"usage per step ({usage})", "18 tokens" in usage and "1 turn" in usage)
        b.check(f"reported usage is not marked ({usage})", "estimated" not in usage)
        b.check("one step row", b.js("document.querySelectorAll('#steps tr[data-task]').length") == 1)
        b.check("the header counts it", "1 step (1 done)" in b.js("document.querySelector('#run-counts').textContent"))
        b.until("the flow apart", "document.querySelector('#flow-status')?.textContent === 'pass'")
        b.js(f"location.hash = {json.dumps('#' + failed)}; true")
        b.until("the failed run", "document.querySelector('#run-status')?.textContent === 'failed' || document.querySelector('#run-status')?.textContent === 'blocked'")
        text = b.until("its error as lines", "(() => { const p = document.querySelector('#result pre'); return p && p.textContent.includes('\\n') && p.textContent; })()")
        b.check("no escaped line breaks", "\\n" not in text and "\\t" not in text)
        b.check("the traceback shown", "traceback" in text)
        b.js(f"location.hash = {json.dumps('#' + bare)}; true")
        b.until("the bare run", "document.querySelector('#run-id')?.textContent === " + json.dumps(bare))
        b.until("its text", m.row("model") + "?.querySelector('td.out pre')?.textContent.startsWith('A short')")
        usage = b.until("its usage, marked estimated", m.row("model") + ".querySelectorAll('td')[4].textContent.includes('(estimated)') && " + m.row("model") + ".querySelectorAll('td')[4].textContent")
        b.check(f"counted tokens shown ({usage})", "tokens" in usage)

    def question(b, url, token, run, other):
        """An escalated step's question says why (the agent's verdict) and
        what to answer, and its editor refuses bad JSON and a wrong shape
        before sending; an ask's question shows its text, data and schema.
        Then OTHER, waiting too, is cancelled with the page's button."""
        b.go(url + "#" + run)
        b.use_token(token)
        card = ".question[data-question='escalate:judge']"
        b.until("the escalation", f"!!document.querySelector({json.dumps(card)})")
        text = b.js(f"document.querySelector({json.dumps(card)}).innerText")
        b.check("why: the agent and its verdict", "judge" in text and "too vague" in text)
        b.check("what to answer", '{"ok": true}' in text)
        send = f"document.querySelector({json.dumps(card + ' button')})"
        b.set_value(card + " textarea", "{ok: ")
        b.until("bad JSON refused", f"{send}.disabled && document.querySelector({json.dumps(card + ' .check')}).textContent.includes('not JSON')")
        b.set_value(card + " textarea", '{"ok": "yes"}')
        b.until("a wrong shape refused", f"{send}.disabled && document.querySelector({json.dumps(card + ' .check')}).textContent.includes('boolean')")
        b.set_value(card + " textarea", '{"ok": true, "why": "fine"}')
        b.until("a good answer accepted", f"!{send}.disabled")
        b.click(card + " button")
        ask = ".question[data-question='size']"
        b.until("the ask", f"!!document.querySelector({json.dumps(ask)})")
        text = b.js(f"document.querySelector({json.dumps(ask)}).innerText")
        b.check("its text and data", "How many reviewers?" in text and "queue" in text and "minimum" in text)
        b.set_value(ask + " textarea", "0")
        b.until("below the minimum refused", f"document.querySelector({json.dumps(ask + ' button')}).disabled")
        b.set_value(ask + " textarea", "3")
        b.until("accepted", f"!document.querySelector({json.dumps(ask + ' button')}).disabled")
        b.click(ask + " button")
        b.until("the run passing", m.status_is("pass"))
        b.js(f"location.hash = {json.dumps('#' + other)}; true")
        b.until("another run, waiting", f"document.querySelector('#run-id')?.textContent === {json.dumps(other)} && !!document.querySelector('#run-cancel')")
        b.click("#run-cancel")
        b.until("it cancelled from the page", m.status_is("cancelled"))

    def timeline(b, url, token, run):
        """A parallel run's two branches are bars that overlap in time, both
        nested under the flow's bar; a step the retry layer ran twice shows
        its wait between the tries."""
        b.go(url + "#" + run)
        b.use_token(token)
        b.until("the run passing", m.status_is("pass"))
        b.until("both bars ended", "[...document.querySelectorAll('#timeline .tl-bar')].filter(x => x.dataset.end).length >= 3")
        bars = b.js("""[...document.querySelectorAll('#timeline .tl-row')].map(r => {
            const bar = r.querySelector('.tl-bar'), box = bar.getBoundingClientRect();
            return { label: r.querySelector('.tl-label').textContent, start: +bar.dataset.start, end: +bar.dataset.end,
                     left: box.left, right: box.right };
        })""")
        print("RESULT " + json.dumps(bars), flush=True)
        flow, branches = bars[0], [x for x in bars if x["label"].strip().lstrip("↳ ") in ("left", "right")]
        b.check("the flow's bar first", flow["label"] == "flow")
        b.check("two branches", len(branches) == 2)
        l, r = branches
        # Overlapping by construction; the times are whole milliseconds, so
        # on a busy machine one may start in the millisecond the other ends.
        b.check("overlapping in time", l["start"] <= r["end"] and r["start"] <= l["end"])
        b.check("overlapping on screen", l["left"] <= r["right"] and r["left"] <= l["right"])
        b.check("inside the flow's bar", all(flow["left"] <= x["left"] + 0.5 and x["right"] <= flow["right"] + 0.5 for x in branches))
        flaky = "document.querySelector('#timeline .tl-row:last-child')"
        b.check("the retried step last", b.js(f"{flaky}.querySelector('.tl-label').textContent").endswith("flaky"))
        b.check("its wait between tries marked", b.js(f"{flaky}.querySelectorAll('.tl-retry').length") == 1)
        b.check("its tries counted", "(2 tries)" in b.js(m.row("flaky") + ".textContent"))

    def start(b, url, token, observer):
        """An observer is told an operator token is needed; an operator
        starts a run from the form (raw JSON) and lands on it; a blueprint
        that declares its input gets a form of its fields, checked before
        sending (the blueprint list's `input` is supplied by the driver,
        as the API will list it)."""
        b.go(url)
        b.use_token(observer)
        b.until("the observer's role", "document.querySelector('#whoami').textContent.startsWith('observer')")
        b.click("#new-run")
        b.until("the form, refusing", "document.querySelector('#start-form')?.textContent.includes('--role operator') && document.querySelector('#start-run').disabled")
        b.use_token(token)
        b.until("the operator's role", "document.querySelector('#whoami').textContent.startsWith('operator')")
        b.click("#new-run")
        b.until("the form", "!!document.querySelector('#start-form') && !document.querySelector('#start-run').disabled")
        b.set_value("#start-form select[name=blueprint]", "greet")
        b.set_value("#start-form textarea[name=input]", "{ name: ")
        b.click("#start-run")
        b.until("bad JSON refused", "document.querySelector('#start-form .check').textContent.includes('not JSON')")
        b.set_value("#start-form textarea[name=input]", '{"name": "Ada"}')
        b.set_value("#start-form input[name=id]", "from-form")
        b.click("#start-run")
        b.until("the new run open", "document.querySelector('#run-id')?.textContent === 'from-form'")
        b.until("the run passing", m.status_is("pass"))
        b.until("its result", "document.querySelector('#result').textContent.includes('Ada')")
        b.until("listed", "!!document.querySelector('#runs a[data-run=\"from-form\"]')")
        # A blueprint that declares its input gets a form of its fields.
        schema = {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "description": "who to greet"},
            "times": {"type": "integer", "minimum": 1, "default": 1},
            "loud": {"type": "boolean"}}}
        b.serve("*/v1/blueprints", {"blueprints": [{"name": "greet", "version": 1, "input": schema}]})
        b.click("#new-run")
        b.until("a field per property", "!!document.querySelector('#start-form input[name=name]') && !!document.querySelector('#start-form input[name=times][type=number]') && !!document.querySelector('#start-form input[name=loud][type=checkbox]')")
        b.check("the field's description", "who to greet" in b.js("document.querySelector('#start-form').innerText"))
        b.click("#start-run")
        b.until("a missing field refused", "document.querySelector('#start-form .check').textContent.includes('needs `name`')")
        b.set_value("#start-form input[name=name]", "Grace")
        b.set_value("#start-form input[name=times]", "2")
        b.set_value("#start-form input[name=id]", "from-schema")
        b.click("#start-run")
        b.until("the second run open", "document.querySelector('#run-id')?.textContent === 'from-schema'")
        b.until("its result", "document.querySelector('#result').textContent.includes('Grace')")

    def mob(b, url, token, run):
        """A run's mob events grouped by member: one row per member, with
        what it did and what reached it, in order."""
        b.go(url + "#" + run)
        b.use_token(token)
        b.until("the run passing", m.status_is("pass"))
        b.until("the mob table", "!document.querySelector('#mob')?.hidden && document.querySelectorAll('#mob tr[data-member]').length === 2")
        lead = b.js("document.querySelector('#mob tr[data-member=\"page/lead\"]').textContent")
        coder = b.js("document.querySelector('#mob tr[data-member=\"page/c1\"]').textContent")
        b.check("the lead's row", "spawned" in lead and "message from c1: tokenizer done" in lead and "message from user: hello" in lead)
        b.check("in order", lead.index("tokenizer done") < lead.index("message from user"))
        b.check("the coder's row", "told lead: tokenizer done" in coder)
        b.check("its retirement", coder.rstrip().endswith("retired"))

    def screens(b, url, token, out, asking, story):
        """The README's screenshots: the runs list, a run waiting on a
        question, and a finished LLM run, written as PNGs under OUT."""
        b.go(url)
        b.use_token(token)
        b.until("the runs", f"{rows}.length > 0")
        b.screenshot(f"{out}/runs.png")
        b.js(f"location.hash = {json.dumps('#' + asking)}; true")
        b.until("the question", "!!document.querySelector('.question form')")
        b.until("its timeline", "document.querySelectorAll('#timeline .tl-bar').length >= 2")
        b.screenshot(f"{out}/question.png")
        b.js(f"location.hash = {json.dumps('#' + story)}; true")
        b.until("the LLM run", m.status_is("pass"))
        b.until("its text", m.row("writer") + "?.querySelector('td.out pre')")
        b.screenshot(f"{out}/llm-run.png")

    return {f.__name__: f for f in (paging, stream, llm, question, timeline, start, mob, screens)}
