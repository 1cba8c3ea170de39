// The version fanhsm reports (--version, the fanhsm_build_info metric).
#pragma once

namespace hsm::cli {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace hsm::cli
