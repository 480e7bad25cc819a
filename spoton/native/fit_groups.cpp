// SpotOn: calibrated person boxes for every foreground group of one frame.
//
// A line-for-line port of spoton.detect.BgSubDetector._fit_group and _refine
// (read those for the why): the Python version spends most of its time in the
// overhead of small NumPy calls. Results are the same to the bit: the same
// float32/float64 arithmetic as NumPy's type rules give there, round-half-even
// like np.rint and Python's round, Python's slice semantics, first-maximum
// argmax. Built by `spoton build-native` (compile with -ffp-contract=off: no
// fused multiply-adds); spoton.detect falls back to Python without it, and the
// tests compare both.
//
// Licence: AGPL-3.0-or-later, as the rest of SpotOn.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Params {
  double max_hidden;
  double min_visible;
  double bg_weight;
  double max_widen;
  double min_fill;
  int32_t max_people;
  int32_t rectified;  // body_width in _refine, area from the view's integral
};

inline double rint_even(double v) { return std::nearbyint(v); }  // default rounding: half to even

// Python slice [start:stop] of a length-n axis (start >= 0 here; stop may be negative).
inline void py_slice(int64_t start, int64_t stop, int64_t n, int64_t& a, int64_t& b) {
  if (start < 0) start += n;
  if (start < 0) start = 0;
  if (start > n) start = n;
  if (stop < 0) stop += n;
  if (stop < 0) stop = 0;
  if (stop > n) stop = n;
  a = start;
  b = std::max(stop, start);
}

struct Roi {
  int64_t h, w;
  std::vector<uint8_t> fg, shadow;  // this group's pixels; shadow-coloured pixels
  std::vector<int32_t> ii;          // scratch integral image, (h+1) x (w+1)

  void integral(const std::vector<uint8_t>& img) {
    ii.assign((h + 1) * (w + 1), 0);
    for (int64_t y = 0; y < h; ++y) {
      int32_t row = 0;
      for (int64_t x = 0; x < w; ++x) {
        row += img[y * w + x];
        ii[(y + 1) * (w + 1) + x + 1] = ii[y * (w + 1) + x + 1] + row;
      }
    }
  }
};

struct Rect {
  double x1, y1, x2, y2;
};

// covered(): boxes (optionally widened) marked in an h x w mask, Python slicing.
void covered(const std::vector<Rect>& rects, int64_t skip, double widen, int64_t h, int64_t w,
             std::vector<uint8_t>& cov) {
  cov.assign(h * w, 0);
  for (int64_t k = 0; k < (int64_t)rects.size(); ++k) {
    if (k == skip) continue;
    const int64_t a = (int64_t)rects[k].x1, b = (int64_t)rects[k].y1;
    const int64_t c = (int64_t)rects[k].x2, d = (int64_t)rects[k].y2;
    const int64_t m = (int64_t)rint_even(widen * (double)(c - a));
    int64_t r0, r1, c0, c1;
    py_slice(std::max<int64_t>(b, 0), std::max<int64_t>(d, 0), h, r0, r1);
    py_slice(std::max<int64_t>(a - m, 0), std::max<int64_t>(c + m, 0), w, c0, c1);
    for (int64_t y = r0; y < r1; ++y)
      for (int64_t x = c0; x < c1; ++x) cov[y * w + x] = 1;
  }
}

Rect refine(const Roi& roi, const std::vector<uint8_t>& others, int64_t x1, int64_t y1, int64_t x2, int64_t y2,
            float h_exp, bool grow_x, double max_widen, bool body_width) {
  const int64_t rh = roi.h, rw = roi.w;
  const int64_t mx = grow_x ? (int64_t)rint_even(max_widen * (double)(x2 - x1)) : 0;
  const int64_t my = (int64_t)rint_even(0.1 * (double)(y2 - y1));
  const int64_t wx1 = std::max<int64_t>(x1 - mx, 0), wx2 = std::min<int64_t>(x2 + mx, rw);
  const int64_t wy1 = std::max<int64_t>(y1 - my, 0), wy2 = std::min<int64_t>(y2 + my, rh);
  const Rect unchanged{(double)x1, (double)y1, (double)x2, (double)y2};
  if (wx2 <= wx1 || wy2 <= wy1) return unchanged;
  const int64_t H = wy2 - wy1, W = wx2 - wx1;
  int64_t ir0, ir1, ic0, ic1;  // "inside": the box itself, in window coordinates
  py_slice(std::max<int64_t>(y1 - wy1, 0), y2 - wy1, H, ir0, ir1);
  py_slice(std::max<int64_t>(x1 - wx1, 0), x2 - wx1, W, ic0, ic1);
  std::vector<int64_t> col_win(W, 0), col_solid(W, 0), row_win(H, 0), row_solid(H, 0);
  for (int64_t y = 0; y < H; ++y) {
    const bool in_rows = y >= ir0 && y < ir1;
    for (int64_t x = 0; x < W; ++x) {
      const int64_t at = (wy1 + y) * rw + wx1 + x;
      const bool inside = in_rows && x >= ic0 && x < ic1;
      const bool win = roi.fg[at] && (inside || !others[at]);
      if (!win) continue;
      const bool solid = !roi.shadow[at];
      ++col_win[x];
      ++row_win[y];
      if (solid) {
        ++col_solid[x];
        ++row_solid[y];
      }
    }
  }
  const double col_min = std::max(1.0, 0.04 * (double)H), row_min = std::max(1.0, 0.04 * (double)W);
  int64_t c_first = -1, c_last = -1;
  if (body_width) {
    for (int64_t x = 0; x < W; ++x)
      if ((double)col_solid[x] >= col_min) {
        if (c_first < 0) c_first = x;
        c_last = x;
      }
  }
  if (c_first < 0) {
    for (int64_t x = 0; x < W; ++x)
      if ((double)col_win[x] >= col_min) {
        if (c_first < 0) c_first = x;
        c_last = x;
      }
  }
  int64_t r_first = -1, r_last = -1, s_last = -1;
  for (int64_t y = 0; y < H; ++y) {
    if ((double)row_win[y] >= row_min) {
      if (r_first < 0) r_first = y;
      r_last = y;
    }
    if ((double)row_solid[y] >= row_min) s_last = y;
  }
  if (c_first < 0 || r_first < 0) return unchanged;
  const int64_t nx1 = wx1 + c_first, nx2 = wx1 + c_last + 1, ny1 = wy1 + r_first;
  int64_t ny2 = wy1 + (s_last >= 0 ? s_last : r_last) + 1;
  bool feet_in_view = false;
  if (s_last >= 0 && s_last + 1 < H) {
    int64_t most = 0;
    for (int64_t y = s_last + 1; y < H; ++y) most = std::max(most, row_win[y]);
    feet_in_view = (double)most >= 0.5 * (double)(x2 - x1);
  }
  const float floor_row = (float)y2 - 0.12f * h_exp;  // NumPy: python int - python float * float32 -> float32
  if ((double)ny2 < (double)floor_row && !feet_in_view) ny2 = y2;
  return Rect{(double)nx1, (double)ny1, (double)nx2, (double)ny2};
}

}  // namespace

extern "C" {

int32_t spoton_fit_groups_abi() { return 1; }

// Fit every group of one frame. Arrays are C-contiguous.
//   mask, shadow: (ih, iw) uint8 0/1;  labels: (ih, iw) int32;  stats: (n, 5) int32 (x, y, w, h, area), row 0 background
//   table: (2, th, tw) float32 expected (height, width) of a person standing at each pixel
//   valid_ii: (ih+1, iw+1) int32 integral of the view's inside, or null (upright masks)
//   out_box: (cap, 4) float64 image boxes; out_fill: (cap) float64; out_h: (cap) float32 expected height at the feet
// Returns the number of boxes written (at most cap), or -1 when cap was too small.
int64_t spoton_fit_groups(const uint8_t* mask, const uint8_t* shadow, const int32_t* labels, int64_t ih, int64_t iw,
                          const int32_t* stats, int64_t n, const float* table, int64_t th, int64_t tw,
                          const int32_t* valid_ii, const Params* p, double* out_box, double* out_fill, float* out_h,
                          int64_t cap) {
  const float* t_h = table;
  const float* t_w = table + th * tw;
  int64_t count = 0;
  Roi roi;
  std::vector<uint8_t> cov, cov2, own;
  std::vector<double> gu, gv, us, vs;
  std::vector<float> hc, wc, min_gain;
  std::vector<int64_t> bx1, by1, bx2, by2, cx1, cy1, cx2, cy2, area;
  std::vector<int32_t> fill_all, neutral;
  for (int64_t label = 1; label < n; ++label) {
    const int64_t x = stats[label * 5], y = stats[label * 5 + 1], bw = stats[label * 5 + 2], bh = stats[label * 5 + 3];
    int64_t fg_count = 0;
    for (int64_t yy = y; yy < y + bh; ++yy)
      for (int64_t xx = x; xx < x + bw; ++xx) fg_count += mask[yy * iw + xx];
    if (fg_count < 12) continue;
    // Expected size at the group's feet.
    const int64_t iu0 = std::min<int64_t>(std::max<int64_t>((int64_t)rint_even((double)x + (double)bw / 2.0), 0), tw - 1);
    const int64_t iv0 = std::min<int64_t>(std::max<int64_t>(y + bh, 0), th - 1);
    const float h_exp = t_h[iv0 * tw + iu0], w_exp = t_w[iv0 * tw + iu0];
    if (!std::isfinite(h_exp)) continue;
    const int64_t pad_x = (int64_t)std::ceil(w_exp) + 2;
    const int64_t pad_y = (int64_t)std::ceil(0.5f * h_exp) + 2;
    const int64_t x0 = std::max<int64_t>(0, x - pad_x), y0 = std::max<int64_t>(0, y - pad_y);
    const int64_t x1 = std::min<int64_t>(iw, x + bw + pad_x), y1 = std::min<int64_t>(ih, y + bh + 2);
    roi.h = y1 - y0;
    roi.w = x1 - x0;
    const int64_t rh = roi.h, rw = roi.w;
    roi.fg.assign(rh * rw, 0);
    roi.shadow.assign(rh * rw, 0);
    for (int64_t yy = 0; yy < rh; ++yy)
      for (int64_t xx = 0; xx < rw; ++xx) {
        const int64_t at = (y0 + yy) * iw + x0 + xx;
        // (0/1 bytes from branch-free logic: these loops vectorise)
        roi.fg[yy * rw + xx] = static_cast<uint8_t>((mask[at] != 0) & (labels[at] == label));
        roi.shadow[yy * rw + xx] = static_cast<uint8_t>(shadow[at] != 0);
      }
    // Foot-point grid.
    const float small_side = std::min(w_exp, h_exp);
    const int64_t step = std::max<int64_t>(1, (int64_t)rint_even((double)(small_side / 12.0f)));
    us.clear();
    vs.clear();
    for (int64_t u = x; u < x + bw + 1; u += step) us.push_back((double)u);
    for (int64_t v = y + std::max<int64_t>(2, (int64_t)(0.25 * (double)bh)); v < y + bh + 1; v += step)
      vs.push_back((double)v);
    if (p->max_hidden > 0) {
      const double start = (double)(y + bh + 2 * step);
      const float stop = ((float)(y + bh) + (float)p->max_hidden * h_exp) + 1.0f;
      const double len = std::ceil(((double)stop - start) / (double)(2 * step));
      for (int64_t k = 0; k < (int64_t)len; ++k) vs.push_back(start + (double)(k * 2 * step));
    }
    gu.clear();
    gv.clear();
    hc.clear();
    wc.clear();
    for (double v : vs)
      for (double u : us) {
        const int64_t iu = std::min<int64_t>(std::max<int64_t>((int64_t)rint_even(u), 0), tw - 1);
        const int64_t iv = std::min<int64_t>(std::max<int64_t>((int64_t)rint_even(v), 0), th - 1);
        const float hh = t_h[iv * tw + iu];
        if (!(std::isfinite(hh) && hh >= 4.0f)) continue;
        gu.push_back(u);
        gv.push_back(v);
        hc.push_back(hh);
        wc.push_back(t_w[iv * tw + iu]);
      }
    const int64_t m = (int64_t)gu.size();
    if (m == 0) continue;
    bx1.resize(m); by1.resize(m); bx2.resize(m); by2.resize(m);
    cx1.resize(m); cy1.resize(m); cx2.resize(m); cy2.resize(m);
    min_gain.resize(m); area.resize(m); fill_all.resize(m); neutral.resize(m);
    auto clamp_edge = [](double e, int64_t off, int64_t lim) -> int64_t {
      return (int64_t)std::min(std::max(e - (double)off, -(double)off), (double)(lim - off));
    };
    float floor_gain = 0.0f;
    for (int64_t c = 0; c < m; ++c) {
      const float half = wc[c] / 2.0f;
      bx1[c] = clamp_edge(rint_even(gu[c] - (double)half), x0, iw);
      by1[c] = clamp_edge(rint_even(gv[c] - (double)hc[c]), y0, ih);
      bx2[c] = clamp_edge(rint_even(gu[c] + (double)half), x0, iw);
      by2[c] = clamp_edge(rint_even(gv[c]) + 1.0, y0, ih);
      cx1[c] = std::min<int64_t>(std::max<int64_t>(bx1[c], 0), rw);
      cy1[c] = std::min<int64_t>(std::max<int64_t>(by1[c], 0), rh);
      cx2[c] = std::min<int64_t>(std::max<int64_t>(bx2[c], 0), rw);
      cy2[c] = std::min<int64_t>(std::max<int64_t>(by2[c], 0), rh);
      const float prod = wc[c] * hc[c];
      min_gain[c] = (float)p->min_visible * std::max(prod, 1.0f);
      floor_gain = c == 0 ? min_gain[c] : std::min(floor_gain, min_gain[c]);
      if (valid_ii != nullptr) {
        const int64_t s = iw + 1;
        const int64_t gx1 = cx1[c] + x0, gx2 = cx2[c] + x0, gy1 = cy1[c] + y0, gy2 = cy2[c] + y0;
        area[c] = (int64_t)(valid_ii[gy2 * s + gx2] - valid_ii[gy1 * s + gx2] - valid_ii[gy2 * s + gx1] +
                            valid_ii[gy1 * s + gx1]);
      } else {
        area[c] = std::max<int64_t>(bx2[c] - bx1[c], 0) * std::max<int64_t>(std::min<int64_t>(by2[c], rh) - by1[c], 0);
      }
    }
    auto box_sums = [&](const std::vector<uint8_t>& img, std::vector<int32_t>& out) {
      roi.integral(img);
      const int64_t s = rw + 1;
      for (int64_t c = 0; c < m; ++c)
        out[c] = roi.ii[cy2[c] * s + cx2[c]] - roi.ii[cy1[c] * s + cx2[c]] - roi.ii[cy2[c] * s + cx1[c]] +
                 roi.ii[cy1[c] * s + cx1[c]];
    };
    box_sums(roi.fg, fill_all);
    const bool rectified = p->rectified != 0;

    std::vector<int64_t> chosen;
    std::vector<Rect> rects;
    // Best candidate with every rect but `skip` fixed; -1 when none adds enough.
    auto best_given = [&](int64_t skip, Rect& fitted) -> int64_t {
      const int64_t n_others = (int64_t)rects.size() - (skip >= 0 ? 1 : 0);
      covered(rects, skip, 0.0, rh, rw, cov);
      if (n_others > 0) {
        int64_t uncovered = 0;
        for (int64_t i = 0; i < rh * rw; ++i) uncovered += roi.fg[i] & (cov[i] ^ 1);  // both 0/1
        if ((double)uncovered < (double)floor_gain) return -1;
        cov2.resize(rh * rw);
        for (int64_t i = 0; i < rh * rw; ++i) cov2[i] = roi.fg[i] & cov[i];
        box_sums(cov2, neutral);
      } else {
        std::fill(neutral.begin(), neutral.end(), 0);
      }
      int64_t best = 0;
      double best_gain = 0.0;
      for (int64_t c = 0; c < m; ++c) {
        const int32_t new_fg = fill_all[c] - neutral[c];
        const double gain =
            (double)new_fg - p->bg_weight * (double)(area[c] - (int64_t)new_fg - (int64_t)neutral[c]);
        if (c == 0 || gain > best_gain) {
          best_gain = gain;
          best = c;
        }
      }
      const int32_t best_new = fill_all[best] - neutral[best];
      if (best_gain <= 0.0 || (double)best_new < (double)min_gain[best]) return -1;
      fitted = refine(roi, cov, bx1[best], by1[best], bx2[best], by2[best], hc[best], false, 0.3, rectified);
      return best;
    };

    for (int32_t k = 0; k < p->max_people; ++k) {
      Rect fitted{};
      const int64_t best = best_given(-1, fitted);
      if (best < 0) break;
      chosen.push_back(best);
      rects.push_back(fitted);
    }
    const int passes = chosen.size() > 1 ? 4 : 0;
    for (int pass = 0; pass < passes; ++pass) {
      bool changed = false;
      for (int64_t i = (int64_t)chosen.size() - 1; i >= 0; --i) {
        Rect fitted{};
        const int64_t best = best_given(i, fitted);
        if (best < 0) {
          chosen.erase(chosen.begin() + i);
          rects.erase(rects.begin() + i);
          changed = true;
        } else if (best != chosen[i]) {
          chosen[i] = best;
          rects[i] = fitted;
          changed = true;
        }
      }
      if (!changed) break;
    }
    if (chosen.size() > 1) {
      for (int64_t i = (int64_t)chosen.size() - 1; i >= 0; --i) {
        covered(rects, i, p->max_widen, rh, rw, cov);
        std::vector<Rect> mine{rects[i]};
        covered(mine, -1, 0.0, rh, rw, own);
        int64_t shows = 0;
        for (int64_t j = 0; j < rh * rw; ++j) shows += roi.fg[j] && own[j] && !cov[j];
        if ((double)shows < (double)min_gain[chosen[i]]) {
          chosen.erase(chosen.begin() + i);
          rects.erase(rects.begin() + i);
        }
      }
    }
    for (int64_t i = 0; i < (int64_t)chosen.size(); ++i) {
      const int64_t c = chosen[i];
      const double fill = (double)fill_all[c] / (double)std::max<int64_t>(area[c], 1);
      if (fill < p->min_fill) continue;
      covered(rects, i, 0.0, rh, rw, cov);
      const Rect r = refine(roi, cov, bx1[c], by1[c], bx2[c], by2[c], hc[c], true, p->max_widen, rectified);
      if (count >= cap) return -1;
      out_box[count * 4 + 0] = r.x1 + (double)x0;
      out_box[count * 4 + 1] = r.y1 + (double)y0;
      out_box[count * 4 + 2] = r.x2 + (double)x0;
      out_box[count * 4 + 3] = r.y2 + (double)y0;
      out_fill[count] = fill;
      out_h[count] = hc[c];
      ++count;
    }
  }
  return count;
}

}  // extern "C"
