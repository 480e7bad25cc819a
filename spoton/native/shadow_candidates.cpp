// SpotOn: the shadow-coloured foreground pixels of one frame, to the bit.
//
// The first half of spoton.detect.BgSubDetector._shadows (read it for the
// why): a foreground pixel is shadow-coloured when the frame there is the
// background scaled by one factor in (lo, hi) with nearly the same
// chromaticity. NumPy spends a dozen passes over the foreground pixels on
// this; one pass here. The float32 arithmetic is NumPy's, operation for
// operation (values + 1, left-to-right channel sums, IEEE division, limits
// rounded to float32 as NumPy compares a float32 array with a Python float);
// compile with -ffp-contract=off. The tests compare both versions.
//
// Licence: AGPL-3.0-or-later, as the rest of SpotOn.

#include <cmath>
#include <cstdint>

extern "C" {

int32_t spoton_shadow_candidates_abi() { return 1; }

// frame, background: (h, w, 3) packed uint8; fg: (h, w) uint8, non-zero = foreground.
// Writes the shadow-coloured foreground pixels' rows and columns in row-major order
// (as cv2.findNonZero lists them) to ys and xs (room for h * w each); returns how many.
int64_t spoton_shadow_candidates(const uint8_t* frame, const uint8_t* background, const uint8_t* fg, int64_t h,
                                 int64_t w, float lo, float hi, float max_chroma, int32_t* ys, int32_t* xs) {
  int64_t n = 0;
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* m = fg + y * w;
    for (int64_t x = 0; x < w; ++x) {
      if (!m[x]) continue;
      const uint8_t* f = frame + (y * w + x) * 3;
      const uint8_t* b = background + (y * w + x) * 3;
      const float f0 = static_cast<float>(f[0]) + 1.0f, f1 = static_cast<float>(f[1]) + 1.0f,
                  f2 = static_cast<float>(f[2]) + 1.0f;
      const float b0 = static_cast<float>(b[0]) + 1.0f, b1 = static_cast<float>(b[1]) + 1.0f,
                  b2 = static_cast<float>(b[2]) + 1.0f;
      const float fs = f0 + f1 + f2;
      const float bs = b0 + b1 + b2;
      const float chroma = std::fabs(f0 / fs - b0 / bs) + std::fabs(f1 / fs - b1 / bs) + std::fabs(f2 / fs - b2 / bs);
      const float r = fs / bs;
      if (r > lo && r < hi && chroma < max_chroma) {
        ys[n] = static_cast<int32_t>(y);
        xs[n] = static_cast<int32_t>(x);
        ++n;
      }
    }
  }
  return n;
}

}  // extern "C"
