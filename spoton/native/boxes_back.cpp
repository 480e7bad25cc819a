// SpotOn: rectified person boxes back to the work image, to the bit.
//
// A port of spoton.detect.VerticalRectifier.boxes_back (read it for the why):
// each box becomes the extent, mapped back through the inverse rectifying
// homography, of what the body mask shows of the person row by row, plus the
// box's corners at the median body width. Its Python version pays NumPy's call
// overhead a dozen times per box. The points go through the homography as
// cv2.perspectiveTransform maps double points (w = 1 / (x m6 + y m7 + m8),
// zero where |w| <= FLT_EPSILON); compile with -ffp-contract=off. The tests
// compare both versions.
//
// Licence: AGPL-3.0-or-later, as the rest of SpotOn.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

inline void project(const double* m, double x, double y, double* ox, double* oy) {
  double w = x * m[6] + y * m[7] + m[8];
  if (std::fabs(w) > static_cast<double>(FLT_EPSILON)) {
    w = 1. / w;
    *ox = (x * m[0] + y * m[1] + m[2]) * w;
    *oy = (x * m[3] + y * m[4] + m[5]) * w;
  } else {
    *ox = *oy = 0.0;
  }
}

inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

}  // namespace

extern "C" {

int32_t spoton_boxes_back_abi() { return 1; }

// body: (bh, bw) 0/1 bytes, rows bw apart; boxes: n x (x1, y1, x2, y2) rectified px;
// h_inv: 3x3 row-major; out: n x (x1, y1, x2, y2) work px, not clipped.
void spoton_boxes_back(const uint8_t* body, int64_t bh, int64_t bw, const double* boxes, int64_t n,
                       const double* h_inv, double* out) {
  std::vector<double> left, right, ys, widths;
  for (int64_t i = 0; i < n; ++i) {
    const double x1 = boxes[4 * i], y1 = boxes[4 * i + 1], x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
    const int64_t ix1 = clamp(static_cast<int64_t>(std::floor(x1)), 0, bw);
    const int64_t iy1 = clamp(static_cast<int64_t>(std::floor(y1)), 0, bh);
    const int64_t ix2 = clamp(static_cast<int64_t>(std::ceil(x2)), 0, bw);
    const int64_t iy2 = clamp(static_cast<int64_t>(std::ceil(y2)), 0, bh);
    left.clear();
    right.clear();
    ys.clear();
    for (int64_t y = iy1; y < iy2; ++y) {  // each row's first and last body pixel
      const uint8_t* row = body + y * bw;
      int64_t a = ix1;
      while (a < ix2 && !row[a]) ++a;
      if (a == ix2) continue;
      int64_t b = ix2 - 1;
      while (!row[b]) --b;
      left.push_back(static_cast<double>(a));
      right.push_back(static_cast<double>(b + 1));
      ys.push_back(static_cast<double>(y) + 0.5);
    }
    const size_t rows = ys.size();
    double half = (x2 - x1) / 2.0;
    if (rows) {
      widths.resize(rows);
      for (size_t r = 0; r < rows; ++r) widths[r] = right[r] - left[r];
      std::sort(widths.begin(), widths.end());
      const size_t m = rows / 2;
      half = (rows % 2 ? widths[m] : (widths[m - 1] + widths[m]) / 2.0) / 2.0;
    }
    const double mid = (x1 + x2) / 2.0;
    double cx[4], cy[4];  // corners: top left, top right, bottom left, bottom right
    project(h_inv, mid - half, y1, &cx[0], &cy[0]);
    project(h_inv, mid + half, y1, &cx[1], &cy[1]);
    project(h_inv, mid - half, y2, &cx[2], &cy[2]);
    project(h_inv, mid + half, y2, &cx[3], &cy[3]);
    // x: the rows' ends and the bottom corners (the feet); all four corners without rows.
    double xmin = std::min(cx[2], cx[3]), xmax = std::max(cx[2], cx[3]);
    if (rows) {
      for (size_t r = 0; r < rows; ++r) {
        double px, py;
        project(h_inv, left[r], ys[r], &px, &py);
        xmin = std::min(xmin, px);
        xmax = std::max(xmax, px);
        project(h_inv, right[r], ys[r], &px, &py);
        xmin = std::min(xmin, px);
        xmax = std::max(xmax, px);
      }
    } else {
      xmin = std::min({xmin, cx[0], cx[1]});
      xmax = std::max({xmax, cx[0], cx[1]});
    }
    // y: the box's own top and bottom (the top of the head, the feet).
    out[4 * i] = xmin;
    out[4 * i + 1] = std::min({cy[0], cy[1], cy[2], cy[3]});
    out[4 * i + 2] = xmax;
    out[4 * i + 3] = std::max({cy[0], cy[1], cy[2], cy[3]});
  }
}

}  // extern "C"
