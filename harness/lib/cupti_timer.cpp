// CUPTI activity collection through dlopen (see cupti_timer.hpp): kernel and memcpy records kept
// as trace::Records (kernels by kind, classify_kernel), memsets (the sweep's L2 flush) ignored.
#include "lib/cupti_timer.hpp"

#include <cupti.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace df11::trace {
namespace {

using RegisterCallbacks = CUptiResult (*)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc);
using Enable = CUptiResult (*)(CUpti_ActivityKind);  // also cuptiActivityDisable
using FlushAll = CUptiResult (*)(uint32_t);
using GetNextRecord = CUptiResult (*)(uint8_t*, size_t, CUpti_Activity**);

struct Collected {
  std::mutex m;
  std::vector<Record> records;
};
Collected g_collected;
GetNextRecord g_next = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kSize = 1 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kSize));
  *size = kSize;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<Record> got;
  while (g_next && g_next(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      if (k->start == 0 || k->end <= k->start) continue;  // incomplete record
      got.push_back({classify_kernel(k->name ? k->name : ""), k->start, k->end});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* c = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
      if (c->start == 0 || c->end <= c->start) continue;
      got.push_back({Kind::copy, c->start, c->end});
    }
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_collected.m);
  g_collected.records.insert(g_collected.records.end(), got.begin(), got.end());
}

}  // namespace

struct CuptiTimer::Impl {
  void* lib = nullptr;
  FlushAll flush = nullptr;
  Enable enable = nullptr, disable = nullptr;
  bool on = false;
};

namespace {
std::once_flag g_registered;  // CUPTI takes one pair of buffer callbacks per process
CUptiResult g_register_result = CUPTI_SUCCESS;
}  // namespace

CuptiTimer::CuptiTimer() : impl_(std::make_unique<Impl>()) {
  for (const char* name : {"libcupti.so.13", "/usr/local/cuda/lib64/libcupti.so.13",
                           "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13", "libcupti.so"}) {
    impl_->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (impl_->lib) break;
  }
  if (!impl_->lib) {
    why_not_ = "libcupti not found";
    return;
  }
  auto reg = reinterpret_cast<RegisterCallbacks>(dlsym(impl_->lib, "cuptiActivityRegisterCallbacks"));
  impl_->enable = reinterpret_cast<Enable>(dlsym(impl_->lib, "cuptiActivityEnable"));
  impl_->disable = reinterpret_cast<Enable>(dlsym(impl_->lib, "cuptiActivityDisable"));
  impl_->flush = reinterpret_cast<FlushAll>(dlsym(impl_->lib, "cuptiActivityFlushAll"));
  g_next = reinterpret_cast<GetNextRecord>(dlsym(impl_->lib, "cuptiActivityGetNextRecord"));
  if (!reg || !impl_->enable || !impl_->disable || !impl_->flush || !g_next) {
    why_not_ = "libcupti lacks the activity API";
    return;
  }
  if (const char* env = std::getenv("DF11_CUPTI"); env && std::strcmp(env, "0") == 0) {
    why_not_ = "off (DF11_CUPTI=0)";
    return;
  }
  std::call_once(g_registered, [&] { g_register_result = reg(buffer_requested, buffer_completed); });
  if (g_register_result != CUPTI_SUCCESS) {
    why_not_ = "CUPTI activity callbacks could not be registered";
    return;
  }
  ok_ = true;
}

CuptiTimer::~CuptiTimer() { disable(); }

void CuptiTimer::enable() {
  if (!ok_ || impl_->on) return;
  if (impl_->enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
      impl_->enable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS) {
    impl_->disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    ok_ = false;
    why_not_ = "CUPTI activity could not be enabled";
    return;
  }
  impl_->on = true;
}

void CuptiTimer::disable() {
  if (!ok_ || !impl_->on) return;
  impl_->flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  impl_->disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  impl_->disable(CUPTI_ACTIVITY_KIND_MEMCPY);
  impl_->on = false;
}

void CuptiTimer::start() {
  if (!ok_) return;
  impl_->flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_collected.m);
  g_collected.records.clear();
}

Summary CuptiTimer::stop() {
  if (!ok_) return {};
  impl_->flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::vector<Record> records;
  {
    std::lock_guard<std::mutex> lock(g_collected.m);
    records.swap(g_collected.records);
  }
  return summarize(std::move(records));
}

}  // namespace df11::trace
