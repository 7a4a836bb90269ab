// rnnkit: MKL's packed GEMM for the per-step recurrent products (cblas_sgemm_pack, _compute).
//
// A step's product h @ W_h re-packs W_h inside every GEMM call; packed once per layer call (where
// the call has enough products to pay for it, see kMinPackedRows), the kernel is read as it is by
// every step that has the full number of rows (steps with fewer rows, after sequences end, take
// the plain product). The functions are looked up at run time in the libtorch_cpu already loaded (torch's x86 CPU builds link MKL in and export them); where they are
// absent (builds without MKL), for float64, or with RNNKIT_PACKED_GEMM=0, every product is the
// plain GEMM (MKL's SGEMM / DGEMM, or torch's own where MKL is absent).

#pragma once

#include <torch/extension.h>

#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <type_traits>

namespace rnnkit {

struct MklPackedGemm {  // the three functions, or all null
  using GetSize = size_t (*)(int, int, int, int);
  using Pack = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
  using Compute = void (*)(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int);
  GetSize get_size = nullptr;
  Pack pack = nullptr;
  Compute compute = nullptr;
};

inline const MklPackedGemm& mkl_packed_gemm() {
  static const MklPackedGemm functions = [] {
    MklPackedGemm found;
    const char* flag = std::getenv("RNNKIT_PACKED_GEMM");
    if (flag != nullptr && std::strcmp(flag, "0") == 0) return found;
    void* library = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (library == nullptr) return found;
    found.get_size = reinterpret_cast<MklPackedGemm::GetSize>(dlsym(library, "cblas_sgemm_pack_get_size"));
    found.pack = reinterpret_cast<MklPackedGemm::Pack>(dlsym(library, "cblas_sgemm_pack"));
    found.compute = reinterpret_cast<MklPackedGemm::Compute>(dlsym(library, "cblas_sgemm_compute"));
    if (found.get_size == nullptr || found.pack == nullptr || found.compute == nullptr) return MklPackedGemm{};
    return found;
  }();
  return functions;
}

// The plain (Fortran) GEMMs of the same library, for the products that the packed one does not
// take (steps with fewer rows, float64): called on raw rows, without a tensor per step.
struct MklGemm {
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
  using Dgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                         const int*, const double*, const int*, const double*, double*, const int*);
  Sgemm sgemm = nullptr;
  Dgemm dgemm = nullptr;
};

inline const MklGemm& mkl_gemm() {
  static const MklGemm functions = [] {
    MklGemm found;
    void* library = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (library == nullptr) return found;
    found.sgemm = reinterpret_cast<MklGemm::Sgemm>(dlsym(library, "SGEMM"));
    found.dgemm = reinterpret_cast<MklGemm::Dgemm>(dlsym(library, "DGEMM"));
    return found;
  }();
  return functions;
}

// Packing costs about one pass over the weights, and it pays back only over enough products:
// with 2 threads (LSTM H128-H512, forward and backward) packed weights measured slower below 128
// rows of products in all (B1 T64 1.02-1.07x, B16 T4 1.0-1.2x the plain GEMM's time), faster
// from about there on (B16 T16 0.91x, B4 T64 0.87x training, B64 T64 0.89x, B1 T1000 0.92x).
constexpr int64_t kMinPackedRows = 128;

// Products out (+)= a @ weights ([rows, K] @ [K, N]) for the steps of a layer, on rows given by
// pointer and row stride; the weights packed for `rows` rows where `steps` products of them pay
// for it (see above). The weights are read where they are if their rows or their columns are
// contiguous (a transposed view, as backward's W^T: no copy per call), else copied once.
class RecurrentProduct {
 public:
  RecurrentProduct(const torch::Tensor& weights, int64_t rows, int64_t steps) : rows_(rows) {
    TORCH_CHECK(weights.dim() == 2, "RecurrentProduct: weights must be a [K, N] matrix");
    const int64_t K = weights.size(0), N = weights.size(1);
    const bool by_rows = weights.stride(1) == 1 && weights.stride(0) >= std::max<int64_t>(N, 1);
    transposed_ = !by_rows && weights.stride(0) == 1 && weights.stride(1) >= std::max<int64_t>(K, 1);
    weights_ = by_rows || transposed_ ? weights : weights.contiguous();
    ld_ = transposed_ ? weights_.stride(1) : weights_.stride(0);  // between rows (or columns, transposed)
    fits_ = K > 0 && N > 0 && K < INT_MAX && N < INT_MAX && ld_ < INT_MAX;
    const MklPackedGemm& mkl = mkl_packed_gemm();
    if (rows * steps < kMinPackedRows) return;
    if (mkl.compute == nullptr || weights.scalar_type() != at::kFloat || !fits_ || rows <= 0 || rows >= INT_MAX) return;
    const size_t bytes = mkl.get_size(kBMatrix, static_cast<int>(rows), static_cast<int>(N), static_cast<int>(K));
    packed_ = torch::empty({static_cast<int64_t>(bytes / sizeof(float)) + 1}, weights.options());
    mkl.pack(kRowMajor, kBMatrix, transposed_ ? kTrans : kNoTrans, static_cast<int>(rows), static_cast<int>(N),
             static_cast<int>(K), 1.0f, weights_.data_ptr<float>(), static_cast<int>(ld_), packed_.data_ptr<float>());
  }

  // Every product the plain GEMM, on the weights as they are.
  static RecurrentProduct plain(const torch::Tensor& weights) { return RecurrentProduct(weights, 0, 0); }

  // out[r, :] (+)= a[r, :] @ weights for r < rows: row r of a at a + r * lda, of out at out + r * ldc.
  template <typename scalar_t>
  void apply(const scalar_t* a, int64_t lda, int64_t rows, scalar_t* out, int64_t ldc, bool accumulate) const {
    if (rows <= 0) return;
    const int64_t K = weights_.size(0), N = weights_.size(1);
    const bool ints = fits_ && rows < INT_MAX && lda < INT_MAX && ldc < INT_MAX;
    const int m = static_cast<int>(rows), n = static_cast<int>(N), k = static_cast<int>(K);
    const int lda_i = static_cast<int>(lda), ldc_i = static_cast<int>(ldc), ldw = static_cast<int>(ld_);
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (packed_.defined() && rows == rows_ && ints) {
        mkl_packed_gemm().compute(kRowMajor, kNoTrans, kPacked, m, n, k, a, lda_i, packed_.data_ptr<float>(), n,
                                  accumulate ? 1.0f : 0.0f, out, ldc_i);
        return;
      }
    }
    // row-major out = a @ w is column-major out^T = w^T a^T: the Fortran GEMM with the operands
    // swapped (row-major w is column-major w^T; transposed w, column-major w, takes "T")
    const scalar_t one = 1, beta = accumulate ? 1 : 0;
    const scalar_t* w = weights_.data_ptr<scalar_t>();
    const char* w_op = transposed_ ? "T" : "N";
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (mkl_gemm().sgemm != nullptr && ints) {
        mkl_gemm().sgemm(w_op, "N", &n, &m, &k, &one, w, &ldw, a, &lda_i, &beta, out, &ldc_i);
        return;
      }
    } else if constexpr (std::is_same_v<scalar_t, double>) {
      if (mkl_gemm().dgemm != nullptr && ints) {
        mkl_gemm().dgemm(w_op, "N", &n, &m, &k, &one, w, &ldw, a, &lda_i, &beta, out, &ldc_i);
        return;
      }
    }
    const auto options = weights_.options();  // no MKL: torch's own GEMM on views of the rows
    const torch::Tensor a_rows = torch::from_blob(const_cast<scalar_t*>(a), {rows, K}, {lda, 1}, options);
    torch::Tensor out_rows = torch::from_blob(out, {rows, N}, {ldc, 1}, options);
    if (accumulate) out_rows.addmm_(a_rows, weights_);
    else at::mm_out(out_rows, a_rows, weights_);
  }

 private:
  static constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;
  torch::Tensor weights_, packed_;
  int64_t rows_, ld_ = 0;
  bool transposed_ = false, fits_ = false;
};

// The product for `weights` (a projection), or none where there are none (an empty tensor).
inline std::optional<RecurrentProduct> optional_product(const torch::Tensor& weights, int64_t rows, int64_t steps) {
  if (!weights.defined() || weights.numel() == 0) return std::nullopt;
  return std::optional<RecurrentProduct>(std::in_place, weights, rows, steps);
}

}  // namespace rnnkit
