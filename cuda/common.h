// common.h: math shared by the CPU (cpu_ops.cpp) and CUDA (*.cu) kernels.
//
// Each function is the per-point body of an op, written once so both back ends compute the same thing in
// the same order as the PyTorch reference (fields/encoders/rbf.py and grid.py). Plain C++ with no torch
// headers, so nvcc compiles the .cu files without a CUDA build of torch.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace fs {

#ifndef __CUDACC__
using std::exp;  // float overloads on the host; nvcc provides them for device code
using std::fabs;
using std::floor;
#endif

enum Kernel : int { NLIN_S = 0, IVQ_A = 1, GAUSS_A = 2 };

// Limits of the fused kernels (checks.h enforces them in the bindings; Python sends larger calls to the reference).
constexpr int kMaxK = 64;             // neighbours per query: their kernel values live in a fixed array
constexpr int kMaxLevels = 32;        // grid levels: the CUDA kernels take the layout by value
constexpr int kMaxGridFeatures = 16;  // features per grid level: accumulated in a fixed array

// Entries per RBF in the shapes table: one inverse width (NLIN_S) or a dim x dim inverse covariance.
FS_HD int shape_size(int dim, int kernel) { return kernel == NLIN_S ? 1 : dim * dim; }

// Unnormalised kernel value of RBF `j` at query `x` (dim <= 3). Shapes: NLIN_S one inverse width per RBF,
// *_A a dim x dim inverse covariance (row-major) per RBF, as in rbf_phi().
template <typename T>
FS_HD T rbf_kernel(const T* x, const T* centers, const T* shapes, int64_t j, int dim, int kernel) {
    T d[3];
    for (int a = 0; a < dim; ++a) d[a] = x[a] - centers[j * dim + a];
    if (kernel == NLIN_S) {
        const T s = shapes[j];
        T phi = T(1);
        for (int a = 0; a < dim; ++a) {
            T t = T(1) - fabs(d[a]) * s;
            phi *= t > T(0) ? t : T(0);
        }
        return phi;
    }
    const T* S = shapes + j * dim * dim;
    T q = T(0);
    for (int a = 0; a < dim; ++a)
        for (int b = 0; b < dim; ++b) q += S[a * dim + b] * d[a] * d[b];
    return kernel == IVQ_A ? T(1) / (T(1) + q) : exp(T(-0.5) * q);
}

// Kernel values of the k neighbours of one query, normalised by their sum (+1e-8) when asked. Indices < 0
// mark missing neighbours and get 0.
template <typename T>
FS_HD void rbf_phis(const T* x, const int64_t* idx, int k, const T* centers, const T* shapes, int dim,
                    int kernel, bool normalize, T* phi) {
    T sum = T(0);
    for (int i = 0; i < k; ++i) {
        phi[i] = idx[i] >= 0 ? rbf_kernel(x, centers, shapes, idx[i], dim, kernel) : T(0);
        sum += phi[i];
    }
    if (normalize) {
        const T inv = T(1) / (sum + T(1e-8));
        for (int i = 0; i < k; ++i) phi[i] *= inv;
    }
}

// Multires grid: the cell around `x` at one level and the position inside it.
template <typename T>
struct GridCell {
    int64_t cell[3];
    T frac[3];
};

template <typename T>
FS_HD GridCell<T> grid_cell(const T* x, int dim, int64_t res) {
    GridCell<T> g;
    for (int a = 0; a < dim; ++a) {
        T xa = x[a] < T(-1) ? T(-1) : (x[a] > T(1) ? T(1) : x[a]);
        T pos = ((xa + T(1)) * T(0.5)) * T(res);
        int64_t c = (int64_t)floor(pos);
        if (c > res - 1) c = res - 1;
        g.cell[a] = c;
        g.frac[a] = pos - T(c);
    }
    return g;
}

// Rows and weights of all 2^dim corners around `x` at one level (rows, weights: 1 << dim entries); bit a of
// the corner number c set = upper vertex on axis a. Dense levels index offset + sum_a v_a * stride_a, hashed
// levels offset + (xor_a v_a * prime_a) & mask, and the weight multiplies the axis weights in axis order, like
// MultiResGrid.corner_indices. Per-axis terms are computed once, and all rows before any table read, so a
// caller can have all of a point's loads in flight together.
template <typename T>
FS_HD void grid_corners(const T* x, int dim, int64_t res, bool hashed, const int64_t* mult, int64_t offset,
                        int64_t mask, int64_t* rows, T* weights) {
    const GridCell<T> g = grid_cell(x, dim, res);
    int64_t term[3][2];
    T wax[3][2];
    for (int a = 0; a < dim; ++a) {
        term[a][0] = g.cell[a] * mult[a];
        term[a][1] = (g.cell[a] + 1) * mult[a];
        wax[a][0] = T(1) - g.frac[a];
        wax[a][1] = g.frac[a];
    }
    for (int c = 0; c < (1 << dim); ++c) {
        int64_t acc = term[0][c & 1];
        T w = wax[0][c & 1];
        for (int a = 1; a < dim; ++a) {
            const int upper = (c >> a) & 1;
            acc = hashed ? (acc ^ term[a][upper]) : (acc + term[a][upper]);
            w = wax[a][upper] * w;
        }
        rows[c] = offset + (hashed ? (acc & mask) : acc);
        weights[c] = w;
    }
}

}  // namespace fs
