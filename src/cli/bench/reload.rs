//! The `reload-latency` workload: save → live, through the real watcher.

use super::{engine, line};
use crate::reload::{LiveBlueprints, Reload, Watch};
use crate::run::RunOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn reload_latency() {
    let dir = std::env::temp_dir().join(format!("swarm-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let file = dir.join("bp.lua");
    let write = |i: usize| {
        let src = format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'bp' {{ flow = function() return {i} end }}\n"
        );
        std::fs::write(&file, src).expect("write");
    };
    write(0);
    let dev = Arc::new(LiveBlueprints::new(engine(), RunOptions::default()));
    dev.scan(&dir);
    let debounce = Duration::from_millis(50);
    let mut watch = Watch::start(dev, &dir, debounce).expect("watch");
    let mut samples = Vec::new();
    for i in 1..=50 {
        let t0 = Instant::now();
        write(i);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), watch.reloads.recv()).await {
                Ok(Some(Reload::Loaded { .. })) => break,
                Ok(Some(_)) => continue,
                _ => panic!("no reload within 5 s"),
            }
        }
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort_by(f64::total_cmp);
    line(
        "reload-latency",
        "debounce_ms",
        debounce.as_millis() as f64,
        "ms",
    );
    line(
        "reload-latency",
        "median_ms",
        samples[samples.len() / 2],
        "ms",
    );
    line(
        "reload-latency",
        "p95_ms",
        samples[samples.len() * 95 / 100],
        "ms",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
