// rbf_kernels.cu: CUDA forward and backward of the adaptive-RBF layer (same math as cpu_ops.cpp, common.h).
//
// No torch headers: the launchers take raw pointers and the caller's stream (passed from Python as an
// integer), so this file compiles with nvcc alone, also where torch is a CPU build. One thread per
// (query, feature): consecutive threads read consecutive feature entries of the same RBF and write
// consecutive outputs, so loads and stores coalesce; the k kernel values are recomputed per feature, which
// costs arithmetic the memory-bound layer has to spare.
#include <cuda_runtime.h>

#include "common.h"
#include "launch.h"

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void rbf_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ idx,
                                   const T* __restrict__ centers, const T* __restrict__ shapes,
                                   const T* __restrict__ features, const T* __restrict__ freqs, int64_t n, int k,
                                   int dim, int n_feat, int kernel, bool normalize, T* __restrict__ out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * n_feat) return;
    const int64_t p = t / n_feat;
    const int f = (int)(t % n_feat);
    T phi[fs::kMaxK];
    const int64_t* nb = idx + p * k;
    fs::rbf_phis(x + p * dim, nb, k, centers, shapes, dim, kernel, normalize, phi);
    const T freq = freqs[f];
    T acc = T(0);
    for (int i = 0; i < k; ++i)
        if (nb[i] >= 0) acc += features[nb[i] * n_feat + f] * sin(phi[i] * freq);
    out[t] = acc;
}

template <typename T>
__global__ void rbf_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                    const int64_t* __restrict__ idx, const T* __restrict__ centers,
                                    const T* __restrict__ shapes, const T* __restrict__ freqs, int64_t n, int k,
                                    int dim, int n_feat, int kernel, bool normalize, T* __restrict__ gfeat) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * n_feat) return;
    const int64_t p = t / n_feat;
    const int f = (int)(t % n_feat);
    T phi[fs::kMaxK];
    const int64_t* nb = idx + p * k;
    fs::rbf_phis(x + p * dim, nb, k, centers, shapes, dim, kernel, normalize, phi);
    const T g = grad[t], freq = freqs[f];
    for (int i = 0; i < k; ++i)
        if (nb[i] >= 0) atomicAdd(gfeat + nb[i] * n_feat + f, g * sin(phi[i] * freq));
}

inline unsigned blocks_for(int64_t work) { return (unsigned)((work + kThreads - 1) / kThreads); }

}  // namespace

#define FS_RBF_LAUNCHERS(T, SUFFIX)                                                                             \
    extern "C" int fs_rbf_forward_##SUFFIX(const T* x, const int64_t* idx, const T* centers, const T* shapes,  \
                                           const T* features, const T* freqs, int64_t n, int k, int dim,       \
                                           int n_feat, int kernel, int normalize, T* out, void* stream) {      \
        if (n == 0) return 0;                                                                                  \
        FS_LAUNCH(rbf_forward_kernel<T>, blocks_for(n * n_feat), kThreads, (cudaStream_t)stream)(               \
            x, idx, centers, shapes, features, freqs, n, k, dim, n_feat, kernel, normalize != 0, out);         \
        return (int)cudaGetLastError();                                                                        \
    }                                                                                                          \
    extern "C" int fs_rbf_backward_##SUFFIX(const T* grad, const T* x, const int64_t* idx, const T* centers,   \
                                            const T* shapes, const T* freqs, int64_t n, int k, int dim,        \
                                            int n_feat, int kernel, int normalize, T* gfeat, void* stream) {   \
        if (n == 0) return 0;                                                                                  \
        FS_LAUNCH(rbf_backward_kernel<T>, blocks_for(n * n_feat), kThreads, (cudaStream_t)stream)(              \
            grad, x, idx, centers, shapes, freqs, n, k, dim, n_feat, kernel, normalize != 0, gfeat);           \
        return (int)cudaGetLastError();                                                                        \
    }

FS_RBF_LAUNCHERS(float, f32)
FS_RBF_LAUNCHERS(double, f64)
