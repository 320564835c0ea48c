// rbf_kernels.cu: CUDA forward and backward of the adaptive-RBF layer (same math as cpu_ops.cpp, common.h).
//
// No torch headers: the launchers take raw pointers and the caller's stream (passed from Python as an
// integer), so this file compiles with nvcc alone, also where torch is a CPU build.
//
// One thread per query: its k kernel values are computed once and kept in registers (the neighbour count is a
// template bound, 8/16/32/64; loops are unrolled fully up to 16, so K <= 16 stays in registers, while 32 and 64
// keep their arrays in local memory: unrolling those made nvcc take 80 s for this file instead of 11), then
// every feature channel is composed from them.
// (The first version had a thread per (query, feature) and recomputed the k kernel values for each of the F
// features: 16x the kernel arithmetic at the defaults.) Each thread reads its neighbours' feature rows
// contiguously and writes its own contiguous output row.
//
// Bytes moved at least per query (bench_kernels.py reports achieved GB/s against this): forward dim x 4 (x) +
// k x 8 (indices) + k x (dim + S + F) x 4 (centres, shapes, feature rows; cached when neighbours repeat) + F x 4
// (output); backward the same with the output replaced by the gradient read and k x F x 4 of atomics.
#include <cuda_runtime.h>

#include "common.h"
#include "launch.h"

namespace {

constexpr int kThreads = 128;

// The kernel values of a query's neighbours (row < 0: none), normalised by their sum when asked: rbf_phis of
// common.h with a compile-time bound, so that phi and row stay in registers.
template <typename T, int KMAX>
__device__ __forceinline__ void query_phis(const T* x, const int64_t* nb, int k, int64_t n_rbf, const T* centers,
                                           const T* shapes, int dim, int kernel, bool normalize, T (&phi)[KMAX],
                                           int64_t (&row)[KMAX]) {
    T sum = T(0);
#pragma unroll (KMAX <= 16 ? KMAX : 4)
    for (int i = 0; i < KMAX; ++i) {
        row[i] = i < k && nb[i] < n_rbf ? nb[i] : -1;  // out of range: missing, never read (see checks.h)
        phi[i] = row[i] >= 0 ? fs::rbf_kernel(x, centers, shapes, row[i], dim, kernel) : T(0);
        sum += phi[i];
    }
    if (normalize) {
        const T inv = T(1) / (sum + T(1e-8));
#pragma unroll (KMAX <= 16 ? KMAX : 4)
        for (int i = 0; i < KMAX; ++i) phi[i] *= inv;
    }
}

template <typename T, int KMAX>
__global__ void rbf_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ idx,
                                   const T* __restrict__ centers, const T* __restrict__ shapes,
                                   const T* __restrict__ features, const T* __restrict__ freqs, int64_t n, int64_t n_rbf, int k,
                                   int dim, int n_feat, int kernel, bool normalize, T* __restrict__ out) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    T phi[KMAX];
    int64_t row[KMAX];
    query_phis<T, KMAX>(x + p * dim, idx + p * k, k, n_rbf, centers, shapes, dim, kernel, normalize, phi, row);
    T* o = out + p * n_feat;
    for (int f = 0; f < n_feat; ++f) {
        const T freq = freqs[f];
        T acc = T(0);
#pragma unroll (KMAX <= 16 ? KMAX : 4)
        for (int i = 0; i < KMAX; ++i)
            if (row[i] >= 0) acc += features[row[i] * n_feat + f] * sin(phi[i] * freq);
        o[f] = acc;
    }
}

template <typename T, int KMAX>
__global__ void rbf_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                    const int64_t* __restrict__ idx, const T* __restrict__ centers,
                                    const T* __restrict__ shapes, const T* __restrict__ freqs, int64_t n, int64_t n_rbf, int k,
                                    int dim, int n_feat, int kernel, bool normalize, T* __restrict__ gfeat) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n) return;
    T phi[KMAX];
    int64_t row[KMAX];
    query_phis<T, KMAX>(x + p * dim, idx + p * k, k, n_rbf, centers, shapes, dim, kernel, normalize, phi, row);
    const T* g = grad + p * n_feat;
#pragma unroll (KMAX <= 16 ? KMAX : 4)
    for (int i = 0; i < KMAX; ++i) {
        if (row[i] < 0) continue;
        T* gw = gfeat + row[i] * n_feat;  // one row's atomics together
        for (int f = 0; f < n_feat; ++f) atomicAdd(gw + f, g[f] * sin(phi[i] * freqs[f]));
    }
}

inline unsigned blocks_for(int64_t work) { return (unsigned)((work + kThreads - 1) / kThreads); }

// The instance whose neighbour bound is the smallest of 8, 16, 32, 64 that holds k (null beyond fs::kMaxK).
template <typename Kernel8, typename Kernel16, typename Kernel32, typename Kernel64>
auto pick(int k, Kernel8 k8, Kernel16 k16, Kernel32 k32, Kernel64 k64) {
    return k <= 8 ? k8 : k <= 16 ? k16 : k <= 32 ? k32 : k <= fs::kMaxK ? k64 : nullptr;
}

}  // namespace

#define FS_RBF_LAUNCHERS(T, SUFFIX)                                                                             \
    extern "C" int fs_rbf_forward_##SUFFIX(const T* x, const int64_t* idx, const T* centers, const T* shapes,  \
                                           const T* features, const T* freqs, int64_t n, int64_t n_rbf, int k, \
                                           int dim,                                                            \
                                           int n_feat, int kernel, int normalize, T* out, void* stream) {      \
        auto kern = pick(k, &rbf_forward_kernel<T, 8>, &rbf_forward_kernel<T, 16>, &rbf_forward_kernel<T, 32>, \
                         &rbf_forward_kernel<T, 64>);                                                          \
        if (kern == nullptr || dim > 3) return -1;                                                             \
        if (n == 0) return 0;                                                                                  \
        FS_LAUNCH(kern, blocks_for(n), kThreads, (cudaStream_t)stream)(                                        \
            x, idx, centers, shapes, features, freqs, n, n_rbf, k, dim, n_feat, kernel, normalize != 0, out);         \
        return (int)cudaGetLastError();                                                                        \
    }                                                                                                          \
    extern "C" int fs_rbf_backward_##SUFFIX(const T* grad, const T* x, const int64_t* idx, const T* centers,   \
                                            const T* shapes, const T* freqs, int64_t n, int64_t n_rbf, int k,  \
                                            int dim,                                                           \
                                            int n_feat, int kernel, int normalize, T* gfeat, void* stream) {   \
        auto kern = pick(k, &rbf_backward_kernel<T, 8>, &rbf_backward_kernel<T, 16>,                           \
                         &rbf_backward_kernel<T, 32>, &rbf_backward_kernel<T, 64>);                            \
        if (kern == nullptr || dim > 3) return -1;                                                             \
        if (n == 0) return 0;                                                                                  \
        FS_LAUNCH(kern, blocks_for(n), kThreads, (cudaStream_t)stream)(                                        \
            grad, x, idx, centers, shapes, freqs, n, n_rbf, k, dim, n_feat, kernel, normalize != 0, gfeat);           \
        return (int)cudaGetLastError();                                                                        \
    }

FS_RBF_LAUNCHERS(float, f32)
FS_RBF_LAUNCHERS(double, f64)
