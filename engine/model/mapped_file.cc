#include "engine/model/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"

namespace medusa {
namespace {

// ------------------------------------------------------------------ SIGBUS guard
//
// Reading a page of a mapped file past its current end raises SIGBUS: that is what happens when
// a checkpoint is truncated (rewritten, or a copy still in progress) while it is loaded. Of the
// ways to survive it, this one was chosen:
// - Reading instead of mapping would hold a whole checkpoint in memory next to its float32
//   copy (the CPU backend converts every weight at load), doubling peak memory.
// - MAP_POPULATE and a second size check do not help: truncation unmaps the lost pages from
//   every mapping, private ones included, so a later read faults all the same.
// - A sigsetjmp guard around each copy would have to cover every reader of the map, OpenMP
//   workers converting big tensors included (a jump cannot cross threads).
// Instead, a process-wide SIGBUS handler looks the faulting address up in the table of live
// maps; if it falls in one, it maps a page of zeros over the lost page (MAP_FIXED, a plain
// system call, safe in a handler on Linux) and marks that map truncated, and the faulting read
// resumes and reads zeros, on whatever thread it ran. Loaders check CheckIntact() after
// reading, so the zeros never reach a model. Faults elsewhere go to the previous handler.

constexpr int kGuardSlots = 1024;  // maps alive at once; more are mapped unguarded

struct GuardSlot {
  std::atomic<uintptr_t> begin{0};  // 0: free
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> truncated{false};
  std::atomic<bool> taken{false};
};

GuardSlot g_slots[kGuardSlots];
struct sigaction g_previous_action;
uintptr_t g_page_size = 4096;

void ForwardToPrevious(int sig, siginfo_t* info, void* context) {
  const struct sigaction& previous = g_previous_action;
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(sig, info, context);
    return;
  }
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler != nullptr) {
    previous.sa_handler(sig);
    return;
  }
  // Default action: die with SIGBUS, as without this handler.
  signal(sig, SIG_DFL);
  raise(sig);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
  // Only a fault raised by the kernel has an address; a SIGBUS sent by kill() has none.
  for (GuardSlot& slot : g_slots) {
    if (info->si_code <= 0) break;
    const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin || address >= slot.end.load(std::memory_order_acquire)) continue;
    void* page = reinterpret_cast<void*>(address & ~(g_page_size - 1));
    if (mmap(page, g_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
      slot.truncated.store(true, std::memory_order_release);
      return;  // the faulting read resumes on the zero page
    }
    break;
  }
  ForwardToPrevious(sig, info, context);
}

void InstallSigbusHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_page_size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    struct sigaction action;
    std::memset(&action, 0, sizeof(action));
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &g_previous_action);
  });
}

// A free slot for [begin, begin + size), or -1 when the table is full.
int GuardRange(const void* begin, uint64_t size) {
  InstallSigbusHandler();
  for (int i = 0; i < kGuardSlots; ++i) {
    bool expected = false;
    if (!g_slots[i].taken.compare_exchange_strong(expected, true)) continue;
    g_slots[i].truncated.store(false);
    g_slots[i].end.store(reinterpret_cast<uintptr_t>(begin) + size, std::memory_order_release);
    g_slots[i].begin.store(reinterpret_cast<uintptr_t>(begin), std::memory_order_release);
    return i;
  }
  return -1;
}

void ReleaseRange(int slot) {
  if (slot < 0) return;
  g_slots[slot].begin.store(0, std::memory_order_release);
  g_slots[slot].end.store(0, std::memory_order_release);
  g_slots[slot].taken.store(false, std::memory_order_release);
}

absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path) {
  return FileErrnoStatus(err, absl::StrCat(what, " '", path, "': ", std::strerror(err)), absl::StatusCode::kInternal);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer before fstat could refuse it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return ErrnoStatus(errno, "cannot open model file", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot stat model file", path);
  }
  if (absl::Status regular = RequireRegularFile(st, path, "file"); !regular.ok()) {
    ::close(fd);
    return regular;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return std::unique_ptr<MappedFile>(new MappedFile(path, nullptr, 0, -1));
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (addr == MAP_FAILED) return ErrnoStatus(err, "cannot memory-map model file", path);
  // Loaders stream through the whole file once; let the kernel read ahead.
  ::madvise(addr, size, MADV_WILLNEED);
  const int slot = GuardRange(addr, size);
  return std::unique_ptr<MappedFile>(new MappedFile(path, static_cast<const uint8_t*>(addr), size, slot));
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  ReleaseRange(guard_slot_);
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

bool MappedFile::truncated() const {
  return guard_slot_ >= 0 && g_slots[guard_slot_].truncated.load(std::memory_order_acquire);
}

absl::Status MappedFile::CheckIntact() const {
  if (!truncated()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("'", path_, "' was truncated while it was being read (it had ", size_,
                                          " bytes when opened); nothing read from it is used"));
}

}  // namespace medusa
