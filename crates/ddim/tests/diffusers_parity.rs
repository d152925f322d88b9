//! Parity with diffusers' `DDIMScheduler` / `DDIMInverseScheduler`.
//!
//! Fixture: `tests/fixtures/scheduler/cases.json`, written by `tests/reference/gen_scheduler.py`
//! (diffusers' own `set_timesteps` and `step`, run in float64 with the float64 schedule; the step's
//! coefficients are read off by stepping unit vectors). Tolerances: timesteps exact; ᾱ and step
//! coefficients 1e-12 relative to max(1, |value|), i.e. f64 rounding of a few dozen operations.

use ddim::{DdimError, DdimSchedule, SchedulerConfig};
use serde_json::Value;

const TOL: f64 = 1e-12;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/scheduler/cases.json"
    );
    let text = std::fs::read_to_string(path)
        .expect("scheduler fixture (run tests/reference/gen_scheduler.py)");
    serde_json::from_str(&text).expect("valid fixture JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn close(ours: f64, reference: f64, what: &str) {
    let err = (ours - reference).abs() / reference.abs().max(1.0);
    assert!(
        err <= TOL,
        "{what}: ours {ours:e}, diffusers {reference:e}, rel err {err:e}"
    );
}

fn cases() -> Vec<(String, DdimSchedule, Value)> {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases").clone();
    assert!(cases.len() >= 8, "fixture has {} cases", cases.len());
    cases
        .into_iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let config = SchedulerConfig::from_json_value(c["config"].clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, DdimSchedule::new(config).unwrap(), c)
        })
        .collect()
}

#[test]
fn alphas_cumprod_match_diffusers() {
    for (name, schedule, case) in cases() {
        let ours = schedule.alphas_cumprod();
        let f64_ref = case["alphas_cumprod_f64"].as_array().unwrap();
        let f32_ref = case["alphas_cumprod_f32"].as_array().unwrap();
        assert_eq!(ours.len(), f64_ref.len(), "{name}");
        let mut worst_f32 = 0.0f64;
        for (i, (o, r)) in ours.iter().zip(f64_ref).enumerate() {
            close(*o, f(r), &format!("{name} alphas_cumprod[{i}]"));
            worst_f32 = worst_f32.max((o - f(&f32_ref[i])).abs() / f(&f32_ref[i]));
        }
        // diffusers keeps the schedule in float32: a running product of 1000 float32 factors drifts by
        // up to ~1000 half-ulps (6e-5) in the worst case; observed ≤ 1e-5.
        assert!(
            worst_f32 < 5e-5,
            "{name}: f32 schedule differs by {worst_f32:e}"
        );
    }
}

#[test]
fn timesteps_and_steps_match_diffusers() {
    let mut checked = 0;
    for (name, schedule, case) in cases() {
        for run in case["runs"].as_array().unwrap() {
            let steps = run["steps"].as_u64().unwrap() as usize;
            let expected: Vec<i64> = run["timesteps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            let n_train = schedule.config().num_train_timesteps as i64;
            if expected.iter().any(|&t| t >= n_train) {
                // diffusers lists a timestep it cannot step (IndexError); we refuse up front.
                let err = schedule.timesteps(steps).unwrap_err();
                assert!(
                    matches!(err, DdimError::TimestepOutOfRange { .. }),
                    "{name}/{steps}: {err}"
                );
                continue;
            }
            let ours = schedule.timesteps(steps).unwrap();
            assert_eq!(ours, expected, "{name} timesteps for {steps} steps");
            if let Some(inv) = run["inverse_timesteps"].as_array() {
                let inv: Vec<i64> = inv.iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(
                    schedule.inverse_timesteps(steps).unwrap(),
                    inv,
                    "{name} inverse timesteps, {steps} steps"
                );
            }
            for e in run["forward"].as_array().unwrap() {
                if e["a"].is_null() {
                    continue; // diffusers itself fails here (noted in the fixture's "error")
                }
                let t = e["timestep"].as_i64().unwrap();
                let (a, b) = schedule.step(t, steps, 0.0).unwrap().linear();
                close(a, f(&e["a"]), &format!("{name}/{steps} forward a at t={t}"));
                close(b, f(&e["b"]), &format!("{name}/{steps} forward b at t={t}"));
                checked += 1;
            }
            if let Some(inverse) = run["inverse"].as_array() {
                for e in inverse {
                    if e["a"].is_null() {
                        continue;
                    }
                    let t = e["timestep"].as_i64().unwrap();
                    let (a, b) = schedule.inverse_step(t, steps).unwrap().linear();
                    close(a, f(&e["a"]), &format!("{name}/{steps} inverse a at t={t}"));
                    close(b, f(&e["b"]), &format!("{name}/{steps} inverse b at t={t}"));
                    checked += 1;
                }
            }
            for e in run["eta"].as_array().into_iter().flatten() {
                if e["a"].is_null() {
                    continue;
                }
                let t = e["timestep"].as_i64().unwrap();
                let c = schedule.step(t, steps, f(&e["eta"])).unwrap();
                let (a, b) = c.linear();
                close(a, f(&e["a"]), &format!("{name}/{steps} eta a at t={t}"));
                close(b, f(&e["b"]), &format!("{name}/{steps} eta b at t={t}"));
                close(
                    c.noise_weight,
                    f(&e["c"]),
                    &format!("{name}/{steps} eta noise at t={t}"),
                );
            }
            for e in run["clip"].as_array().into_iter().flatten() {
                let t = e["timestep"].as_i64().unwrap();
                let c = schedule.step(t, steps, 0.0).unwrap();
                assert!(c.clip.is_some(), "{name}: clip_sample config must clip");
                let xs = e["sample"].as_array().unwrap();
                let ms = e["model_output"].as_array().unwrap();
                let outs = e["prev_sample"].as_array().unwrap();
                for i in 0..xs.len() {
                    let ours = c.apply(f(&xs[i]), f(&ms[i]), 0.0);
                    close(
                        ours,
                        f(&outs[i]),
                        &format!("{name}/{steps} clipped step at t={t}, element {i}"),
                    );
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} step coefficients checked");
}

/// A sampler step at t undoes the inverse step to t when the model output is the same.
///
/// This is exact for ε-prediction only: with v- or x₀-prediction the ε implied by the same output
/// depends on the noise level the step starts from, which differs between the two directions.
#[test]
fn sampler_step_undoes_inverse_step() {
    let mut checked = 0;
    for (name, schedule, _) in cases() {
        if schedule.config().clip_sample
            || schedule.config().prediction_type != ddim::PredictionType::Epsilon
        {
            continue;
        }
        checked += 1;
        for steps in [1, 7, 50, 250] {
            let Ok(ts) = schedule.inverse_timesteps(steps) else {
                continue;
            };
            let mut x = 0.37;
            let mut xs = vec![x];
            for (i, &t) in ts.iter().enumerate() {
                let m = ((i * 7919) % 13) as f64 / 6.0 - 1.0;
                x = schedule.inverse_step(t, steps).unwrap().apply(x, m, 0.0);
                xs.push(x);
            }
            for (i, &t) in ts.iter().enumerate().rev() {
                let m = ((i * 7919) % 13) as f64 / 6.0 - 1.0;
                let step = schedule.step(t, steps, 0.0).unwrap();
                let (a, b) = step.linear();
                x = step.apply(x, m, 0.0);
                let err = (x - xs[i]).abs() / xs[i].abs().max(1.0);
                // 1e-12, plus a few ulps of the step's gain |a|+|b| (~1/√ᾱ_t, large where the
                // capped cosine schedule ends), which amplifies the rounding of its input.
                let tol = 1e-12 + 4.0 * f64::EPSILON * (a.abs() + b.abs());
                assert!(
                    err <= tol,
                    "{name}/{steps}: round trip at t={t}: {x} vs {} ({err:e}, gain {})",
                    xs[i],
                    a.abs() + b.abs()
                );
            }
        }
    }
    assert!(
        checked >= 5,
        "only {checked} ε-prediction configs round-tripped"
    );
}

#[test]
fn bad_configs_and_steps_are_clear_errors() {
    let s = DdimSchedule::new(SchedulerConfig::default()).unwrap();
    assert!(matches!(
        s.timesteps(0),
        Err(DdimError::Steps { steps: 0, .. })
    ));
    assert!(matches!(
        s.timesteps(1001),
        Err(DdimError::Steps { steps: 1001, .. })
    ));
    for (json, field) in [
        (r#"{"beta_schedule": "sigmoid"}"#, "beta_schedule"),
        (r#"{"timestep_spacing": "karras"}"#, "timestep_spacing"),
        (r#"{"prediction_type": "flow"}"#, "prediction_type"),
    ] {
        let err = SchedulerConfig::from_json_str(json).unwrap_err();
        assert!(
            matches!(err, DdimError::Unsupported { field: f, .. } if f == field),
            "{err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = SchedulerConfig::from_json_str(r#"{"trained_betas": [0.1, 0.2]}"#).unwrap_err();
    assert!(
        err.to_string().contains("trained_betas has 2 values"),
        "{err}"
    );
    // A corrupt count is refused by name before it sizes the schedule's tables.
    for n in ["0", "1000000000000"] {
        let err = SchedulerConfig::from_json_str(&format!(r#"{{"num_train_timesteps": {n}}}"#))
            .unwrap_err();
        assert!(
            err.to_string().contains("num_train_timesteps") && err.to_string().contains(n),
            "{err}"
        );
    }
    // A device is not read until memory runs out.
    #[cfg(target_os = "linux")]
    {
        let err = SchedulerConfig::from_file("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
