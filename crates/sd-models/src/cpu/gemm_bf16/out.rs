//! Where a product's outputs land, and the parallel units that compute them.

use std::cell::RefCell;

use rayon::prelude::*;

use super::super::Shared;
use super::{MC, NC, NR};

thread_local! {
    /// The output buffer of the units this thread computes.
    static UNIT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Where an m × n product lands: c[i][j] at `i·ld + (j / cols)·image + j % cols`. A plain matrix
/// is one "image" as wide as the product ([`Out::matrix`]); a convolution over a batch puts the
/// columns of each image (`cols` = its pixels) into that image's `[cout, pixels]` block.
pub struct Out<'a> {
    pub c: &'a mut [f32],
    pub ld: usize,
    pub cols: usize,
    pub image: usize,
}

impl<'a> Out<'a> {
    /// A row-major matrix, rows `ld` apart.
    pub fn matrix(c: &'a mut [f32], ld: usize) -> Out<'a> {
        Out {
            c,
            ld,
            cols: usize::MAX,
            image: 0,
        }
    }

    pub(super) fn index(&self, i: usize, j: usize) -> usize {
        i * self.ld + (j / self.cols) * self.image + j % self.cols
    }

    /// Whether every (i, j) of an m × n product has its own place inside `c`.
    pub(super) fn holds(&self, m: usize, n: usize) -> bool {
        let (last_row, last) = (m - 1, self.index(m - 1, n - 1));
        let images_apart = n <= self.cols || self.image >= m * self.ld;
        self.cols > 0
            && self.ld >= self.cols.min(n)
            && images_apart
            && last < self.c.len()
            && (n <= self.cols || self.index(last_row, (n - 1) / self.cols * self.cols - 1) < last)
    }
}

/// Splits an m × n product into units of [`MC`] rows (whole blocks of `mr`) and [`NC`] columns
/// that run in parallel: `compute` fills a unit's buffer (its block rows `i0..i1` and panels
/// `j0..j1`, rows `width` floats apart), which is then copied to its place in `out`.
pub(super) fn units(
    (m, n, _): (usize, usize, usize),
    mr: usize,
    out: &Out,
    compute: impl Fn((usize, usize), (usize, usize), &mut [f32], usize) + Sync,
) {
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(NR));
    let (mg, ng) = (MC / mr, NC / NR);
    let units: Vec<(usize, usize)> = (0..mp.div_ceil(mg))
        .flat_map(|i| (0..np.div_ceil(ng)).map(move |j| (i, j)))
        .collect();
    let shared = Shared(out.c.as_ptr().cast_mut());
    units.par_iter().for_each(|&(ui, uj)| {
        let (i0, i1) = (ui * mg, ((ui + 1) * mg).min(mp));
        let (j0, j1) = (uj * ng, ((uj + 1) * ng).min(np));
        let width = (j1 - j0) * NR;
        let run = |buf: &mut Vec<f32>| {
            let need = (i1 - i0) * mr * width;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            compute((i0, i1), (j0, j1), &mut buf[..need], width);
            let (r0, c0) = (i0 * mr, j0 * NR);
            let (h, w) = ((i1 * mr).min(m) - r0, (j1 * NR).min(n) - c0);
            for r in 0..h {
                let mut j = c0;
                while j < c0 + w {
                    let len = (out.cols - j % out.cols).min(c0 + w - j);
                    // SAFETY: outputs (r0 + r, j …) are this unit's alone and inside `c`, a run
                    // never crosses an image (`Out::holds`, checked by `product_with`).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            buf.as_ptr().add(r * width + j - c0),
                            shared.at(out.index(r0 + r, j)),
                            len,
                        )
                    };
                    j += len;
                }
            }
        };
        UNIT.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => run(&mut buf),
            Err(_) => run(&mut Vec::new()),
        });
    });
}
