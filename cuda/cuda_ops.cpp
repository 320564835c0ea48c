// cuda_ops.cpp: torch bindings of the CUDA launchers (rbf_kernels.cu, grid_kernels.cu).
//
// Only torch/extension.h: the CUDA stream comes from Python as an integer (torch.cuda.current_stream()
// .cuda_stream), so no ATen CUDA header is needed and the same source builds wherever torch has CUDA.
#include <torch/extension.h>

#include <cstdint>

#define FS_DECLARE(T, S)                                                                                        \
    extern "C" int fs_rbf_forward_##S(const T*, const int64_t*, const T*, const T*, const T*, const T*, int64_t, \
                                      int, int, int, int, int, T*, void*);                                      \
    extern "C" int fs_rbf_backward_##S(const T*, const T*, const int64_t*, const T*, const T*, const T*, int64_t, \
                                       int, int, int, int, int, T*, void*);                                     \
    extern "C" int fs_grid_forward_##S(const T*, const T*, int64_t, int, const int64_t*, const int64_t*,       \
                                       const int64_t*, int, int, int, int, T*, void*);                          \
    extern "C" int fs_grid_backward_##S(const T*, const T*, int64_t, int, const int64_t*, const int64_t*,      \
                                        const int64_t*, int, int, int, int, T*, void*);
FS_DECLARE(float, f32)
FS_DECLARE(double, f64)

namespace {

void check_cuda(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_status(int status, const char* op) {
    TORCH_CHECK(status == 0, op, " failed to launch (CUDA error ", status, ")");
}

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

}  // namespace

torch::Tensor rbf_forward(torch::Tensor x, torch::Tensor idx, torch::Tensor centers, torch::Tensor shapes,
                          torch::Tensor features, torch::Tensor freqs, int64_t kernel, bool normalize, int64_t stream) {
    for (auto* t : {&x, &idx, &centers, &shapes, &features, &freqs}) check_cuda(*t, "rbf input");
    TORCH_CHECK(idx.size(1) <= 64, "at most 64 neighbours per query");
    auto out = torch::empty({x.size(0), features.size(1)}, x.options());
    const int64_t n = x.size(0);
    const int k = (int)idx.size(1), dim = (int)x.size(1), nf = (int)features.size(1);
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_rbf_forward_f32(x.data_ptr<float>(), idx.data_ptr<int64_t>(), centers.data_ptr<float>(),
                                    shapes.data_ptr<float>(), features.data_ptr<float>(), freqs.data_ptr<float>(), n,
                                    k, dim, nf, (int)kernel, normalize, out.data_ptr<float>(), as_stream(stream));
    else
        status = fs_rbf_forward_f64(x.data_ptr<double>(), idx.data_ptr<int64_t>(), centers.data_ptr<double>(),
                                    shapes.data_ptr<double>(), features.data_ptr<double>(), freqs.data_ptr<double>(),
                                    n, k, dim, nf, (int)kernel, normalize, out.data_ptr<double>(), as_stream(stream));
    check_status(status, "rbf_forward");
    return out;
}

torch::Tensor rbf_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor idx, torch::Tensor centers,
                           torch::Tensor shapes, torch::Tensor freqs, int64_t n_rbf, int64_t kernel, bool normalize,
                           int64_t stream) {
    for (auto* t : {&grad, &x, &idx, &centers, &shapes, &freqs}) check_cuda(*t, "rbf input");
    auto gfeat = torch::zeros({n_rbf, grad.size(1)}, grad.options());
    const int64_t n = x.size(0);
    const int k = (int)idx.size(1), dim = (int)x.size(1), nf = (int)grad.size(1);
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_rbf_backward_f32(grad.data_ptr<float>(), x.data_ptr<float>(), idx.data_ptr<int64_t>(),
                                     centers.data_ptr<float>(), shapes.data_ptr<float>(), freqs.data_ptr<float>(), n,
                                     k, dim, nf, (int)kernel, normalize, gfeat.data_ptr<float>(), as_stream(stream));
    else
        status = fs_rbf_backward_f64(grad.data_ptr<double>(), x.data_ptr<double>(), idx.data_ptr<int64_t>(),
                                     centers.data_ptr<double>(), shapes.data_ptr<double>(), freqs.data_ptr<double>(),
                                     n, k, dim, nf, (int)kernel, normalize, gfeat.data_ptr<double>(),
                                     as_stream(stream));
    check_status(status, "rbf_backward");
    return gfeat;
}

// resolutions, offsets and mult are small CPU int64 tensors (the grid layout); they are read on the host.
torch::Tensor grid_forward(torch::Tensor x, torch::Tensor emb, torch::Tensor resolutions, torch::Tensor offsets,
                           torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size, int64_t stream) {
    check_cuda(x, "x");
    check_cuda(emb, "embeddings");
    auto r = resolutions.cpu().contiguous(), o = offsets.cpu().contiguous(), m = mult.cpu().contiguous();
    const int n_levels = (int)r.numel(), dim = (int)x.size(1), nf = (int)emb.size(1);
    auto out = torch::empty({x.size(0), n_levels * nf}, x.options());
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_grid_forward_f32(x.data_ptr<float>(), emb.data_ptr<float>(), x.size(0), nf, r.data_ptr<int64_t>(),
                                     o.data_ptr<int64_t>(), m.data_ptr<int64_t>(), n_levels, dim, (int)n_dense,
                                     (int)log2_hashmap_size, out.data_ptr<float>(), as_stream(stream));
    else
        status = fs_grid_forward_f64(x.data_ptr<double>(), emb.data_ptr<double>(), x.size(0), nf,
                                     r.data_ptr<int64_t>(), o.data_ptr<int64_t>(), m.data_ptr<int64_t>(), n_levels,
                                     dim, (int)n_dense, (int)log2_hashmap_size, out.data_ptr<double>(),
                                     as_stream(stream));
    check_status(status, "grid_forward");
    return out;
}

torch::Tensor grid_backward(torch::Tensor grad, torch::Tensor x, int64_t n_rows, torch::Tensor resolutions,
                            torch::Tensor offsets, torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size,
                            int64_t stream) {
    check_cuda(grad, "grad");
    check_cuda(x, "x");
    auto r = resolutions.cpu().contiguous(), o = offsets.cpu().contiguous(), m = mult.cpu().contiguous();
    const int n_levels = (int)r.numel(), dim = (int)x.size(1), nf = (int)(grad.size(1) / n_levels);
    auto gemb = torch::zeros({n_rows, nf}, grad.options());
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_grid_backward_f32(grad.data_ptr<float>(), x.data_ptr<float>(), x.size(0), nf,
                                      r.data_ptr<int64_t>(), o.data_ptr<int64_t>(), m.data_ptr<int64_t>(), n_levels,
                                      dim, (int)n_dense, (int)log2_hashmap_size, gemb.data_ptr<float>(),
                                      as_stream(stream));
    else
        status = fs_grid_backward_f64(grad.data_ptr<double>(), x.data_ptr<double>(), x.size(0), nf,
                                      r.data_ptr<int64_t>(), o.data_ptr<int64_t>(), m.data_ptr<int64_t>(), n_levels,
                                      dim, (int)n_dense, (int)log2_hashmap_size, gemb.data_ptr<double>(),
                                      as_stream(stream));
    check_status(status, "grid_backward");
    return gemb;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("rbf_forward", &rbf_forward);
    m.def("rbf_backward", &rbf_backward);
    m.def("grid_forward", &grid_forward);
    m.def("grid_backward", &grid_backward);
}
