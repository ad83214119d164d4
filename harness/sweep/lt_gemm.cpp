// cuBLASLt GEMMs (see lt_gemm.hpp). In column-major terms Y^T[rows, batch] = W_rowmajor * X^T:
// A = W viewed as (in x rows, ld in) with TRANSA = T, B = X^T (in x batch, ld in), C = D =
// Y^T (rows x batch, ld ldc).
#include "sweep/lt_gemm.hpp"

#include <cublasLt.h>

#include <map>
#include <tuple>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "common/cuda_util.hpp"
#include "sweep/lt_gemm_check.hpp"

namespace df11::sweep {
namespace {

constexpr uint64_t kWorkspaceBytes = 32u << 20;

struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

struct LtGemm::Impl {
  cublasLtHandle_t lt = nullptr;
  cuda::DeviceBuffer<uint8_t> workspace;
  uint32_t w_align = 256;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, std::unique_ptr<GemmPlan>> plans;

  std::unique_ptr<GemmPlan> make_plan(int64_t rows, int64_t in, int64_t ldc, int batch) const {
    auto p = std::make_unique<GemmPlan>();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans = CUBLAS_OP_T;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, static_cast<uint64_t>(in), static_cast<uint64_t>(rows), in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, static_cast<uint64_t>(in), static_cast<uint64_t>(batch), in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_16BF, static_cast<uint64_t>(rows), static_cast<uint64_t>(batch), ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t align = w_align;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    // W may sit at any matrix offset of a unit: promise only the alignment every such pointer has
    // (cuBLASLt's default promise is 256 bytes).
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof align);
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    CUBLAS_CHECK(st);
    if (found == 0) throw Error(fmt::format("cuBLASLt has no algorithm for a {}x{} x {} GEMM", rows, in, batch));
    p->algo = result.algo;
    return p;
  }
};

LtGemm::LtGemm() : impl_(std::make_unique<Impl>()) {
  CUBLAS_CHECK(cublasLtCreate(&impl_->lt));
  impl_->workspace = cuda::DeviceBuffer<uint8_t>(kWorkspaceBytes);
}

LtGemm::~LtGemm() {
  impl_->plans.clear();
  if (impl_->lt) cublasLtDestroy(impl_->lt);
}

void LtGemm::set_w_alignment(uint32_t bytes) {
  if (bytes == 0 || bytes > 256 || (bytes & (bytes - 1)) != 0) {
    throw Error(fmt::format("LtGemm: alignment {} is not a power of two <= 256", bytes));
  }
  if (bytes != impl_->w_align) impl_->plans.clear();
  impl_->w_align = bytes;
}

void LtGemm::run(const uint16_t* w, int64_t rows, int64_t in, const uint16_t* x, uint16_t* y, int64_t ldc, int batch,
                 cudaStream_t stream) {
  const auto key = std::make_tuple(rows, in, ldc, batch);
  auto it = impl_->plans.find(key);
  if (it == impl_->plans.end()) it = impl_->plans.emplace(key, impl_->make_plan(rows, in, ldc, batch)).first;
  const GemmPlan& p = *it->second;
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(impl_->lt, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                              impl_->workspace.get(), impl_->workspace.bytes(), stream));
}

}  // namespace df11::sweep
