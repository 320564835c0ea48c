// The CUDA source compiled as C++ for the emulated tests (see cuda_runtime.h beside this file).
#include "../grid_kernels.cu"
