//! Mobs against the scripted OpenAI-compatible server: members with
//! durable conversations (`swarm.mob`), peer messages through the
//! `send_message` tool and `tell`, incarnations fencing stale handles,
//! forks, budgets reserved from the run's limit before any model call,
//! conversations carried into a later run, the team sample, messages
//! sent into the run reaching a member. Across a SIGKILL: `mob_durability.rs`.

mod common;

use common::HANG_GUARD;
use common::mob::*;
use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig};
use lua_swarm::llm::scripted::{Reply, Scripted};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coders_message_the_lead_through_send_message_and_the_lead_answers() {
    let server = Scripted::start(vec![
        tool_call("a1", "lead", "tokenizer done"),
        Reply::Text("wrote the tokenizer".into()),
        tool_call("b1", "lead", "parser done"),
        Reply::Text("wrote the parser".into()),
        Reply::Text("both are done".into()),
        Reply::Text("nothing new".into()),
    ])
    .await
    .unwrap();
    let d = dir("team");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("team")
    local lead = mob:spawn { id = "lead", agent = "lead", labels = { role = "lead" } }
    local c1 = mob:spawn { id = "c1", agent = "coder", message = "You own the tokenizer.",
                           wire = { "lead" }, labels = { role = "coder" } }
    local c2 = mob:spawn { id = "c2", agent = "coder", wire = { "lead" }, labels = { role = "coder" } }
    local r1 = c1:ask("Write the tokenizer.")
    local r2 = c2:ask("Write the parser.")
    local status = lead:ask("Status?")
    local again = lead:ask("Anything else?")
    local coders = mob:members { labels = { role = "coder" } }
    local ok, unwired = pcall(c1.tell, c1, "c2", "hello")
    local ok2, unknown = pcall(c1.tell, c1, "nobody", "hello")
    local ok3, dup = pcall(mob.spawn, mob, { id = "lead", agent = "lead" })
    local ok4, bad = pcall(mob.spawn, mob, { id = "x", agent = "nope" })
    local receipt = lead:tell("c1", "thanks")
    return { r1 = r1, r2 = r2, status = status, again = again, coders = #coders,
             unwired = unwired.code, unknown = unknown.code, dup = dup.code, bad = bad.code,
             said = tostring(unwired), receipt = receipt, history = lead:history() }"#,
    );
    let store = memory();
    let (report, engine) = run_on(&store, &bp).await;
    let r = &report.result;
    assert_eq!(report.status, lua_swarm::engine::TaskStatus::Pass, "{r}");
    assert_eq!(r["r1"], "wrote the tokenizer");
    assert_eq!(r["r2"], "wrote the parser");
    assert_eq!(r["status"], "both are done");
    assert_eq!(r["coders"], 2);
    assert_eq!(r["unwired"], "not_wired");
    assert!(r["said"].as_str().unwrap().contains("mob.lua:"), "{r}");
    assert_eq!(r["unknown"], "unknown_member");
    assert_eq!(r["dup"], "member_exists");
    assert_eq!(r["bad"], "unknown_agent");
    assert_eq!(r["receipt"]["delivered"], true);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 6);
    // The coder's first turn: its profile's system prompt, its standing
    // instruction, the text; and send_message offered for its one peer.
    assert_eq!(
        contents(&reqs[0]),
        [
            ("system".to_string(), "You code.".to_string()),
            ("system".into(), "You own the tokenizer.".into()),
            ("user".into(), "Write the tokenizer.".into()),
        ]
    );
    let tool = &reqs[0]["tools"][0]["function"];
    assert_eq!(tool["name"], "send_message");
    assert_eq!(
        tool["parameters"]["properties"]["to"]["enum"],
        json!(["lead"])
    );
    // The tool's answer went back to the model: a receipt.
    let receipt = contents(&reqs[1]).last().unwrap().1.clone();
    assert!(receipt.contains("\"delivered\":true"), "{receipt}");
    // The lead saw both messages, in order, at the start of its turn...
    let seen = last_user(&reqs[4]);
    let (a, b) = (
        seen.find("from c1: tokenizer done").expect(&seen),
        seen.find("from c2: parser done").expect(&seen),
    );
    assert!(a < b && seen.ends_with("Status?"), "{seen}");
    // ... and only once.
    assert_eq!(last_user(&reqs[5]), "Anything else?");
    // Wiring is mutual: the lead may message both coders.
    let lead_tool = &reqs[4]["tools"][0]["function"]["parameters"]["properties"]["to"];
    assert_eq!(lead_tool["enum"], json!(["c1", "c2"]));
    let history = r["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{r}");
    assert_eq!(history[1]["content"], "both are done");
    let kinds: Vec<String> = mob_events(&engine)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in ["spawn", "turn", "message", "tell"] {
        assert!(
            kinds.iter().any(|k| k == want),
            "no `{want}` event: {kinds:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_carries_into_a_second_run_of_the_same_mob() {
    let server = Scripted::start(vec![
        Reply::Text("noted".into()),
        Reply::Text("it was 42".into()),
    ])
    .await
    .unwrap();
    let d = dir("carry");
    let store = memory();
    let first = blueprint(
        &d,
        &server.url,
        "",
        r#"local a = swarm.mob("memo"):ensure { id = "a", agent = "coder" }
    return a:ask("Remember the number 42.")"#,
    );
    let (r1, _) = run_on(&store, &first).await;
    assert_eq!(r1.result, "noted");
    let second = blueprint(
        &d,
        &server.url,
        "",
        r#"local a = swarm.mob("memo"):ensure { id = "a", agent = "coder" }
    return { reply = a:ask("Which number?"), turns = #a:history() }"#,
    );
    let (r2, _) = run_on(&store, &second).await;
    assert_eq!(r2.result, json!({ "reply": "it was 42", "turns": 4 }));
    assert_eq!(
        contents(&server.requests()[1]),
        [
            ("system".to_string(), "You code.".to_string()),
            ("user".into(), "Remember the number 42.".into()),
            ("assistant".into(), "noted".into()),
            ("user".into(), "Which number?".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respawn_fences_a_stale_handle_and_fork_starts_from_the_source() {
    let server = Scripted::start(vec![
        Reply::Text("one".into()),
        Reply::Text("fresh".into()),
        Reply::Text("forked".into()),
    ])
    .await
    .unwrap();
    let d = dir("fence");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("fence")
    local old = mob:spawn { id = "a", agent = "coder" }
    old:ask("first")
    local fork = old:fork { id = "b" }
    local new = mob:respawn("a")
    local ok, stale = pcall(old.ask, old, "through the stale handle")
    local ok2, stale2 = pcall(old.tell, old, "b", "x")
    local fresh = new:ask("again")
    local forked = fork:ask("go on")
    local kept = mob:respawn("a", { keep_history = true })
    local fresh_turns = #kept:history()
    kept:retire()
    local ok3, gone = pcall(kept.ask, kept, "after retire")
    return { stale = stale.code, stale2 = stale2.code, said = tostring(stale), fresh = fresh,
             forked = forked, fresh_turns = fresh_turns, gone = gone.code,
             source_turns = #fork:history() }"#,
    );
    let (report, _) = run_on(&memory(), &bp).await;
    let r = &report.result;
    assert_eq!(r["stale"], "stale_member", "{r}");
    assert_eq!(r["stale2"], "stale_member", "{r}");
    assert!(r["said"].as_str().unwrap().contains("incarnation 1"), "{r}");
    assert_eq!(r["fresh"], "fresh");
    assert_eq!(r["forked"], "forked");
    // The respawned `a` started fresh: only its own turn; kept by the
    // next respawn with keep_history.
    assert_eq!(r["fresh_turns"], 2, "{r}");
    assert_eq!(r["source_turns"], 4, "{r}");
    assert_eq!(r["gone"], "retired", "{r}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "no stale call reached the model");
    assert_eq!(
        contents(&reqs[1]),
        [
            ("system".to_string(), "You code.".to_string()),
            ("user".into(), "again".into()),
        ]
    );
    assert_eq!(
        contents(&reqs[2]),
        [
            ("system".to_string(), "You code.".to_string()),
            ("user".into(), "first".into()),
            ("assistant".into(), "one".into()),
            ("user".into(), "go on".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_spawns_past_the_run_limit_fail_before_any_model_call() {
    let server = Scripted::start(vec![Reply::Text("ok".into())])
        .await
        .unwrap();
    let d = dir("budget");
    let bp = blueprint(
        &d,
        &server.url,
        "tokens = 1000",
        r#"local mob = swarm.mob("budget")
    local got = swarm.all_settled {
      function() return mob:spawn { id = "p", agent = "coder", budget = { tokens = 600 } } end,
      function() return mob:spawn { id = "q", agent = "coder", budget = { tokens = 600 } } end,
    }
    local won = got[1].ok and got[1].value or got[2].value
    local lost = got[1].ok and got[2].error or got[1].error
    won:retire()
    local later = mob:spawn { id = "r", agent = "coder", budget = { tokens = 900 } }
    return { oks = (got[1].ok and 1 or 0) + (got[2].ok and 1 or 0), code = lost.code,
             said = lost.message, later = later.id }"#,
    );
    let (report, _) = run_on(&memory(), &bp).await;
    let r = &report.result;
    assert_eq!(r["oks"], 1, "{r}");
    assert_eq!(r["code"], "token_budget", "{r}");
    assert!(
        r["said"]
            .as_str()
            .unwrap()
            .contains("limits.tokens is 1000"),
        "{r}"
    );
    assert_eq!(
        r["later"], "r",
        "the retired member's budget came back: {r}"
    );
    assert_eq!(server.count(), 0, "no model call was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_sample_exchanges_messages_between_lead_coders_and_critic() {
    let server = Scripted::start(vec![
        Reply::Text("coder1: tokenizer; coder2: parser".into()),
        tool_call("c1", "lead", "tokenizer done"),
        Reply::Text("tokenizer written".into()),
        tool_call("c2", "critic", "please look at the parser"),
        Reply::Text("parser written".into()),
        Reply::Text(json!({ "approved": false, "notes": "the parser lacks tests" }).to_string()),
        Reply::Text("built both; parser tests are left".into()),
    ])
    .await
    .unwrap();
    let d = dir("sample");
    let db = d.join("swarm.db");
    let bp = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/team.lua");
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args([
                "run",
                bp.to_str().unwrap(),
                "--json",
                "--input",
                "\"a calculator\"",
            ])
            .arg("--db")
            .arg(&db)
            .env("SWARM_LLM_BASE_URL", &url)
            .env("SWARM_LLM_MODEL", "scripted")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        result["work"],
        json!(["tokenizer written", "parser written"])
    );
    assert_eq!(result["review"]["approved"], false);
    assert_eq!(result["summary"], "built both; parser tests are left");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 7);
    let critic_saw = last_user(&reqs[5]);
    assert!(
        critic_saw.contains("- from coder2: please look at the parser"),
        "{critic_saw}"
    );
    let lead_saw = last_user(&reqs[6]);
    let (a, b) = (
        lead_saw
            .find("- from coder1: tokenizer done")
            .expect(&lead_saw),
        lead_saw
            .find("- from critic: Not approved yet: the parser lacks tests")
            .expect(&lead_saw),
    );
    assert!(a < b, "{lead_saw}");
    // The lead's conversation so far: its plan turn came first.
    assert_eq!(
        contents(&reqs[6])[2],
        (
            "assistant".to_string(),
            "coder1: tokenizer; coder2: parser".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_into_the_run_reaches_a_member_and_failures_are_typed() {
    let server = Scripted::start(vec![
        Reply::Text("edge: empty input".into()),
        Reply::Text("hello, user".into()),
        Reply::Status(400, None),
    ])
    .await
    .unwrap();
    let d = dir("post");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("desk")
    local lead = mob:spawn { id = "lead", agent = "lead" }
    local found = mob:helper { agent = "coder", task = "Find edge cases." }
    local receipt = mob:post("lead", swarm.recv("lead"), { from = "user" })
    local reply = lead:ask("Answer the user.")
    local c = mob:spawn { id = "c", agent = "coder", wire = { "lead" } }
    mob:unwire("c", lead)
    local ok, unwired = pcall(c.tell, c, "lead", "x")
    local ok2, failed = pcall(lead.ask, lead, "this one fails")
    local ok3, nobody = pcall(mob.post, mob, "ghost", "hi")
    return { found = found, receipt = receipt, reply = reply, unwired = unwired.code,
             failed = failed.code, said = failed.message, nobody = nobody.code,
             members = #mob:members(), turns = #lead:history() }"#,
    );
    let store = memory();
    store
        .send_message("post1", "lead", json!("hi there"), None)
        .await
        .unwrap();
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let opts = RunOptions {
        store: Some(store.clone()),
        run_id: Some("post1".into()),
        wait_for_answers: true,
        ..RunOptions::default()
    };
    let r = run::prepare(&engine, &bp, opts).unwrap();
    let report = tokio::time::timeout(HANG_GUARD, r.run(Value::Null))
        .await
        .expect("hang guard")
        .unwrap();
    let r = &report.result;
    assert_eq!(r["found"], "edge: empty input", "{r}");
    assert_eq!(r["receipt"]["delivered"], true, "{r}");
    assert_eq!(r["reply"], "hello, user");
    assert_eq!(r["unwired"], "not_wired");
    assert_eq!(r["failed"], "member_turn", "{r}");
    assert!(r["said"].as_str().unwrap().contains("mob.lua:"), "{r}");
    assert_eq!(r["nobody"], "unknown_member");
    assert_eq!(r["members"], 2, "the helper retired: {r}");
    assert_eq!(
        r["turns"], 2,
        "a failed turn is not in the conversation: {r}"
    );
    let reqs = server.requests();
    assert_eq!(
        last_user(&reqs[1]),
        "Messages for you since your last turn:\n- from user: hi there\n\nAnswer the user."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_work_is_taken_up_by_a_turn_and_can_be_withdrawn_before() {
    let server = Scripted::start(vec![
        Reply::Text("lexer done".into()),
        Reply::Text("planned".into()),
    ])
    .await
    .unwrap();
    let d = dir("work");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("work")
    local m = mob:spawn { id = "w", agent = "coder" }
    local a = m:submit("Write the lexer.")
    local b = m:submit("Write the docs.")
    local withdrawn, again = b:cancel(), b:cancel()
    local reply = a:wait()
    local ok, gone = pcall(b.wait, b)
    local auto = mob:spawn { id = "x", agent = "coder", mode = "autonomous" }
    local plan = auto:submit("Plan the release.")
    return { reply = reply, withdrawn = withdrawn, again = again, gone = gone.code,
             taken = a:cancel(), plan = plan:wait(), twice = a:wait() }"#,
    );
    let (report, _) = run_on(&memory(), &bp).await;
    let r = &report.result;
    assert_eq!(
        r,
        &json!({ "reply": "lexer done", "withdrawn": true, "again": true, "gone": "cancelled",
                 "taken": false, "plan": "planned", "twice": "lexer done" })
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one turn per unit of work");
    assert_eq!(
        last_user(&reqs[0]),
        "Messages for you since your last turn:\n- from work: Write the lexer.\n\nDo the work above."
    );
    assert!(last_user(&reqs[1]).contains("- from work: Plan the release."));
}

/// Only the host marks a member's turn: a plain step whose input claims
/// to be one (`member`, `peers`, as a message from outside could carry)
/// is not offered `send_message`, and cannot act as that member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_input_claims_a_member_gets_no_send_message() {
    let server = Scripted::start(vec![Reply::Text("summed up".into())])
        .await
        .unwrap();
    let d = dir("impostor");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("crew")
    local lead = mob:spawn { id = "lead", agent = "lead" }
    local coder = mob:spawn { id = "coder", agent = "coder", wire = { "lead" } }
    local claimed = { member = { mob = "crew", id = "lead", incarnation = 1 }, peers = { "coder" },
                      prompt = "Summarize." }
    return swarm.step("coder", claimed)"#,
    );
    let store = memory();
    let (report, _) = run_on(&store, &bp).await;
    assert_eq!(report.result, json!("summed up"), "{}", report.result);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let tools = reqs[0]
        .get("tools")
        .map(|t| t.to_string())
        .unwrap_or_default();
    assert!(!tools.contains("send_message"), "offered: {tools}");
}

/// A member's budget holds: once its turns have spent it, the next turn is
/// refused `token_budget` before any model call. And a member holds one
/// reservation of the run's limit however often it is retired and
/// respawned: the reservations never go below what is really reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_budget_stops_its_turns_and_reservations_stay_exact() {
    let server = Scripted::start(vec![Reply::Text("first".into()), Reply::Text("x".into())])
        .await
        .unwrap();
    let d = dir("member-budget");
    let bp = blueprint(
        &d,
        &server.url,
        "tokens = 1000",
        r#"local mob = swarm.mob("thrifty")
    local small = mob:spawn { id = "small", agent = "coder", budget = { tokens = 10 } }
    local first = small:ask("One.")
    local ok, over = pcall(small.ask, small, "Two.")
    local a = mob:spawn { id = "a", agent = "coder", budget = { tokens = 800 } }
    a:retire()
    a = mob:respawn("a")
    a:retire()
    small:retire()
    local b = mob:spawn { id = "b", agent = "coder", budget = { tokens = 1000 } }
    local ok2, full = pcall(mob.spawn, mob, { id = "c", agent = "coder", budget = { tokens = 800 } })
    return { first = first, over = over.code, said = tostring(over), full = full.code }"#,
    );
    let store = memory();
    let (report, _) = run_on(&store, &bp).await;
    let r = &report.result;
    assert_eq!(r["first"], "first", "{r}");
    assert_eq!(r["over"], "token_budget", "{r}");
    assert!(r["said"].as_str().unwrap().contains("budget of 10"), "{r}");
    assert_eq!(r["full"], "token_budget", "{r}");
    assert_eq!(
        server.requests().len(),
        1,
        "the refused turn asked no model"
    );
}
