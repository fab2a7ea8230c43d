#include "comm/tcp/shm_segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <fstream>
#include <system_error>
#include <utility>

#include "comm/communicator.h"
#include "runtime/io/byte_sizes.h"

namespace tern::shm {
namespace {

std::string system_reason() { return std::system_category().message(errno); }

}  // namespace

std::string free_text() {
  const size_t free = free_bytes();
  return free == std::numeric_limits<size_t>::max() ? "free space unknown" : format_bytes(free) + " free there";
}

size_t free_bytes() {
  struct statvfs info {};
  if (::statvfs(kDirectory, &info) != 0) return std::numeric_limits<size_t>::max();
  return static_cast<size_t>(info.f_bavail) * static_cast<size_t>(info.f_frsize);
}

Segment::~Segment() { release(); }

Segment::Segment(Segment&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    release();
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Segment::release() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
  base_ = nullptr;
  bytes_ = 0;
}

Segment Segment::create(const std::string& name, size_t bytes) {
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0 && errno == EEXIST) {  // left by a crashed job that had the same id
    ::shm_unlink(name.c_str());
    fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  }
  if (fd < 0) throw CommError("shared memory: cannot create segment " + name + ": " + system_reason());
  // Reserved, not just sized: a tmpfs segment sized by ftruncate gets its pages on first touch,
  // and a /dev/shm too small for them (64 MB in a default Docker container) kills the process
  // with SIGBUS in the middle of a transfer. posix_fallocate fails here instead, by name.
  if (const int error = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); error != 0) {
    const std::string reason = std::system_category().message(error);
    ::close(fd);
    ::shm_unlink(name.c_str());
    throw CommError("shared memory: cannot reserve " + format_bytes(bytes) + " for segment " + name + " in " +
                    kDirectory + " (" + reason + "; " + free_text() + ")");
  }
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const std::string reason = system_reason();
  ::close(fd);
  if (base == MAP_FAILED) {
    ::shm_unlink(name.c_str());
    throw CommError("shared memory: cannot map segment " + name + ": " + reason);
  }
  Segment segment;
  segment.base_ = static_cast<uint8_t*>(base);
  segment.bytes_ = bytes;
  return segment;
}

Segment Segment::open(const std::string& name, size_t min_bytes) {
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw CommError("shared memory: cannot open segment " + name + ": " + system_reason());
  struct stat info {};
  if (::fstat(fd, &info) != 0 || static_cast<size_t>(info.st_size) < min_bytes) {
    ::close(fd);
    throw CommError("shared memory: segment " + name + " is smaller than " + std::to_string(min_bytes) + " bytes");
  }
  const size_t bytes = static_cast<size_t>(info.st_size);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const std::string reason = system_reason();
  ::close(fd);
  if (base == MAP_FAILED) throw CommError("shared memory: cannot map segment " + name + ": " + reason);
  Segment segment;
  segment.base_ = static_cast<uint8_t*>(base);
  segment.bytes_ = bytes;
  return segment;
}

void Segment::unlink(const std::string& name) { ::shm_unlink(name.c_str()); }

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::milliseconds slice) {
  timespec relative{};
  relative.tv_sec = static_cast<time_t>(slice.count() / 1000);
  relative.tv_nsec = static_cast<long>((slice.count() % 1000) * 1000000);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &relative, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool process_alive(pid_t pid) {
  if (pid == ::getpid()) return true;  // ranks as threads of this process
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const std::string stat = first_line("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (stat.empty()) return true;  // no /proc to ask: kill() said it exists
  return !(paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z');
}

}  // namespace tern::shm
