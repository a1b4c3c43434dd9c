// The row kernels of train_pcpp.cpp, included there once per instruction set (inside a namespace and a
// `#pragma GCC target` region each): plain loops that the compiler vectorizes, the same values on every
// instruction set (no FMA contraction, the sums in a fixed order). Not a public header: no include guard
// on purpose.

inline float sign_of(float v) { return v < 0.0f ? -1.0f : 1.0f; }  // +1 at -0.0 and NaN (onebit's sign)

// torch.clamp(v, -1, 1): NaN stays NaN.
inline float clamp_one(float v) { return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v); }

// sum |w| in double: 16 partial sums by index mod 16, in index order, then added pairwise.
inline double abs_sum_row(const float* w, int64_t n) {
  double lane[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lane[l] += static_cast<double>(std::fabs(w[i + l]));
  for (int l = 0; i < n; ++i, ++l) lane[l] += static_cast<double>(std::fabs(w[i]));
  for (int width = 8; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

template <int kKind, bool kScaled>
void value_loop(const float* w, int64_t n, float alpha, float mu, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float u = kScaled ? w[i] / alpha : w[i];
    const float v = kKind == kPcppSign ? sign_of(u) : clamp_one(u + mu * sign_of(u));
    out[i] = kScaled ? v * alpha : v;
  }
}

void value_row(int kind, const float* w, int64_t n, float alpha, bool scaled, float mu, float* out) {
  if (kind == kPcppSign)
    scaled ? value_loop<kPcppSign, true>(w, n, alpha, mu, out) : value_loop<kPcppSign, false>(w, n, alpha, mu, out);
  else
    scaled ? value_loop<kPcppProx, true>(w, n, alpha, mu, out) : value_loop<kPcppProx, false>(w, n, alpha, mu, out);
}

template <int kKind, bool kScaled>
void grad_loop(const float* g, const float* w, int64_t n, float alpha, float* out) {
  constexpr float kAbove = 1.0f + 1.1920928955078125e-7f;  // hardtanh_backward's open bound: |u| <= 1
  for (int64_t i = 0; i < n; ++i) {
    const float ga = kScaled ? g[i] * alpha : g[i];
    float pass = ga;
    if (kKind == kPcppClipGrad) {
      const float u = kScaled ? w[i] / alpha : w[i];
      pass = (u <= -kAbove || u >= kAbove) ? 0.0f : ga;
    }
    out[i] = kScaled ? pass / alpha : pass;
  }
}

void grad_row(int kind, const float* g, const float* w, int64_t n, float alpha, bool scaled, float* out) {
  if (kind == kPcppIdentityGrad)
    scaled ? grad_loop<kPcppIdentityGrad, true>(g, w, n, alpha, out)
           : grad_loop<kPcppIdentityGrad, false>(g, w, n, alpha, out);
  else
    scaled ? grad_loop<kPcppClipGrad, true>(g, w, n, alpha, out) : grad_loop<kPcppClipGrad, false>(g, w, n, alpha, out);
}
