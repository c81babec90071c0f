//! Time slices: the limit hook hands a spinning VM's thread back to the
//! runtime every slice. These pin that no wake-up is lost on the way:
//! agents that outlast a slice, dispatched together from one task or from
//! a flow's `map` whose branches and agents are paused in turn.
mod common;
use common::*;
use futures_util::stream::{FuturesUnordered, StreamExt};
use lua_swarm::engine::TaskSpec;
use lua_swarm::lua::VmOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sliced_agents_in_one_task() {
    let w = world();
    w.agent(
        "spin",
        "return function(task) local x = 0 for i = 1, 200000 do x = x + i end return x end",
        VmOptions::default(),
    );
    let spawner = w.agents.get("spin").unwrap();
    let mut futs = FuturesUnordered::new();
    for i in 0..20 {
        let id = w
            .engine
            .start_task(&w.op, TaskSpec::new("spin", json!(i)))
            .unwrap();
        let (e, op, s) = (w.engine.clone(), w.op.clone(), spawner.clone());
        futs.push(async move { e.dispatch_attempt(&op, id, s.as_ref()).await });
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut n = 0;
        while let Some(r) = futs.next().await {
            r.unwrap();
            n += 1;
        }
        n
    })
    .await
    .expect("no hang");
    assert_eq!(all, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_map_over_sliced_agents() {
    for round in 0..5 {
        let r = common::flow::run_src(
            "slices_map",
            r#"
local swarm = require "swarm"
return swarm.blueprint "m1" {
  agents = { echo = swarm.agent.lua { run = function(task) local x = 0 for i = 1, 20000 do x = x + i end return x end } },
  flow = function(input)
    local items = {}
    for i = 1, 20 do items[i] = i end
    local r = swarm.map(items, function(i) return swarm.step("echo", i) end, { concurrency = 2 })
    return #r
  end,
}
"#,
            json!(null),
        )
        .await;
        assert_eq!(r.result, json!(20), "round {round}");
    }
}
