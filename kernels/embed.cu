// Embed's weight gradient without atomics: table_diff[r, :] += dy[k, :] for every k whose index is r,
// in increasing k (NumPy's add.at order). `order` lists the positions k sorted by (index, k);
// rows r's positions are order[start[r] .. end[r]).
template <typename T>
__global__ void embed_backward(const int n, const T* dy, const int* order, const int* start,
                               const int* end, const int columns, T* table_diff) {
  CAFFE_KERNEL_LOOP(index, n) {
    const int r = index / columns;
    const int d = index % columns;
    T sum = table_diff[index];
    for (int k = start[r]; k < end[r]; ++k) {
      sum += dy[order[k] * columns + d];
    }
    table_diff[index] = sum;
  }
}
