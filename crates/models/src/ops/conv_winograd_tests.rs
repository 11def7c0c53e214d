//! Proofs for the Winograd F(2×2, 3×3) kernels of `conv_winograd`: equal to the direct loop
//! convolution and to im2col/col2im in f64 (1e-12) and f32, on odd shapes with padding 0, 1
//! and 2, C ≠ O, batches of 1, 3 and 5, in blocks of 1, 2 and all images, on 1 and 2 threads,
//! with every SIMD version of the transforms the CPU runs (the same bits in each).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::conv_cpu::{conv_fwd_im2col, conv_input_grad_col2im, Geom};
use super::conv_shifted;
use super::conv_shifted_tests::{
    agrees, direct_forward, direct_input_grad, geom, rel_err, to_f32, to_f64, uniform, Case,
};
use super::conv_winograd::{self, Simd};

/// 3×3 kernels, stride 1: odd and even output sizes, one-pixel outputs, C < O and C > O; rows
/// of 1, 16 and 19 tiles (the transforms' passes take 16 tiles, the last one partly) and tile
/// counts per image that are not multiples of 16.
const SHAPES: [Case; 12] = [
    (1, 3, 7, 9, 5, 3, 3, 0),
    (3, 3, 7, 9, 5, 3, 3, 1),
    (3, 5, 6, 5, 2, 3, 3, 1),
    (1, 8, 11, 13, 16, 3, 3, 1),
    (3, 16, 9, 9, 7, 3, 3, 0),
    (3, 6, 8, 7, 4, 3, 3, 2),
    (3, 9, 3, 3, 4, 3, 3, 0),
    (5, 8, 15, 15, 12, 3, 3, 1),
    (2, 3, 6, 37, 4, 3, 3, 1),
    (1, 2, 5, 34, 3, 3, 3, 0),
    (2, 2, 7, 36, 3, 3, 3, 2),
    (2, 3, 4, 1, 2, 3, 3, 1),
];

/// f32 tolerance (relative to the largest output): Winograd's transforms add and subtract
/// up to 16 products per tile position before and after the gemm, so its f32 rounding error
/// is a few times the direct sum's; the largest seen on these shapes is printed by the test.
const F32_TOL: f64 = 1e-5;

#[test]
fn forward_and_input_gradient_equal_im2col_and_the_direct_loops() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let mut worst32 = 0.0f64;
    for shape in SHAPES {
        let g: Geom = geom(shape);
        let x = uniform(&mut rng, g.n * g.c * g.hw_in());
        let w = uniform(&mut rng, g.o * g.c * 9);
        let b = uniform(&mut rng, g.o);
        let dy = uniform(&mut rng, g.n * g.o * g.hw_out());
        let direct = (
            direct_forward(&x, &w, &b, &g),
            direct_input_grad(&dy, &w, &g),
        );
        let reference = (
            conv_fwd_im2col(&x, &w, Some(&b), &g),
            conv_input_grad_col2im(&dy, &w, &g),
        );
        let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));
        let direct32 = (
            direct_forward(&x32, &w32, &b32, &g),
            direct_input_grad(&dy32, &w32, &g),
        );
        let reference32 = (
            to_f64(&conv_fwd_im2col(&x32, &w32, Some(&b32), &g)),
            to_f64(&conv_input_grad_col2im(&dy32, &w32, &g)),
        );
        for blk in [1, 2, g.n] {
            // Every SIMD version this CPU runs (widest first) gives the widest's bits.
            let mut widest = None;
            for simd in Simd::available() {
                let what = format!("{shape:?} in blocks of {blk}, {simd:?}");
                let fwd = conv_winograd::forward_in_blocks(&x, &w, Some(&b), &g, blk, simd);
                agrees(
                    &fwd,
                    &direct.0,
                    &reference.0,
                    1e-12,
                    &format!("{what}: forward"),
                );
                let unbiased = conv_winograd::forward_in_blocks(&x, &w, None, &g, blk, simd);
                let im2col = conv_fwd_im2col(&x, &w, None, &g);
                assert!(rel_err(&unbiased, &im2col) < 1e-12, "{what}: no bias");
                let dx = conv_winograd::input_grad_in_blocks(&dy, &w, &g, Some(blk), simd);
                agrees(&dx, &direct.1, &reference.1, 1e-12, &format!("{what}: dx"));

                let fwd32 = conv_winograd::forward_in_blocks(&x32, &w32, Some(&b32), &g, blk, simd);
                let dx32 = conv_winograd::input_grad_in_blocks(&dy32, &w32, &g, Some(blk), simd);
                worst32 = worst32
                    .max(rel_err(&fwd32, &direct32.0))
                    .max(rel_err(&dx32, &direct32.1));
                agrees(
                    &fwd32,
                    &direct32.0,
                    &reference32.0,
                    F32_TOL,
                    &format!("{what}: f32 fwd"),
                );
                agrees(
                    &dx32,
                    &direct32.1,
                    &reference32.1,
                    F32_TOL,
                    &format!("{what}: f32 dx"),
                );
                let bits = (fwd, dx, fwd32, dx32);
                match &widest {
                    None => widest = Some(bits),
                    Some(first) => assert!(bits == *first, "{what}: not the widest's bits"),
                }
            }
        }
    }
    println!("largest f32 error relative to the largest output: {worst32:.2e}");
}

#[test]
fn the_dispatch_default_blocks_and_two_threads_give_the_same_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    // One block (threads inside gemm) and several blocks, the last one short.
    for n in [2, 9] {
        let g = geom((n, 16, 9, 9, 7, 3, 3, 1));
        assert!(conv_winograd::fits(&g), "the dispatch takes this shape");
        let x = uniform(&mut rng, g.n * g.c * g.hw_in());
        let w = uniform(&mut rng, g.o * g.c * 9);
        let dy = uniform(&mut rng, g.n * g.o * g.hw_out());
        let on = |threads: usize, blk: Option<usize>| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| match blk {
                None => (
                    conv_winograd::forward(&x, &w, None, &g),
                    conv_winograd::input_grad(&dy, &w, &g),
                ),
                Some(b) => (
                    conv_winograd::forward_in_blocks(&x, &w, None, &g, b, Simd::widest()),
                    conv_winograd::input_grad_in_blocks(&dy, &w, &g, Some(b), Simd::widest()),
                ),
            })
        };
        for blk in [None, Some(2)] {
            let one = on(1, blk);
            assert_eq!(on(2, blk), one, "n = {n}, blocks of {blk:?}");
            let direct = direct_forward(&x, &w, &vec![0.0; g.o], &g);
            assert!(rel_err(&one.0, &direct) < 1e-12);
        }
    }
}

/// Process CPU time in ms (as the benchmark examples measure).
fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 * 1e-6
}

/// Per-layer timing, Winograd against the shifted views, forward and input gradient, batch 128,
/// f32, the variants alternated round by round (medians of process CPU time): run with
/// `BREAKEVEN_WINOGRAD_BENCH=<rounds> RAYON_NUM_THREADS=1 cargo test --release -p
/// breakeven-models winograd_timing -- --nocapture`; without the variable it does nothing.
#[test]
fn winograd_timing() {
    let Some(rounds) = std::env::var("BREAKEVEN_WINOGRAD_BENCH")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
    else {
        return;
    };
    let shapes: [Case; 9] = [
        (128, 64, 32, 32, 64, 3, 3, 1),
        (128, 16, 32, 32, 64, 3, 3, 1),
        (128, 64, 16, 16, 128, 3, 3, 1),
        (128, 128, 16, 16, 128, 3, 3, 1),
        (128, 256, 8, 8, 256, 3, 3, 1),
        (128, 512, 4, 4, 512, 3, 3, 1),
        (128, 32, 32, 32, 32, 3, 3, 0),
        (128, 32, 15, 15, 64, 3, 3, 1),
        (128, 64, 15, 15, 64, 3, 3, 0),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    for shape in shapes {
        let g: Geom = geom(shape);
        let x = to_f32(&uniform(&mut rng, g.n * g.c * g.hw_in()));
        let w = to_f32(&uniform(&mut rng, g.o * g.c * 9));
        let dy = to_f32(&uniform(&mut rng, g.n * g.o * g.hw_out()));
        type Run<'a> = Box<dyn Fn() -> Vec<f32> + 'a>;
        let runs: [(&str, Run); 4] = [
            (
                "fwd winograd",
                Box::new(|| conv_winograd::forward(&x, &w, None, &g)),
            ),
            (
                "fwd shifted",
                Box::new(|| conv_shifted::forward(&x, &w, None, &g)),
            ),
            (
                "dx winograd",
                Box::new(|| conv_winograd::input_grad(&dy, &w, &g)),
            ),
            (
                "dx shifted",
                Box::new(|| conv_shifted::input_grad(&dy, &w, &g)),
            ),
        ];
        let mut ms = vec![Vec::new(); runs.len()];
        let only = std::env::var("BREAKEVEN_WINOGRAD_ONLY").unwrap_or_default();
        for round in 0..=rounds {
            for (i, (name, f)) in runs.iter().enumerate() {
                if !name.contains(only.as_str()) {
                    continue;
                }
                let s = cpu_ms();
                std::hint::black_box(f());
                if round > 0 {
                    ms[i].push(cpu_ms() - s);
                }
            }
        }
        let med: Vec<String> = ms
            .iter_mut()
            .zip(&runs)
            .map(|(t, (name, _))| {
                t.sort_by(f64::total_cmp);
                format!("{name} {:.1}", t.get(t.len() / 2).unwrap_or(&f64::NAN))
            })
            .collect();
        println!("{shape:?}: {}", med.join(", "));
    }
}
