// What the binary was built from, captured at build time (not configure time) by
// build_info.cmake, which regenerates <build>/harness/build_info.cpp on every build.
#pragma once

namespace df11::sweep::build {

// The HEAD commit of the source tree when the binary was built ("unknown" outside a git tree).
extern const char* const git_sha;
// Tracked or untracked (not ignored) files differed from HEAD at build time.
extern const bool git_dirty;
extern const char* const compiler;    // e.g. "GNU 12.2.0"
extern const char* const build_type;  // e.g. "Release"

}  // namespace df11::sweep::build
