// grid_kernels.cu: CUDA forward and backward of the multires grid (dense and hashed levels, 2-D and 3-D).
//
// Same math as cpu_ops.cpp (common.h). One thread per (query, level); the backward scatters into the
// embeddings with atomicAdd (hash collisions make rows shared between queries). Raw pointers and the
// caller's stream only, so nvcc compiles it without torch.
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

template <typename T>
__global__ void grid_forward_kernel(const T* __restrict__ x, const T* __restrict__ emb, int64_t n, int n_feat,
                                    Layout L, T* __restrict__ out) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * L.n_levels) return;
    const int64_t p = t / L.n_levels;
    const int l = (int)(t % L.n_levels);
    int64_t rows[8];
    T ws[8];
    fs::grid_corners(x + p * L.dim, L.dim, L.res[l], l >= L.n_dense, &L.mult[l * L.dim], L.offsets[l], L.mask, rows, ws);
    T acc[fs::kMaxGridFeatures];
    for (int f = 0; f < n_feat; ++f) acc[f] = T(0);
    for (int c = 0; c < (1 << L.dim); ++c)
        for (int f = 0; f < n_feat; ++f) acc[f] += ws[c] * emb[rows[c] * n_feat + f];
    T* o = out + p * L.n_levels * n_feat + l * n_feat;
    for (int f = 0; f < n_feat; ++f) o[f] = acc[f];
}

template <typename T>
__global__ void grid_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x, int64_t n, int n_feat,
                                     Layout L, T* __restrict__ gemb) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * L.n_levels) return;
    const int64_t p = t / L.n_levels;
    const int l = (int)(t % L.n_levels);
    int64_t rows[8];
    T ws[8];
    fs::grid_corners(x + p * L.dim, L.dim, L.res[l], l >= L.n_dense, &L.mult[l * L.dim], L.offsets[l], L.mask, rows, ws);
    const T* g = grad + p * L.n_levels * n_feat + l * n_feat;
    for (int c = 0; c < (1 << L.dim); ++c)
        for (int f = 0; f < n_feat; ++f) atomicAdd(gemb + rows[c] * n_feat + f, ws[c] * g[f]);
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
        if (n_feat > fs::kMaxGridFeatures || !make_layout(res, offsets, mult, n_levels, dim, n_dense, log2_hashmap_size, &L))    \
            return -1;                                                                                          \
        if (n == 0) return 0;                                                                                   \
        FS_LAUNCH(grid_forward_kernel<T>, blocks_for(n * n_levels), kThreads, (cudaStream_t)stream)(            \
            x, emb, n, n_feat, L, out);                                                                         \
        return (int)cudaGetLastError();                                                                         \
    }                                                                                                           \
    extern "C" int fs_grid_backward_##SUFFIX(const T* grad, const T* x, int64_t n, int n_feat,                 \
                                             const int64_t* res, const int64_t* offsets, const int64_t* mult,  \
                                             int n_levels, int dim, int n_dense, int log2_hashmap_size,        \
                                             T* gemb, void* stream) {                                           \
        Layout L;                                                                                               \
        if (!make_layout(res, offsets, mult, n_levels, dim, n_dense, log2_hashmap_size, &L)) return -1;        \
        if (n == 0) return 0;                                                                                   \
        FS_LAUNCH(grid_backward_kernel<T>, blocks_for(n * n_levels), kThreads, (cudaStream_t)stream)(           \
            grad, x, n, n_feat, L, gemb);                                                                       \
        return (int)cudaGetLastError();                                                                         \
    }

FS_GRID_LAUNCHERS(float, f32)
FS_GRID_LAUNCHERS(double, f64)
