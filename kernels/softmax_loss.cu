// SoftmaxWithLoss over prob (outer, classes, inner) and labels (outer, inner) stored as T, truncated
// to int as Caffe's static_cast<int>.

// Per position: log(max(prob[label], FLT_MIN)) into `logs` (0 when ignored) and into `flags` 1 (counted),
// 0 (ignored) or -1 (label outside [0, classes): the caller refuses it).
template <typename T>
__global__ void softmax_loss_forward(const int n, const T* prob, const T* label, const int classes,
                                     const int inner, const int has_ignore, const int ignore_label,
                                     T* logs, T* flags) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int lab = static_cast<int>(label[index]);
    if (has_ignore && lab == ignore_label) {
      logs[index] = 0;
      flags[index] = 0;
    } else if (lab < 0 || lab >= classes) {
      logs[index] = 0;
      flags[index] = -1;
    } else {
      const T p = prob[((index / inner) * classes + lab) * inner + index % inner];
      logs[index] = log(p < T(CAFFE_FLT_MIN) ? T(CAFFE_FLT_MIN) : p);
      flags[index] = 1;
    }
  }
}

// dx = (prob - [c == label]) * (top_diff[0] / normalizer); 0 for ignored positions.
template <typename T>
__global__ void softmax_loss_backward(const int n, const T* prob, const T* label, const int classes,
                                      const int inner, const int has_ignore, const int ignore_label,
                                      const T* top_diff, const T normalizer, T* dx) {
  const T scale = top_diff[0] / normalizer;
  CAFFE_KERNEL_LOOP(index, n) {
    const int i = index % inner;
    const int c = (index / inner) % classes;
    const int lab = static_cast<int>(label[(index / inner / classes) * inner + i]);
    if (has_ignore && lab == ignore_label) {
      dx[index] = 0;
    } else {
      dx[index] = (c == lab ? prob[index] - T(1) : prob[index]) * scale;
    }
  }
}
