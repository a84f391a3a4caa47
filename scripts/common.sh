# Shared by scripts/test, scripts/demo and .ci/run: where things are and how to configure.
MF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MF_SHARED="${MEMFOLD_SHARED:-$MF_ROOT/../shared}"
MF_JOBS="${MEMFOLD_JOBS:-$(nproc)}"
# nvcc lives outside PATH on these machines; CMake auto-detects CUDA through CUDACXX.
if [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi

mf_configure() { # mf_configure BUILD_DIR [cmake args...]
  local dir="$1"; shift
  cmake -S "$MF_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMF_SHARED_DIR="$MF_SHARED" "$@" >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
}
