// The row kernels of train_fda.cpp, included there once per instruction set after
// train_quantizers_kernels.h (whose sin/cos, Fourier ratio, fda_value_span and fda_backward_span they
// reuse), inside a namespace and a `#pragma GCC target` region each. Not a public header: no include
// guard on purpose. Plain loops that the compiler vectorizes; float sums through `omp simd reduction`
// (one partial per vector lane, FMA-contracted as all of train_fda.cpp).
//
// ReLU zeroes about half of the hidden units of a row, and a term 0*v adds nothing to a sum: the
// products below skip those terms (u_j = 0 in h and dW2, gpre_j = 0 in W1ᵀ·gpre and dW1, and the
// dot W2ᵀ·gh of an inactive unit), which halves their work and changes no bit, except that a skipped
// 0*v is not added where v is infinite or NaN, so the skipping is off for any row whose x or gh is
// not finite and for non-finite W1/W2 (torch's NaN then comes out as well).

// out[t] = a[t] · x for the `count` rows a[t] (n floats each), four rows per pass over x.
void project(const float* const* a, const float* x, int64_t n, int64_t count, float* out) {
  int64_t t = 0;
  for (; t + 4 <= count; t += 4) {
    const float *a0 = a[t], *a1 = a[t + 1], *a2 = a[t + 2], *a3 = a[t + 3];
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < n; ++i) {
      s0 += a0[i] * x[i];
      s1 += a1[i] * x[i];
      s2 += a2[i] * x[i];
      s3 += a3[i] * x[i];
    }
    out[t] = s0;
    out[t + 1] = s1;
    out[t + 2] = s2;
    out[t + 3] = s3;
  }
  for (; t < count; ++t) {
    const float* at = a[t];
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += at[i] * x[i];
    out[t] = s;
  }
}

// y[i] = (kFromZero ? 0 : y[i]) + c[0]·a[0][i] + ... + c[kTerms-1]·a[kTerms-1][i], added in that order.
template <int kTerms, bool kFromZero>
void combine_group(const float* const* a, const float* c, int64_t n, float* __restrict y) {
  const float *a0 = a[0], *a1 = a[kTerms > 1 ? 1 : 0], *a2 = a[kTerms > 2 ? 2 : 0], *a3 = a[kTerms > 3 ? 3 : 0];
  const float c0 = c[0], c1 = c[kTerms > 1 ? 1 : 0], c2 = c[kTerms > 2 ? 2 : 0], c3 = c[kTerms > 3 ? 3 : 0];
  for (int64_t i = 0; i < n; ++i) {
    float s = kFromZero ? c0 * a0[i] : y[i] + c0 * a0[i];
    if (kTerms > 1) s += c1 * a1[i];
    if (kTerms > 2) s += c2 * a2[i];
    if (kTerms > 3) s += c3 * a3[i];
    y[i] = s;
  }
}

template <bool kFromZero>
void combine_some(const float* const* a, const float* c, int64_t terms, int64_t n, float* y) {
  switch (terms) {
    case 1: return combine_group<1, kFromZero>(a, c, n, y);
    case 2: return combine_group<2, kFromZero>(a, c, n, y);
    case 3: return combine_group<3, kFromZero>(a, c, n, y);
    default: return combine_group<4, kFromZero>(a, c, n, y);
  }
}

// y[i] = (from_zero ? 0 : y[i]) + Σ_t c[t]·a[t][i] over the `count` terms, added in order (from y: a
// running sum over rows, the same bits as adding one row at a time), four terms per pass over y.
void combine(const float* const* a, const float* c, int64_t count, int64_t n, float* y, bool from_zero) {
  if (count == 0 && from_zero) std::fill(y, y + n, 0.0f);
  for (int64_t t = 0; t < count; t += 4) {
    if (from_zero && t == 0)
      combine_some<true>(a, c, std::min<int64_t>(4, count), n, y);
    else
      combine_some<false>(a + t, c + t, std::min<int64_t>(4, count - t), n, y);
  }
}

// Whether every v[i] is finite (v*0 is NaN for inf and NaN).
bool all_finite(const float* v, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += v[i] * 0.0f;
  return s == 0.0f;
}

// relu as torch's: NaN stays NaN, negative -> 0.
inline float relu_of(float v) { return v < 0.0f ? 0.0f : v; }

// One row of fda_na_forward: pre = W1·x (w1_rows: W1's rows), h = Σ_j relu(pre_j)·W2ᵀ_j into hbuf, value.
void na_forward_row(const float* x, int64_t d, const float* const* w1_rows, const float* w2t, int64_t hidden,
                    bool weight, bool skip, float alpha, float* out, float* pre, float* scale_out, float* hbuf,
                    Terms terms) {
  const float s = weight ? static_cast<float>(abs_sum(x, d) / static_cast<double>(d)) : 1.0f;
  if (weight) *scale_out = s;
  project(w1_rows, x, d, hidden, pre);
  int64_t m = 0;
  for (int64_t j = 0; j < hidden; ++j) {
    const float u = relu_of(pre[j]);
    if (u != 0.0f || !skip) {
      terms.coef[m] = u;
      terms.rows[m++] = w2t + j * d;
    }
  }
  combine(terms.rows, terms.coef, m, d, hbuf, true);
  fda_value_span(x, hbuf, d, s, alpha, out);
}

// gpre (hidden) of one row: (W2ᵀ_j·gh)·1{pre_j > 0}; the dot skipped where pre_j <= 0 (or NaN).
void hidden_grad(const float* gh, int64_t d, const float* w2t, int64_t hidden, const float* pre, float* gpre,
                 Terms terms) {
  int64_t m = 0;
  for (int64_t j = 0; j < hidden; ++j) {
    gpre[j] = 0.0f;  // relu's backward: threshold_backward(g, relu(pre), 0)
    if (pre[j] > 0.0f) {
      terms.index[m] = j;
      terms.rows[m++] = w2t + j * d;
    }
  }
  project(terms.rows, gh, d, m, terms.dots);
  for (int64_t t = 0; t < m; ++t) gpre[terms.index[t]] = terms.dots[t];
}

// acc_j continued with Σ_r c[r*hidden + j]·v_r over the block's rows r, for each hidden unit j.
void accumulate_block(const float* c, const float* v, int64_t rows, int64_t d, int64_t hidden, const bool* finite,
                      float* acc, Terms terms) {
  for (int64_t j = 0; j < hidden; ++j) {
    int64_t m = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float cr = c[r * hidden + j];
      if (cr != 0.0f || !finite[r]) {
        terms.coef[m] = cr;
        terms.rows[m++] = v + r * d;
      }
    }
    combine(terms.rows, terms.coef, m, d, acc + j * d, false);
  }
}

// Up to kFdaBlock rows of fda_na_backward, each a row of the unit's (see BackwardBlock, train_fda.cpp).
void na_backward_rows(int64_t rows, const float* g, const float* x, int64_t d, const float* w1, const float* w2t,
                      int64_t hidden, const float* pre, const float* scale, float alpha, float p0, float p1, float p2,
                      bool weights_finite, float* part1, float* part2, BackwardBlock b, Terms terms) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* gh = b.gh + r * d;
    fda_backward_span(g + r * d, xr, d, scale ? scale[r] : 1.0f, alpha, p0, p1, p2, b.gx + r * d, gh);
    b.finite[r] = weights_finite && all_finite(gh, d) && all_finite(xr, d);
    hidden_grad(gh, d, w2t, hidden, pre + r * hidden, b.gpre + r * hidden, terms);
    for (int64_t j = 0; j < hidden; ++j) b.u[r * hidden + j] = relu_of(pre[r * hidden + j]);
  }
  if (part2) accumulate_block(b.u, b.gh, rows, d, hidden, b.finite, part2, terms);
  if (part1) accumulate_block(b.gpre, x, rows, d, hidden, b.finite, part1, terms);
  for (int64_t r = 0; r < rows; ++r) {  // fc1's input gradient W1ᵀ·gpre, added term by term
    int64_t m = 0;
    for (int64_t j = 0; j < hidden; ++j) {
      const float c = b.gpre[r * hidden + j];
      if (c != 0.0f || !weights_finite) {
        terms.coef[m] = c;
        terms.rows[m++] = w1 + j * d;
      }
    }
    combine(terms.rows, terms.coef, m, d, b.gx + r * d, false);
  }
}
