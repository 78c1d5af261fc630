// 2-D pooling over `planes` = N * C planes of height x width into pooled_h x pooled_w, with Caffe's
// windows (pooling_layer.cu): a window starts at (ph * stride_h - pad_h, pw * stride_w - pad_w) and is
// clipped to the image; AVE divides by the window clipped to the padded extent. `argmax` holds, per
// output, the plane index h * width + w its gradient goes to (-1: none). Backward passes gather per
// bottom pixel over the windows that contain it, in increasing output order.

template <typename T>
__global__ void max_pool_forward(const int n, const T* bottom, const int height, const int width,
                                 const int pooled_h, const int pooled_w, const int kernel_h,
                                 const int kernel_w, const int stride_h, const int stride_w,
                                 const int pad_h, const int pad_w, T* top, int* argmax) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int plane = index / pooled_w / pooled_h;
    const int hstart = caffe_imax(ph * stride_h - pad_h, 0);
    const int wstart = caffe_imax(pw * stride_w - pad_w, 0);
    const int hend = caffe_imin(ph * stride_h - pad_h + kernel_h, height);
    const int wend = caffe_imin(pw * stride_w - pad_w + kernel_w, width);
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
    const int h0 = ph * stride_h - pad_h;
    const int w0 = pw * stride_w - pad_w;
    const int pool_size = (caffe_imin(h0 + kernel_h, height + pad_h) - h0)
                          * (caffe_imin(w0 + kernel_w, width + pad_w) - w0);
    const int hend = caffe_imin(h0 + kernel_h, height);
    const int wend = caffe_imin(w0 + kernel_w, width);
    const T* src = bottom + plane * height * width;
    T sum = 0;
    for (int h = caffe_imax(h0, 0); h < hend; ++h) {
      for (int w = caffe_imax(w0, 0); w < wend; ++w) {
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
    const int hstart = ph * stride_h;
    const int wstart = pw * stride_w;
    const int hend = caffe_imin(hstart + kernel_h, height);
    const int wend = caffe_imin(wstart + kernel_w, width);
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
    const int hstart = ph * stride_h;
    const int wstart = pw * stride_w;
    const int hend = caffe_imin(hstart + kernel_h, height);
    const int wend = caffe_imin(wstart + kernel_w, width);
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
    const int phstart = (h + pad_h < kernel_h) ? 0 : (h + pad_h - kernel_h) / stride_h + 1;
    const int phend = caffe_imin((h + pad_h) / stride_h + 1, pooled_h);
    const int pwstart = (w + pad_w < kernel_w) ? 0 : (w + pad_w - kernel_w) / stride_w + 1;
    const int pwend = caffe_imin((w + pad_w) / stride_w + 1, pooled_w);
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
    const int phstart = (h < kernel_h) ? 0 : (h - kernel_h) / stride_h + 1;
    const int phend = caffe_imin(h / stride_h + 1, pooled_h);
    const int pwstart = (w < kernel_w) ? 0 : (w - kernel_w) / stride_w + 1;
    const int pwend = caffe_imin(w / stride_w + 1, pooled_w);
    const T* src = top_diff + plane * pooled_h * pooled_w;
    T gradient = 0;
    for (int ph = phstart; ph < phend; ++ph) {
      for (int pw = pwstart; pw < pwend; ++pw) {
        const int h0 = ph * stride_h - pad_h;
        const int w0 = pw * stride_w - pad_w;
        const int pool_size = (caffe_imin(h0 + kernel_h, height + pad_h) - h0)
                              * (caffe_imin(w0 + kernel_w, width + pad_w) - w0);
        gradient += src[ph * pooled_w + pw] / T(pool_size);
      }
    }
    bottom_diff[index] = gradient;
  }
}
