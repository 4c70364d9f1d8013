// Convolutions on oneDNN for Paddle's CPU eager mode: a Paddle custom operator library.
//
// Three ops, each one oneDNN primitive on float32 NCHW tensors (groups 1, dilation 1, square kernel/stride/padding):
//   dnnl_conv_fwd(src, wei)             -> dst        the convolution
//   dnnl_conv_bwd_data(diff_dst, wei)   -> diff_src   its adjoint in the input (also: the transposed convolution)
//   dnnl_conv_bwd_weights(src, diff_dst) -> diff_wei  its adjoint in the weights
// onednn_conv/__init__.py wires them into autograd for Conv2D and Conv2DTranspose.
//
// Linked against the libdnnl.so.3 that Paddle's wheel ships (oneDNN 3.x). That build does not export
// dnnl_memory_create_v2, which dnnl::memory's C++ constructors call, so memories are made with the C API's
// dnnl_memory_create (likewise dnnl_memory_desc_get_size, dnnl_memory_get_data_handle). Primitives pick their own
// (blocked) layouts; NCHW tensors are reordered in and out, and primitives, reorders and their buffers are cached
// per shape. Threads: oneDNN runs on the OpenMP runtime Paddle loads; `import paddle` pins it to one thread unless
// OMP_NUM_THREADS was set, so onednn_conv/__init__.py sets its thread count to MKL_NUM_THREADS after loading.

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
  auto key(int kind) const { return std::make_tuple(kind, n, ic, ih, iw, oc, k, s, p, oh, ow); }
};

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
};

memory::desc plain(const memory::dims& d, tag t) { return memory::desc(d, dt::f32, t); }

std::unique_ptr<Entry> build(int kind, const Geometry& g) {
  const memory::dims src_d{g.n, g.ic, g.ih, g.iw}, wei_d{g.oc, g.ic, g.k, g.k}, dst_d{g.n, g.oc, g.oh, g.ow};
  const memory::dims strides{g.s, g.s}, pad{g.p, g.p};
  const auto any_src = plain(src_d, tag::any), any_wei = plain(wei_d, tag::any), any_dst = plain(dst_d, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd_pd = dnnl::convolution_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training,
                                                          dnnl::algorithm::convolution_direct, any_src, any_wei,
                                                          any_dst, strides, pad, pad, attr);
  auto e = std::make_unique<Entry>();
  const auto src_u = plain(src_d, tag::nchw), wei_u = plain(wei_d, tag::oihw), dst_u = plain(dst_d, tag::nchw);
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

std::mutex mu;
std::map<std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
         std::unique_ptr<Entry>>
    cache;
memory scratch;  // shared by all primitives (one runs at a time), grown as needed
size_t scratch_size = 0;

void run(int kind, const Geometry& g, const float* in0, const float* in1, float* out) {
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[g.key(kind)];
  if (!slot) slot = build(kind, g);
  Entry& e = *slot;
  const size_t need = dnnl_memory_desc_get_size(e.scratch_md.get());  // C API: the C++ one calls a _v2
  if (need > scratch_size) {
    scratch_size = need;
    scratch = make_memory(plain({static_cast<int64_t>((scratch_size + 3) / 4)}, tag::a), nullptr);
  }
  const std::array<void*, 3> ptrs{const_cast<float*>(in0), const_cast<float*>(in1), out};
  std::unordered_map<int, memory> args;
  std::array<memory, 3> user;
  for (int i = 0; i < 3; ++i) {
    user[i] = make_memory(e.user_md[i], ptrs[i]);
    args[e.args[i]] = e.reorder_needed[i] ? e.buffers[i] : user[i];
  }
  for (int i = 0; i < 2; ++i)
    if (e.reorder_needed[i]) e.reorders[i].execute(strm(), user[i], e.buffers[i]);
  if (scratch_size) {
    void* buf = nullptr;
    dnnl_memory_get_data_handle(scratch.get(), &buf);
    memory s = make_memory(e.scratch_md, buf);
    args[DNNL_ARG_SCRATCHPAD] = s;
    e.prim.execute(strm(), args);
  } else {
    e.prim.execute(strm(), args);
  }
  if (e.reorder_needed[2]) e.reorders[2].execute(strm(), e.buffers[2], user[2]);
  strm().wait();
}

void check(const paddle::Tensor& t, const char* what, size_t rank = 4) {
  PD_CHECK(t.is_cpu(), what, " must be on the CPU");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, what, " must be float32");
  PD_CHECK(t.shape().size() == rank, what, " must be 4-D");
}

int64_t out_side(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

}  // namespace

std::vector<paddle::Tensor> ConvFwd(const paddle::Tensor& src, const paddle::Tensor& wei, int stride, int padding) {
  check(src, "src"), check(wei, "weights");
  auto x = src.shape(), w = wei.shape();
  PD_CHECK(x[1] == w[1], "input channels ", x[1], " != weight channels ", w[1]);
  const int64_t k = w[2], oh = out_side(x[2], k, stride, padding), ow = out_side(x[3], k, stride, padding);
  Geometry g{x[0], x[1], x[2], x[3], w[0], k, stride, padding, oh, ow};
  auto dst = paddle::empty({g.n, g.oc, oh, ow}, paddle::DataType::FLOAT32, src.place());
  run(FWD, g, src.data<float>(), wei.data<float>(), dst.data<float>());
  return {dst};
}

// diff_dst [n, oc, oh, ow], wei [oc, ic, k, k] -> diff_src [n, ic, ih, iw]
std::vector<paddle::Tensor> ConvBwdData(const paddle::Tensor& diff_dst, const paddle::Tensor& wei, int stride,
                                        int padding, int ih, int iw) {
  check(diff_dst, "diff_dst"), check(wei, "weights");
  auto y = diff_dst.shape(), w = wei.shape();
  PD_CHECK(y[1] == w[0], "output channels ", y[1], " != weight count ", w[0]);
  Geometry g{y[0], w[1], ih, iw, w[0], w[2], stride, padding, y[2], y[3]};
  PD_CHECK(out_side(ih, g.k, stride, padding) == y[2] && out_side(iw, g.k, stride, padding) == y[3],
           "input side does not match the output side");
  auto diff_src = paddle::empty({g.n, g.ic, ih, iw}, paddle::DataType::FLOAT32, diff_dst.place());
  run(BWD_DATA, g, diff_dst.data<float>(), wei.data<float>(), diff_src.data<float>());
  return {diff_src};
}

// src [n, ic, ih, iw], diff_dst [n, oc, oh, ow] -> diff_wei [oc, ic, k, k]
std::vector<paddle::Tensor> ConvBwdWeights(const paddle::Tensor& src, const paddle::Tensor& diff_dst, int stride,
                                           int padding, int kernel) {
  check(src, "src"), check(diff_dst, "diff_dst");
  auto x = src.shape(), y = diff_dst.shape();
  PD_CHECK(x[0] == y[0], "batch sizes differ");
  Geometry g{x[0], x[1], x[2], x[3], y[1], kernel, stride, padding, y[2], y[3]};
  PD_CHECK(out_side(x[2], kernel, stride, padding) == y[2], "input side does not match the output side");
  auto diff_wei = paddle::empty({g.oc, g.ic, kernel, kernel}, paddle::DataType::FLOAT32, src.place());
  run(BWD_WEIGHTS, g, src.data<float>(), diff_dst.data<float>(), diff_wei.data<float>());
  return {diff_wei};
}

std::vector<std::vector<int64_t>> ConvFwdShape(const std::vector<int64_t>& x, const std::vector<int64_t>& w,
                                               int stride, int padding) {
  return {{x[0], w[0], out_side(x[2], w[2], stride, padding), out_side(x[3], w[3], stride, padding)}};
}

std::vector<std::vector<int64_t>> ConvBwdDataShape(const std::vector<int64_t>& y, const std::vector<int64_t>& w,
                                                   int stride, int padding, int ih, int iw) {
  return {{y[0], w[1], ih, iw}};
}

std::vector<std::vector<int64_t>> ConvBwdWeightsShape(const std::vector<int64_t>& x, const std::vector<int64_t>& y,
                                                      int stride, int padding, int kernel) {
  return {{y[1], x[1], kernel, kernel}};
}

std::vector<paddle::DataType> SameDtype(const paddle::DataType& a, const paddle::DataType& b) { return {a}; }

PD_BUILD_OP(dnnl_conv_fwd)
    .Inputs({"Src", "Wei"})
    .Outputs({"Dst"})
    .Attrs({"stride: int", "padding: int"})
    .SetKernelFn(PD_KERNEL(ConvFwd))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvFwdShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(dnnl_conv_bwd_data)
    .Inputs({"DiffDst", "Wei"})
    .Outputs({"DiffSrc"})
    .Attrs({"stride: int", "padding: int", "ih: int", "iw: int"})
    .SetKernelFn(PD_KERNEL(ConvBwdData))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBwdDataShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(dnnl_conv_bwd_weights)
    .Inputs({"Src", "DiffDst"})
    .Outputs({"DiffWei"})
    .Attrs({"stride: int", "padding: int", "kernel: int"})
    .SetKernelFn(PD_KERNEL(ConvBwdWeights))
    .SetInferShapeFn(PD_INFER_SHAPE(ConvBwdWeightsShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));
