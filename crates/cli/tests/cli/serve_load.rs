//! Load on `ddim-edit serve --model toy`: 4 clients submit 20 jobs in all, at once. Every job
//! completes exactly once, with its own settings' image, in the order the server accepted them,
//! and the server's memory stays flat.

use std::collections::HashMap;

use serde_json::Value;

use super::serve::{Server, toy_job, toy_photo};

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const COLOURS: [&str; 4] = ["blue", "green", "red", "purple"];

/// Client `c`'s `j`-th job: each client its colour, each job its start step.
fn job(image: &str, c: usize, j: usize) -> Value {
    let edit = format!("a {} triangle on a textured background", COLOURS[c]);
    toy_job(image, &edit, 1 + j % 3)
}

/// Each of 4 clients submits its 5 jobs at once, then waits for them: (job, final status) each.
fn submit_from_four_clients(server: &Server, image: &str) -> Vec<Vec<(usize, Value)>> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                scope.spawn(move || {
                    let ids: Vec<(usize, String)> = (0..5)
                        .map(|j| {
                            let (code, st) = server.submit(&job(image, c, j));
                            assert_eq!(code, 202, "{st}");
                            (j, st["id"].as_str().unwrap().to_string())
                        })
                        .collect();
                    ids.into_iter()
                        .map(|(j, id)| {
                            (
                                j,
                                server
                                    .wait(&id, |s| s["state"] == "done" || s["state"] == "failed"),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

/// Same settings, same bytes; another colour, another image: nothing was mixed.
fn assert_nothing_mixed(pngs: &HashMap<(usize, usize), Vec<u8>>) {
    for j in 0..5 {
        for c in 0..4 {
            if j >= 3 {
                assert_eq!(
                    pngs[&(c, j)],
                    pngs[&(c, j - 3)],
                    "client {c}: jobs {j} and {} agree",
                    j - 3
                );
            }
            for other in 0..c {
                assert_ne!(
                    pngs[&(c, j)],
                    pngs[&(other, j)],
                    "clients {c} and {other}, job {j}"
                );
            }
        }
    }
}

#[test]
fn four_clients_twenty_jobs_none_lost_or_mixed_in_order_memory_flat() {
    let server = Server::start();
    let (_, up) = server.upload(&toy_photo());
    let image = up["id"].as_str().unwrap().to_string();
    // A first round, so that the memory measured after it holds the model and its buffers.
    let (_, st) = server.submit(&job(&image, 0, 0));
    server.wait(st["id"].as_str().unwrap(), |s| s["state"] == "done");
    let warm = memory(server.pid());

    let finished = submit_from_four_clients(&server, &image);
    let after = memory(server.pid());

    let mut pngs: HashMap<(usize, usize), Vec<u8>> = HashMap::new();
    let mut order = vec![];
    for (c, jobs) in finished.iter().enumerate() {
        let submitted: Vec<u64> = jobs
            .iter()
            .map(|(_, s)| s["submitted"].as_u64().unwrap())
            .collect();
        assert!(
            submitted.windows(2).all(|w| w[0] < w[1]),
            "client {c}'s jobs were accepted in order"
        );
        for (j, st) in jobs {
            assert_eq!(st["state"], "done", "{st}");
            for (key, value) in job(&image, c, *j).as_object().unwrap() {
                assert_eq!(
                    &st["settings"][key], value,
                    "each job ran its own settings: {st}"
                );
            }
            order.push((
                st["submitted"].as_u64().unwrap(),
                st["started"].as_u64().unwrap(),
            ));
            let (code, png) = server.get(&format!(
                "/api/jobs/{}/result.png",
                st["id"].as_str().unwrap()
            ));
            assert_eq!(code, 200);
            pngs.insert((c, *j), png);
        }
    }
    order.sort();
    assert_eq!(order.len(), 20);
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "started in the order accepted: {order:?}"
    );
    assert_nothing_mixed(&pngs);
    eprintln!(
        "serve load: RSS after one job {} MiB, after 21 {} MiB; peak {} MiB",
        warm.0 >> 10,
        after.0 >> 10,
        after.1 >> 10
    );
    assert!(
        after.0 < warm.0 + (64 << 10),
        "memory grew from {} to {} KiB",
        warm.0,
        after.0
    );
}
