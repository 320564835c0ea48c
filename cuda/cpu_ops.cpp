// cpu_ops.cpp: fused CPU (OpenMP) forward and backward of the adaptive-RBF layer and the multires grid.
//
// Built on first use by fields/kernels.py with torch.utils.cpp_extension. Gradients are those of the trained
// tables (RBF features, grid embeddings); queries that need gradients with respect to positions take the
// PyTorch reference (fields/kernels.py decides). Backward passes write without atomics: each thread owns a
// range of RBF rows, or whole grid levels (their rows are disjoint), so results do not depend on scheduling.
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "common.h"

namespace {

// Same thread count as torch's own CPU ops (torch.set_num_threads), whichever OpenMP runtime each links.
void use_torch_threads() { omp_set_num_threads(at::get_num_threads()); }

void check_cpu(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Sine of a float as straight-line arithmetic, so GCC inlines and vectorises it in the feature loops instead
// of calling libmvec once per 8 lanes: reduce by the nearest multiple of pi (pi split in three parts, exact
// for |x| < ~1e4), then the degree-11 Taylor polynomial on [-pi/2, pi/2] (error < 6e-8, one float ulp).
// Doubles keep std::sin so that the float64 path stays a full-precision check.
inline float sin_poly(float x) {
    const float k = std::floor(x * 0.318309886f + 0.5f);
    // fma keeps the three steps apart; -ffast-math would otherwise fold them back into one rounded pi.
    float r = std::fma(-k, 3.140625f, x);
    r = std::fma(-k, 9.67502593994140625e-4f, r);
    r = std::fma(-k, 1.509957990978376432e-7f, r);
    const float r2 = r * r;
    float p = -2.50521083854417188e-8f;
    p = p * r2 + 2.75573192239858907e-6f;
    p = p * r2 - 1.98412698412698413e-4f;
    p = p * r2 + 8.33333333333333333e-3f;
    p = p * r2 - 1.66666666666666667e-1f;
    const float s = r + r * r2 * p;
    return (static_cast<int>(k) & 1) ? -s : s;
}
#ifdef __FMA__
inline float sin_feat(float x) { return sin_poly(x); }
#else  // std::fma without the instruction is a slow library call: keep libmvec's vector sine there
inline float sin_feat(float x) { return std::sin(x); }
#endif
inline double sin_feat(double x) { return std::sin(x); }

// Feature rows are gathered (forward) or scattered (backward) at random from a table of MBs: ask for the rows of
// the query kAhead places on, in [r0, r1), so that their cache misses overlap with the work on this one.
constexpr int64_t kAhead = 4;

template <typename T>
inline void prefetch_rows(const int64_t* nb, int k, const T* table, int n_feat, int64_t r0, int64_t r1,
                          bool write) {
    for (int i = 0; i < k; ++i) {
        if (nb[i] < r0 || nb[i] >= r1) continue;
        const char* row = reinterpret_cast<const char*>(table + nb[i] * n_feat);
        for (int64_t b = 0; b < int64_t(n_feat * sizeof(T)); b += 64) {
            if (write) __builtin_prefetch(row + b, 1, 3);
            else __builtin_prefetch(row + b, 0, 3);
        }
    }
}

// DIM and KERNEL are template arguments so that the per-query loops of common.h unroll.
template <typename T, int DIM, int KERNEL>
void rbf_forward_impl(const T* x, const int64_t* idx, const T* centers, const T* shapes, const T* features,
                      const T* freqs, int64_t n, int k, int n_feat, bool normalize, T* out) {
    constexpr int dim = DIM, kernel = KERNEL;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n; ++p) {
        if (p + kAhead < n) {
            const int64_t* ahead = idx + (p + kAhead) * k;
            prefetch_rows(ahead, k, features, n_feat, 0, INT64_MAX, false);
            prefetch_rows(ahead, k, centers, dim, 0, INT64_MAX, false);
            prefetch_rows(ahead, k, shapes, fs::shape_size(dim, kernel), 0, INT64_MAX, false);
        }
        T phi[fs::kMaxK];
        const int64_t* nb = idx + p * k;
        fs::rbf_phis(x + p * dim, nb, k, centers, shapes, dim, kernel, normalize, phi);
        T* o = out + p * n_feat;
        for (int f = 0; f < n_feat; ++f) o[f] = T(0);
        for (int i = 0; i < k; ++i) {
            if (nb[i] < 0) continue;
            const T* w = features + nb[i] * n_feat;
            const T ph = phi[i];
#pragma omp simd
            for (int f = 0; f < n_feat; ++f) o[f] += w[f] * sin_feat(ph * freqs[f]);
        }
    }
}

template <typename T, int DIM, int KERNEL>
void rbf_backward_impl(const T* grad, const T* x, const int64_t* idx, const T* centers, const T* shapes,
                       const T* freqs, int64_t n, int k, int n_feat, int64_t n_rbf, bool normalize, T* gfeat) {
    constexpr int dim = DIM, kernel = KERNEL;
    // Kernel values first, each query once (threads split the queries); then the scatter, where each thread
    // owns a range of rows and visits every query that has a neighbour in it.
    std::vector<T> phis(n * k);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n; ++p) {
        if (p + kAhead < n) {
            prefetch_rows(idx + (p + kAhead) * k, k, centers, dim, 0, INT64_MAX, false);
            prefetch_rows(idx + (p + kAhead) * k, k, shapes, fs::shape_size(dim, kernel), 0, INT64_MAX, false);
        }
        fs::rbf_phis(x + p * dim, idx + p * k, k, centers, shapes, dim, kernel, normalize, phis.data() + p * k);
    }
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t r0 = n_rbf * t / nt, r1 = n_rbf * (t + 1) / nt;  // rows this thread owns
        for (int64_t p = 0; p < n; ++p) {
            if (p + kAhead < n) prefetch_rows(idx + (p + kAhead) * k, k, gfeat, n_feat, r0, r1, true);
            const int64_t* nb = idx + p * k;
            const T* phi = phis.data() + p * k;
            const T* g = grad + p * n_feat;
            for (int i = 0; i < k; ++i) {
                if (nb[i] < r0 || nb[i] >= r1) continue;
                T* gw = gfeat + nb[i] * n_feat;
                const T ph = phi[i];
#pragma omp simd
                for (int f = 0; f < n_feat; ++f) gw[f] += g[f] * sin_feat(ph * freqs[f]);
            }
        }
    }
}

// Calls fn(std::integral_constant<int, DIM>, std::integral_constant<int, KERNEL>) for the runtime values.
template <typename Fn>
void dispatch_rbf(int dim, int kernel, Fn&& fn) {
    TORCH_CHECK(dim == 2 || dim == 3, "RBF kernels support dim 2 and 3, got ", dim);
    TORCH_CHECK(kernel >= 0 && kernel <= 2, "unknown RBF kernel id ", kernel);
    auto with_kernel = [&](auto d) {
        if (kernel == fs::NLIN_S) fn(d, std::integral_constant<int, fs::NLIN_S>{});
        else if (kernel == fs::IVQ_A) fn(d, std::integral_constant<int, fs::IVQ_A>{});
        else fn(d, std::integral_constant<int, fs::GAUSS_A>{});
    };
    if (dim == 2) with_kernel(std::integral_constant<int, 2>{});
    else with_kernel(std::integral_constant<int, 3>{});
}

struct GridLayout {
    std::vector<int64_t> res, offsets, mult;  // mult: (L, dim) row-major
    int n_levels, dim, n_dense;
    int64_t mask;
};

GridLayout layout_of(const torch::Tensor& resolutions, const torch::Tensor& offsets, const torch::Tensor& mult,
                     int64_t n_dense, int64_t log2_hashmap_size) {
    GridLayout g;
    auto r = resolutions.contiguous(), o = offsets.contiguous(), m = mult.contiguous();
    g.res.assign(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
    g.offsets.assign(o.data_ptr<int64_t>(), o.data_ptr<int64_t>() + o.numel());
    g.mult.assign(m.data_ptr<int64_t>(), m.data_ptr<int64_t>() + m.numel());
    g.n_levels = (int)r.numel();
    g.dim = (int)(m.numel() / r.numel());
    g.n_dense = (int)n_dense;
    g.mask = (int64_t(1) << log2_hashmap_size) - 1;
    return g;
}

// Grid passes work on chunks of queries: the rows of a whole chunk are computed and prefetched before any is
// read, so the cache misses of the hashed levels (random rows in MB-sized tables) overlap instead of queueing.
constexpr int kChunk = 32;

template <typename T, int DIM, bool WRITE>
void corners_of_chunk(const T* x, int m, const GridLayout& L, int l, const T* table, int n_feat,
                      int64_t (*rows)[1 << DIM], T (*ws)[1 << DIM]) {
    const bool hashed = l >= L.n_dense;
    const int64_t* mult = &L.mult[l * DIM];
    for (int q = 0; q < m; ++q) {
        fs::grid_corners(x + q * DIM, DIM, L.res[l], hashed, mult, L.offsets[l], L.mask, rows[q], ws[q]);
        for (int c = 0; c < (1 << DIM); ++c) __builtin_prefetch(table + rows[q][c] * n_feat, WRITE, 3);
    }
}

// NF > 0: features per level known at compile time (the common 1 and 2); NF = 0: n_feat at run time.
template <typename T, int DIM, int NF>
void grid_forward_impl(const T* x, const T* emb, int64_t n, int n_feat_rt, const GridLayout& L, T* out) {
    constexpr int n_corners = 1 << DIM;
    const int n_feat = NF > 0 ? NF : n_feat_rt;
    const int width = L.n_levels * n_feat;
    // Level-major: all queries read one level's table before the next, so that table (up to a few MB) stays
    // in cache instead of every query touching all levels' tables in turn.
    for (int l = 0; l < L.n_levels; ++l) {
#pragma omp parallel for schedule(static)
        for (int64_t p0 = 0; p0 < n; p0 += kChunk) {
            const int m = (int)std::min<int64_t>(kChunk, n - p0);
            int64_t rows[kChunk][n_corners];
            T ws[kChunk][n_corners];
            corners_of_chunk<T, DIM, false>(x + p0 * DIM, m, L, l, emb, n_feat, rows, ws);
            for (int q = 0; q < m; ++q) {
                T acc[16] = {};
                for (int c = 0; c < n_corners; ++c) {
                    const T* e = emb + rows[q][c] * n_feat;
                    for (int f = 0; f < n_feat; ++f) acc[f] += ws[q][c] * e[f];
                }
                T* o = out + (p0 + q) * width + l * n_feat;
                for (int f = 0; f < n_feat; ++f) o[f] = acc[f];
            }
        }
    }
}

template <typename T, int DIM>
void grid_forward_dispatch(const T* x, const T* emb, int64_t n, int n_feat, const GridLayout& L, T* out) {
    if (n_feat == 1) grid_forward_impl<T, DIM, 1>(x, emb, n, n_feat, L, out);
    else if (n_feat == 2) grid_forward_impl<T, DIM, 2>(x, emb, n, n_feat, L, out);
    else grid_forward_impl<T, DIM, 0>(x, emb, n, n_feat, L, out);
}

template <typename T, int DIM, int NF>
void grid_backward_impl(const T* grad, const T* x, int64_t n, int n_feat_rt, const GridLayout& L, T* gemb) {
    constexpr int n_corners = 1 << DIM;
    const int n_feat = NF > 0 ? NF : n_feat_rt;
    const int width = L.n_levels * n_feat;
    // One level per task: levels own disjoint rows, so no two threads write the same row.
#pragma omp parallel for schedule(dynamic, 1)
    for (int l = 0; l < L.n_levels; ++l) {
        for (int64_t p0 = 0; p0 < n; p0 += kChunk) {
            const int m = (int)std::min<int64_t>(kChunk, n - p0);
            int64_t rows[kChunk][n_corners];
            T ws[kChunk][n_corners];
            corners_of_chunk<T, DIM, true>(x + p0 * DIM, m, L, l, gemb, n_feat, rows, ws);
            for (int q = 0; q < m; ++q) {
                const T* g = grad + (p0 + q) * width + l * n_feat;
                for (int c = 0; c < n_corners; ++c) {
                    T* ge = gemb + rows[q][c] * n_feat;
                    for (int f = 0; f < n_feat; ++f) ge[f] += ws[q][c] * g[f];
                }
            }
        }
    }
}

template <typename T, int DIM>
void grid_backward_dispatch(const T* grad, const T* x, int64_t n, int n_feat, const GridLayout& L, T* gemb) {
    if (n_feat == 1) grid_backward_impl<T, DIM, 1>(grad, x, n, n_feat, L, gemb);
    else if (n_feat == 2) grid_backward_impl<T, DIM, 2>(grad, x, n, n_feat, L, gemb);
    else grid_backward_impl<T, DIM, 0>(grad, x, n, n_feat, L, gemb);
}

}  // namespace

torch::Tensor rbf_forward(torch::Tensor x, torch::Tensor idx, torch::Tensor centers, torch::Tensor shapes,
                          torch::Tensor features, torch::Tensor freqs, int64_t kernel, bool normalize) {
    use_torch_threads();
    for (auto* t : {&x, &idx, &centers, &shapes, &features, &freqs}) check_cpu(*t, "rbf input");
    TORCH_CHECK(features.dim() == 2 && features.scalar_type() == x.scalar_type(), "features must be (n_rbf, F)");
    fs::check_rbf_inputs(x, idx, centers, shapes, freqs, features.size(0), features.size(1), kernel);
    auto out = torch::empty({x.size(0), features.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rbf_forward", [&] {
        dispatch_rbf((int)x.size(1), (int)kernel, [&](auto d, auto kern) {
            rbf_forward_impl<scalar_t, decltype(d)::value, decltype(kern)::value>(
                x.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), centers.data_ptr<scalar_t>(),
                shapes.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(), freqs.data_ptr<scalar_t>(), x.size(0),
                (int)idx.size(1), (int)features.size(1), normalize, out.data_ptr<scalar_t>());
        });
    });
    return out;
}

torch::Tensor rbf_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor idx, torch::Tensor centers,
                           torch::Tensor shapes, torch::Tensor freqs, int64_t n_rbf, int64_t kernel, bool normalize) {
    use_torch_threads();
    for (auto* t : {&grad, &x, &idx, &centers, &shapes, &freqs}) check_cpu(*t, "rbf input");
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.scalar_type() == x.scalar_type(),
                "grad must be (N, F) in x's dtype");
    fs::check_rbf_inputs(x, idx, centers, shapes, freqs, n_rbf, grad.size(1), kernel);
    auto gfeat = torch::zeros({n_rbf, grad.size(1)}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rbf_backward", [&] {
        dispatch_rbf((int)x.size(1), (int)kernel, [&](auto d, auto kern) {
            rbf_backward_impl<scalar_t, decltype(d)::value, decltype(kern)::value>(
                grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                centers.data_ptr<scalar_t>(), shapes.data_ptr<scalar_t>(), freqs.data_ptr<scalar_t>(), x.size(0),
                (int)idx.size(1), (int)grad.size(1), n_rbf, normalize, gfeat.data_ptr<scalar_t>());
        });
    });
    return gfeat;
}

torch::Tensor grid_forward(torch::Tensor x, torch::Tensor emb, torch::Tensor resolutions, torch::Tensor offsets,
                           torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size) {
    use_torch_threads();
    check_cpu(x, "x");
    check_cpu(emb, "embeddings");
    TORCH_CHECK(emb.dim() == 2 && emb.scalar_type() == x.scalar_type(), "embeddings must be (rows, F) in x's dtype");
    fs::check_grid_layout(x, resolutions, offsets, mult, emb.size(1), emb.size(0));
    const auto L = layout_of(resolutions, offsets, mult, n_dense, log2_hashmap_size);
    auto out = torch::empty({x.size(0), L.n_levels * emb.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_forward", [&] {
        if (L.dim == 2)
            grid_forward_dispatch<scalar_t, 2>(x.data_ptr<scalar_t>(), emb.data_ptr<scalar_t>(), x.size(0),
                                           (int)emb.size(1), L, out.data_ptr<scalar_t>());
        else
            grid_forward_dispatch<scalar_t, 3>(x.data_ptr<scalar_t>(), emb.data_ptr<scalar_t>(), x.size(0),
                                           (int)emb.size(1), L, out.data_ptr<scalar_t>());
    });
    return out;
}

torch::Tensor grid_backward(torch::Tensor grad, torch::Tensor x, int64_t n_rows, torch::Tensor resolutions,
                            torch::Tensor offsets, torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size) {
    use_torch_threads();
    check_cpu(grad, "grad");
    check_cpu(x, "x");
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) % resolutions.numel() == 0,
                "grad must be (N, levels x F)");
    fs::check_grid_layout(x, resolutions, offsets, mult, grad.size(1) / resolutions.numel(), n_rows);
    const auto L = layout_of(resolutions, offsets, mult, n_dense, log2_hashmap_size);
    const int n_feat = (int)(grad.size(1) / L.n_levels);
    auto gemb = torch::zeros({n_rows, n_feat}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_backward", [&] {
        if (L.dim == 2)
            grid_backward_dispatch<scalar_t, 2>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x.size(0), n_feat, L,
                                            gemb.data_ptr<scalar_t>());
        else
            grid_backward_dispatch<scalar_t, 3>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x.size(0), n_feat, L,
                                            gemb.data_ptr<scalar_t>());
    });
    return gemb;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("rbf_forward", &rbf_forward, "adaptive RBF layer, forward");
    m.def("rbf_backward", &rbf_backward, "adaptive RBF layer, gradient of the features");
    m.def("grid_forward", &grid_forward, "multires grid, forward");
    m.def("grid_backward", &grid_backward, "multires grid, gradient of the embeddings");
}
