// launch.h: one way to launch a kernel, so the .cu files also compile as plain C++ for the emulated tests.
//
// FS_LAUNCH(kernel, blocks, threads, stream)(args...) is kernel<<<blocks, threads, 0, stream>>>(args...) under
// nvcc, and a serial loop over every (block, thread) under FS_EMULATE_CUDA (cuda/emulated/cuda_runtime.h).
#pragma once

#ifdef FS_EMULATE_CUDA
#define FS_LAUNCH(kernel, blocks, threads, stream) fs_emu::launch(kernel, blocks, threads)
#else
#define FS_LAUNCH(kernel, blocks, threads, stream) kernel<<<blocks, threads, 0, stream>>>
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
#error "the fused kernels need sm_60 or newer (atomicAdd on double); set TORCH_CUDA_ARCH_LIST"
#endif
#endif
