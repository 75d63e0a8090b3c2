//! The CUDA path of the matmul workloads, through `cudarc` (feature `cuda`).
//!
//! cudarc loads the driver (`libcuda`, from the NVIDIA driver) and NVRTC (`libnvrtc`, from the CUDA
//! toolkit or the `nvidia-cuda-nvrtc` package; no compiler or headers needed) at run time, so the
//! agent builds and starts on a machine without CUDA; [`driver_present`] is checked before any
//! call, because cudarc panics rather than erring when a library is missing. The kernels are CUDA C
//! compiled by NVRTC when first used, so nothing CUDA is needed to build, and no binary kernel is
//! shipped:
//!
//! - `sgemm`: a shared-memory tiled FP32 GEMM (64×64 output tile per block of 256 threads, each
//!   thread 4×4 outputs, 16-wide K slices). Plain CUDA cores, no tensor cores, so the figure is
//!   comparable with the FP32 peak in the model table;
//! - `matmul_mod_p`: C = A·B mod 2³¹ − 1 with the same folding reduction as the CPU reference
//!   ([`super::verifiable_matmul`]), so both give the same bits and so the same commitments.
#![allow(unsafe_code)]

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use cudarc::{
    driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg},
    nvrtc::compile_ptx,
};

use super::{
    WorkloadError, check_cancel,
    matmul_benchmark::{Measurement, seeded_matrix},
    verifiable_matmul::{self, MODULUS},
};

const KERNELS: &str = r#"
#define TILE 64
#define SLICE 16
#define MODULUS 2147483647ULL

// C = A·B, n×n row-major. Block: 256 threads as 16×16; thread (tx, ty) computes rows ty + 16i and
// columns tx + 16j (i, j < 4) of the block's 64×64 tile, which keeps shared-memory reads free of
// bank conflicts.
extern "C" __global__ void sgemm(const float* A, const float* B, float* C, int n) {
    __shared__ float As[SLICE][TILE];
    __shared__ float Bs[SLICE][TILE];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
    float acc[4][4] = {{0.0f}};
    for (int k0 = 0; k0 < n; k0 += SLICE) {
        for (int l = 0; l < 4; ++l) {
            const int idx = threadIdx.x + l * 256;
            const int ar = idx / SLICE, ac = idx % SLICE;
            const int gar = row0 + ar, gac = k0 + ac;
            As[ac][ar] = (gar < n && gac < n) ? A[(size_t)gar * n + gac] : 0.0f;
            const int br = idx / TILE, bc = idx % TILE;
            const int gbr = k0 + br, gbc = col0 + bc;
            Bs[br][bc] = (gbr < n && gbc < n) ? B[(size_t)gbr * n + gbc] : 0.0f;
        }
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < SLICE; ++k) {
            float a[4], b[4];
            #pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[k][ty + 16 * i];
            #pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx + 16 * j];
            #pragma unroll
            for (int i = 0; i < 4; ++i)
                #pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
        const int r = row0 + ty + 16 * i;
        for (int j = 0; j < 4; ++j) {
            const int c = col0 + tx + 16 * j;
            if (r < n && c < n) C[(size_t)r * n + c] = acc[i][j];
        }
    }
}

// C = A·B mod 2^31 - 1 for A of `rows` rows and B n×n, row-major (C: rows×n), entries below the
// modulus; `rows` is n for the whole product, fewer for a partial recompute's chosen rows. 16×16
// threads per block, one output each. The accumulator is folded after every product (2^31 ≡ 1),
// staying below 2^33, as on the CPU; the final reduction is the CPU's too.
extern "C" __global__ void matmul_mod_p(const unsigned int* A, const unsigned int* B,
                                        unsigned int* C, int n, int rows) {
    __shared__ unsigned int As[16][16];
    __shared__ unsigned int Bs[16][16];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int r = blockIdx.y * 16 + ty, c = blockIdx.x * 16 + tx;
    unsigned long long acc = 0;
    for (int k0 = 0; k0 < n; k0 += 16) {
        As[ty][tx] = (r < rows && k0 + tx < n) ? A[(size_t)r * n + k0 + tx] : 0u;
        Bs[ty][tx] = (k0 + ty < n && c < n) ? B[(size_t)(k0 + ty) * n + c] : 0u;
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < 16; ++k) {
            const unsigned long long x = acc + (unsigned long long)As[ty][k] * Bs[k][tx];
            acc = (x & MODULUS) + (x >> 31);
        }
        __syncthreads();
    }
    if (r < rows && c < n) {
        unsigned long long x = (acc & MODULUS) + (acc >> 31);
        x = (x & MODULUS) + (x >> 31);
        unsigned int v = (unsigned int)x;
        C[(size_t)r * n + c] = v >= MODULUS ? v - (unsigned int)MODULUS : v;
    }
}
"#;

/// Whether the CUDA driver library can be loaded. Without it cudarc panics on first use.
pub fn driver_present() -> bool {
    // SAFETY: only tries to load the shared library and reports whether it loaded.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// [`driver_present`] as an error that says what to install.
fn require_driver() -> Result<(), WorkloadError> {
    if driver_present() {
        Ok(())
    } else {
        Err(WorkloadError::Cuda(
            "cannot load libcuda (NVIDIA driver) and libnvrtc (CUDA toolkit or the \
             nvidia-cuda-nvrtc package): install both to run the matmul builtins on GPUs"
                .into(),
        ))
    }
}

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> WorkloadError + '_ {
    move |e| WorkloadError::Cuda(format!("{what}: {e}"))
}

/// A device with the kernels loaded.
struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    sgemm: CudaFunction,
    matmul_mod_p: CudaFunction,
}

impl Device {
    fn open(ordinal: usize) -> Result<Self, WorkloadError> {
        require_driver()?;
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("opening the device"))?;
        let ptx = compile_ptx(KERNELS)
            .map_err(|e| WorkloadError::Cuda(format!("compiling the kernels with NVRTC: {e}")))?;
        let module = ctx
            .load_module(ptx)
            .map_err(cuda_err("loading the kernels"))?;
        Ok(Self {
            stream: ctx.default_stream(),
            sgemm: module.load_function("sgemm").map_err(cuda_err("sgemm"))?,
            matmul_mod_p: module
                .load_function("matmul_mod_p")
                .map_err(cuda_err("matmul_mod_p"))?,
            ctx,
        })
    }
}

/// The device's name as the driver reports it (`NVIDIA H200`, …).
pub fn device_name(ordinal: usize) -> Result<String, WorkloadError> {
    Device::open(ordinal)?
        .ctx
        .name()
        .map_err(cuda_err("reading the device name"))
}

/// A device UUID in NVML's spelling (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), which is how the
/// inventory and the hub name GPUs.
fn uuid_string(bytes: &[std::ffi::c_char; 16]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{:02x}", *b as u8)).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

/// The CUDA ordinals of the GPUs with UUIDs `gpus`; device 0 when none is named (a manual run).
pub fn ordinals(gpus: &[String]) -> Result<Vec<usize>, WorkloadError> {
    require_driver()?;
    if gpus.is_empty() {
        return Ok(vec![0]);
    }
    let count = CudaContext::device_count().map_err(cuda_err("counting devices"))?;
    let mut uuids = Vec::new();
    for ordinal in 0..count.max(0) as usize {
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("opening a device"))?;
        let uuid = ctx.uuid().map_err(cuda_err("reading a device UUID"))?;
        uuids.push(uuid_string(&uuid.bytes));
    }
    gpus.iter()
        .map(|gpu| {
            uuids
                .iter()
                .position(|u| u.eq_ignore_ascii_case(gpu))
                .ok_or_else(|| WorkloadError::Cuda(format!("no CUDA device has UUID {gpu}")))
        })
        .collect()
}

fn grid(n: usize, tile: usize) -> u32 {
    n.div_ceil(tile) as u32
}

impl Device {
    /// Launches the FP32 GEMM once on device buffers.
    fn launch_sgemm(
        &self,
        n: usize,
        a: &cudarc::driver::CudaSlice<f32>,
        b: &cudarc::driver::CudaSlice<f32>,
        c: &mut cudarc::driver::CudaSlice<f32>,
    ) -> Result<(), WorkloadError> {
        let n_arg = n as i32;
        let cfg = LaunchConfig {
            grid_dim: (grid(n, 64), grid(n, 64), 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.sgemm);
        launch.arg(a).arg(b).arg(c).arg(&n_arg);
        // SAFETY: the kernel's signature is (const float*, const float*, float*, int), matching
        // the arguments; every buffer holds n×n elements and the kernel guards all indices by n.
        unsafe { launch.launch(cfg) }.map_err(cuda_err("launching sgemm"))?;
        Ok(())
    }
}

impl Device {
    /// The benchmark's seeded n×n inputs A and B on the device, and a zeroed C for the product.
    fn seeded_operands(&self, n: usize) -> Result<(Matrix, Matrix, Matrix), WorkloadError> {
        let a = self
            .stream
            .clone_htod(&seeded_matrix(n, 0, 0xA))
            .map_err(cuda_err("copying A"))?;
        let b = self
            .stream
            .clone_htod(&seeded_matrix(n, 0, 0xB))
            .map_err(cuda_err("copying B"))?;
        let c = self
            .stream
            .alloc_zeros::<f32>(n * n)
            .map_err(cuda_err("allocating C"))?;
        Ok((a, b, c))
    }
}

/// An n×n FP32 matrix in device memory.
type Matrix = cudarc::driver::CudaSlice<f32>;

/// The FP32 GEMM on device `ordinal` for the benchmark's seeded inputs: one untimed warm-up,
/// then `iterations` timed products, each synchronised (so cancel is seen between them).
pub fn sgemm_benchmark(
    ordinal: usize,
    size: u32,
    iterations: u32,
    cancel: &AtomicBool,
) -> Result<Measurement, WorkloadError> {
    if size == 0 || iterations == 0 {
        return Err(WorkloadError::Invalid(
            "size and iterations must be at least 1".into(),
        ));
    }
    let device = Device::open(ordinal)?;
    let n = size as usize;
    let (a, b, mut c) = device.seeded_operands(n)?;
    device.launch_sgemm(n, &a, &b, &mut c)?;
    device.stream.synchronize().map_err(cuda_err("warm-up"))?;
    let start = Instant::now();
    for _ in 0..iterations {
        check_cancel(cancel)?;
        device.launch_sgemm(n, &a, &b, &mut c)?;
        device.stream.synchronize().map_err(cuda_err("sgemm"))?;
    }
    Ok(Measurement::new(
        size,
        iterations,
        start.elapsed().as_secs_f64(),
    ))
}

/// The FP32 GEMM's output for the seeded n×n inputs, to compare with the CPU reference.
pub fn sgemm_product(ordinal: usize, n: usize) -> Result<Vec<f32>, WorkloadError> {
    let device = Device::open(ordinal)?;
    let (a, b, mut c) = device.seeded_operands(n)?;
    device.launch_sgemm(n, &a, &b, &mut c)?;
    device
        .stream
        .clone_dtoh(&c)
        .map_err(cuda_err("copying C back"))
}

/// C = A·B mod p for `params` on device `ordinal`, row-major: what the commitments are made of.
pub fn verifiable_product(
    ordinal: usize,
    params: &verifiable_matmul::Params,
    cancel: &AtomicBool,
) -> Result<Vec<u32>, WorkloadError> {
    verifiable_rows(ordinal, params, &verifiable_matmul::input_a(params), cancel)
}

/// `a_rows` (whole rows of A, row-major: all of A, or a partial recompute's chunks' rows) times B
/// mod p on device `ordinal`: the matching rows of C, row-major.
pub fn verifiable_rows(
    ordinal: usize,
    params: &verifiable_matmul::Params,
    a_rows: &[u32],
    cancel: &AtomicBool,
) -> Result<Vec<u32>, WorkloadError> {
    let n = params.n();
    let rows = a_rows.len() / n;
    if rows == 0 || rows * n != a_rows.len() {
        return Err(WorkloadError::Invalid(format!(
            "{} elements are not whole rows of length {n}",
            a_rows.len()
        )));
    }
    let device = Device::open(ordinal)?;
    check_cancel(cancel)?;
    let a = device
        .stream
        .clone_htod(a_rows)
        .map_err(cuda_err("copying A"))?;
    let b = device
        .stream
        .clone_htod(&verifiable_matmul::input_b(params))
        .map_err(cuda_err("copying B"))?;
    let mut c = device
        .stream
        .alloc_zeros::<u32>(rows * n)
        .map_err(cuda_err("allocating C"))?;
    let (n_arg, rows_arg) = (n as i32, rows as i32);
    let cfg = LaunchConfig {
        grid_dim: (grid(n, 16), grid(rows, 16), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = device.stream.launch_builder(&device.matmul_mod_p);
    launch
        .arg(&a)
        .arg(&b)
        .arg(&mut c)
        .arg(&n_arg)
        .arg(&rows_arg);
    // SAFETY: the kernel's signature is (const unsigned*, const unsigned*, unsigned*, int, int),
    // matching the arguments; A and C hold rows×n elements, B n×n, and the kernel guards every
    // index by rows and n.
    unsafe { launch.launch(cfg) }.map_err(cuda_err("launching matmul_mod_p"))?;
    let c = device
        .stream
        .clone_dtoh(&c)
        .map_err(cuda_err("copying C back"))?;
    debug_assert!(c.iter().all(|&x| x < MODULUS));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_spelled_as_nvml_does() {
        let bytes: [std::ffi::c_char; 16] =
            std::array::from_fn(|i| (i as u8).wrapping_mul(17) as std::ffi::c_char);
        assert_eq!(
            uuid_string(&bytes),
            "GPU-00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    /// Without a driver (as on CI) the CUDA path refuses cleanly instead of panicking.
    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if driver_present() {
            return; // a GPU machine: the gpu-check example exercises the real path
        }
        let err = sgemm_benchmark(0, 64, 1, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, WorkloadError::Cuda(_)), "{err}");
    }
}
