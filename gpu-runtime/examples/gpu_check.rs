//! Runs the builtin matmul workloads' CUDA path on this machine's GPUs and cross-checks it with the
//! CPU reference: what `scripts/gpu-check.sh` prints. Needs the `cuda` feature and an NVIDIA
//! driver; exits 2 when there is no GPU, 1 when the GPU disagrees with the CPU.
//!
//! `cargo run --release -p gpu-runtime --features cuda --example gpu_check -- [SIZE ITERATIONS N
//! CHUNK_ROWS [MODEL]]`, MODEL being the Agora model NVML reports (`H100-80GB`); without it the
//! model is guessed from the CUDA device name.

use std::{process::ExitCode, sync::atomic::AtomicBool};

use gpu_runtime::{
    inventory::{GpuModel, KNOWN_GPU_MODELS},
    workloads::{
        cuda,
        matmul_benchmark::{FINDING_THRESHOLD, benchmark_finding, seeded_matrix, sgemm},
        verifiable_matmul::{self, Output, Params},
    },
};

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let model_arg = raw.get(4).cloned();
    let args: Vec<u32> = raw
        .iter()
        .take(4)
        .map(|a| {
            a.parse()
                .expect("SIZE ITERATIONS N CHUNK_ROWS are positive integers")
        })
        .collect();
    let arg = |i: usize, default: u32| args.get(i).copied().unwrap_or(default);
    let (size, iterations, n, chunk_rows) = (arg(0, 8192), arg(1, 20), arg(2, 1024), arg(3, 64));
    if !cuda::driver_present() {
        eprintln!(
            "FAIL: cannot load libcuda (NVIDIA driver) and libnvrtc (CUDA toolkit or \
             nvidia-cuda-nvrtc): no usable NVIDIA GPU here"
        );
        return ExitCode::from(2);
    }
    let never = AtomicBool::new(false);
    let mut ok = true;
    let name = match cuda::device_name(0) {
        Ok(name) => name,
        Err(e) => {
            eprintln!("FAIL: no CUDA device 0: {e}");
            return ExitCode::from(2);
        }
    };
    println!("device 0: {name}");

    // The FP32 GEMM kernel against the CPU reference on a small product.
    let small = 512;
    match cuda::sgemm_product(0, small) {
        Ok(gpu) => {
            let (a, b) = (seeded_matrix(small, 0, 0xA), seeded_matrix(small, 0, 0xB));
            let mut cpu = vec![0.0f32; small * small];
            sgemm(small, &a, &b, &mut cpu, &never).expect("not cancelled");
            let err = gpu
                .iter()
                .zip(&cpu)
                .map(|(g, c)| (g - c).abs())
                .fold(0.0f32, f32::max);
            let agrees = err < 1e-2;
            ok &= agrees;
            println!(
                "sgemm n={small}: max |GPU - CPU| = {err:.2e} -> {}",
                if agrees { "agrees" } else { "DISAGREES" }
            );
        }
        Err(e) => {
            ok = false;
            println!("sgemm n={small}: FAILED: {e}");
        }
    }

    // The benchmark figure, and how it compares with the peak of the model the name suggests.
    match cuda::sgemm_benchmark(0, size, iterations, &never) {
        Ok(m) => {
            println!(
                "matmul-benchmark n={size} x{iterations}: {:.2} TFLOPS FP32 ({:.3} s)",
                m.tflops, m.seconds
            );
            let product = |model: &str| model.split('-').next().unwrap_or(model).to_string();
            let word = |w: &str| name.split_whitespace().any(|n| n.eq_ignore_ascii_case(w));
            let named = |m: &&GpuModel| match &model_arg {
                Some(model) => m.name.eq_ignore_ascii_case(model),
                None => word(&product(m.name)),
            };
            for model in KNOWN_GPU_MODELS.iter().filter(named) {
                let peak = model.fp32_peak_tflops().unwrap_or(f64::NAN);
                println!(
                    "  as {}: {:.0}% of its {peak:.1} TFLOPS peak (finding below {:.0}%): {}",
                    model.name,
                    100.0 * m.tflops / peak,
                    FINDING_THRESHOLD * 100.0,
                    benchmark_finding(model.name, m.tflops).map_or(
                        "no finding".to_string(),
                        |f| format!("FINDING: {}", f.message)
                    )
                );
            }
        }
        Err(e) => {
            ok = false;
            println!("matmul-benchmark: FAILED: {e}");
        }
    }

    // The verifiable product: the GPU's commitments must equal the CPU reference's, bit for bit.
    let params = match Params::new(n, chunk_rows, 42) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("FAIL: {e}");
            return ExitCode::from(1);
        }
    };
    match cuda::verifiable_product(0, &params, &never) {
        Ok(c) => {
            let gpu = Output::from_product(&params, &c);
            let cpu = verifiable_matmul::compute_cpu(&params, &never).expect("not cancelled");
            let equal = gpu == cpu;
            let freivalds = verifiable_matmul::freivalds(&params, &c, 2, 7);
            ok &= equal && freivalds;
            println!(
                "verifiable-matmul n={n} chunkRows={chunk_rows}: {} chunks, digest {}",
                gpu.commitments.len(),
                hex::encode(gpu.digest)
            );
            println!(
                "  commitments equal CPU: {}",
                if equal { "yes" } else { "NO" }
            );
            println!(
                "  Freivalds check of the GPU's C: {}",
                if freivalds { "passes" } else { "FAILS" }
            );
        }
        Err(e) => {
            ok = false;
            println!("verifiable-matmul: FAILED: {e}");
        }
    }

    // A partial recompute (`chunks`): the first and the last chunk, on the GPU and the CPU.
    let last = params.chunks() as u32 - 1;
    let chunks: Vec<u32> = if last == 0 { vec![0] } else { vec![0, last] };
    let a = verifiable_matmul::input_a_chunks(&params, &chunks);
    match cuda::verifiable_rows(0, &params, &a, &never) {
        Ok(c) => {
            let gpu = Output::from_chunk_rows(&params, &chunks, &c);
            let cpu = verifiable_matmul::compute_chunks_cpu(&params, &chunks, &never)
                .expect("valid chunks, not cancelled");
            let equal = gpu == cpu;
            ok &= equal;
            println!(
                "  chunks {chunks:?} alone, commitments equal CPU: {}",
                if equal { "yes" } else { "NO" }
            );
        }
        Err(e) => {
            ok = false;
            println!("verifiable-matmul chunks {chunks:?}: FAILED: {e}");
        }
    }
    if ok {
        println!("OK");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: see above");
        ExitCode::from(1)
    }
}
