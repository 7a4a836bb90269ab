// rnnkit: MKL's packed GEMM for the per-step recurrent products (cblas_sgemm_pack, _compute).
//
// A step's product h @ W_h re-packs W_h inside every GEMM call; packed once per layer call, the
// kernel is read as it is by every step that has the full number of rows (steps with fewer rows,
// after sequences end, take the plain product). The functions are looked up at run time in the
// libtorch_cpu already loaded (torch's x86 CPU builds link MKL in and export them); where they are
// absent (builds without MKL), for float64, or with RNNKIT_PACKED_GEMM=0, every product is the
// plain one (addmm_ / mm_out), as before.

#pragma once

#include <torch/extension.h>

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <cstring>

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

// Products a @ weights ([n, K] @ [K, N]) for the steps of a layer; weights packed for `rows` rows.
class RecurrentProduct {
 public:
  RecurrentProduct(const torch::Tensor& weights, int64_t rows) : weights_(weights), rows_(rows) {
    const MklPackedGemm& mkl = mkl_packed_gemm();
    const int64_t K = weights.size(0), N = weights.size(1);
    const bool fits = rows > 0 && K > 0 && N > 0 && rows < INT_MAX && K < INT_MAX && N < INT_MAX &&
                      weights.stride(0) < INT_MAX;
    if (mkl.compute == nullptr || weights.scalar_type() != at::kFloat || weights.stride(1) != 1 || !fits) return;
    const size_t bytes = mkl.get_size(kBMatrix, static_cast<int>(rows), static_cast<int>(N), static_cast<int>(K));
    packed_ = torch::empty({static_cast<int64_t>(bytes / sizeof(float)) + 1}, weights.options());
    mkl.pack(kRowMajor, kBMatrix, kNoTrans, static_cast<int>(rows), static_cast<int>(N), static_cast<int>(K), 1.0f,
             weights.data_ptr<float>(), static_cast<int>(weights.stride(0)), packed_.data_ptr<float>());
  }

  void add_into(torch::Tensor out, const torch::Tensor& a) const {  // out += a @ weights
    if (!packed(a, out)) {
      out.addmm_(a, weights_);
      return;
    }
    compute(a, out, 1.0f);
  }

  void into(torch::Tensor out, const torch::Tensor& a) const {  // out = a @ weights
    if (!packed(a, out)) {
      at::mm_out(out, a, weights_);
      return;
    }
    compute(a, out, 0.0f);
  }

 private:
  static constexpr int kRowMajor = 101, kNoTrans = 111, kPacked = 151, kBMatrix = 162;
  torch::Tensor weights_, packed_;
  int64_t rows_;

  bool packed(const torch::Tensor& a, const torch::Tensor& out) const {
    return packed_.defined() && a.size(0) == rows_ && a.scalar_type() == at::kFloat && a.stride(1) == 1 &&
           out.stride(1) == 1 && a.stride(0) < INT_MAX && out.stride(0) < INT_MAX;
  }

  void compute(const torch::Tensor& a, torch::Tensor& out, float beta) const {
    const int64_t K = weights_.size(0), N = weights_.size(1);
    mkl_packed_gemm().compute(kRowMajor, kNoTrans, kPacked, static_cast<int>(rows_), static_cast<int>(N),
                              static_cast<int>(K), a.data_ptr<float>(), static_cast<int>(a.stride(0)),
                              packed_.data_ptr<float>(), static_cast<int>(N), beta, out.data_ptr<float>(),
                              static_cast<int>(out.stride(0)));
  }
};

}  // namespace rnnkit
