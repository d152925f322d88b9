//! Invert once, edit many: an inversion continued step by step equals one run at once, bit for
//! bit, and the progress observer sees every step's latents and can stop a run.

use std::cell::{Cell, RefCell};

use burn::tensor::{Device, Tensor};
use inversion::image::image_to_tensor;
use inversion::{
    EditOptions, InversionError, LoadOptions, NoProgress, Phase, Pipeline, Progress, edit_from,
    edit_latents, extend_inversion, invert,
};
use test_support::fixtures;

fn pipeline() -> Pipeline {
    let dir = fixtures().join("models/tiny-sd1");
    Pipeline::load(&dir, &LoadOptions::new(Device::flex())).unwrap()
}

fn photo(p: &Pipeline) -> Tensor<4> {
    let img = image::open(fixtures().join("images/sd1.png"))
        .unwrap()
        .to_rgb8();
    image_to_tensor(&img, p.native_size(), p.device())
}

fn bits(x: &Tensor<4>) -> Vec<u32> {
    let data = x.to_data().convert::<f32>();
    data.as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn a_continued_inversion_equals_one_run_bit_for_bit() {
    let p = pipeline();
    let x0 = p.encode(photo(&p), &NoProgress).unwrap();
    let cond = p.conditioning("a photo", "", 2.0).unwrap();
    let whole = invert(&p, x0.clone(), &cond, 6, 6, &NoProgress).unwrap();
    let mut part = invert(&p, x0, &cond, 6, 2, &NoProgress).unwrap();
    assert_eq!(part.len(), 2);
    extend_inversion(&p, &mut part, &cond, 4, &NoProgress).unwrap();
    extend_inversion(&p, &mut part, &cond, 3, &NoProgress).unwrap(); // long enough: nothing to do
    assert_eq!(part.len(), 4);
    extend_inversion(&p, &mut part, &cond, 99, &NoProgress).unwrap(); // capped at the 6 steps
    assert_eq!(part.timesteps, whole.timesteps);
    assert_eq!(bits(&part.latents), bits(&whole.latents));
}

#[test]
fn an_edit_from_a_kept_inversion_equals_the_whole_edit() {
    let p = pipeline();
    let o = EditOptions {
        start_step: 2,
        ..EditOptions::plain(5)
    };
    let (t, whole) = edit_latents(&p, photo(&p), "a photo", "a cat", &o, &NoProgress).unwrap();
    // The kept inversion reaches start step 2; an edit from step 1 needs one more entry.
    let mut kept = t.clone();
    let o1 = EditOptions {
        start_step: 1,
        ..o.clone()
    };
    let cond = p.conditioning("a photo", "", o.inversion_guidance).unwrap();
    extend_inversion(&p, &mut kept, &cond, o1.steps - o1.start_step, &NoProgress).unwrap();
    let (_, fresh) = edit_latents(&p, photo(&p), "a photo", "a cat", &o1, &NoProgress).unwrap();
    let from_kept = |o: &EditOptions| edit_from(&p, &kept, "a photo", "a cat", o, &NoProgress);
    assert_eq!(bits(&from_kept(&o).unwrap()), bits(&whole));
    assert_eq!(bits(&from_kept(&o1).unwrap()), bits(&fresh));
}

/// Counts steps and latents, and asks to stop after `stop_after` steps.
struct Watcher {
    steps: Cell<usize>,
    shapes: RefCell<Vec<(Phase, [usize; 4])>>,
    stop_after: usize,
}

impl Progress for Watcher {
    fn step(&self, _phase: Phase) {
        self.steps.set(self.steps.get() + 1);
    }
    fn latents(&self, phase: Phase, x: &Tensor<4>) {
        self.shapes.borrow_mut().push((phase, x.dims()));
    }
    fn cancelled(&self) -> bool {
        self.steps.get() >= self.stop_after
    }
}

#[test]
fn the_observer_sees_each_step_and_can_stop_the_run() {
    let p = pipeline();
    let watch = |stop_after| Watcher {
        steps: Cell::new(0),
        shapes: RefCell::new(vec![]),
        stop_after,
    };
    let o = EditOptions {
        start_step: 1,
        ..EditOptions::plain(4)
    };
    let all = watch(usize::MAX);
    edit_latents(&p, photo(&p), "a photo", "a cat", &o, &all).unwrap();
    let shapes = all.shapes.borrow();
    let ((w, h), f) = (p.native_size(), p.vae_factor());
    let latent = [1, p.unet_config().in_channels, h / f, w / f];
    let expected: Vec<_> = [(Phase::Inversion, latent); 3]
        .into_iter()
        .chain([(Phase::Sampling, latent); 3])
        .collect();
    assert_eq!(*shapes, expected);
    let stopped = watch(2);
    let err = edit_latents(&p, photo(&p), "a photo", "a cat", &o, &stopped).unwrap_err();
    assert!(matches!(err, InversionError::Cancelled), "{err}");
    assert_eq!(
        stopped.steps.get(),
        2,
        "no step after the observer asked to stop"
    );
}
