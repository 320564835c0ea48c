// cpu_ops.cpp: fused CPU (OpenMP) forward and backward of the adaptive-RBF layer and the multires grid.
//
// Built on first use by fields/kernels.py with torch.utils.cpp_extension. Gradients are those of the trained
// tables (RBF features, grid embeddings); queries that need gradients with respect to positions take the
// PyTorch reference (fields/kernels.py decides). Backward passes write without atomics: each thread owns a
// range of RBF rows, or whole grid levels (their rows are disjoint), so results do not depend on scheduling.
#include <torch/extension.h>
#include <omp.h>

#include <vector>

#include "common.h"

namespace {

// Same thread count as torch's own CPU ops (torch.set_num_threads), whichever OpenMP runtime each links.
void use_torch_threads() { omp_set_num_threads(at::get_num_threads()); }

void check_cpu(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

constexpr int kMaxK = 64;

template <typename T>
void rbf_forward_impl(const T* x, const int64_t* idx, const T* centers, const T* shapes, const T* features,
                      const T* freqs, int64_t n, int k, int dim, int n_feat, int kernel, bool normalize, T* out) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n; ++p) {
        T phi[kMaxK];
        const int64_t* nb = idx + p * k;
        fs::rbf_phis(x + p * dim, nb, k, centers, shapes, dim, kernel, normalize, phi);
        T* o = out + p * n_feat;
        for (int f = 0; f < n_feat; ++f) o[f] = T(0);
        for (int i = 0; i < k; ++i) {
            if (nb[i] < 0) continue;
            const T* w = features + nb[i] * n_feat;
            const T ph = phi[i];
#pragma omp simd
            for (int f = 0; f < n_feat; ++f) o[f] += w[f] * std::sin(ph * freqs[f]);
        }
    }
}

template <typename T>
void rbf_backward_impl(const T* grad, const T* x, const int64_t* idx, const T* centers, const T* shapes,
                       const T* freqs, int64_t n, int k, int dim, int n_feat, int64_t n_rbf, int kernel,
                       bool normalize, T* gfeat) {
#pragma omp parallel
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t r0 = n_rbf * t / nt, r1 = n_rbf * (t + 1) / nt;  // rows this thread owns
        T phi[kMaxK];
        for (int64_t p = 0; p < n; ++p) {
            const int64_t* nb = idx + p * k;
            bool mine = false;
            for (int i = 0; i < k; ++i) mine |= (nb[i] >= r0 && nb[i] < r1);
            if (!mine) continue;
            fs::rbf_phis(x + p * dim, nb, k, centers, shapes, dim, kernel, normalize, phi);
            const T* g = grad + p * n_feat;
            for (int i = 0; i < k; ++i) {
                if (nb[i] < r0 || nb[i] >= r1) continue;
                T* gw = gfeat + nb[i] * n_feat;
                const T ph = phi[i];
#pragma omp simd
                for (int f = 0; f < n_feat; ++f) gw[f] += g[f] * std::sin(ph * freqs[f]);
            }
        }
    }
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

template <typename T>
void grid_forward_impl(const T* x, const T* emb, int64_t n, int n_feat, const GridLayout& L, T* out) {
    const int n_corners = 1 << L.dim;
    const int width = L.n_levels * n_feat;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n; ++p) {
        T* o = out + p * width;
        for (int l = 0; l < L.n_levels; ++l) {
            const auto cell = fs::grid_cell(x + p * L.dim, L.dim, L.res[l]);
            T acc[16] = {};
            for (int c = 0; c < n_corners; ++c) {
                int64_t row;
                T w;
                fs::grid_corner(cell, c, L.dim, l >= L.n_dense, &L.mult[l * L.dim], L.offsets[l], L.mask, &row, &w);
                const T* e = emb + row * n_feat;
                for (int f = 0; f < n_feat; ++f) acc[f] += w * e[f];
            }
            for (int f = 0; f < n_feat; ++f) o[l * n_feat + f] = acc[f];
        }
    }
}

template <typename T>
void grid_backward_impl(const T* grad, const T* x, int64_t n, int n_feat, const GridLayout& L, T* gemb) {
    const int n_corners = 1 << L.dim;
    const int width = L.n_levels * n_feat;
    // One level per task: levels own disjoint rows, so no two threads write the same row.
#pragma omp parallel for schedule(dynamic, 1)
    for (int l = 0; l < L.n_levels; ++l) {
        for (int64_t p = 0; p < n; ++p) {
            const auto cell = fs::grid_cell(x + p * L.dim, L.dim, L.res[l]);
            const T* g = grad + p * width + l * n_feat;
            for (int c = 0; c < n_corners; ++c) {
                int64_t row;
                T w;
                fs::grid_corner(cell, c, L.dim, l >= L.n_dense, &L.mult[l * L.dim], L.offsets[l], L.mask, &row, &w);
                T* ge = gemb + row * n_feat;
                for (int f = 0; f < n_feat; ++f) ge[f] += w * g[f];
            }
        }
    }
}

}  // namespace

torch::Tensor rbf_forward(torch::Tensor x, torch::Tensor idx, torch::Tensor centers, torch::Tensor shapes,
                          torch::Tensor features, torch::Tensor freqs, int64_t kernel, bool normalize) {
    use_torch_threads();
    for (auto* t : {&x, &idx, &centers, &shapes, &features, &freqs}) check_cpu(*t, "rbf input");
    TORCH_CHECK(idx.scalar_type() == torch::kInt64, "idx must be int64");
    TORCH_CHECK(idx.size(1) <= kMaxK, "at most ", kMaxK, " neighbours per query");
    TORCH_CHECK(x.size(1) <= 3, "dim must be <= 3");
    auto out = torch::empty({x.size(0), features.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rbf_forward", [&] {
        rbf_forward_impl<scalar_t>(x.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), centers.data_ptr<scalar_t>(),
                                   shapes.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(),
                                   freqs.data_ptr<scalar_t>(), x.size(0), (int)idx.size(1), (int)x.size(1),
                                   (int)features.size(1), (int)kernel, normalize, out.data_ptr<scalar_t>());
    });
    return out;
}

torch::Tensor rbf_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor idx, torch::Tensor centers,
                           torch::Tensor shapes, torch::Tensor freqs, int64_t n_rbf, int64_t kernel, bool normalize) {
    use_torch_threads();
    for (auto* t : {&grad, &x, &idx, &centers, &shapes, &freqs}) check_cpu(*t, "rbf input");
    auto gfeat = torch::zeros({n_rbf, grad.size(1)}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rbf_backward", [&] {
        rbf_backward_impl<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                                    centers.data_ptr<scalar_t>(), shapes.data_ptr<scalar_t>(),
                                    freqs.data_ptr<scalar_t>(), x.size(0), (int)idx.size(1), (int)x.size(1),
                                    (int)grad.size(1), n_rbf, (int)kernel, normalize, gfeat.data_ptr<scalar_t>());
    });
    return gfeat;
}

torch::Tensor grid_forward(torch::Tensor x, torch::Tensor emb, torch::Tensor resolutions, torch::Tensor offsets,
                           torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size) {
    use_torch_threads();
    check_cpu(x, "x");
    check_cpu(emb, "embeddings");
    TORCH_CHECK(emb.size(1) <= 16, "at most 16 features per level");
    const auto L = layout_of(resolutions, offsets, mult, n_dense, log2_hashmap_size);
    auto out = torch::empty({x.size(0), L.n_levels * emb.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_forward", [&] {
        grid_forward_impl<scalar_t>(x.data_ptr<scalar_t>(), emb.data_ptr<scalar_t>(), x.size(0), (int)emb.size(1), L,
                                    out.data_ptr<scalar_t>());
    });
    return out;
}

torch::Tensor grid_backward(torch::Tensor grad, torch::Tensor x, int64_t n_rows, torch::Tensor resolutions,
                            torch::Tensor offsets, torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size) {
    use_torch_threads();
    check_cpu(grad, "grad");
    check_cpu(x, "x");
    const auto L = layout_of(resolutions, offsets, mult, n_dense, log2_hashmap_size);
    const int n_feat = (int)(grad.size(1) / L.n_levels);
    auto gemb = torch::zeros({n_rows, n_feat}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_backward", [&] {
        grid_backward_impl<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x.size(0), n_feat, L,
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
