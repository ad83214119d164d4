// CUBLAS_CHECK: a cuBLAS / cuBLASLt status other than success becomes a df11::Error naming the
// file, line and call.
#pragma once

#include <cublas_api.h>

#include <fmt/format.h>

#include "codec/common.hpp"

#define CUBLAS_CHECK(expr)                                                                            \
  do {                                                                                                \
    const cublasStatus_t df11_st_ = (expr);                                                           \
    if (df11_st_ != CUBLAS_STATUS_SUCCESS) {                                                          \
      throw ::df11::Error(fmt::format("{}:{}: {} failed: cuBLAS status {}", __FILE__, __LINE__, #expr, \
                                      static_cast<int>(df11_st_)));                                   \
    }                                                                                                 \
  } while (0)
