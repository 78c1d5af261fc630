// Fused update rules of the solvers (Caffe's *_update_gpu), each in the order of operations of
// caffe_py's CPU path (solvers/sgd.py, solvers/adaptive.py), so that with --fmad=false they round
// alike. `g` is the gradient (the parameter diff), overwritten by the step to subtract; the scalar
// factors are computed by the caller in float32 exactly as the CPU path computes them.

template <typename T>
__global__ void sgd_update(const int n, T* g, T* history, const T momentum, const T local_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    const T h = history[i] * momentum + g[i] * local_rate;
    history[i] = h;
    g[i] = h;
  }
}

template <typename T>
__global__ void nesterov_update(const int n, T* g, T* history, const T momentum,
                                const T one_plus_momentum, const T local_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    const T previous = history[i];
    const T h = previous * momentum + g[i] * local_rate;
    history[i] = h;
    g[i] = h * one_plus_momentum - previous * momentum;
  }
}

template <typename T>
__global__ void adagrad_update(const int n, T* g, T* history, const T delta, const T local_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    const T gi = g[i];
    const T h = history[i] + gi * gi;
    history[i] = h;
    g[i] = (gi / (sqrt(h) + delta)) * local_rate;
  }
}

template <typename T>
__global__ void rmsprop_update(const int n, T* g, T* history, const T rms_decay,
                               const T one_minus_decay, const T delta, const T local_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    const T gi = g[i];
    const T h = history[i] * rms_decay + (gi * gi) * one_minus_decay;
    history[i] = h;
    g[i] = (gi / (sqrt(h) + delta)) * local_rate;
  }
}

template <typename T>
__global__ void adadelta_update(const int n, T* g, T* grad_history, T* step_history, const T momentum,
                                const T one_minus_momentum, const T delta, const T local_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    T gi = g[i];
    const T gh = grad_history[i] * momentum + (gi * gi) * one_minus_momentum;
    grad_history[i] = gh;
    gi = gi * sqrt((step_history[i] + delta) / (gh + delta));
    step_history[i] = step_history[i] * momentum + (gi * gi) * one_minus_momentum;
    g[i] = gi * local_rate;
  }
}

template <typename T>
__global__ void adam_update(const int n, T* g, T* m, T* v, const T beta1, const T one_minus_beta1,
                            const T beta2, const T one_minus_beta2, const T delta, const T step_rate) {
  CAFFE_KERNEL_LOOP(i, n) {
    const T gi = g[i];
    const T mi = m[i] * beta1 + gi * one_minus_beta1;
    const T vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
    m[i] = mi;
    v[i] = vi;
    g[i] = (mi / (sqrt(vi) + delta)) * step_rate;
  }
}
