// LRN across channels over (N, C, spatial) blobs, in the order of operations of caffe_py's CPU path:
// scale = k + sum over the `size` channels centred on c of x^2 * (alpha / size) (zero outside),
// y = x * scale^-beta. Each work item reads its own window (no running sums), so it rounds like the CPU.

template <typename T>
__global__ void lrn_forward(const int n, const T* x, const int channels, const int spatial,
                            const int size, const T alpha_over_size, const T k, const T neg_beta,
                            T* scale, T* factor, T* y) {
  const int pre_pad = (size - 1) / 2;
  CAFFE_KERNEL_LOOP(index, n) {
    const int s = index % spatial;
    const int c = (index / spatial) % channels;
    const T* column = x + (index / spatial / channels) * channels * spatial + s;
    T sum = k;
    for (int j = 0; j < size; ++j) {
      const int cc = c - pre_pad + j;
      if (cc >= 0 && cc < channels) {
        const T v = column[cc * spatial];
        sum += (v * v) * alpha_over_size;
      }
    }
    const T f = pow(sum, neg_beta);
    scale[index] = sum;
    factor[index] = f;
    y[index] = x[index] * f;
  }
}

// dx = dy * factor + x * coeff * sum over the window of dy * y / scale, coeff = -2 alpha beta / size.
template <typename T>
__global__ void lrn_backward(const int n, const T* x, const T* y, const T* dy, const T* scale,
                             const T* factor, const int channels, const int spatial, const int size,
                             const T coeff, T* dx) {
  const int pre_pad = (size - 1) / 2;
  CAFFE_KERNEL_LOOP(index, n) {
    const int s = index % spatial;
    const int c = (index / spatial) % channels;
    const int base = (index / spatial / channels) * channels * spatial + s;
    T accum = 0;
    for (int j = 0; j < size; ++j) {
      const int cc = c - pre_pad + j;
      if (cc >= 0 && cc < channels) {
        const int at = base + cc * spatial;
        accum += (dy[at] * y[at]) / scale[at];
      }
    }
    accum = (accum * x[index]) * coeff;
    dx[index] = dy[index] * factor[index] + accum;
  }
}
