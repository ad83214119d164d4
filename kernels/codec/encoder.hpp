// The encoder: Unit + Layout -> EncodedUnit, multi-threaded, with output that does not depend
// on the thread count (the work is cut into fixed-size tasks whose bit offsets are known
// before any bit is written).
#pragma once

#include "codec/huffman.hpp"
#include "codec/layout.hpp"
#include "codec/unit.hpp"

namespace df11 {

// Exponent histogram of all elements of the unit.
[[nodiscard]] Histogram exponent_histogram(const UnitView& unit, int n_threads = 0);

// Encodes the unit. Throws df11::Error when the layout cannot hold the data: in the DF11 layout,
// an exponent >= 240 (Inf, NaN, |x| >= 2^113) is refused naming the tensor and the element.
[[nodiscard]] EncodedUnit encode(const UnitView& unit, const Layout& layout, int n_threads = 0);

}  // namespace df11
