// A result row's disposition (docs/RESULTS.md), shared by the sweep that writes rows and the gate
// that reads them: the enum, its schema names, and their parsing.
#pragma once

#include <string>

#include "codec/common.hpp"

namespace df11 {

enum class Disposition { passed, incorrect, not_supported, not_run };

[[nodiscard]] inline const char* to_string(Disposition d) {
  switch (d) {
    case Disposition::passed:
      return "passed";
    case Disposition::incorrect:
      return "incorrect";
    case Disposition::not_supported:
      return "not_supported";
    case Disposition::not_run:
      return "not_run";
  }
  return "?";
}

// Throws df11::Error for an unknown name.
[[nodiscard]] inline Disposition parse_disposition(const std::string& s) {
  for (const Disposition d :
       {Disposition::passed, Disposition::incorrect, Disposition::not_supported, Disposition::not_run}) {
    if (s == to_string(d)) return d;
  }
  throw Error("unknown disposition '" + s + "' (passed, incorrect, not_supported, not_run)");
}

}  // namespace df11
