// cuda_ops.cpp: torch bindings of the CUDA launchers (rbf_kernels.cu, grid_kernels.cu).
//
// Only torch/extension.h: the CUDA stream comes from Python as an integer (torch.cuda.current_stream()
// .cuda_stream), so no ATen CUDA header is needed and the same source builds wherever torch has CUDA. Every
// input is checked (checks.h) before a kernel reads it, and the kernels run on the tensors' device.
//
// Built with FS_EMULATE_CUDA (tests/test_emulated_cuda.py) the same bindings take CPU tensors and call the
// kernels compiled as C++ (cuda/emulated/), one thread at a time.
#include <torch/extension.h>
#include <c10/core/DeviceGuard.h>

#include <cstdint>

#include "checks.h"
#ifdef FS_EMULATE_CUDA
#include "emulated/cuda_runtime.h"
#endif

#define FS_DECLARE(T, S)                                                                                        \
    extern "C" int fs_rbf_forward_##S(const T*, const int64_t*, const T*, const T*, const T*, const T*, int64_t, \
                                      int64_t, int, int, int, int, int, T*, void*);                             \
    extern "C" int fs_rbf_backward_##S(const T*, const T*, const int64_t*, const T*, const T*, const T*, int64_t, \
                                       int64_t, int, int, int, int, int, T*, void*);                            \
    extern "C" int fs_grid_forward_##S(const T*, const T*, int64_t, int, const int64_t*, const int64_t*,       \
                                       const int64_t*, int, int, int, int, T*, void*);                          \
    extern "C" int fs_grid_backward_##S(const T*, const T*, int64_t, int, const int64_t*, const int64_t*,      \
                                        const int64_t*, int, int, int, int, T*, void*);
FS_DECLARE(float, f32)
FS_DECLARE(double, f64)

namespace {

#ifdef FS_EMULATE_CUDA
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// Every tensor on the first one's device (a CUDA device; the CPU in the emulated build), contiguous.
void check_device(std::initializer_list<const torch::Tensor*> ts, const char* what) {
    const auto device = (*ts.begin())->device();
    for (const auto* t : ts) {
        TORCH_CHECK(kEmulated ? t->device().is_cpu() : t->device().is_cuda(), what,
                    kEmulated ? " must be CPU tensors (emulated build)" : " must be CUDA tensors");
        TORCH_CHECK(t->device() == device, what, " must all be on one device (", device, " and ", t->device(), ")");
        TORCH_CHECK(t->is_contiguous(), what, " must be contiguous");
    }
}

void check_status(int status, const char* op) {
    TORCH_CHECK(status == 0, op, " failed to launch (CUDA error ", status, ")");
}

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

}  // namespace

torch::Tensor rbf_forward(torch::Tensor x, torch::Tensor idx, torch::Tensor centers, torch::Tensor shapes,
                          torch::Tensor features, torch::Tensor freqs, int64_t kernel, bool normalize, int64_t stream) {
    check_device({&x, &idx, &centers, &shapes, &features, &freqs}, "rbf inputs");
    TORCH_CHECK(features.dim() == 2 && features.scalar_type() == x.scalar_type(), "features must be (n_rbf, F)");
    fs::check_rbf_inputs(x, idx, centers, shapes, freqs, features.size(0), features.size(1), kernel, false);
    const c10::DeviceGuard guard(x.device());
    auto out = torch::empty({x.size(0), features.size(1)}, x.options());
    const int64_t n = x.size(0);
    const int k = (int)idx.size(1), dim = (int)x.size(1), nf = (int)features.size(1);
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_rbf_forward_f32(x.data_ptr<float>(), idx.data_ptr<int64_t>(), centers.data_ptr<float>(),
                                    shapes.data_ptr<float>(), features.data_ptr<float>(), freqs.data_ptr<float>(), n,
                                    centers.size(0), k, dim, nf, (int)kernel, normalize, out.data_ptr<float>(), as_stream(stream));
    else
        status = fs_rbf_forward_f64(x.data_ptr<double>(), idx.data_ptr<int64_t>(), centers.data_ptr<double>(),
                                    shapes.data_ptr<double>(), features.data_ptr<double>(), freqs.data_ptr<double>(),
                                    n, centers.size(0), k, dim, nf, (int)kernel, normalize, out.data_ptr<double>(), as_stream(stream));
    check_status(status, "rbf_forward");
    return out;
}

torch::Tensor rbf_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor idx, torch::Tensor centers,
                           torch::Tensor shapes, torch::Tensor freqs, int64_t n_rbf, int64_t kernel, bool normalize,
                           int64_t stream) {
    check_device({&grad, &x, &idx, &centers, &shapes, &freqs}, "rbf inputs");
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.scalar_type() == x.scalar_type(),
                "grad must be (N, F) in x's dtype");
    fs::check_rbf_inputs(x, idx, centers, shapes, freqs, n_rbf, grad.size(1), kernel, false);
    const c10::DeviceGuard guard(x.device());
    auto gfeat = torch::zeros({n_rbf, grad.size(1)}, grad.options());
    const int64_t n = x.size(0);
    const int k = (int)idx.size(1), dim = (int)x.size(1), nf = (int)grad.size(1);
    int status;
    if (x.scalar_type() == torch::kFloat32)
        status = fs_rbf_backward_f32(grad.data_ptr<float>(), x.data_ptr<float>(), idx.data_ptr<int64_t>(),
                                     centers.data_ptr<float>(), shapes.data_ptr<float>(), freqs.data_ptr<float>(), n,
                                     n_rbf, k, dim, nf, (int)kernel, normalize, gfeat.data_ptr<float>(), as_stream(stream));
    else
        status = fs_rbf_backward_f64(grad.data_ptr<double>(), x.data_ptr<double>(), idx.data_ptr<int64_t>(),
                                     centers.data_ptr<double>(), shapes.data_ptr<double>(), freqs.data_ptr<double>(),
                                     n, n_rbf, k, dim, nf, (int)kernel, normalize, gfeat.data_ptr<double>(),
                                     as_stream(stream));
    check_status(status, "rbf_backward");
    return gfeat;
}

// resolutions, offsets and mult are the grid layout: small int64 tensors kept on the CPU by the caller
// (MultiResGrid.host_layout), so a call makes no device-to-host copy.
torch::Tensor grid_forward(torch::Tensor x, torch::Tensor emb, torch::Tensor resolutions, torch::Tensor offsets,
                           torch::Tensor mult, int64_t n_dense, int64_t log2_hashmap_size, int64_t stream) {
    check_device({&x, &emb}, "x and embeddings");
    TORCH_CHECK(emb.dim() == 2 && emb.scalar_type() == x.scalar_type(), "embeddings must be (rows, F) in x's dtype");
    fs::check_grid_layout(x, resolutions, offsets, mult, emb.size(1), emb.size(0));
    const c10::DeviceGuard guard(x.device());
    auto r = resolutions.contiguous(), o = offsets.contiguous(), m = mult.contiguous();
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
    check_device({&grad, &x}, "grad and x");
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) % resolutions.numel() == 0 &&
                grad.scalar_type() == x.scalar_type(), "grad must be (N, levels x F) in x's dtype");
    fs::check_grid_layout(x, resolutions, offsets, mult, grad.size(1) / resolutions.numel(), n_rows);
    const c10::DeviceGuard guard(x.device());
    auto r = resolutions.contiguous(), o = offsets.contiguous(), m = mult.contiguous();
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
#ifdef FS_EMULATE_CUDA
    m.def("set_thread_order", &fs_emu::set_order, "0: in order; else a random order of blocks and threads");
#endif
}
