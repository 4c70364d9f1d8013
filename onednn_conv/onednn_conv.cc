// Convolutions on oneDNN for Paddle's CPU eager mode: a Paddle custom operator library.
//
// The convolutions, each one oneDNN primitive on float32 NCHW tensors (groups 1, dilation 1, square kernel/stride/
// padding):
//   dnnl_conv_fwd(src, wei)             -> dst        the convolution (+ an activation as a post-op)
//   dnnl_conv_bwd_data(diff_dst, wei)   -> diff_src   its adjoint in the input (also: the transposed convolution,
//                                                     then + an activation run in place on its output); with
//                                                     few input channels or a 1x1 diff_dst a matmul +
//                                                     col2im (run_narrow)
//   dnnl_conv_bwd_weights(src, diff_dst) -> diff_wei  its adjoint in the weights; on NHWC maps of at most 4x4
//                                                     one matrix product per kernel tap (run_taps)
// and what follows them in a DCGAN:
//   dnnl_eltwise_fwd(x) -> y, dnnl_eltwise_bwd(dy, y) -> dx     ReLU/LeakyReLU, tanh, sigmoid (gradients from y)
//   dnnl_bn_fwd(x, scale, shift, running mean, running var) -> y, mean, var, workspace
//       batch normalization (+ an activation), Paddle's semantics: batch statistics with the biased variance in
//       training, and running = momentum * running + (1 - momentum) * batch written into the running tensors;
//       the running statistics in eval mode
//   dnnl_bn_bwd(x, y, dy, scale, mean, var, workspace) -> dx, dscale, dshift
// Activations are (act, alpha): 0 none, 1 ReLU with negative slope alpha (LeakyReLU), 2 tanh, 3 sigmoid.
// onednn_conv/__init__.py wires them into autograd for network.py's layers.
//
// Linked against the libdnnl.so.3 that Paddle's wheel ships (oneDNN 3.x). That build does not export
// dnnl_memory_create_v2, which dnnl::memory's C++ constructors call, so memories are made with the C API's
// dnnl_memory_create (likewise dnnl_memory_desc_get_size, dnnl_memory_get_data_handle). Primitives pick their own
// (blocked) layouts; NCHW tensors are reordered in and out, and primitives, reorders and their buffers are cached
// per shape. Weights are reordered at every call (training changes them in place, and Paddle's in-place writes do
// not all mark a tensor changed) except inside a caller's frozen-weights scope (the `scope` attribute). Threads:
// oneDNN runs on the OpenMP runtime Paddle loads; `import paddle` pins it to one thread unless OMP_NUM_THREADS was
// set, so onednn_conv/__init__.py sets its thread count to MKL_NUM_THREADS after loading.

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "paddle/extension.h"

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& eng() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& strm() {
  static dnnl::stream s(eng());
  return s;
}

// ptr == nullptr: oneDNN allocates the buffer (and frees it with the memory object)
memory make_memory(const memory::desc& md, void* ptr) {
  dnnl_memory_t m = nullptr;
  dnnl_status_t st = dnnl_memory_create(&m, md.get(), eng().get(), ptr ? ptr : DNNL_MEMORY_ALLOCATE);
  if (st != dnnl_success) throw std::runtime_error("dnnl_memory_create failed, status " + std::to_string(st));
  return memory(m);
}

enum Kind { FWD = 0, BWD_DATA = 1, BWD_WEIGHTS = 2 };

// the convolution's geometry: src [n, ic, ih, iw], wei [oc, ic, k, k], dst [n, oc, oh, ow]
struct Geometry {
  int64_t n, ic, ih, iw, oc, k, s, p, oh, ow;
  int act = 0;
  float alpha = 0.f;
  bool nhwc = false;  // the data tensors are [n, h, w, c] (Paddle's shape), and the primitive runs on them as they are
  std::vector<int64_t> key(int kind) const {
    return {kind, n, ic, ih, iw, oc, k, s, p, oh, ow, act, static_cast<int64_t>(alpha * 1e6f), nhwc};
  }
};

// (act, alpha) as oneDNN's eltwise algorithm; use_dst: the variant whose backward reads the output, not the input
// (the same forward; ReLU's needs alpha >= 0)
dnnl::algorithm eltwise_alg(int act, bool use_dst) {
  using a = dnnl::algorithm;
  switch (act) {
    case 1: return use_dst ? a::eltwise_relu_use_dst_for_bwd : a::eltwise_relu;
    case 2: return use_dst ? a::eltwise_tanh_use_dst_for_bwd : a::eltwise_tanh;
    case 3: return use_dst ? a::eltwise_logistic_use_dst_for_bwd : a::eltwise_logistic;
  }
  throw std::runtime_error("unknown activation " + std::to_string(act));
}

// One primitive with two inputs and one output, each an NCHW/OIHW tensor given by the caller; where the
// primitive wants another layout, a cached reorder and buffer sit between.
struct Entry {
  dnnl::primitive prim;
  std::array<int, 3> args;  // DNNL_ARG_* of input 0, input 1, output
  std::array<memory::desc, 3> user_md, prim_md;
  std::array<bool, 3> reorder_needed;
  std::array<dnnl::reorder, 3> reorders;
  std::array<memory, 3> buffers;
  memory::desc scratch_md;
  // the weights in buffers[1] were reordered from the tensor at wei_ptr in the frozen-weights scope wei_scope (0:
  // none); the same pair again means the same values (the caller's promise for that scope): no reorder
  int64_t wei_scope = 0;
  const void* wei_ptr = nullptr;
};

memory::desc plain(const memory::dims& d, tag t) { return memory::desc(d, dt::f32, t); }

std::unique_ptr<Entry> build(int kind, const Geometry& g) {
  const memory::dims src_d{g.n, g.ic, g.ih, g.iw}, wei_d{g.oc, g.ic, g.k, g.k}, dst_d{g.n, g.oc, g.oh, g.ow};
  const memory::dims strides{g.s, g.s}, pad{g.p, g.p};
  const tag data = g.nhwc ? tag::nhwc : tag::any;  // NHWC: no reorder of the data (oneDNN's nspc kernels)
  const auto any_src = plain(src_d, data), any_wei = plain(wei_d, tag::any), any_dst = plain(dst_d, data);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (kind == FWD && g.act) {  // the activation as a post-op: applied to each output block while it is in cache
    dnnl::post_ops po;
    po.append_eltwise(eltwise_alg(g.act, false), g.alpha, 0.f);
    attr.set_post_ops(po);
  }
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training,
                                                          dnnl::algorithm::convolution_direct, any_src, any_wei,
                                                          any_dst, strides, pad, pad, attr);
  auto e = std::make_unique<Entry>();
  const tag user = g.nhwc ? tag::nhwc : tag::nchw;
  const auto src_u = plain(src_d, user), wei_u = plain(wei_d, tag::oihw), dst_u = plain(dst_d, user);
  if (kind == FWD) {
    e->prim = dnnl::convolution_forward(fwd_pd);
    e->args = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    e->user_md = {src_u, wei_u, dst_u};
    e->prim_md = {fwd_pd.src_desc(), fwd_pd.weights_desc(), fwd_pd.dst_desc()};
    e->scratch_md = fwd_pd.scratchpad_desc();
  } else if (kind == BWD_DATA) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(eng(), dnnl::algorithm::convolution_direct, any_src,
                                                              any_wei, any_dst, strides, pad, pad, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_data(pd);
    e->args = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
    e->user_md = {dst_u, wei_u, src_u};
    e->prim_md = {pd.diff_dst_desc(), pd.weights_desc(), pd.diff_src_desc()};
    e->scratch_md = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(eng(), dnnl::algorithm::convolution_direct, any_src,
                                                                 any_wei, any_dst, strides, pad, pad, fwd_pd, attr);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->args = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS};
    e->user_md = {src_u, dst_u, wei_u};
    e->prim_md = {pd.src_desc(), pd.diff_dst_desc(), pd.diff_weights_desc()};
    e->scratch_md = pd.scratchpad_desc();
  }
  for (int i = 0; i < 3; ++i) {
    e->reorder_needed[i] = e->prim_md[i] != e->user_md[i];
    if (!e->reorder_needed[i]) continue;
    e->buffers[i] = make_memory(e->prim_md[i], nullptr);
    auto from = i < 2 ? e->user_md[i] : e->prim_md[i], to = i < 2 ? e->prim_md[i] : e->user_md[i];
    e->reorders[i] = dnnl::reorder(dnnl::reorder::primitive_desc(eng(), from, eng(), to));
  }
  return e;
}

std::mutex mu;  // one primitive runs at a time (they share the scratchpad); every entry point takes it
std::map<std::vector<int64_t>, std::unique_ptr<Entry>> cache;
memory scratch;  // shared by all primitives, grown as needed
size_t scratch_size = 0;

size_t md_size(const memory::desc& md) { return dnnl_memory_desc_get_size(md.get()); }  // C API: C++'s calls a _v2

void grow_scratch(const memory::desc& md) {
  const size_t need = md_size(md);
  if (need > scratch_size) {
    scratch_size = need;
    scratch = make_memory(plain({static_cast<int64_t>((scratch_size + 3) / 4)}, tag::a), nullptr);
  }
}

memory scratch_for(const memory::desc& md) {
  void* buf = nullptr;
  dnnl_memory_get_data_handle(scratch.get(), &buf);
  return make_memory(md, buf);
}

// an eltwise primitive over n floats (layout does not matter to it), forward or backward from the output; cached
struct Eltwise {
  dnnl::eltwise_forward fwd;
  dnnl::eltwise_backward bwd;
  memory::desc md;
};
std::map<std::vector<int64_t>, std::unique_ptr<Eltwise>> eltwise_cache;

Eltwise& eltwise(int64_t n, int act, float alpha) {
  auto& slot = eltwise_cache[{n, act, static_cast<int64_t>(alpha * 1e6f)}];
  if (!slot) {
    slot = std::make_unique<Eltwise>();
    slot->md = plain({n}, tag::a);
    const auto alg = eltwise_alg(act, true);
    auto pd = dnnl::eltwise_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training, alg, slot->md,
                                                    slot->md, alpha, 0.f);
    slot->fwd = dnnl::eltwise_forward(pd);
    slot->bwd = dnnl::eltwise_backward(
        dnnl::eltwise_backward::primitive_desc(eng(), alg, slot->md, slot->md, slot->md, alpha, 0.f, pd));
  }
  return *slot;
}

// y = act(x) (x == y: in place)
void eltwise_fwd(int64_t n, int act, float alpha, const float* x, float* y) {
  Eltwise& e = eltwise(n, act, alpha);
  e.fwd.execute(strm(), {{DNNL_ARG_SRC, make_memory(e.md, const_cast<float*>(x))}, {DNNL_ARG_DST, make_memory(e.md, y)}});
}

// dx = act'(.) * dy, the derivative read from the output y
void eltwise_bwd(int64_t n, int act, float alpha, const float* dy, const float* y, float* dx) {
  Eltwise& e = eltwise(n, act, alpha);
  e.bwd.execute(strm(), {{DNNL_ARG_DIFF_DST, make_memory(e.md, const_cast<float*>(dy))},
                         {DNNL_ARG_DST, make_memory(e.md, const_cast<float*>(y))},
                         {DNNL_ARG_DIFF_SRC, make_memory(e.md, dx)}});
}

// BWD_DATA as a matmul, on NHWC data, where oneDNN's convolution kernels do badly:
// - few input channels (D's first layer's input gradient and G's last layer's forward, 3 channels): the kernels
//   vectorize over those channels and ran at ~1/5 of the matmul rate here (11.5 ms a call at batch 64, ngf 64);
// - a 1x1 diff_dst (G's first layer's forward, z -> 4x4; D's last layer's input gradient): a plain matrix product
//   that the kernel ran at ~40 GFLOP/s, after reordering its weights at every call.
// diff_dst [n*oh*ow, oc] x wei [oc, ic*k*k] (OIHW as it is: no reorder) -> one column per output position and tap,
// then each column added into the pixel it lands on (col2im; for a 1x1 diff_dst a permutation). ~3x faster for
// 3 channels. The columns are summed in a fixed order, one image per thread: bit for bit the same every run.
constexpr int64_t NARROW_IC = 4;

bool narrow(int kind, const Geometry& g, int gemm) {
  return kind == BWD_DATA && gemm && g.nhwc && (g.ic <= NARROW_IC || (g.oh == 1 && g.ow == 1));
}

struct Gemm {
  dnnl::matmul prim;
  memory::desc a, b, c, scratch_md;  // diff_dst [M, oc], wei [oc, N], columns [M, N]; M = n*oh*ow, N = ic*k*k
};
std::map<std::vector<int64_t>, std::unique_ptr<Gemm>> gemm_cache;  // by (M, oc, N)
std::vector<float> columns;  // shared by all shapes, grown as needed (one primitive runs at a time)

Gemm& gemm_for(int64_t m, int64_t k, int64_t n) {
  auto& slot = gemm_cache[{m, k, n}];
  if (!slot) {
    slot = std::make_unique<Gemm>();
    slot->a = plain({m, k}, tag::ab), slot->b = plain({k, n}, tag::ab), slot->c = plain({m, n}, tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto pd = dnnl::matmul::primitive_desc(eng(), slot->a, slot->b, slot->c, attr);
    slot->prim = dnnl::matmul(pd);
    slot->scratch_md = pd.scratchpad_desc();
  }
  return *slot;
}

// diff_src [n, ih, iw, ic] = the sum, over output positions (oy, ox) and taps (kh, kw) that land on (y, x) =
// (oy*s - p + kh, ox*s - p + kw), of the columns [n, oh, ow, ic, k, k]
void col2im(const Geometry& g, const float* cols, float* out) {
  const int64_t kk = g.k * g.k, row = g.ic * kk, image = g.ih * g.iw * g.ic;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < g.n; ++b) {
    float* o = out + b * image;
    std::fill(o, o + image, 0.f);
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        const float* r = cols + ((b * g.oh + oy) * g.ow + ox) * row;
        for (int64_t kh = 0; kh < g.k; ++kh) {
          const int64_t y = oy * g.s - g.p + kh;
          if (y < 0 || y >= g.ih) continue;
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const int64_t x = ox * g.s - g.p + kw;
            if (x < 0 || x >= g.iw) continue;
            float* d = o + (y * g.iw + x) * g.ic;
            for (int64_t c = 0; c < g.ic; ++c) d[c] += r[c * kk + kh * g.k + kw];
          }
        }
      }
  }
}

void run_narrow(const Geometry& g, const float* diff_dst, const float* wei, float* diff_src) {
  const int64_t m = g.n * g.oh * g.ow, n = g.ic * g.k * g.k;
  Gemm& e = gemm_for(m, g.oc, n);
  grow_scratch(e.scratch_md);
  if (columns.size() < static_cast<size_t>(m * n)) columns.resize(m * n);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, make_memory(e.a, const_cast<float*>(diff_dst))},
                                       {DNNL_ARG_WEIGHTS, make_memory(e.b, const_cast<float*>(wei))},
                                       {DNNL_ARG_DST, make_memory(e.c, columns.data())}};
  if (scratch_size) args[DNNL_ARG_SCRATCHPAD] = scratch_for(e.scratch_md);
  e.prim.execute(strm(), args);
  strm().wait();
  col2im(g, columns.data(), diff_src);
}

// BWD_WEIGHTS as one matrix product per kernel tap, on NHWC data with output maps of at most 4x4 (D's 4th layer,
// G's 2nd; G's first and D's last, 1x1), where oneDNN's weight-gradient kernel (jit:avx512_core) ran at 63% of the
// machine's FMA rate here (24.9 ms a call at batch 64, ngf 64; these products 18.5 ms; on 8x8 maps they were no
// faster, on 16x16 slower): diff_wei[:, :, kh, kw] [oc, ic] = the sum over the output positions p whose tap (kh, kw)
// lands inside the input of diff_dst[p, :] (outer) src[the pixel it lands on, :]. The products skip the padding (a
// quarter of a 4x4 map's taps), hold an 8 x 32 tile of the result in 16 vector registers over a chunk of positions,
// and read both rows in place (each a contiguous run of channels in NHWC). The threads split the output channels;
// every sum runs in one fixed order: the same bits every run, whatever the thread count.
constexpr int64_t TAP_MR = 8, TAP_NR = 32, TAP_CHUNK = 128, TAP_MAX_MAP = 16;

bool taps_fit(const Geometry& g) { return g.nhwc && g.ic % TAP_NR == 0 && g.oh * g.ow <= TAP_MAX_MAP; }

#if defined(__x86_64__)
bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#else
bool has_avx512() { return false; }
#endif

using Tile = void (*)(const float*, const float*, const int64_t*, const int64_t*, int64_t, float*, int64_t, bool);

#if defined(__x86_64__)
// c[MR rows of ldc][TAP_NR] (= if first) += sum over j < cnt of a[ao[j] + i] * b[bo[j] + c] (MR < TAP_MR: the
// last rows of an output channel count that TAP_MR does not divide, G's first layer's 100 and D's last layer's 1)
template <int MR>
__attribute__((target("avx512f"))) void tile_avx512(const float* a, const float* b, const int64_t* ao,
                                                    const int64_t* bo, int64_t cnt, float* c, int64_t ldc,
                                                    bool first) {
  __m512 acc[MR][2];  // (unrolled: the tile lives in registers)
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t j = 0; j < cnt; ++j) {
    const float* ar = a + ao[j];
    const __m512 b0 = _mm512_loadu_ps(b + bo[j]), b1 = _mm512_loadu_ps(b + bo[j] + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(ar[i]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* cr = c + i * ldc;
    if (!first) acc[i][0] = _mm512_add_ps(_mm512_loadu_ps(cr), acc[i][0]);
    if (!first) acc[i][1] = _mm512_add_ps(_mm512_loadu_ps(cr + 16), acc[i][1]);
    _mm512_storeu_ps(cr, acc[i][0]);
    _mm512_storeu_ps(cr + 16, acc[i][1]);
  }
}

constexpr Tile tiles_avx512[TAP_MR + 1] = {nullptr,          tile_avx512<1>, tile_avx512<2>, tile_avx512<3>,
                                           tile_avx512<4>,   tile_avx512<5>, tile_avx512<6>, tile_avx512<7>,
                                           tile_avx512<8>};
#endif

// the same without AVX-512 (taps 2 on such a CPU, taps 3 on any: the tests)
template <int MR>
void tile_plain(const float* a, const float* b, const int64_t* ao, const int64_t* bo, int64_t cnt, float* c,
                int64_t ldc, bool first) {
  float acc[MR][TAP_NR] = {};
  for (int64_t j = 0; j < cnt; ++j)
    for (int i = 0; i < MR; ++i)
      for (int q = 0; q < TAP_NR; ++q) acc[i][q] += a[ao[j] + i] * b[bo[j] + q];
  for (int i = 0; i < MR; ++i)
    for (int q = 0; q < TAP_NR; ++q) c[i * ldc + q] = first ? acc[i][q] : c[i * ldc + q] + acc[i][q];
}

constexpr Tile tiles_plain[TAP_MR + 1] = {nullptr,       tile_plain<1>, tile_plain<2>, tile_plain<3>, tile_plain<4>,
                                          tile_plain<5>, tile_plain<6>, tile_plain<7>, tile_plain<8>};

std::vector<float> tap_sums;  // [k*k, oc, ic], shared by all shapes, grown as needed (one op runs at a time)

void run_taps(const Geometry& g, const float* src, const float* diff_dst, float* diff_wei, bool portable) {
  const int64_t kk = g.k * g.k, plane = g.oc * g.ic;
  std::vector<std::vector<int64_t>> ao(kk), bo(kk);  // per tap: the diff_dst and src rows of its positions
  for (int64_t t = 0; t < kk; ++t)
    for (int64_t b = 0; b < g.n; ++b)
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const int64_t y = oy * g.s - g.p + t / g.k;
        if (y < 0 || y >= g.ih) continue;
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          const int64_t x = ox * g.s - g.p + t % g.k;
          if (x < 0 || x >= g.iw) continue;
          ao[t].push_back(((b * g.oh + oy) * g.ow + ox) * g.oc);
          bo[t].push_back(((b * g.ih + y) * g.iw + x) * g.ic);
        }
      }
  if (tap_sums.size() < static_cast<size_t>(kk * plane)) tap_sums.resize(kk * plane);
  float* sums = tap_sums.data();
#if defined(__x86_64__)
  const Tile* tiles = portable ? tiles_plain : tiles_avx512;
#else
  const Tile* tiles = tiles_plain;  // (portable is always true here: has_avx512() is false)
#endif
#pragma omp parallel
  {
    // this thread's output channels [lo, hi): whole blocks of TAP_MR, the last thread also the remainder
    const int64_t nt = omp_get_num_threads(), me = omp_get_thread_num(), blocks = g.oc / TAP_MR;
    const int64_t lo = blocks * me / nt * TAP_MR, hi = me == nt - 1 ? g.oc : blocks * (me + 1) / nt * TAP_MR;
    for (int64_t t = 0; t < kk; ++t) {
      float* c = sums + t * plane;
      const int64_t cnt = static_cast<int64_t>(ao[t].size());
      if (cnt == 0) std::fill(c + lo * g.ic, c + hi * g.ic, 0.f);  // a tap that only ever reads padding
      for (int64_t j = 0; j < cnt; j += TAP_CHUNK)  // a chunk's rows stay in cache across the tiles
        for (int64_t o = lo; o < hi; o += TAP_MR)
          for (int64_t i = 0; i < g.ic; i += TAP_NR)
            tiles[std::min(TAP_MR, hi - o)](diff_dst + o, src + i, ao[t].data() + j, bo[t].data() + j,
                                            std::min(TAP_CHUNK, cnt - j), c + o * g.ic + i, g.ic, j == 0);
    }
    for (int64_t o = lo; o < hi; ++o)  // [k*k, oc, ic] -> OIHW, this thread's channels, 16 input channels at a time
      for (int64_t i0 = 0; i0 < g.ic; i0 += 16)
        for (int64_t t = 0; t < kk; ++t)
          for (int64_t i = i0; i < std::min(i0 + 16, g.ic); ++i)
            diff_wei[(o * g.ic + i) * kk + t] = sums[t * plane + o * g.ic + i];
  }
}

// the convolution primitive of `kind`, its inputs and output reordered where it wants another layout. scope: the
// caller's frozen-weights scope (onednn_conv/__init__.py's frozen_weights(); 0: none) in which in1, the weights of
// FWD and BWD_DATA, keep their values: their reorder is done once per scope and tensor
void run_primitive(int kind, const Geometry& g, const float* in0, const float* in1, float* out, int64_t scope) {
  auto& slot = cache[g.key(kind)];
  if (!slot) slot = build(kind, g);
  Entry& e = *slot;
  grow_scratch(e.scratch_md);
  const std::array<void*, 3> ptrs{const_cast<float*>(in0), const_cast<float*>(in1), out};
  std::unordered_map<int, memory> args;
  std::array<memory, 3> user;
  for (int i = 0; i < 3; ++i) {
    user[i] = make_memory(e.user_md[i], ptrs[i]);
    args[e.args[i]] = e.reorder_needed[i] ? e.buffers[i] : user[i];
  }
  const bool reuse = kind != BWD_WEIGHTS && scope != 0 && e.wei_scope == scope && e.wei_ptr == in1;
  for (int i = 0; i < 2; ++i)
    if (e.reorder_needed[i] && !(i == 1 && reuse)) e.reorders[i].execute(strm(), user[i], e.buffers[i]);
  if (kind != BWD_WEIGHTS) e.wei_scope = scope, e.wei_ptr = in1;
  if (scratch_size) args[DNNL_ARG_SCRATCHPAD] = scratch_for(e.scratch_md);
  e.prim.execute(strm(), args);
  if (e.reorder_needed[2]) e.reorders[2].execute(strm(), e.buffers[2], user[2]);
}

// gemm: BWD_DATA may run as a matmul + col2im (run_narrow, where `narrow` says); taps: BWD_WEIGHTS as per-tap
// products (run_taps) where taps_fit: 1 on a CPU with AVX-512 (where it was measured), 2 on any, 3 on any with
// the portable tile (tests); else the primitive
void run(int kind, const Geometry& g, const float* in0, const float* in1, float* out, int64_t scope = 0,
         int gemm = 0, int taps = 0) {
  std::lock_guard<std::mutex> lock(mu);
  if (narrow(kind, g, gemm))
    run_narrow(g, in0, in1, out);
  else if (kind == BWD_WEIGHTS && taps_fit(g) && (taps >= 2 || (taps == 1 && has_avx512())))
    run_taps(g, in0, in1, out, taps == 3 || !has_avx512());
  else
    run_primitive(kind, g, in0, in1, out, scope);
  if (kind == BWD_DATA && g.act) eltwise_fwd(g.n * g.ic * g.ih * g.iw, g.act, g.alpha, out, out);  // (no post-ops)
  strm().wait();
}

void check(const paddle::Tensor& t, const char* what, size_t rank = 4) {
  PD_CHECK(t.is_cpu(), what, " must be on the CPU");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, what, " must be float32");
  PD_CHECK(t.shape().size() == rank, what, " must be 4-D");
}

int64_t out_side(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// a data tensor's [n, c, h, w] from its Paddle shape ([n, c, h, w], or [n, h, w, c] when nhwc), and back
std::array<int64_t, 4> nchw_of(const std::vector<int64_t>& s, int nhwc) {
  if (nhwc) return {s[0], s[3], s[1], s[2]};
  return {s[0], s[1], s[2], s[3]};
}
std::vector<int64_t> shape_of(int64_t n, int64_t c, int64_t h, int64_t w, int nhwc) {
  if (nhwc) return {n, h, w, c};
  return {n, c, h, w};
}

}  // namespace

std::vector<paddle::Tensor> ConvFwd(const paddle::Tensor& src, const paddle::Tensor& wei, int stride, int padding,
                                    int act, float alpha, int nhwc, int64_t scope) {
  check(src, "src"), check(wei, "weights");
  auto x = nchw_of(src.shape(), nhwc);
  auto w = wei.shape();
  PD_CHECK(x[1] == w[1], "input channels ", x[1], " != weight channels ", w[1]);
  const int64_t k = w[2], oh = out_side(x[2], k, stride, padding), ow = out_side(x[3], k, stride, padding);
  Geometry g{x[0], x[1], x[2], x[3], w[0], k, stride, padding, oh, ow, act, alpha, nhwc != 0};
  auto dst = paddle::empty(shape_of(g.n, g.oc, oh, ow, nhwc), paddle::DataType::FLOAT32, src.place());
  run(FWD, g, src.data<float>(), wei.data<float>(), dst.data<float>(), scope);
  return {dst};
}

// diff_dst [n, oc, oh, ow], wei [oc, ic, k, k] -> diff_src [n, ic, ih, iw]
// (act: then diff_src = act(diff_src), for the transposed convolution's forward)
std::vector<paddle::Tensor> ConvBwdData(const paddle::Tensor& diff_dst, const paddle::Tensor& wei, int stride,
                                        int padding, int ih, int iw, int act, float alpha, int nhwc, int gemm,
                                        int64_t scope) {
  check(diff_dst, "diff_dst"), check(wei, "weights");
  auto y = nchw_of(diff_dst.shape(), nhwc);
  auto w = wei.shape();
  PD_CHECK(y[1] == w[0], "output channels ", y[1], " != weight count ", w[0]);
  Geometry g{y[0], w[1], ih, iw, w[0], w[2], stride, padding, y[2], y[3], act, alpha, nhwc != 0};
  PD_CHECK(out_side(ih, g.k, stride, padding) == y[2] && out_side(iw, g.k, stride, padding) == y[3],
           "input side does not match the output side");
  auto diff_src = paddle::empty(shape_of(g.n, g.ic, ih, iw, nhwc), paddle::DataType::FLOAT32, diff_dst.place());
  run(BWD_DATA, g, diff_dst.data<float>(), wei.data<float>(), diff_src.data<float>(), scope, gemm);
  return {diff_src};
}

// src [n, ic, ih, iw], diff_dst [n, oc, oh, ow] -> diff_wei [oc, ic, k, k]
std::vector<paddle::Tensor> ConvBwdWeights(const paddle::Tensor& src, const paddle::Tensor& diff_dst, int stride,
                                           int padding, int kernel, int nhwc, int taps) {
  check(src, "src"), check(diff_dst, "diff_dst");
  auto x = nchw_of(src.shape(), nhwc), y = nchw_of(diff_dst.shape(), nhwc);
  PD_CHECK(x[0] == y[0], "batch sizes differ");
  Geometry g{x[0], x[1], x[2], x[3], y[1], kernel, stride, padding, y[2], y[3], 0, 0.f, nhwc != 0};
  PD_CHECK(out_side(x[2], kernel, stride, padding) == y[2], "input side does not match the output side");
  auto diff_wei = paddle::empty({g.oc, g.ic, kernel, kernel}, paddle::DataType::FLOAT32, src.place());
  run(BWD_WEIGHTS, g, src.data<float>(), diff_dst.data<float>(), diff_wei.data<float>(), 0, 0, taps);
  return {diff_wei};
}

std::vector<std::vector<int64_t>> ConvFwdShape(const std::vector<int64_t>& xs, const std::vector<int64_t>& w,
                                               int stride, int padding, int act, float alpha, int nhwc,
                                               int64_t scope) {
  auto x = nchw_of(xs, nhwc);
  return {shape_of(x[0], w[0], out_side(x[2], w[2], stride, padding), out_side(x[3], w[3], stride, padding), nhwc)};
}

std::vector<std::vector<int64_t>> ConvBwdDataShape(const std::vector<int64_t>& ys, const std::vector<int64_t>& w,
                                                   int stride, int padding, int ih, int iw, int act, float alpha,
                                                   int nhwc, int64_t scope) {
  return {shape_of(ys[0], w[1], ih, iw, nhwc)};
}

std::vector<std::vector<int64_t>> ConvBwdWeightsShape(const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
                                                      int stride, int padding, int kernel, int nhwc, int taps) {
  return {{nchw_of(ys, nhwc)[1], nchw_of(xs, nhwc)[1], kernel, kernel}};
}

std::vector<paddle::DataType> SameDtype(const paddle::DataType& a, const paddle::DataType& b) { return {a}; }

PD_BUILD_OP(dnnl_conv_fwd)
    .Inputs({"Src", "Wei"})
    .Outputs({"Dst"})
    .Attrs({"stride: int", "padding: int", "act: int", "alpha: float", "nhwc: int", "scope: int64_t"})
    .SetKernelFn(PD_KERNEL(ConvFwd))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvFwdShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(dnnl_conv_bwd_data)
    .Inputs({"DiffDst", "Wei"})
    .Outputs({"DiffSrc"})
    .Attrs({"stride: int", "padding: int", "ih: int", "iw: int", "act: int", "alpha: float", "nhwc: int",
            "gemm: int", "scope: int64_t"})
    .SetKernelFn(PD_KERNEL(ConvBwdData))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBwdDataShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(dnnl_conv_bwd_weights)
    .Inputs({"Src", "DiffDst"})
    .Outputs({"DiffWei"})
    .Attrs({"stride: int", "padding: int", "kernel: int", "nhwc: int", "taps: int"})
    .SetKernelFn(PD_KERNEL(ConvBwdWeights))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBwdWeightsShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

// ---------------------------------------------------------------------------------------------
// what follows the convolutions: activations alone, and batch normalization (+ an activation)

namespace {

void check_any(const paddle::Tensor& t, const char* what) {
  PD_CHECK(t.is_cpu(), what, " must be on the CPU");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, what, " must be float32");
}

struct BatchNorm {
  dnnl::batch_normalization_forward fwd;
  dnnl::batch_normalization_backward bwd;
  memory::desc data_md, stat_md, ws_md, fwd_scratch_md, bwd_scratch_md;
  size_t ws_bytes = 0;
};
std::map<std::vector<int64_t>, std::unique_ptr<BatchNorm>> bn_cache;

// global: the running statistics (eval mode), else the batch's; fnr: oneDNN's fuse_norm_relu (ReLU inside the
// normalization, its mask kept in a workspace for the backward pass)
BatchNorm& batch_norm(const std::array<int64_t, 4>& s, bool global, bool fnr, float eps, int nhwc) {
  auto& slot = bn_cache[{s[0], s[1], s[2], s[3], global, fnr, static_cast<int64_t>(eps * 1e12f), nhwc}];
  if (!slot) {
    auto e = std::make_unique<BatchNorm>();
    using f = dnnl::normalization_flags;
    auto flags = f::use_scale | f::use_shift;
    if (global) flags = flags | f::use_global_stats;
    if (fnr) flags = flags | f::fuse_norm_relu;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    e->data_md = plain({s[0], s[1], s[2], s[3]}, nhwc ? tag::nhwc : tag::nchw);
    e->stat_md = plain({s[1]}, tag::a);
    auto fpd = dnnl::batch_normalization_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training, e->data_md,
                                                                 e->data_md, eps, flags, attr);
    auto bpd = dnnl::batch_normalization_backward::primitive_desc(eng(), dnnl::prop_kind::backward, e->data_md,
                                                                  e->data_md, e->data_md, eps, flags, fpd, attr);
    e->fwd = dnnl::batch_normalization_forward(fpd);
    e->bwd = dnnl::batch_normalization_backward(bpd);
    e->ws_md = fpd.workspace_desc();
    e->ws_bytes = md_size(e->ws_md);
    e->fwd_scratch_md = fpd.scratchpad_desc();
    e->bwd_scratch_md = bpd.scratchpad_desc();
    slot = std::move(e);
  }
  return *slot;
}

float* mut(const paddle::Tensor& t) { return const_cast<float*>(t.data<float>()); }

}  // namespace

std::vector<paddle::Tensor> EltwiseFwd(const paddle::Tensor& x, int act, float alpha) {
  check_any(x, "x");
  auto y = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  std::lock_guard<std::mutex> lock(mu);
  eltwise_fwd(x.numel(), act, alpha, x.data<float>(), y.data<float>());
  strm().wait();
  return {y};
}

std::vector<paddle::Tensor> EltwiseBwd(const paddle::Tensor& dy, const paddle::Tensor& y, int act, float alpha) {
  check_any(dy, "dy"), check_any(y, "y");
  PD_CHECK(dy.numel() == y.numel(), "dy and y differ in size");
  auto dx = paddle::empty(y.shape(), paddle::DataType::FLOAT32, y.place());
  std::lock_guard<std::mutex> lock(mu);
  eltwise_bwd(y.numel(), act, alpha, dy.data<float>(), y.data<float>(), dx.data<float>());
  strm().wait();
  return {dx};
}

// training: batch statistics (returned), running ones updated in place as Paddle's kernel does; else the running
// ones (returned as copies, for the backward pass)
std::vector<paddle::Tensor> BnFwd(const paddle::Tensor& x, const paddle::Tensor& scale, const paddle::Tensor& shift,
                                  const paddle::Tensor& rmean, const paddle::Tensor& rvar, int training,
                                  float momentum, float eps, int act, float alpha, int fnr, int nhwc) {
  check(x, "x");
  for (auto* t : {&scale, &shift, &rmean, &rvar}) check_any(*t, "a batch norm parameter");
  const auto s = nchw_of(x.shape(), nhwc);
  const int64_t c = s[1];
  PD_CHECK(scale.numel() == c && shift.numel() == c && rmean.numel() == c && rvar.numel() == c,
           "batch norm parameters must have ", c, " values");
  PD_CHECK(!fnr || (act == 1 && alpha == 0.f), "fuse_norm_relu is for ReLU only");
  auto y = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto mean = paddle::empty({c}, paddle::DataType::FLOAT32, x.place());
  auto var = paddle::empty({c}, paddle::DataType::FLOAT32, x.place());
  std::lock_guard<std::mutex> lock(mu);
  BatchNorm& e = batch_norm(s, !training, fnr, eps, nhwc);
  auto ws = paddle::empty({static_cast<int64_t>(std::max<size_t>(e.ws_bytes, 1))}, paddle::DataType::UINT8,
                          x.place());
  grow_scratch(e.fwd_scratch_md);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, make_memory(e.data_md, mut(x))},
      {DNNL_ARG_DST, make_memory(e.data_md, y.data<float>())},
      {DNNL_ARG_SCALE, make_memory(e.stat_md, mut(scale))},
      {DNNL_ARG_SHIFT, make_memory(e.stat_md, mut(shift))},
      {DNNL_ARG_MEAN, make_memory(e.stat_md, training ? mean.data<float>() : mut(rmean))},
      {DNNL_ARG_VARIANCE, make_memory(e.stat_md, training ? var.data<float>() : mut(rvar))}};
  if (e.ws_bytes) args[DNNL_ARG_WORKSPACE] = make_memory(e.ws_md, ws.data<uint8_t>());
  if (scratch_size) args[DNNL_ARG_SCRATCHPAD] = scratch_for(e.fwd_scratch_md);
  e.fwd.execute(strm(), args);
  if (act && !fnr) eltwise_fwd(x.numel(), act, alpha, y.data<float>(), y.data<float>());
  strm().wait();
  float *rm = mut(rmean), *rv = mut(rvar), *m = mean.data<float>(), *v = var.data<float>();
  const float keep = momentum, take = 1.f - momentum;  // Paddle: running * momentum + batch * (1 - momentum)
  for (int64_t i = 0; i < c; ++i) {
    if (training) {
      rm[i] = rm[i] * keep + m[i] * take;
      rv[i] = rv[i] * keep + v[i] * take;
    } else {
      m[i] = rm[i], v[i] = rv[i];
    }
  }
  return {y, mean, var, ws};
}

// y: the forward's output (the activation's gradient is read from it); dx = dnorm(act'(y) * dy)
std::vector<paddle::Tensor> BnBwd(const paddle::Tensor& x, const paddle::Tensor& y, const paddle::Tensor& dy,
                                  const paddle::Tensor& scale, const paddle::Tensor& mean, const paddle::Tensor& var,
                                  const paddle::Tensor& ws, int training, float eps, int act, float alpha, int fnr,
                                  int nhwc) {
  check(x, "x"), check(y, "y"), check(dy, "dy");
  const auto s = nchw_of(x.shape(), nhwc);
  const int64_t c = s[1];
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto dscale = paddle::empty({c}, paddle::DataType::FLOAT32, x.place());
  auto dshift = paddle::empty({c}, paddle::DataType::FLOAT32, x.place());
  std::lock_guard<std::mutex> lock(mu);
  BatchNorm& e = batch_norm(s, !training, fnr, eps, nhwc);
  PD_CHECK(!e.ws_bytes || static_cast<size_t>(ws.numel()) == e.ws_bytes, "workspace size mismatch");
  const float* diff = dy.data<float>();
  if (act && !fnr) {  // the activation's gradient into dx, then the normalization's, in place
    eltwise_bwd(x.numel(), act, alpha, diff, y.data<float>(), dx.data<float>());
    diff = dx.data<float>();
  }
  grow_scratch(e.bwd_scratch_md);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, make_memory(e.data_md, mut(x))},
                                       {DNNL_ARG_MEAN, make_memory(e.stat_md, mut(mean))},
                                       {DNNL_ARG_VARIANCE, make_memory(e.stat_md, mut(var))},
                                       {DNNL_ARG_DIFF_DST, make_memory(e.data_md, const_cast<float*>(diff))},
                                       {DNNL_ARG_SCALE, make_memory(e.stat_md, mut(scale))},
                                       {DNNL_ARG_DIFF_SRC, make_memory(e.data_md, dx.data<float>())},
                                       {DNNL_ARG_DIFF_SCALE, make_memory(e.stat_md, dscale.data<float>())},
                                       {DNNL_ARG_DIFF_SHIFT, make_memory(e.stat_md, dshift.data<float>())}};
  if (e.ws_bytes) args[DNNL_ARG_WORKSPACE] = make_memory(e.ws_md, const_cast<uint8_t*>(ws.data<uint8_t>()));
  if (scratch_size) args[DNNL_ARG_SCRATCHPAD] = scratch_for(e.bwd_scratch_md);
  e.bwd.execute(strm(), args);
  strm().wait();
  return {dx, dscale, dshift};
}

std::vector<std::vector<int64_t>> SameShape1(const std::vector<int64_t>& x) { return {x}; }
std::vector<std::vector<int64_t>> SameShape2(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  return {a};
}
std::vector<paddle::DataType> SameDtype1(const paddle::DataType& a) { return {a}; }

std::vector<std::vector<int64_t>> BnFwdShape(const std::vector<int64_t>& x, const std::vector<int64_t>&,
                                             const std::vector<int64_t>&, const std::vector<int64_t>&,
                                             const std::vector<int64_t>&, int, float, float, int, float, int,
                                             int nhwc) {
  const int64_t c = nchw_of(x, nhwc)[1];
  return {x, {c}, {c}, {-1}};
}
std::vector<paddle::DataType> BnFwdDtype(const paddle::DataType& a, const paddle::DataType&,
                                         const paddle::DataType&, const paddle::DataType&,
                                         const paddle::DataType&) {
  return {a, a, a, paddle::DataType::UINT8};
}
std::vector<std::vector<int64_t>> BnBwdShape(const std::vector<int64_t>& x, const std::vector<int64_t>&,
                                             const std::vector<int64_t>&, const std::vector<int64_t>&,
                                             const std::vector<int64_t>&, const std::vector<int64_t>&,
                                             const std::vector<int64_t>&, int, float, int, float, int, int nhwc) {
  const int64_t c = nchw_of(x, nhwc)[1];
  return {x, {c}, {c}};
}
std::vector<paddle::DataType> BnBwdDtype(const paddle::DataType& a, const paddle::DataType&,
                                         const paddle::DataType&, const paddle::DataType&,
                                         const paddle::DataType&, const paddle::DataType&,
                                         const paddle::DataType&) {
  return {a, a, a};
}

PD_BUILD_OP(dnnl_eltwise_fwd)
    .Inputs({"X"})
    .Outputs({"Y"})
    .Attrs({"act: int", "alpha: float"})
    .SetKernelFn(PD_KERNEL(EltwiseFwd))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape1))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype1));

PD_BUILD_OP(dnnl_eltwise_bwd)
    .Inputs({"DiffDst", "Dst"})
    .Outputs({"DiffSrc"})
    .Attrs({"act: int", "alpha: float"})
    .SetKernelFn(PD_KERNEL(EltwiseBwd))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape2))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(dnnl_bn_fwd)
    .Inputs({"X", "Scale", "Shift", "RunningMean", "RunningVar"})
    .Outputs({"Y", "Mean", "Var", "Workspace"})
    .Attrs({"training: int", "momentum: float", "eps: float", "act: int", "alpha: float", "fnr: int", "nhwc: int"})
    .SetKernelFn(PD_KERNEL(BnFwd))
    .SetInferShapeFn(PD_INFER_SHAPE(BnFwdShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnFwdDtype));

PD_BUILD_OP(dnnl_bn_bwd)
    .Inputs({"X", "Y", "DiffY", "Scale", "Mean", "Var", "Workspace"})
    .Outputs({"DiffX", "DiffScale", "DiffShift"})
    .Attrs({"training: int", "eps: float", "act: int", "alpha: float", "fnr: int", "nhwc: int"})
    .SetKernelFn(PD_KERNEL(BnBwd))
    .SetInferShapeFn(PD_INFER_SHAPE(BnBwdShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BnBwdDtype));
