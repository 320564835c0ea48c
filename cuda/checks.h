// checks.h: what the fused kernels assume about their inputs, checked by both torch bindings (cpu_ops.cpp,
// cuda_ops.cpp) before any kernel reads memory. The PyTorch reference raises on the same inputs; a kernel would
// read out of bounds instead. Python sends calls beyond the limits to the reference (fields/encoders/*.py), so
// these fire only on direct calls.
#pragma once

#include <torch/extension.h>

#include <cstdint>

#include "common.h"

namespace fs {

// x (N, dim), idx (N, k) int64 in [-1, n_rbf), centers (n_rbf, dim), shapes (n_rbf, 1 or dim^2), freqs (F,);
// one float dtype throughout. The index range is checked unless check_indices is false (the CUDA kernels treat
// rows outside it as missing instead: reading them back to check would stall the GPU once per call).
inline void check_rbf_inputs(const torch::Tensor& x, const torch::Tensor& idx, const torch::Tensor& centers,
                             const torch::Tensor& shapes, const torch::Tensor& freqs, int64_t n_rbf, int64_t n_feat,
                             int64_t kernel, bool check_indices = true) {
    TORCH_CHECK(x.dim() == 2 && idx.dim() == 2 && idx.size(0) == x.size(0), "x must be (N, dim) and idx (N, k)");
    const int64_t dim = x.size(1);
    TORCH_CHECK(dim == 2 || dim == 3, "RBF kernels support dim 2 and 3, got ", dim);
    TORCH_CHECK(kernel >= 0 && kernel <= 2, "unknown RBF kernel id ", kernel);
    TORCH_CHECK(idx.scalar_type() == torch::kInt64, "idx must be int64");
    TORCH_CHECK(idx.size(1) >= 1 && idx.size(1) <= kMaxK, "1 to ", kMaxK, " neighbours per query, got ",
                idx.size(1));
    TORCH_CHECK(centers.dim() == 2 && centers.size(0) == n_rbf && centers.size(1) == dim,
                "centers must be (n_rbf, dim) = (", n_rbf, ", ", dim, ")");
    const int64_t per = kernel == 0 ? 1 : dim * dim;
    TORCH_CHECK(shapes.numel() == n_rbf * per, "shapes must hold ", per, " values per RBF");
    TORCH_CHECK(freqs.numel() == n_feat, "freqs must hold one frequency per feature");
    for (const auto* t : {&centers, &shapes, &freqs})
        TORCH_CHECK(t->scalar_type() == x.scalar_type(), "every RBF table must have x's dtype");
    if (check_indices && idx.numel() > 0) {  // one reduction per call (on a GPU also a sync: see the caller)
        const auto range = idx.aminmax();
        const int64_t lo = std::get<0>(range).item<int64_t>(), hi = std::get<1>(range).item<int64_t>();
        TORCH_CHECK(lo >= -1 && hi < n_rbf, "neighbour indices must be in [-1, ", n_rbf, "), got ", lo, "..", hi);
    }
}

// The grid layout: resolutions (L,), offsets (L + 1,), mult (L, dim) int64 on the CPU.
inline void check_grid_layout(const torch::Tensor& x, const torch::Tensor& resolutions, const torch::Tensor& offsets,
                              const torch::Tensor& mult, int64_t n_feat, int64_t n_rows) {
    TORCH_CHECK(x.dim() == 2 && (x.size(1) == 2 || x.size(1) == 3), "grid kernels support dim 2 and 3");
    const int64_t levels = resolutions.numel();
    TORCH_CHECK(levels >= 1 && levels <= kMaxLevels, "1 to ", kMaxLevels, " grid levels, got ", levels);
    TORCH_CHECK(n_feat >= 1 && n_feat <= kMaxGridFeatures, "1 to ", kMaxGridFeatures, " features per level");
    for (const auto* t : {&resolutions, &offsets, &mult}) {
        TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kInt64, "grid layout tables must be CPU int64");
    }
    TORCH_CHECK(offsets.numel() == levels + 1 && mult.numel() == levels * x.size(1), "grid layout sizes disagree");
    TORCH_CHECK(offsets.contiguous().data_ptr<int64_t>()[levels] == n_rows, "the last offset must be the row count");
}

}  // namespace fs
