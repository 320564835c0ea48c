// cuda_runtime.h (emulated): lets rbf_kernels.cu and grid_kernels.cu compile as plain C++ and run serially, so
// the CUDA kernel bodies are tested against the PyTorch reference on machines without a GPU (tests/
// test_emulated_cuda.py). Found before <cuda_runtime.h> because the emulated build puts this folder first on the
// include path; the real header is never seen.
//
// What it cannot tell: rounding of the GPU's math functions, races between threads (the loop runs one thread at
// a time; fs_emu::set_order shuffles the order to catch order dependence) and speed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

typedef void* cudaStream_t;
typedef int cudaError_t;
inline cudaError_t cudaGetLastError() { return 0; }

// One thread at a time: a plain read-modify-write is what the atomic guarantees.
template <typename T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

using std::exp;
using std::fabs;
using std::floor;
using std::sin;

namespace fs_emu {

// 0: blocks and threads in order; any other value: a random order drawn from it (the same for every launch).
inline uint64_t& order_seed() {
    static uint64_t seed = 0;
    return seed;
}
inline void set_order(uint64_t seed) { order_seed() = seed; }

template <typename... P>
struct Launch {
    void (*kernel)(P...);
    unsigned blocks, threads;

    template <typename... A>
    void operator()(A&&... args) const {
        gridDim = dim3{blocks, 1, 1};
        blockDim = dim3{threads, 1, 1};
        std::vector<uint64_t> order((size_t)blocks * threads);
        std::iota(order.begin(), order.end(), uint64_t(0));
        if (order_seed() != 0) std::shuffle(order.begin(), order.end(), std::mt19937_64(order_seed()));
        for (const uint64_t t : order) {
            blockIdx = dim3{unsigned(t / threads), 1, 1};
            threadIdx = dim3{unsigned(t % threads), 1, 1};
            kernel(args...);
        }
    }
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), unsigned blocks, unsigned threads) {
    return Launch<P...>{kernel, blocks, threads};
}

}  // namespace fs_emu
