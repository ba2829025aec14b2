//! The GPU: one process-wide context, stream, cuBLAS handle and module of kernels compiled by
//! NVRTC for the device's architecture (the PTX is cached on disk, keyed by the source and the
//! target, so later runs skip the compiler). Memory is allocated through [`DBuf`], which counts
//! the bytes qgguf holds on the device (for the peak VRAM that qrun reports); host staging
//! buffers are pinned ([`Pinned`]) so that copies are asynchronous and may sit in a graph.
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

const SOURCES: [&str; 7] = [
    include_str!("kernels/common.cuh"),
    include_str!("kernels/quant.cuh"),
    include_str!("kernels/linear.cu"),
    include_str!("kernels/matvec.cu"),
    include_str!("kernels/ops.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/sample.cu"),
];

/// The oldest architecture the kernels are written for (Turing, the T4): nothing past sm_75,
/// so PTX for any newer device is compiled from the same source.
pub const BASELINE_ARCH: u32 = 75;

/// A kernel handle (a plain pointer into the loaded module, which lives as long as the GPU).
#[derive(Clone, Copy)]
pub struct Func(drv_sys::CUfunction);
// SAFETY: a CUfunction is an opaque handle of the driver, valid on any thread while its module
// is loaded; the module is kept in `Gpu` (a process-wide static) and never unloaded.
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

/// One scalar kernel argument, passed by value.
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
    pub sm_count: usize,
    /// Shared memory a block may ask for beyond the default 48 KiB (opt-in).
    pub smem_optin: usize,
    /// Device memory free when qgguf's context was ready (for the device-level usage figure).
    free_at_start: usize,
    pub total_mem: usize,
}

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();
/// Stream synchronizations so far: a staging buffer whose copy was queued before the latest
/// one is free again.
static SYNCS: AtomicU64 = AtomicU64::new(0);
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

/// The target the kernels are compiled for: the device's own, or QGGUF_CUDA_ARCH (e.g. 75, to
/// run the T4's code path on a newer GPU).
fn target_arch(dev_arch: u32) -> Result<u32> {
    match std::env::var("QGGUF_CUDA_ARCH") {
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
            Ok(a)
        }
        Err(_) => Ok(dev_arch),
    }
}

/// Compiles the kernels for `compute_{arch}`, or reads the PTX a previous run cached in
/// `cache` (a folder; None: compile without caching).
pub fn kernels_ptx(arch: u32, cache: Option<&std::path::Path>) -> Result<String> {
    use sha2::{Digest, Sha256};
    let src = SOURCES.join("\n");
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(arch.to_le_bytes());
    let (mut maj, mut min) = (0i32, 0i32);
    // SAFETY: two out-parameters; NVRTC was checked to be loadable before.
    let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut maj, &mut min) };
    h.update(maj.to_le_bytes());
    h.update(min.to_le_bytes());
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = cache.map(|d| d.join("cuda").join(format!("kernels-{key}.ptx")));
    if let Some(Ok(ptx)) = cache.as_ref().map(std::fs::read_to_string) {
        return Ok(ptx);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(Box::leak(format!("compute_{arch}").into_boxed_str())),
        name: Some("qgguf_kernels.cu".into()),
        options: vec!["-std=c++17".into()],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            anyhow!(
                "NVRTC failed on qgguf's kernels:\n{}",
                log.to_string_lossy()
            )
        }
        other => anyhow!("NVRTC: {other}"),
    })?;
    let text = ptx.to_src();
    if let Some(path) = cache {
        // A cache that cannot be written only costs the next run a compilation.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = crate::atomic_file::write_atomic(&path, text.as_bytes());
    }
    Ok(text)
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
        // One stream, used in order: cudarc's per-buffer events are not needed (and would
        // break graph capture).
        // SAFETY: no buffer has been allocated through cudarc yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let cc = ctx.compute_capability()?;
        let dev_arch = (cc.0 * 10 + cc.1) as u32;
        if dev_arch < BASELINE_ARCH {
            bail!("{name} has compute capability {}.{}; qgguf's kernels need 7.5 (Turing, T4) or newer", cc.0, cc.1);
        }
        let arch = target_arch(dev_arch)?;
        let ptx = kernels_ptx(arch, crate::cache_dir().as_deref())?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .context("loading the compiled kernels")?;
        let attr = |a| -> Result<usize> {
            Ok(ctx.attribute(a).context("reading a device attribute")? as usize)
        };
        use drv_sys::CUdevice_attribute as A;
        let sm_count = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let smem_optin = attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let mut funcs = HashMap::new();
        for name in super::kernels::names() {
            let f = module
                .load_function(&name)
                .with_context(|| format!("kernel {name}"))?;
            funcs.insert(name, Func(f.cu_function()));
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| anyhow!("cuBLAS: {e:?}"))?;
        let (free, total) = ctx.mem_get_info()?;
        let g = Gpu {
            ctx,
            stream,
            blas,
            _module: module,
            funcs,
            name,
            compute_capability: cc,
            arch,
            sm_count,
            smem_optin,
            free_at_start: free,
            total_mem: total,
        };
        for name in super::kernels::large_smem() {
            let f = g.func(&name)?;
            // SAFETY: a function of the loaded module; the value is within the device's limit.
            unsafe {
                drv::function::set_function_attribute(
                    f.0,
                    drv_sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    (smem_optin - 1024) as i32,
                )
            }
            .with_context(|| format!("kernel {name}: shared memory limit"))?;
        }
        Ok(g)
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

    /// The kernel `name` (resolved once; launches take the handle).
    pub fn func(&self, name: &str) -> Result<Func> {
        self.funcs
            .get(name)
            .copied()
            .with_context(|| format!("no kernel named {name}"))
    }

    /// Largest dynamic shared memory a kernel of the large-memory set may use.
    pub fn smem_limit(&self) -> usize {
        self.smem_optin - 1024
    }

    /// Launches `f` with its arguments' addresses in `params` (each points at a value of the
    /// type and order of the kernel's parameters).
    pub fn launch_raw(
        &self,
        f: Func,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        // SAFETY: `params` points at live values matching the kernel's signature (the callers
        // build them from #[repr(C)] structs checked by size against the kernels' own
        // static_asserts), and every buffer the kernel touches is a live DBuf sized by the
        // caller.
        unsafe {
            drv::launch_kernel(
                f.0,
                grid,
                (block, 1, 1),
                smem,
                self.stream.cu_stream(),
                params,
            )
        }
        .map_err(|e| anyhow!("kernel launch failed: {e:?}"))
    }

    /// Launches kernel `f` with one struct parameter.
    pub fn launch_struct<T>(
        &self,
        f: Func,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        p: &T,
    ) -> Result<()> {
        let mut params = [p as *const T as *mut c_void];
        self.launch_raw(f, grid, block, smem, &mut params)
    }

    /// Launches kernel `name` with scalar arguments.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.func(name)?;
        let mut params: [*mut c_void; 16] = [std::ptr::null_mut(); 16];
        if args.len() > params.len() {
            bail!("kernel {name}: {} arguments", args.len());
        }
        for (p, a) in params.iter_mut().zip(args) {
            *p = match a {
                Arg::P(v) => v as *const u64 as *mut c_void,
                Arg::I(v) => v as *const i32 as *mut c_void,
                Arg::L(v) => v as *const i64 as *mut c_void,
                Arg::F(v) => v as *const f32 as *mut c_void,
            };
        }
        self.launch_raw(f, grid, block, 0, &mut params[..args.len()])
            .with_context(|| format!("launching {name}"))
    }

    /// Launches kernel `name` over `total` threads in blocks of 256.
    pub fn launch_1d(&self, name: &str, total: usize, args: &[Arg]) -> Result<()> {
        if total == 0 {
            return Ok(());
        }
        let blocks = total.div_ceil(256);
        self.launch(name, (blocks as u32, 1, 1), 256, args)
    }

    /// Copies host values to the device at byte offset `off` of `dst` and waits for the copy
    /// (pageable memory; for loading weights and small constants).
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

    /// Queues a copy of `bytes` from pinned host memory to the device.
    pub fn copy_in(&self, dst: u64, src: &Pinned, bytes: usize) -> Result<()> {
        if bytes > src.bytes {
            bail!(
                "a copy of {bytes} bytes from a staging buffer of {}",
                src.bytes
            );
        }
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: `src` is pinned memory of at least `bytes`; the caller keeps it unchanged
        // until the stream has run the copy (Pinned::write waits for that).
        unsafe {
            drv_sys::cuMemcpyHtoDAsync_v2(
                dst,
                src.ptr as *const c_void,
                bytes,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(|e| anyhow!("copy to the GPU: {e:?}"))
    }

    /// Queues a copy of `bytes` from the device to pinned host memory.
    pub fn copy_out(&self, dst: &Pinned, src: u64, bytes: usize) -> Result<()> {
        if bytes > dst.bytes {
            bail!(
                "a copy of {bytes} bytes into a staging buffer of {}",
                dst.bytes
            );
        }
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: `dst` is pinned memory of at least `bytes`, read only after a sync.
        unsafe {
            drv_sys::cuMemcpyDtoHAsync_v2(
                dst.ptr as *mut c_void,
                src,
                bytes,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(|e| anyhow!("copy from the GPU: {e:?}"))
    }

    /// Queues a device-to-device copy.
    pub fn copy_dd(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: both ranges lie in live device buffers (the callers size them).
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| anyhow!("device copy: {e:?}"))
    }

    /// Queues zeroing `bytes` at `dst`.
    pub fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: the range lies in a live device buffer (the callers size it).
        unsafe { drv::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| anyhow!("device memset: {e:?}"))
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize()?;
        SYNCS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts capturing the stream's launches into a graph.
    pub fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| anyhow!("starting a CUDA graph capture: {e:?}"))
    }

    /// Ends a capture and instantiates the graph (None if nothing was captured).
    pub fn end_capture(&self) -> Result<Option<cudarc::driver::CudaGraph>> {
        self.stream
            .end_capture(drv_sys::CUgraphInstantiate_flags(0))
            .map_err(|e| anyhow!("ending a CUDA graph capture: {e:?}"))
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

    pub fn bytes(&self) -> usize {
        self.bytes
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

/// A buffer that grows (never shrinks) to the size a pass needs. Growing replaces the
/// allocation, so a captured graph must only ever see buffers that no longer grow (the first,
/// eager pass of a shape sizes them).
#[derive(Default)]
pub struct Grow(Option<DBuf>);

impl Grow {
    pub fn get(&mut self, g: &Gpu, bytes: usize) -> Result<&DBuf> {
        if self.0.as_ref().is_none_or(|b| b.bytes < bytes) {
            self.0 = None;
            self.0 = Some(DBuf::new(g, bytes)?);
        }
        Ok(self.0.as_ref().expect("allocated above"))
    }

    pub fn ptr(&mut self, g: &Gpu, bytes: usize) -> Result<u64> {
        Ok(self.get(g, bytes)?.ptr)
    }

    /// The current allocation's address and size (0, 0 when there is none).
    pub fn current(&self) -> (u64, usize) {
        self.0.as_ref().map_or((0, 0), |b| (b.ptr, b.bytes))
    }
}

/// Page-locked host memory for staging copies. A write first waits for the stream if a copy
/// from or to this buffer may still be queued.
pub struct Pinned {
    ptr: *mut u8,
    bytes: usize,
    /// The sync count when a copy touching the buffer was queued (None: none pending).
    queued: Option<u64>,
}

// SAFETY: the buffer is plain host memory owned by this value; access goes through &mut self.
unsafe impl Send for Pinned {}

impl Pinned {
    pub fn new(g: &Gpu, bytes: usize) -> Result<Pinned> {
        g.bind()?;
        let bytes = bytes.max(64);
        // SAFETY: a plain allocation, freed once in Drop.
        let ptr = unsafe { drv::malloc_host(bytes, 0) }
            .map_err(|e| anyhow!("pinned host memory of {bytes} bytes: {e:?}"))?;
        Ok(Pinned {
            ptr: ptr as *mut u8,
            bytes,
            queued: None,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Marks a copy queued on the stream that reads or writes this buffer.
    pub fn mark_queued(&mut self) {
        self.queued = Some(SYNCS.load(Ordering::Relaxed));
    }

    /// The buffer for writing `len` values of T at its start (waiting for queued copies).
    pub fn write<T: bytemuck::Pod>(&mut self, g: &Gpu, len: usize) -> Result<&mut [T]> {
        if len * std::mem::size_of::<T>() > self.bytes {
            bail!(
                "{len} values do not fit a staging buffer of {} bytes",
                self.bytes
            );
        }
        if self.queued == Some(SYNCS.load(Ordering::Relaxed)) {
            g.sync()?;
        }
        self.queued = None;
        // SAFETY: the range lies in the allocation, which is aligned for any T (page-aligned);
        // no copy touches it now, and the borrow of self keeps it exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut T, len) })
    }

    /// The first `len` values of T, after waiting for the stream.
    pub fn read<T: bytemuck::Pod>(&mut self, g: &Gpu, len: usize) -> Result<&[T]> {
        if len * std::mem::size_of::<T>() > self.bytes {
            bail!(
                "{len} values exceed a staging buffer of {} bytes",
                self.bytes
            );
        }
        g.sync()?;
        self.queued = None;
        // SAFETY: as in `write`; the stream has finished every copy into the buffer.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr as *const T, len) })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(Ok(g)) = GPU.get() {
            let _ = g.sync();
            // SAFETY: allocated by malloc_host in Pinned::new, freed once.
            let _ = unsafe { drv::free_host(self.ptr as *mut c_void) };
        }
    }
}

/// Grows a pinned buffer to at least `bytes`.
pub fn pinned_at_least<'a>(
    g: &Gpu,
    p: &'a mut Option<Pinned>,
    bytes: usize,
) -> Result<&'a mut Pinned> {
    if p.as_ref().is_none_or(|b| b.bytes < bytes) {
        *p = None;
        *p = Some(Pinned::new(g, bytes.next_power_of_two())?);
    }
    Ok(p.as_mut().expect("allocated above"))
}
