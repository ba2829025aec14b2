//! The GPU: one process-wide context, stream, cuBLAS handle and module of kernels compiled by
//! NVRTC for the device's architecture at first use. Memory is allocated through [`DBuf`], which
//! counts the bytes qgguf holds on the device (for the peak VRAM that qrun reports).
//!
//! Everything runs on one stream, in order: buffers need no events between kernels, and the
//! host waits only where it reads results back.

use anyhow::{anyhow, bail, Context, Result};
use cudarc::cublas::sys as blas_sys;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaModule, CudaStream};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const SOURCES: [&str; 5] = [
    include_str!("kernels/common.cuh"),
    include_str!("kernels/quant.cuh"),
    include_str!("kernels/linear.cu"),
    include_str!("kernels/ops.cu"),
    include_str!("kernels/attention.cu"),
];

/// The newest architecture the kernels are written for: they use nothing past Turing (sm_75),
/// so PTX for any newer device is compiled from the same source.
pub const BASELINE_ARCH: u32 = 75;

/// A kernel handle (a plain pointer into the loaded module, which lives as long as the GPU).
#[derive(Clone, Copy)]
struct Func(drv_sys::CUfunction);
// SAFETY: a CUfunction is an opaque handle of the driver, valid on any thread while its module
// is loaded; the module is kept in `Gpu` (a process-wide static) and never unloaded.
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer (0 for null).
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, Func>,
    pub name: String,
    pub compute_capability: (i32, i32),
    /// The `compute_XY` target the kernels were compiled for.
    pub arch: u32,
    /// Device memory free when qgguf's context was ready (for the device-level usage figure).
    free_at_start: usize,
    pub total_mem: usize,
}

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static LOW_FREE: AtomicU64 = AtomicU64::new(u64::MAX);

/// The GPU, initialized on first use; an error says what is missing (driver, device, NVRTC,
/// cuBLAS) and is the same on every call.
pub fn gpu() -> Result<&'static Gpu> {
    GPU.get_or_init(|| {
        // cudarc panics when a library or symbol cannot be loaded: turn that into an error.
        match std::panic::catch_unwind(Gpu::init) {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA libraries failed to load".into())),
        }
    })
    .as_ref()
    .map_err(|e| anyhow!("GPU unavailable: {e}"))
}

/// Bytes qgguf holds on the device now and at most, and the device's own count of memory in use
/// beyond what was in use when qgguf started (context, cuBLAS workspace and module included).
#[derive(Clone, Copy, Debug)]
pub struct VramStats {
    pub allocated: u64,
    pub peak_allocated: u64,
    pub device_used: u64,
    pub device_total: u64,
}

/// VRAM figures, or None when no GPU was initialized.
pub fn vram_stats() -> Option<VramStats> {
    let g = GPU.get()?.as_ref().ok()?;
    g.sample_free();
    let low = LOW_FREE.load(Ordering::Relaxed);
    Some(VramStats {
        allocated: ALLOCATED.load(Ordering::Relaxed),
        peak_allocated: PEAK.load(Ordering::Relaxed),
        device_used: (g.free_at_start as u64).saturating_sub(low),
        device_total: g.total_mem as u64,
    })
}

impl Gpu {
    fn init() -> Result<Gpu> {
        // SAFETY: these only try to open the shared libraries.
        unsafe {
            if !drv_sys::is_culib_present() {
                bail!("no NVIDIA driver: libcuda.so could not be loaded");
            }
            if !cudarc::nvrtc::sys::is_culib_present() {
                bail!("NVRTC (libnvrtc.so of the CUDA toolkit 12 or 13) could not be loaded: install the toolkit or add its lib64 folder to LD_LIBRARY_PATH");
            }
            if !blas_sys::is_culib_present() {
                bail!("cuBLAS (libcublas.so of the CUDA toolkit 12 or 13) could not be loaded: install it or add its folder to LD_LIBRARY_PATH");
            }
        }
        let count = CudaContext::device_count().context("the CUDA driver failed to start")?;
        if count < 1 {
            bail!("no CUDA GPU found");
        }
        let ctx = CudaContext::new(0).context("creating a CUDA context on GPU 0")?;
        // One stream, used in order: cudarc's per-buffer events are not needed.
        // SAFETY: no buffer has been allocated through cudarc yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let cc = ctx.compute_capability()?;
        let dev_arch = (cc.0 * 10 + cc.1) as u32;
        if dev_arch < BASELINE_ARCH {
            bail!("{name} has compute capability {}.{}; qgguf's kernels need 7.5 (Turing, T4) or newer", cc.0, cc.1);
        }
        // QGGUF_CUDA_ARCH=75 compiles for the baseline on a newer device (to test the T4 path).
        let arch = match std::env::var("QGGUF_CUDA_ARCH") {
            Ok(v) => {
                let a: u32 = v
                    .trim()
                    .trim_start_matches("sm_")
                    .trim_start_matches("compute_")
                    .parse()
                    .map_err(|_| anyhow!("QGGUF_CUDA_ARCH={v}: expected a number such as 75"))?;
                if a > dev_arch || a < BASELINE_ARCH {
                    bail!("QGGUF_CUDA_ARCH={v}: the device is sm_{dev_arch}; choose {BASELINE_ARCH}..={dev_arch}");
                }
                a
            }
            Err(_) => dev_arch,
        };
        let opts = cudarc::nvrtc::CompileOptions {
            arch: Some(Box::leak(format!("compute_{arch}").into_boxed_str())),
            name: Some("qgguf_kernels.cu".into()),
            ..Default::default()
        };
        let src = SOURCES.join("\n");
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                anyhow!(
                    "NVRTC failed on qgguf's kernels:\n{}",
                    log.to_string_lossy()
                )
            }
            other => anyhow!("NVRTC: {other}"),
        })?;
        let module = ctx
            .load_module(ptx)
            .context("loading the compiled kernels")?;
        let mut funcs = HashMap::new();
        for name in kernel_names() {
            let f = module
                .load_function(&name)
                .with_context(|| format!("kernel {name}"))?;
            funcs.insert(name, Func(f.cu_function()));
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| anyhow!("cuBLAS: {e:?}"))?;
        let (free, total) = ctx.mem_get_info()?;
        Ok(Gpu {
            ctx,
            stream,
            blas,
            _module: module,
            funcs,
            name,
            compute_capability: cc,
            arch,
            free_at_start: free,
            total_mem: total,
        })
    }

    /// Makes the context current on this thread (model calls may come from any thread).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread()?;
        Ok(())
    }

    fn sample_free(&self) {
        if self.ctx.bind_to_thread().is_ok() {
            if let Ok((free, _)) = drv::mem_get_info() {
                LOW_FREE.fetch_min(free as u64, Ordering::Relaxed);
            }
        }
    }

    /// Launches kernel `name` on the stream.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self
            .funcs
            .get(name)
            .with_context(|| format!("no kernel named {name}"))?;
        let mut params: Vec<*mut c_void> = args
            .iter()
            .map(|a| match a {
                Arg::P(v) => v as *const u64 as *mut c_void,
                Arg::I(v) => v as *const i32 as *mut c_void,
                Arg::L(v) => v as *const i64 as *mut c_void,
                Arg::F(v) => v as *const f32 as *mut c_void,
            })
            .collect();
        // SAFETY: `params` points at `args`, alive for the call; the kernels' signatures are
        // matched by their callers in this module tree (pointers, i32, i64, f32 in order), and
        // every buffer they touch is a live DBuf sized by the caller.
        unsafe {
            drv::launch_kernel(
                f.0,
                grid,
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .with_context(|| format!("launching {name}"))
    }

    /// Launches over `total` threads in blocks of 256.
    pub fn launch_1d(&self, name: &str, total: usize, args: &[Arg]) -> Result<()> {
        if total == 0 {
            return Ok(());
        }
        let blocks = total.div_ceil(256);
        self.launch(name, (blocks as u32, 1, 1), 256, args)
    }

    /// Copies host values to the device at byte offset `off` of `dst`.
    pub fn upload<T: Copy>(&self, dst: &DBuf, off: usize, src: &[T]) -> Result<()> {
        let bytes = std::mem::size_of_val(src);
        if off + bytes > dst.bytes {
            bail!(
                "upload of {bytes} bytes at {off} into a buffer of {}",
                dst.bytes
            );
        }
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: the range lies in the buffer (checked); the source is read before the call
        // returns (pageable host memory is staged synchronously by the driver).
        unsafe { drv::memcpy_htod_async(dst.ptr + off as u64, src, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// Copies device values at byte offset `off` of `src` to the host, and waits for them.
    pub fn download<T: Copy>(&self, src: &DBuf, off: usize, dst: &mut [T]) -> Result<()> {
        let bytes = std::mem::size_of_val(dst);
        if off + bytes > src.bytes {
            bail!(
                "download of {bytes} bytes at {off} from a buffer of {}",
                src.bytes
            );
        }
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: the range lies in the buffer; the stream is synchronized before `dst` is used.
        unsafe { drv::memcpy_dtoh_async(dst, src.ptr + off as u64, self.stream.cu_stream()) }?;
        self.sync()
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize()?;
        Ok(())
    }

    /// C (m x n, column-major, f32) = alpha op(A) op(B) + beta C with A and B in f16 and f32
    /// accumulation (tensor cores where the device has them), `batch` times with the given
    /// element strides. Column-major: a row-major matrix of r rows and ld columns is its
    /// transpose here.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
        &self,
        trans_a: bool,
        trans_b: bool,
        (m, n, k): (usize, usize, usize),
        (a, lda, stride_a): (u64, usize, usize),
        (b, ldb, stride_b): (u64, usize, usize),
        (c, ldc, stride_c): (u64, usize, usize),
        beta: f32,
        batch: usize,
    ) -> Result<()> {
        use blas_sys::{cublasComputeType_t as Ct, cublasOperation_t as Op, cudaDataType as Dt};
        let op = |t| if t { Op::CUBLAS_OP_T } else { Op::CUBLAS_OP_N };
        let alpha = 1.0f32;
        let i = |v: usize| -> Result<i32> {
            i32::try_from(v).map_err(|_| anyhow!("matrix dimension {v} exceeds cuBLAS's int"))
        };
        // SAFETY: pointers are live device buffers whose sizes the callers derive from the same
        // dimensions; alpha and beta are host scalars (the handle's default pointer mode).
        let r = unsafe {
            if batch == 1 {
                cudarc::cublas::result::gemm_ex(
                    *self.blas.handle(),
                    op(trans_a),
                    op(trans_b),
                    i(m)?,
                    i(n)?,
                    i(k)?,
                    &alpha as *const f32 as *const c_void,
                    a as *const c_void,
                    Dt::CUDA_R_16F,
                    i(lda)?,
                    b as *const c_void,
                    Dt::CUDA_R_16F,
                    i(ldb)?,
                    &beta as *const f32 as *const c_void,
                    c as *mut c_void,
                    Dt::CUDA_R_32F,
                    i(ldc)?,
                    Ct::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            } else {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *self.blas.handle(),
                    op(trans_a),
                    op(trans_b),
                    i(m)?,
                    i(n)?,
                    i(k)?,
                    &alpha as *const f32 as *const c_void,
                    a as *const c_void,
                    Dt::CUDA_R_16F,
                    i(lda)?,
                    stride_a as i64,
                    b as *const c_void,
                    Dt::CUDA_R_16F,
                    i(ldb)?,
                    stride_b as i64,
                    &beta as *const f32 as *const c_void,
                    c as *mut c_void,
                    Dt::CUDA_R_32F,
                    i(ldc)?,
                    stride_c as i64,
                    i(batch)?,
                    Ct::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
        };
        r.map_err(|e| anyhow!("cuBLAS GemmEx ({m} x {n} x {k}, batch {batch}): {e:?}"))
    }
}

/// Every kernel of the module (the type- and size-specific ones are made by macros).
fn kernel_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "rms_norm",
        "layer_norm",
        "add_bias",
        "silu_mul",
        "gelu_inplace",
        "tanh_inplace",
        "geglu",
        "rope_neox",
        "to_f16",
        "kv_store",
        "softmax_scores",
        "pool",
        "attn_combine",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for ty in super::linear::KERNEL_SUFFIXES {
        for k in ["matvec1", "matvec8", "dequant"] {
            names.push(format!("{k}_{ty}"));
        }
    }
    for hd in super::attention::HEAD_DIMS {
        names.push(format!("attn_causal_hd{hd}"));
    }
    names
}

/// Device memory of `bytes` bytes, freed on drop; counted in the VRAM figures.
pub struct DBuf {
    ptr: u64,
    bytes: usize,
}

impl DBuf {
    pub fn new(g: &Gpu, bytes: usize) -> Result<DBuf> {
        g.bind()?;
        let size = bytes.max(16);
        // SAFETY: a plain allocation; freed once in Drop.
        let ptr = unsafe { drv::malloc_sync(size) }.map_err(|e| {
            anyhow!(
                "out of GPU memory: allocating {:.1} MiB with {:.1} MiB already held by qgguf ({e:?})",
                size as f64 / 1048576.0,
                ALLOCATED.load(Ordering::Relaxed) as f64 / 1048576.0
            )
        })?;
        let now = ALLOCATED.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
        PEAK.fetch_max(now, Ordering::Relaxed);
        g.sample_free();
        Ok(DBuf { ptr, bytes: size })
    }

    /// A buffer holding `data`.
    pub fn from_slice<T: Copy>(g: &Gpu, data: &[T]) -> Result<DBuf> {
        let b = DBuf::new(g, std::mem::size_of_val(data))?;
        g.upload(&b, 0, data)?;
        Ok(b)
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The address of f32 element `i`.
    pub fn f32_at(&self, i: usize) -> u64 {
        self.ptr + 4 * i as u64
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn arg(&self) -> Arg {
        Arg::P(self.ptr)
    }
}

impl Drop for DBuf {
    fn drop(&mut self) {
        if let Some(Ok(g)) = GPU.get() {
            // Pending kernels may still read the buffer: let them finish first.
            let _ = g.sync();
            // SAFETY: allocated by malloc_sync in DBuf::new, freed once.
            let _ = unsafe { drv::free_sync(self.ptr) };
            ALLOCATED.fetch_sub(self.bytes as u64, Ordering::Relaxed);
        }
    }
}

/// A buffer that grows (never shrinks) to the size a pass needs.
#[derive(Default)]
pub struct Grow(Option<DBuf>);

impl Grow {
    pub fn get(&mut self, g: &Gpu, bytes: usize) -> Result<&DBuf> {
        if self.0.as_ref().is_none_or(|b| b.bytes < bytes) {
            self.0 = None;
            self.0 = Some(DBuf::new(g, bytes)?);
        }
        Ok(self.0.as_ref().unwrap())
    }

    pub fn ptr(&mut self, g: &Gpu, bytes: usize) -> Result<u64> {
        Ok(self.get(g, bytes)?.ptr)
    }
}
