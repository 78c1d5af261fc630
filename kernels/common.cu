// Put in front of every kernel file by caffe_py/gpu.py. No #include: NVRTC (CuPy's RawModule) and the
// CPU emulation of the tests compile exactly this text.
//
// Conventions of kernels/*.cu: each kernel is `template <typename T> __global__ void name(const int n, ...)`
// with parameters of the types int, T and pointers to them; it walks its n work items with
// CAFFE_KERNEL_LOOP and each item writes only its own outputs (gathers, never atomics), so that a
// kernel gives the same bits on every run whatever the launch shape.

#define CAFFE_KERNEL_LOOP(i, n) \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

#define CAFFE_FLT_MAX 3.402823466e+38F
#define CAFFE_FLT_MIN 1.175494351e-38F

__device__ __forceinline__ int caffe_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int caffe_imax(int a, int b) { return a > b ? a : b; }
