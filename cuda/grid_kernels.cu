// grid_kernels.cu: CUDA forward and backward of the multires grid (dense and hashed levels, 2-D and 3-D).
//
// Same math as cpu_ops.cpp (common.h). One thread per (level, query), level-major; the backward scatters into
// the embeddings with atomicAdd (hash collisions make rows shared between queries). Raw pointers and the
// caller's stream only, so nvcc compiles it without torch.
//
// Bytes moved at least per query and level (bench_kernels.py reports achieved GB/s against this): dim x 4 (x,
// cached across levels) + 2^dim x F x 4 (corner rows gathered) + F x 4 (output); backward the gradient read and
// 2^dim x F x 4 of atomics.
#include <cuda_runtime.h>

#include "common.h"
#include "launch.h"

namespace {

constexpr int kThreads = 256;

struct Layout {
    int64_t res[fs::kMaxLevels], offsets[fs::kMaxLevels + 1], mult[fs::kMaxLevels * 3];
    int n_levels, dim, n_dense;
    int64_t mask;
};

// Threads are level-major: consecutive threads take consecutive queries of one level, so a warp gathers from one
// level's table (and the dense levels' neighbouring cells) instead of spreading over many tables. The dimension and
// a bound on the features are template arguments, so the corner rows, weights and accumulators stay in registers.
template <typename T, int DIM, int FMAX>
__global__ void grid_forward_kernel(const T* __restrict__ x, const T* __restrict__ emb, int64_t n, int n_feat,
                                    Layout L, T* __restrict__ out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * L.n_levels) return;
    const int l = (int)(t / n);
    const int64_t p = t % n;
    int64_t rows[1 << DIM];
    T ws[1 << DIM];
    fs::grid_corners(x + p * DIM, DIM, L.res[l], l >= L.n_dense, &L.mult[l * DIM], L.offsets[l], L.mask, rows, ws);
    T acc[FMAX];
#pragma unroll
    for (int f = 0; f < FMAX; ++f) acc[f] = T(0);
#pragma unroll
    for (int c = 0; c < (1 << DIM); ++c) {
#pragma unroll
        for (int f = 0; f < FMAX; ++f)
            if (f < n_feat) acc[f] += ws[c] * emb[rows[c] * n_feat + f];
    }
    T* o = out + p * L.n_levels * n_feat + l * n_feat;
#pragma unroll
    for (int f = 0; f < FMAX; ++f)
        if (f < n_feat) o[f] = acc[f];
}

template <typename T, int DIM, int FMAX>
__global__ void grid_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, int64_t n, int n_feat,
                                     Layout L, T* __restrict__ gemb) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * L.n_levels) return;
    const int l = (int)(t / n);
    const int64_t p = t % n;
    int64_t rows[1 << DIM];
    T ws[1 << DIM];
    fs::grid_corners(x + p * DIM, DIM, L.res[l], l >= L.n_dense, &L.mult[l * DIM], L.offsets[l], L.mask, rows, ws);
    const T* g = grad + p * L.n_levels * n_feat + l * n_feat;
    T gl[FMAX];
#pragma unroll
    for (int f = 0; f < FMAX; ++f) gl[f] = f < n_feat ? g[f] : T(0);
#pragma unroll
    for (int c = 0; c < (1 << DIM); ++c) {
#pragma unroll
        for (int f = 0; f < FMAX; ++f)
            if (f < n_feat) atomicAdd(gemb + rows[c] * n_feat + f, ws[c] * gl[f]);
    }
}

template <typename T>  // forward (x, emb, ..., out) and backward (grad, x, ..., gemb) share the signature
using GridKernel = void (*)(const T*, const T*, int64_t, int, Layout, T*);

// The instance for this dimension and the smallest feature bound of 1, 2, 4, 8, 16 that holds n_feat (null
// beyond: the bindings refuse those first).
template <typename T, int DIM, bool FORWARD>
auto kernel_for_features(int n_feat) {
    using K = GridKernel<T>;
    if constexpr (FORWARD) {
        return n_feat <= 1 ? K(&grid_forward_kernel<T, DIM, 1>) : n_feat <= 2 ? K(&grid_forward_kernel<T, DIM, 2>)
             : n_feat <= 4 ? K(&grid_forward_kernel<T, DIM, 4>) : n_feat <= 8 ? K(&grid_forward_kernel<T, DIM, 8>)
             : n_feat <= 16 ? K(&grid_forward_kernel<T, DIM, 16>) : K(nullptr);
    } else {
        return n_feat <= 1 ? K(&grid_backward_kernel<T, DIM, 1>) : n_feat <= 2 ? K(&grid_backward_kernel<T, DIM, 2>)
             : n_feat <= 4 ? K(&grid_backward_kernel<T, DIM, 4>) : n_feat <= 8 ? K(&grid_backward_kernel<T, DIM, 8>)
             : n_feat <= 16 ? K(&grid_backward_kernel<T, DIM, 16>) : K(nullptr);
    }
}

template <typename T, bool FORWARD>
GridKernel<T> grid_kernel(int dim, int n_feat) {
    return dim == 2 ? kernel_for_features<T, 2, FORWARD>(n_feat)
         : dim == 3 ? kernel_for_features<T, 3, FORWARD>(n_feat) : nullptr;
}

// Host arrays -> the by-value kernel argument. Returns false when the grid is too large for it.
bool make_layout(const int64_t* res, const int64_t* offsets, const int64_t* mult, int n_levels, int dim,
                 int n_dense, int log2_hashmap_size, Layout* L) {
    if (n_levels > fs::kMaxLevels || dim > 3) return false;
    for (int l = 0; l < n_levels; ++l) L->res[l] = res[l];
    for (int l = 0; l <= n_levels; ++l) L->offsets[l] = offsets[l];
    for (int i = 0; i < n_levels * dim; ++i) L->mult[i] = mult[i];
    L->n_levels = n_levels;
    L->dim = dim;
    L->n_dense = n_dense;
    L->mask = (int64_t(1) << log2_hashmap_size) - 1;
    return true;
}

inline unsigned blocks_for(int64_t work) { return (unsigned)((work + kThreads - 1) / kThreads); }

}  // namespace

// res, offsets and mult are host arrays (the grid's small layout tables); x, emb, grad, out, gemb device.
#define FS_GRID_LAUNCHERS(T, SUFFIX)                                                                           \
    extern "C" int fs_grid_forward_##SUFFIX(const T* x, const T* emb, int64_t n, int n_feat, const int64_t* res, \
                                            const int64_t* offsets, const int64_t* mult, int n_levels, int dim,  \
                                            int n_dense, int log2_hashmap_size, T* out, void* stream) {          \
        Layout L;                                                                                               \
        const auto kern = grid_kernel<T, true>(dim, n_feat);                                                    \
        if (kern == nullptr || !make_layout(res, offsets, mult, n_levels, dim, n_dense, log2_hashmap_size, &L)) \
            return -1;                                                                                          \
        if (n == 0) return 0;                                                                                   \
        FS_LAUNCH(kern, blocks_for(n * n_levels), kThreads, (cudaStream_t)stream)(x, emb, n, n_feat, L, out);  \
        return (int)cudaGetLastError();                                                                         \
    }                                                                                                           \
    extern "C" int fs_grid_backward_##SUFFIX(const T* grad, const T* x, int64_t n, int n_feat,                 \
                                             const int64_t* res, const int64_t* offsets, const int64_t* mult,  \
                                             int n_levels, int dim, int n_dense, int log2_hashmap_size,        \
                                             T* gemb, void* stream) {                                           \
        Layout L;                                                                                               \
        const auto kern = grid_kernel<T, false>(dim, n_feat);                                                   \
        if (kern == nullptr || !make_layout(res, offsets, mult, n_levels, dim, n_dense, log2_hashmap_size, &L)) \
            return -1;                                                                                          \
        if (n == 0) return 0;                                                                                   \
        FS_LAUNCH(kern, blocks_for(n * n_levels), kThreads, (cudaStream_t)stream)(grad, x, n, n_feat, L, gemb); \
        return (int)cudaGetLastError();                                                                         \
    }

FS_GRID_LAUNCHERS(float, f32)
FS_GRID_LAUNCHERS(double, f64)
