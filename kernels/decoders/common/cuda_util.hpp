// CUDA helpers for host code (CUDA builds only): CUDA_CHECK that names file and line, RAII
// device buffers, streams and events, L2 windows, and graph capture with an eager fallback.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "codec/common.hpp"
#include "common/l2_window.hpp"

#define CUDA_CHECK(expr)                                                                                  \
  do {                                                                                                    \
    const cudaError_t df11_err_ = (expr);                                                                 \
    if (df11_err_ != cudaSuccess) {                                                                       \
      throw ::df11::Error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #expr +          \
                          " failed: " + cudaGetErrorString(df11_err_));                                   \
    }                                                                                                     \
  } while (0)

namespace df11::cuda {

// True when a CUDA device can be used; "no driver" and "no device" are not errors.
[[nodiscard]] bool device_available();

// Blocks of `kernel` resident on the current device at once with `threads` threads and `smem`
// bytes of dynamic shared memory each (occupancy x SMs, at least 1): the grid of a persistent
// kernel. Host calls only; callers cache it per kernel and size.
template <class Kernel>
uint64_t resident_blocks(Kernel kernel, int threads, unsigned smem) {
  int per_sm = 0, device = 0, sms = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return static_cast<uint64_t>(per_sm > 0 ? per_sm : 1) * static_cast<uint64_t>(sms > 0 ? sms : 1);
}

// resident_blocks of one kernel, remembered per shared-memory size: the e2e model launches the
// same kernel for units whose shared memory differs (it holds a block's exponents), alternating.
class ResidentBlocks {
 public:
  template <class Kernel>
  uint64_t get(Kernel kernel, int threads, unsigned smem) {
    for (const auto& [size, grid] : known_)
      if (size == smem) return grid;
    const uint64_t grid = resident_blocks(kernel, threads, smem);
    known_.emplace_back(smem, grid);
    return grid;
  }

 private:
  std::vector<std::pair<unsigned, uint64_t>> known_;
};

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n_) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr_) cudaFree(ptr_);  // no throw from a destructor path
    ptr_ = nullptr;
    n_ = 0;
  }
  // Copies host data into a fresh buffer of the same size, on `stream` (ordered after its work)
  // and returns once the copy is done: the vector may go at once, a temporary too. (From
  // pageable memory cudaMemcpyAsync returns once the driver has staged the bytes, but the
  // documentation hedges that, and a set-up path gains nothing from relying on it.)
  static DeviceBuffer from(std::span<const T> host, cudaStream_t stream) {
    DeviceBuffer b(host.size());
    if (!host.empty()) {
      CUDA_CHECK(cudaMemcpyAsync(b.ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    return b;
  }
  template <class Alloc>
  static DeviceBuffer from(const std::vector<T, Alloc>& host, cudaStream_t stream) {
    return from(std::span<const T>(host.data(), host.size()), stream);
  }
  static DeviceBuffer from(std::initializer_list<T> host, cudaStream_t stream) {
    return from(std::span<const T>(host.begin(), host.size()), stream);
  }
  [[nodiscard]] T* get() const { return ptr_; }
  [[nodiscard]] std::size_t size() const { return n_; }
  [[nodiscard]] std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

// Where a stream's kernels queue for the SMs. A second stream that fills buffers (a decode, an
// offload copy) for GEMMs on the first runs `low` and the GEMMs' stream `high`: as blocks of a
// running decode retire, the block scheduler starts pending blocks of the higher-priority GEMM
// first, where it would otherwise start the decode's remaining blocks first, and the GEMM would
// wait for the decode's last wave. (Running blocks are never preempted; a graph captured on
// the streams keeps the priorities in its kernel nodes, honoured when it is instantiated with
// cudaGraphInstantiateFlagUseNodePriority.)
enum class Priority { normal, high, low };

class Stream {
 public:
  explicit Stream(Priority p = Priority::normal) {
    if (p == Priority::normal) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
      return;
    }
    int least = 0, greatest = 0;  // greatest is the numerically lowest: the highest priority
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, p == Priority::high ? greatest : least));
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  [[nodiscard]] cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_{};
};

class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreate(&e_)); }
  explicit Event(unsigned flags) { CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags)); }  // e.g. cudaEventDisableTiming
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(e_); }
  [[nodiscard]] cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

// A double buffer between two streams: one fills a slot (a decode, a host-to-device copy), the
// other reads it (a GEMM), the two slots in turn. Used by run_sweep's cpu-offload and
// df11-pipelined and by the e2e model's --overlap. A slot is filled again only after the read
// before it finished, and each read waits for its fill. At the first fill after begin() the
// filling stream waits for everything issued on the reading stream so far (what it may still
// be reading; a graph capture on the reading stream joins the filling stream there), and only
// events recorded since begin() are waited on, as a capture requires.
class TwoSlots {
 public:
  // A new run: slot 0 next, no slot read yet, the filling stream forks at the next fill.
  void begin() {
    next_ = 0;
    forked_ = false;
    read_[0] = read_[1] = false;
  }
  // fill(slot) enqueued on `filler`, then read(slot) on `reader`, ordered as above.
  template <class Fill, class Read>
  void step(cudaStream_t filler, cudaStream_t reader, Fill&& fill, Read&& read) {
    const int h = next_;
    next_ ^= 1;
    if (!forked_) {
      CUDA_CHECK(cudaEventRecord(fork_.get(), reader));
      CUDA_CHECK(cudaStreamWaitEvent(filler, fork_.get(), 0));
      forked_ = true;
    }
    if (read_[h]) CUDA_CHECK(cudaStreamWaitEvent(filler, drained_[h].get(), 0));
    fill(h);
    CUDA_CHECK(cudaEventRecord(filled_[h].get(), filler));
    CUDA_CHECK(cudaStreamWaitEvent(reader, filled_[h].get(), 0));
    read(h);
    CUDA_CHECK(cudaEventRecord(drained_[h].get(), reader));
    read_[h] = true;
  }

 private:
  Event fork_{cudaEventDisableTiming};
  Event filled_[2]{Event(cudaEventDisableTiming), Event(cudaEventDisableTiming)};
  Event drained_[2]{Event(cudaEventDisableTiming), Event(cudaEventDisableTiming)};
  int next_ = 0;
  bool forked_ = false, read_[2] = {false, false};
};

// While alive, the kernels launched on its streams, and the kernel nodes of the graphs it marks,
// keep the lines of [base, base + bytes) persisting in L2 (as much of it as the device allows:
// plan_l2_window): a chunked method's reused slice buffer, so that each decoded slice stays in L2
// for its GEMM and is overwritten there by the next, never written back to DRAM. On release the
// streams lose the window, the persisting lines become normal again and the set-aside returns
// to what it was, so that later methods see the whole L2. A device without persisting L2 gets
// no window (plan().why_not says why). Whether a captured launch keeps its stream's window is
// not documented, so a capture's kernel nodes are given it explicitly (mark). Windows may
// overlap in time (e2e models built side by side): the set-aside is the largest any live window
// asked for, and goes back, with the persisting lines, when the last one is released.
class L2Window {
 public:
  L2Window(const void* base, uint64_t bytes, std::vector<cudaStream_t> streams)
      : base_(base), streams_(std::move(streams)) {
    int device = 0, persisting_max = 0, window_max = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&persisting_max, cudaDevAttrMaxPersistingL2CacheSize, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&window_max, cudaDevAttrMaxAccessPolicyWindowSize, device));
    plan_ = plan_l2_window(bytes, static_cast<uint64_t>(persisting_max), static_cast<uint64_t>(window_max));
    if (!plan_.on()) return;
    // A device or driver that refuses the set-aside or the window (a MIG slice, say) gets none:
    // caching only, so the caller runs without it and plan().why_not says why.
    auto refuse = [&](const char* what, cudaError_t e) {
      (void)cudaGetLastError();
      plan_ = L2WindowPlan{};
      plan_.why_not = std::string(what) + ": " + cudaGetErrorString(e);
    };
    {
      Shared& sh = shared();
      const std::lock_guard<std::mutex> lock(sh.m);
      if (sh.live == 0) {
        if (const cudaError_t e = cudaDeviceGetLimit(&sh.previous, cudaLimitPersistingL2CacheSize); e != cudaSuccess) {
          refuse("cudaDeviceGetLimit(cudaLimitPersistingL2CacheSize)", e);
          return;
        }
        sh.current = sh.previous;
      }
      if (plan_.set_aside_bytes > sh.current) {
        if (const cudaError_t e = cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, plan_.set_aside_bytes);
            e != cudaSuccess) {
          refuse("cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize)", e);
          return;
        }
        sh.current = plan_.set_aside_bytes;
      }
      ++sh.live;
    }
    active_ = true;
    const cudaStreamAttrValue v = value(true);
    for (cudaStream_t s : streams_) {
      if (const cudaError_t e = cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &v); e != cudaSuccess) {
        (void)release();
        refuse("cudaStreamSetAttribute(access policy window)", e);
        return;
      }
    }
  }
  L2Window(const L2Window&) = delete;
  L2Window& operator=(const L2Window&) = delete;
  ~L2Window() { (void)release(); }

  [[nodiscard]] const L2WindowPlan& plan() const { return plan_; }

  // Every kernel node of g (captured on the streams) gets the window.
  void mark(cudaGraph_t g) const {
    if (!active_) return;
    size_t n = 0;
    CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &n));
    std::vector<cudaGraphNode_t> nodes(n);
    if (n) CUDA_CHECK(cudaGraphGetNodes(g, nodes.data(), &n));
    const cudaKernelNodeAttrValue v = value(true);
    for (cudaGraphNode_t node : nodes) {
      cudaGraphNodeType type{};
      CUDA_CHECK(cudaGraphNodeGetType(node, &type));
      if (type == cudaGraphNodeTypeKernel) {
        CUDA_CHECK(cudaGraphKernelNodeSetAttribute(node, cudaKernelNodeAttributeAccessPolicyWindow, &v));
      }
    }
  }

  // The release, its errors thrown (the destructor drops them).
  void close() { CUDA_CHECK(release()); }

 private:
  [[nodiscard]] cudaStreamAttrValue value(bool on) const {
    cudaStreamAttrValue v{};
    v.accessPolicyWindow.base_ptr = const_cast<void*>(base_);
    v.accessPolicyWindow.num_bytes = on ? plan_.window_bytes : 0;
    v.accessPolicyWindow.hitRatio = on ? plan_.hit_ratio : 0.0f;
    v.accessPolicyWindow.hitProp = on ? cudaAccessPropertyPersisting : cudaAccessPropertyNormal;
    v.accessPolicyWindow.missProp = on ? cudaAccessPropertyStreaming : cudaAccessPropertyNormal;
    return v;
  }
  // Streams synchronized first: the set-aside changes under no running kernel.
  cudaError_t release() {
    if (!active_) return cudaSuccess;
    active_ = false;
    cudaError_t first = cudaSuccess;
    auto keep = [&](cudaError_t e) {
      if (first == cudaSuccess) first = e;
    };
    const cudaStreamAttrValue off = value(false);
    for (cudaStream_t s : streams_) {
      keep(cudaStreamSynchronize(s));
      keep(cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &off));
    }
    Shared& sh = shared();
    const std::lock_guard<std::mutex> lock(sh.m);
    if (--sh.live == 0) {
      keep(cudaCtxResetPersistingL2Cache());
      keep(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, sh.previous));
    }
    return first;
  }
  // The set-aside is the device's, shared by every live window.
  struct Shared {
    std::mutex m;
    int live = 0;
    size_t previous = 0, current = 0;
  };
  static Shared& shared() {
    static Shared s;
    return s;
  }

  const void* base_ = nullptr;
  std::vector<cudaStream_t> streams_;
  L2WindowPlan plan_;
  bool active_ = false;
};

// An instantiated CUDA graph, destroyed with its owner; empty until reset.
class GraphExec {
 public:
  GraphExec() = default;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() { reset(nullptr); }
  void reset(cudaGraphExec_t e) {
    if (e_) (void)cudaGraphExecDestroy(e_);
    e_ = e;
  }
  [[nodiscard]] cudaGraphExec_t get() const { return e_; }

 private:
  cudaGraphExec_t e_ = nullptr;
};

// What `record` launches on `stream`, captured (thread-local mode) and instantiated into g. The
// kernel nodes keep their streams' priorities (cudaGraphInstantiateFlagUseNodePriority), and
// `window`, when given, is put on them (L2Window::mark). The graph is uploaded on `stream`
// (cudaGraphUpload), so that its first launch does not pay for that. A capture that fails (record
// throws, a launch cannot be captured, instantiation or upload is refused) leaves g empty,
// returns why, and leaves no error behind, so the caller runs the same work eagerly. Empty: g
// holds the graph.
template <class Record>
[[nodiscard]] std::string capture_graph(cudaStream_t stream, Record&& record, const L2Window* window, GraphExec& g) {
  std::string why;
  cudaGraph_t graph = nullptr;
  if (const cudaError_t b = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal); b != cudaSuccess) {
    why = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(b);
  } else {
    try {
      record();
    } catch (const std::exception& e) {
      why = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (why.empty() && end != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
  }
  if (why.empty() && graph != nullptr && window != nullptr) {
    try {
      window->mark(graph);
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  cudaGraphExec_t exec = nullptr;
  if (why.empty() && graph != nullptr) {
    if (const cudaError_t e = cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagUseNodePriority);
        e != cudaSuccess) {
      why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(e);
      exec = nullptr;
    }
  }
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  if (exec != nullptr) {
    if (const cudaError_t u = cudaGraphUpload(exec, stream); u != cudaSuccess) {
      why = std::string("cudaGraphUpload: ") + cudaGetErrorString(u);
      (void)cudaGraphExecDestroy(exec);
      exec = nullptr;
    }
  }
  (void)cudaGetLastError();  // a failed capture leaves an error behind
  if (exec == nullptr) return why.empty() ? "the capture gave no graph" : why;
  g.reset(exec);
  return "";
}

}  // namespace df11::cuda
