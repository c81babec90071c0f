//! Mobs across a SIGKILL: a run killed mid-conversation (members asked
//! in turn, and an autonomous exchange) resumes without asking the model
//! again for a turn that finished (requests counted in the scripted
//! server), and a turn cut between its two store writes is settled once.

mod common;

use common::mob::*;
use lua_swarm::llm::scripted::{Reply, Scripted};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mob_killed_mid_conversation_resumes_without_asking_a_finished_turn_again() {
    let server = Scripted::start(vec![
        tool_call("t1", "b", "over to you"),
        Reply::Text("a1".into()),
        Reply::Text("b1".into()),
        Reply::Held("par".into(), "tial".into()),
        Reply::Text("a2".into()),
    ])
    .await
    .unwrap();
    let d = dir("kill");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("killed")
    local a = mob:spawn { id = "a", agent = "coder" }
    local b = mob:spawn { id = "b", agent = "coder", wire = { "a" } }
    local r = { a:ask("start"), b:ask("go") }
    r[3] = a:ask("finish")
    return r"#,
    );
    let db = d.join("swarm.db");
    let swarm = move |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).arg("--db").arg(&db);
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let watched = server.clone();
    // Processes and polling off the runtime the scripted server runs on.
    let (text, swarm) = tokio::task::spawn_blocking(move || {
        let mut child = swarm(&["run", bp.to_str().unwrap(), "--run-id", "m1"])
            .spawn()
            .unwrap();
        // Three turns finished (one with its tool call); the fourth is held open.
        wait_for("the fourth model request", || watched.count() == 4);
        child.kill().unwrap();
        child.wait().unwrap();
        let out = swarm(&["resume", "m1", "--json"]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        (text, swarm)
    })
    .await
    .unwrap();
    let result: Value = serde_json::from_str(text.lines().next().unwrap()).expect(&text);
    assert_eq!(result, json!(["a1", "b1", "a2"]));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5, "only the unfinished turn was asked again");
    // a's message reached b's turn; the resumed turn carried a's
    // conversation as the store holds it.
    let seen = last_user(&reqs[2]);
    assert_eq!(
        seen,
        "Messages for you since your last turn:\n- from a: over to you\n\ngo"
    );
    assert_eq!(
        contents(&reqs[4]),
        [
            ("system".to_string(), "You code.".to_string()),
            ("user".into(), "start".into()),
            ("assistant".into(), "a1".into()),
            ("user".into(), "finish".into()),
        ]
    );
    assert_eq!(
        reqs[3]["messages"], reqs[4]["messages"],
        "the same request again"
    );
    // The roster as `swarm mob show` has it: turns and tokens per member.
    let (shown, listed, missing) = tokio::task::spawn_blocking(move || {
        let out = |args: &[&str]| swarm(args).output().unwrap();
        (
            out(&["mob", "show", "killed", "--json"]),
            out(&["mob", "list"]),
            out(&["mob", "show", "nope"]),
        )
    })
    .await
    .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("mob show --json");
    let a = &shown["members"][0];
    assert_eq!(
        (a["id"].as_str(), a["turns"].as_u64()),
        (Some("a"), Some(2)),
        "{shown}"
    );
    assert!(a["tokens"].as_u64().unwrap() > 0, "{shown}");
    assert_eq!(a["last_reply"], "a2");
    assert_eq!(
        shown["members"][1]["inbox"], 0,
        "b's message was shown: {shown}"
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.lines().any(|l| l.starts_with("killed ")), "{listed}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("[unknown_mob]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autonomous_mob_killed_mid_exchange_resumes_without_asking_a_finished_turn() {
    let server = Scripted::start(vec![
        tool_call("a1", "b", "ping"),
        Reply::Text("a sent ping".into()),
        tool_call("b1", "a", "pong"),
        Reply::Held("par".into(), "tial".into()),
        Reply::Text("b sent pong".into()),
        Reply::Text("a is done".into()),
    ])
    .await
    .unwrap();
    let d = dir("auto");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("auto")
    local a = mob:spawn { id = "a", agent = "coder", mode = "autonomous" }
    local b = mob:spawn { id = "b", agent = "coder", mode = "autonomous", wire = { "a" } }
    mob:post("a", "start the exchange", { from = "user" })
    local rounds = mob:run {}
    local ok, bad = pcall(mob.spawn, mob, { id = "c", agent = "coder", mode = "eager" })
    return { rounds = rounds, a = #a:history(), b = #b:history(), bad = bad.code }"#,
    );
    let db = d.join("swarm.db");
    let swarm = move |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).arg("--db").arg(&db);
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let watched = server.clone();
    let text = tokio::task::spawn_blocking(move || {
        let mut child = swarm(&["run", bp.to_str().unwrap(), "--run-id", "auto1"])
            .spawn()
            .unwrap();
        // a's turn (with its tool call) and b's first model call finished;
        // b's second is held open.
        wait_for("the fourth model request", || watched.count() == 4);
        child.kill().unwrap();
        child.wait().unwrap();
        let out = swarm(&["resume", "auto1", "--json"]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    })
    .await
    .unwrap();
    let result: Value = serde_json::from_str(text.lines().next().unwrap()).expect(&text);
    assert_eq!(
        result,
        json!({ "rounds": 3, "a": 4, "b": 2, "bad": "bad_argument" })
    );
    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        6,
        "only the unfinished model call was sent again"
    );
    assert_eq!(reqs[3]["messages"], reqs[4]["messages"]);
    let seen = last_user(&reqs[5]);
    assert!(seen.contains("- from b: pong"), "{seen}");
    assert_eq!(seen.matches("pong").count(), 1, "delivered once: {seen}");
    assert!(last_user(&reqs[0]).contains("- from user: start the exchange"));
}

/// A turn whose conversation rows were written but whose roster update
/// was not (the process died between the two writes) is counted once
/// when it is made again: its messages leave the inbox, its turn counts
/// once, and the model is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cut_between_its_two_writes_is_settled_once() {
    use lua_swarm::mob::{Mob, Spawn};
    let store = memory();
    let mob = Mob::new(&*store, "cut");
    let spec: Spawn = serde_json::from_value(json!({ "id": "a", "agent": "coder" })).unwrap();
    mob.spawn(&spec, "r/1").await.unwrap();
    let spec: Spawn =
        serde_json::from_value(json!({ "id": "b", "agent": "coder", "wire": ["a"] })).unwrap();
    mob.spawn(&spec, "r/2").await.unwrap();
    let b = member("cut", "b", 1);
    let a = member("cut", "a", 1);
    mob.tell(&b, "a", "hello", "r/3").await.unwrap();
    let again = mob.tell(&b, "a", "hello", "r/3").await.unwrap();
    assert_eq!(again.id, 1, "a tell made again is the same message");
    let start = mob.open_turn(&a, "go", None).await.unwrap();
    assert_eq!(start.upto, 1);
    // The conversation's write landed; the roster's did not.
    let rows = vec![
        json!({ "role": "user", "content": start.user, "origin": "r/4" }),
        json!({ "role": "assistant", "content": "done", "reply": "done", "origin": "r/4",
                "upto": start.upto, "tokens": 7 }),
    ];
    assert!(
        store
            .append_turns("cut", &start.convo, 0, rows)
            .await
            .unwrap()
    );
    for _ in 0..2 {
        let reply = mob.finished_turn(&a, "r/4").await.unwrap();
        assert_eq!(reply, Some(json!("done")));
    }
    let views = mob.all().await.unwrap();
    let va = views.iter().find(|v| v.id == "a").unwrap();
    assert_eq!((va.turns, va.tokens, va.inbox), (1, 7, 0), "{va:?}");
    // Closing it again after that is a no-op, not a conflict.
    mob.close_turn(&a, &start, "r/4", &json!("done"), 7)
        .await
        .unwrap();
    let va = mob
        .all()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.id == "a")
        .unwrap();
    assert_eq!(va.turns, 1);
}

/// A turn killed after one of its model calls finished is opened again on
/// resume with the messages it showed the first time, though another
/// arrived meanwhile (posted to the member by another run of the mob):
/// its finished call replays, the new message waits for the next turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_turn_shows_what_it_showed_before_the_kill() {
    let server = Scripted::start(vec![
        tool_call("t1", "nobody", "x"),
        Reply::Held("par".into(), "tial".into()),
        Reply::Text("b1".into()),
        Reply::Text("b2".into()),
    ])
    .await
    .unwrap();
    let d = dir("late");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        r#"local mob = swarm.mob("late")
    local b = mob:ensure { id = "b", agent = "coder" }
    if input and input.post then return mob:post("b", input.post, { from = "user" }) end
    mob:post("b", "first", { from = "user" })
    return { b:ask("go"), b:ask("next") }"#,
    );
    let db = d.join("swarm.db");
    let swarm = move |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).arg("--db").arg(&db);
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let watched = server.clone();
    let text = tokio::task::spawn_blocking(move || {
        let bp = bp.to_str().unwrap();
        let mut child = swarm(&["run", bp, "--run-id", "late1"]).spawn().unwrap();
        wait_for("the second model request", || watched.count() == 2);
        child.kill().unwrap();
        child.wait().unwrap();
        let other = swarm(&["run", bp, "--input", r#"{"post":"second"}"#])
            .output()
            .unwrap();
        assert!(
            other.status.success(),
            "{}",
            String::from_utf8_lossy(&other.stderr)
        );
        let out = swarm(&["resume", "late1", "--json"]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    })
    .await
    .unwrap();
    let result: Value = serde_json::from_str(text.lines().next().unwrap()).expect(&text);
    assert_eq!(result, json!(["b1", "b2"]));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4, "the finished model call replayed");
    assert_eq!(reqs[1]["messages"], reqs[2]["messages"]);
    let first = last_user(&reqs[0]);
    assert!(
        first.contains("- from user: first") && !first.contains("second"),
        "{first}"
    );
    let next = last_user(&reqs[3]);
    assert!(
        next.contains("- from user: second") && !next.contains("first"),
        "{next}"
    );
}

/// A peer message made again after a crash (the same origin) is not
/// delivered twice, even once the recipient's turn has taken the first
/// copy out of its inbox: the second send answers the first receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_made_again_after_its_message_was_shown_is_not_delivered_twice() {
    use lua_swarm::mob::{Mob, Spawn};
    let store = memory();
    let mob = Mob::new(&*store, "twice");
    for (id, wire) in [("a", json!([])), ("b", json!(["a"]))] {
        let spec: Spawn =
            serde_json::from_value(json!({ "id": id, "agent": "coder", "wire": wire })).unwrap();
        mob.spawn(&spec, &format!("r/{id}")).await.unwrap();
    }
    let (a, b) = (member("twice", "a", 1), member("twice", "b", 1));
    let first = mob.tell(&b, "a", "hello", "r/3").await.unwrap();
    // `a` takes a turn that is shown the message; it leaves the inbox.
    let start = mob.open_turn(&a, "go", None).await.unwrap();
    assert_eq!(start.upto, first.id);
    mob.close_turn(&a, &start, "r/4", &json!("seen"), 1)
        .await
        .unwrap();
    let views = mob.all().await.unwrap();
    assert_eq!(views.iter().find(|v| v.id == "a").unwrap().inbox, 0);
    // The crash: `b`'s tell is made again with its origin.
    let again = mob.tell(&b, "a", "hello", "r/3").await.unwrap();
    assert_eq!(again.id, first.id, "the first receipt");
    let views = mob.all().await.unwrap();
    assert_eq!(
        views.iter().find(|v| v.id == "a").unwrap().inbox,
        0,
        "not delivered again"
    );
}

/// A turn through a handle the member outgrew while the model answered
/// (a respawn that keeps the conversation) fails `stale_member` and
/// writes nothing into the new incarnation's conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_of_a_stale_handle_writes_nothing_into_the_new_incarnation() {
    use lua_swarm::mob::{Mob, Spawn};
    let store = memory();
    let mob = Mob::new(&*store, "stale");
    let spec: Spawn = serde_json::from_value(json!({ "id": "a", "agent": "coder" })).unwrap();
    mob.spawn(&spec, "r/1").await.unwrap();
    let old = member("stale", "a", 1);
    let start = mob.open_turn(&old, "go", None).await.unwrap();
    let fresh = mob.respawn("a", true, "r/2").await.unwrap();
    assert_eq!(fresh.incarnation, 2);
    let closed = mob.close_turn(&old, &start, "r/3", &json!("late"), 5).await;
    let err = closed.expect_err("a stale handle's turn is refused");
    assert_eq!(err.code(), "stale_member", "{err}");
    let new = member("stale", "a", 2);
    assert!(mob.history(&new).await.unwrap().is_empty());
}

/// Work submitted to a member that is retired before any turn took it up
/// fails `retired` when waited for, rather than staying queued for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_of_a_retired_member_fails_retired() {
    use lua_swarm::mob::{Mob, Spawn};
    let store = memory();
    let mob = Mob::new(&*store, "idle");
    let spec: Spawn = serde_json::from_value(json!({ "id": "a", "agent": "coder" })).unwrap();
    mob.spawn(&spec, "r/1").await.unwrap();
    let h = member("idle", "a", 1);
    let posted = mob.post("a", "work", "do it", "r/2").await.unwrap();
    assert!(mob.work(&h, posted.id).await.is_ok());
    mob.retire(&h, "r/3").await.unwrap();
    let err = mob.work(&h, posted.id).await.expect_err("retired");
    assert_eq!(err.code(), "retired", "{err}");
}

/// A handle of member `id` (incarnation `n`) of mob `mob`.
fn member(mob: &str, id: &str, n: u64) -> lua_swarm::mob::Handle {
    lua_swarm::mob::Handle {
        mob: mob.into(),
        id: id.into(),
        incarnation: n,
    }
}
