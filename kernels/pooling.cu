// 2-D pooling over `planes` = N * C planes of height x width into pooled_h x pooled_w, with Caffe's
// windows (pooling_layer.cu): a window starts at (ph * stride_h - pad_h, pw * stride_w - pad_w) and is
// clipped to the image; AVE divides by the window clipped to the padded extent. `argmax` holds, per
// output, the plane index h * width + w its gradient goes to (-1: none). Backward passes gather per
// bottom pixel over the windows that contain it, in increasing output order.

// The window of output p along one axis, clipped to the image: [start, end).
__device__ __forceinline__ void pool_window(const int p, const int stride, const int pad, const int kernel,
                                            const int size, int& start, int& end) {
  start = p * stride - pad;
  end = caffe_imin(start + kernel, size);
  start = caffe_imax(start, 0);
}

// AVE's divisor: the window starting at (h0, w0) clipped to the padded extent.
__device__ __forceinline__ int ave_pool_size(const int h0, const int w0, const int kernel_h, const int kernel_w,
                                             const int padded_h, const int padded_w) {
  return (caffe_imin(h0 + kernel_h, padded_h) - h0) * (caffe_imin(w0 + kernel_w, padded_w) - w0);
}

// The outputs along one axis whose windows hold padded coordinate x: [start, end).
__device__ __forceinline__ void covering_outputs(const int x, const int stride, const int kernel, const int pooled,
                                                 int& start, int& end) {
  start = (x < kernel) ? 0 : (x - kernel) / stride + 1;
  end = caffe_imin(x / stride + 1, pooled);
}

template <typename T>
__global__ void max_pool_forward(const int n, const T* bottom, const int height, const int width,
                                 const int pooled_h, const int pooled_w, const int kernel_h,
                                 const int kernel_w, const int stride_h, const int stride_w,
                                 const int pad_h, const int pad_w, T* top, int* argmax) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int plane = index / pooled_w / pooled_h;
    int hstart, hend, wstart, wend;
    pool_window(ph, stride_h, pad_h, kernel_h, height, hstart, hend);
    pool_window(pw, stride_w, pad_w, kernel_w, width, wstart, wend);
    const T* src = bottom + plane * height * width;
    T best = -CAFFE_FLT_MAX;     // strict >: the first maximum wins and NaN never does
    int where = -1;
    for (int h = hstart; h < hend; ++h) {
      for (int w = wstart; w < wend; ++w) {
        if (src[h * width + w] > best) {
          best = src[h * width + w];
          where = h * width + w;
        }
      }
    }
    top[index] = best;
    argmax[index] = where;
  }
}

template <typename T>
__global__ void ave_pool_forward(const int n, const T* bottom, const int height, const int width,
                                 const int pooled_h, const int pooled_w, const int kernel_h,
                                 const int kernel_w, const int stride_h, const int stride_w,
                                 const int pad_h, const int pad_w, T* top) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int plane = index / pooled_w / pooled_h;
    const int pool_size = ave_pool_size(ph * stride_h - pad_h, pw * stride_w - pad_w, kernel_h, kernel_w,
                                        height + pad_h, width + pad_w);
    int hstart, hend, wstart, wend;
    pool_window(ph, stride_h, pad_h, kernel_h, height, hstart, hend);
    pool_window(pw, stride_w, pad_w, kernel_w, width, wstart, wend);
    const T* src = bottom + plane * height * width;
    T sum = 0;
    for (int h = hstart; h < hend; ++h) {
      for (int w = wstart; w < wend; ++w) {
        sum += src[h * width + w];
      }
    }
    top[index] = sum / T(pool_size);
  }
}

// TRAIN: the first cell (row-major) where the running sum reaches uniform[index] * window sum,
// uniform in (0, 1] drawn by the caller.
template <typename T>
__global__ void sto_pool_forward_train(const int n, const T* bottom, const int height, const int width,
                                       const int pooled_h, const int pooled_w, const int kernel_h,
                                       const int kernel_w, const int stride_h, const int stride_w,
                                       const T* uniform, T* top, int* argmax) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int plane = index / pooled_w / pooled_h;
    int hstart, hend, wstart, wend;
    pool_window(ph, stride_h, 0, kernel_h, height, hstart, hend);
    pool_window(pw, stride_w, 0, kernel_w, width, wstart, wend);
    const T* src = bottom + plane * height * width;
    T total = 0;
    for (int h = hstart; h < hend; ++h) {
      for (int w = wstart; w < wend; ++w) {
        total += src[h * width + w];
      }
    }
    const T threshold = uniform[index] * total;
    T running = 0;
    T value = 0;
    int where = -1;
    for (int h = hstart; h < hend && where < 0; ++h) {
      for (int w = wstart; w < wend; ++w) {
        running += src[h * width + w];
        if (running >= threshold) {
          value = src[h * width + w];
          where = h * width + w;
          break;
        }
      }
    }
    top[index] = value;
    argmax[index] = where;
  }
}

// TEST: the window's values weighted by themselves, sum(x^2) / sum(x) (0 when the sum is not positive).
template <typename T>
__global__ void sto_pool_forward_test(const int n, const T* bottom, const int height, const int width,
                                      const int pooled_h, const int pooled_w, const int kernel_h,
                                      const int kernel_w, const int stride_h, const int stride_w,
                                      T* top) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int plane = index / pooled_w / pooled_h;
    int hstart, hend, wstart, wend;
    pool_window(ph, stride_h, 0, kernel_h, height, hstart, hend);
    pool_window(pw, stride_w, 0, kernel_w, width, wstart, wend);
    const T* src = bottom + plane * height * width;
    T total = 0;
    T squares = 0;
    for (int h = hstart; h < hend; ++h) {
      for (int w = wstart; w < wend; ++w) {
        const T x = src[h * width + w];
        total += x;
        squares += x * x;
      }
    }
    top[index] = total > T(0) ? squares / total : T(0);
  }
}

// MAX and STOCHASTIC: each bottom pixel sums the top diffs of the windows whose argmax is that pixel.
template <typename T>
__global__ void argmax_pool_backward(const int n, const T* top_diff, const int* argmax,
                                     const int height, const int width, const int pooled_h,
                                     const int pooled_w, const int kernel_h, const int kernel_w,
                                     const int stride_h, const int stride_w, const int pad_h,
                                     const int pad_w, T* bottom_diff) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int w = index % width;
    const int h = (index / width) % height;
    const int plane = index / width / height;
    int phstart, phend, pwstart, pwend;
    covering_outputs(h + pad_h, stride_h, kernel_h, pooled_h, phstart, phend);
    covering_outputs(w + pad_w, stride_w, kernel_w, pooled_w, pwstart, pwend);
    const int offset = plane * pooled_h * pooled_w;
    const int me = h * width + w;
    T gradient = 0;
    for (int ph = phstart; ph < phend; ++ph) {
      for (int pw = pwstart; pw < pwend; ++pw) {
        if (argmax[offset + ph * pooled_w + pw] == me) {
          gradient += top_diff[offset + ph * pooled_w + pw];
        }
      }
    }
    bottom_diff[index] = gradient;
  }
}

template <typename T>
__global__ void ave_pool_backward(const int n, const T* top_diff, const int height, const int width,
                                  const int pooled_h, const int pooled_w, const int kernel_h,
                                  const int kernel_w, const int stride_h, const int stride_w,
                                  const int pad_h, const int pad_w, T* bottom_diff) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int w = index % width + pad_w;     // in padded coordinates
    const int h = (index / width) % height + pad_h;
    const int plane = index / width / height;
    int phstart, phend, pwstart, pwend;
    covering_outputs(h, stride_h, kernel_h, pooled_h, phstart, phend);
    covering_outputs(w, stride_w, kernel_w, pooled_w, pwstart, pwend);
    const T* src = top_diff + plane * pooled_h * pooled_w;
    T gradient = 0;
    for (int ph = phstart; ph < phend; ++ph) {
      for (int pw = pwstart; pw < pwend; ++pw) {
        const int pool_size = ave_pool_size(ph * stride_h - pad_h, pw * stride_w - pad_w, kernel_h, kernel_w,
                                            height + pad_h, width + pad_w);
        gradient += src[ph * pooled_w + pw] / T(pool_size);
      }
    }
    bottom_diff[index] = gradient;
  }
}
