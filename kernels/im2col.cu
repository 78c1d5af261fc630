// Convolution columns for a chunk of `images` images (N, C, H, W), as Caffe's im2col_gpu_kernel and
// col2im_gpu_kernel but batched. The columns are one (C * kernel_h * kernel_w, images * out_h * out_w)
// matrix: row (c * kernel_h + i) * kernel_w + j, column b * out_h * out_w + oh * out_w + ow holds
// input pixel (b, c, oh * stride_h - pad_h + i * dilation_h, ow * stride_w - pad_w + j * dilation_w),
// zero outside the image.

// One work item per (c, b, oh, ow): writes its kernel_h * kernel_w column entries.
template <typename T>
__global__ void im2col(const int n, const T* im, const int images, const int channels,
                       const int height, const int width, const int kernel_h, const int kernel_w,
                       const int pad_h, const int pad_w, const int stride_h, const int stride_w,
                       const int dilation_h, const int dilation_w, const int out_h, const int out_w,
                       T* col) {
  const int positions = out_h * out_w;
  const int row = images * positions;
  CAFFE_KERNEL_LOOP(index, n) {
    const int ow = index % out_w;
    const int oh = (index / out_w) % out_h;
    const int b = (index / positions) % images;
    const int c = index / row;
    const T* src = im + (b * channels + c) * height * width;
    T* dst = col + (c * kernel_h * kernel_w * images + b) * positions + oh * out_w + ow;
    const int h0 = oh * stride_h - pad_h;
    const int w0 = ow * stride_w - pad_w;
    for (int i = 0; i < kernel_h; ++i) {
      const int h = h0 + i * dilation_h;
      for (int j = 0; j < kernel_w; ++j) {
        const int w = w0 + j * dilation_w;
        *dst = (h >= 0 && h < height && w >= 0 && w < width) ? src[h * width + w] : T(0);
        dst += row;
      }
    }
  }
}

// One work item per image pixel (b, c, h, w): the sum of every column entry that reads it, gathered
// in kernel-offset order (i, then j), so no two items write the same place.
template <typename T>
__global__ void col2im(const int n, const T* col, const int images, const int channels,
                       const int height, const int width, const int kernel_h, const int kernel_w,
                       const int pad_h, const int pad_w, const int stride_h, const int stride_w,
                       const int dilation_h, const int dilation_w, const int out_h, const int out_w,
                       T* im) {
  const int positions = out_h * out_w;
  const int row = images * positions;
  CAFFE_KERNEL_LOOP(index, n) {
    const int w = index % width;
    const int h = (index / width) % height;
    const int c = (index / width / height) % channels;
    const int b = index / width / height / channels;
    const T* src = col + (c * kernel_h * kernel_w * images + b) * positions;
    T value = 0;
    for (int i = 0; i < kernel_h; ++i) {
      const int hs = h + pad_h - i * dilation_h;   // oh * stride_h when tap i of row oh reads h
      const int oh = hs / stride_h;
      const bool row_ok = hs >= 0 && hs % stride_h == 0 && oh < out_h;
      for (int j = 0; j < kernel_w; ++j) {
        const int ws = w + pad_w - j * dilation_w;
        const int ow = ws / stride_w;
        if (row_ok && ws >= 0 && ws % stride_w == 0 && ow < out_w) {
          value += src[(i * kernel_w + j) * row + oh * out_w + ow];
        }
      }
    }
    im[index] = value;
  }
}
