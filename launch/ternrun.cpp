// ternrun: starts N ranks of a program on this machine, like torchrun or horovodrun. It serves
// the rendezvous store the tcp backend connects through, labels every output line with its rank,
// forwards Ctrl-C/SIGTERM, stops the whole job as soon as one rank fails, and gives each rank its own
// share of the cores (--bind-to).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "comm/tcp/tcp_store.h"
#include "launch/cpu_binding.h"
#include "runtime/io/flags.h"

namespace {

using Clock = std::chrono::steady_clock;

// Set by the signal handler; the main loop forwards it to the ranks. The one piece of global
// state here, because a signal handler can reach nothing else.
volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

struct Rank {
  int index = 0;
  pid_t pid = -1;
  int out_fd = -1, err_fd = -1;  // read ends of the child's stdout/stderr pipes
  std::string out_buf, err_buf;  // partial lines
  bool running = false;
  int exit_code = 0;  // 128 + signal when killed, as shells report it
};

std::string make_job_id() {
  std::random_device rd;  // a job id only needs to differ between concurrent jobs, not be secret
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// Moves complete lines from buf to fd with the rank prefix; at EOF the rest goes out too. A line
// redrawn in place with '\r' (rank 0's progress bar when ternrun runs on a terminal) is passed on
// as it arrives, as "\r[rank] <what the terminal would show>", so the bar stays live.
void emit_lines(int rank, std::string& buf, int fd, bool eof) {
  char prefix_buf[24];  // snprintf: GCC 12 misreports string concatenation here (-Wrestrict)
  std::snprintf(prefix_buf, sizeof prefix_buf, "[%d] ", rank);
  const std::string prefix = prefix_buf;
  auto emit = [&](std::string& out, const std::string& line) {
    const size_t cr = line.rfind('\r');
    if (cr == std::string::npos) {
      out.append(prefix).append(line);
    } else {
      out.append("\r").append(prefix).append(line, cr + 1, std::string::npos);
    }
  };
  size_t start = 0, nl;
  std::string out;
  while ((nl = buf.find('\n', start)) != std::string::npos) {
    emit(out, buf.substr(start, nl - start + 1));
    start = nl + 1;
  }
  buf.erase(0, start);
  if (!buf.empty() && (eof || buf.find('\r') != std::string::npos)) {
    emit(out, buf);
    if (eof) out.append("\n");
    buf.clear();
  }
  if (!out.empty()) write_all(fd, out);
}

// Reads what is available on fd into buf; returns false at EOF or error (fd closed and set -1).
bool drain(int& fd, std::string& buf) {
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    ::close(fd);
    fd = -1;
    return false;
  }
}

Rank spawn(int index, int world, const std::string& store, const std::string& job, const std::string& timeout,
           bool terminal, const std::vector<int>& cpus, const std::vector<char*>& argv) {
  int out[2], err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) throw tern::Error(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) throw tern::Error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Own process group, so signals reach the rank and whatever it starts, and a terminal's
    // Ctrl-C reaches ternrun alone (which forwards it).
    ::setpgid(0, 0);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::close(err[0]);
    ::close(err[1]);
    ::setenv("TERN_RANK", std::to_string(index).c_str(), 1);
    ::setenv("TERN_LOCAL_RANK", std::to_string(index).c_str(), 1);
    ::setenv("TERN_WORLD_SIZE", std::to_string(world).c_str(), 1);
    ::setenv("TERN_STORE_ADDR", store.c_str(), 1);
    ::setenv("TERN_JOB_ID", job.c_str(), 1);
    if (!timeout.empty()) ::setenv("TERN_COMM_TIMEOUT", timeout.c_str(), 1);
    // Rank 0 may draw a live progress bar when the user watches ternrun on a terminal.
    if (index == 0 && terminal) ::setenv("TERN_PROGRESS_TTY", "1", 1);
    if (!cpus.empty()) {
      cpu_set_t mask;
      CPU_ZERO(&mask);
      for (int c : cpus) CPU_SET(c, &mask);
      if (::sched_setaffinity(0, sizeof mask, &mask) != 0)
        std::fprintf(stderr, "ternrun: rank %d runs unbound: sched_setaffinity(%s): %s\n", index,
                     tern::launch::cpu_list(cpus).c_str(), std::strerror(errno));
    }
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "ternrun: cannot run '%s': %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, so it holds before either side races ahead
  ::close(out[1]);
  ::close(err[1]);
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  ::fcntl(err[0], F_SETFL, O_NONBLOCK);
  Rank r;
  r.index = index;
  r.pid = pid;
  r.out_fd = out[0];
  r.err_fd = err[0];
  r.running = true;
  return r;
}

void signal_all(std::vector<Rank>& ranks, int sig) {
  for (auto& r : ranks)
    if (r.running) ::kill(-r.pid, sig);
}

// The CPUs of each rank under --bind-to (empty: the ranks run unbound).
std::vector<std::vector<int>> rank_cpus(int n, tern::launch::BindPolicy policy, bool report) {
  using tern::launch::BindPolicy;
  if (policy == BindPolicy::kNone) {
    if (report) std::fprintf(stderr, "ternrun: %d ranks not bound (--bind-to none)\n", n);
    return {};
  }
  const std::vector<tern::launch::Cpu> cpus = tern::launch::allowed_cpus();
  std::vector<std::vector<int>> sets = tern::launch::cpu_sets_for_ranks(cpus, n);
  if (sets.empty() && policy == BindPolicy::kCores) {
    std::vector<int> ids;
    for (const auto& c : cpus) ids.push_back(c.id);
    throw tern::UsageError("--bind-to cores: " + std::to_string(n) + " ranks but only " +
                           std::to_string(cpus.size()) + " CPUs to run on (" + tern::launch::cpu_list(ids) +
                           "); use --bind-to auto or none to share them");
  }
  if (report) {
    for (size_t r = 0; r < sets.size(); ++r)
      std::fprintf(stderr, "ternrun: rank %zu bound to CPUs %s\n", r, tern::launch::cpu_list(sets[r]).c_str());
    if (sets.empty()) std::fprintf(stderr, "ternrun: %d ranks on %zu CPUs: not bound\n", n, cpus.size());
  }
  return sets;
}

int run(int n, const std::string& host, int port, double timeout_s, double grace_s, bool keep_going,
        const std::vector<std::vector<int>>& cpus, std::vector<char*> argv) {
  tern::TcpStoreServer store(host, static_cast<uint16_t>(port));
  const std::string job = make_job_id();
  char timeout[32] = "";
  if (timeout_s > 0) std::snprintf(timeout, sizeof timeout, "%g", timeout_s);
  argv.push_back(nullptr);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::vector<Rank> ranks;
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  for (int i = 0; i < n; ++i)
    ranks.push_back(spawn(i, n, store.address(), job, timeout, terminal,
                          cpus.empty() ? std::vector<int>{} : cpus[static_cast<size_t>(i)], argv));

  int result = 0;
  bool stopping = false;
  Clock::time_point kill_at{};
  int running = n;
  while (running > 0 || std::any_of(ranks.begin(), ranks.end(), [](const Rank& r) { return r.out_fd >= 0 || r.err_fd >= 0; })) {
    if (g_signal != 0 && !stopping) {
      const int sig = g_signal;
      std::fprintf(stderr, "ternrun: got %s, stopping all ranks\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      signal_all(ranks, sig);
      stopping = true;
      result = 128 + sig;
      kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
    }
    std::vector<pollfd> fds;
    for (auto& r : ranks) {
      if (r.out_fd >= 0) fds.push_back({r.out_fd, POLLIN, 0});
      if (r.err_fd >= 0) fds.push_back({r.err_fd, POLLIN, 0});
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 50);
    for (auto& r : ranks) {
      if (r.out_fd >= 0) {
        const bool open = drain(r.out_fd, r.out_buf);
        emit_lines(r.index, r.out_buf, STDOUT_FILENO, !open);
      }
      if (r.err_fd >= 0) {
        const bool open = drain(r.err_fd, r.err_buf);
        emit_lines(r.index, r.err_buf, STDERR_FILENO, !open);
      }
    }
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& r : ranks) {
        if (r.pid != pid || !r.running) continue;
        r.running = false;
        --running;
        r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r.exit_code != 0 && result == 0) result = r.exit_code;
        if (r.exit_code != 0 && !stopping && keep_going) {
          std::fprintf(stderr, "ternrun: rank %d exited with code %d; letting the others finish (--keep-going)\n",
                       r.index, r.exit_code);
        } else if (r.exit_code != 0 && !stopping) {
          std::fprintf(stderr, "ternrun: rank %d exited with code %d; stopping the other ranks\n", r.index,
                       r.exit_code);
          result = r.exit_code;
          signal_all(ranks, SIGTERM);
          stopping = true;
          kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
        }
      }
    }
    if (stopping && running > 0 && Clock::now() >= kill_at) {
      std::fprintf(stderr, "ternrun: %d rank(s) still running %.0f s after SIGTERM, killing them\n", running, grace_s);
      signal_all(ranks, SIGKILL);
      kill_at = Clock::now() + std::chrono::hours(1);
    }
    if (running == 0 && fds.empty()) break;
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  // Our flags end at the program name: everything from it on belongs to the program.
  int prog = 1;
  while (prog < argc && argv[prog][0] == '-') {
    const std::string a = argv[prog];
    const bool takes_value = a == "-n" || a == "--nproc" || a == "--port" || a == "--timeout" ||
                             a == "--host" || a == "--grace" || a == "--bind-to";
    prog += (takes_value ? 2 : 1);
  }
  prog = std::min(prog, argc);
  tern::Flags flags("ternrun",
                    "Run N ranks of PROGRAM on this machine with the tcp backend's rendezvous.\n"
                    "Each rank gets TERN_RANK, TERN_WORLD_SIZE, TERN_STORE_ADDR and TERN_JOB_ID;\n"
                    "its output lines are prefixed with [rank]. If a rank exits non-zero the\n"
                    "others are stopped and ternrun exits with that code. For several hosts, use\n"
                    "mpirun (Open MPI) with the mpi backend: mpirun -np N -H a,b PROGRAM ...\n"
                    "By default (--bind-to auto) each rank runs on its own share of the cores\n"
                    "ternrun may use, as mpirun binds to cores, and --threads K in a rank on that\n"
                    "share; with more ranks than CPUs they run unbound.",
                    "-n N [flags] PROGRAM [ARGS...]");
  flags.add_int("nproc", 1, "number of ranks to start (also -n)");
  flags.add_string("host", "127.0.0.1", "address the rendezvous store listens on");
  flags.add_int("port", 0, "port of the rendezvous store (0: any free port)");
  flags.add_float("timeout", 0, "communication timeout in seconds given to the ranks (0: their default)");
  flags.add_float("grace", 5, "seconds between SIGTERM and SIGKILL when stopping ranks");
  flags.add_bool("keep-going", false, "when a rank fails, let the others run on (exit code: the first failure's)");
  flags.add_string("bind-to", "auto",
                   "none: the ranks share every CPU ternrun may use | auto: each rank gets its own contiguous "
                   "share of the cores (whole cores when there are enough, else CPUs) when there are at least "
                   "N CPUs, else none | cores: the same, an error when there are fewer CPUs than ranks");
  flags.add_bool("report-bindings", false, "print each rank's CPUs on stderr before starting it");
  std::vector<std::string> ours_storage;
  std::vector<const char*> ours{argv[0]};
  for (int i = 1; i < prog; ++i) {
    std::string a = argv[i];
    if (a == "-n") a = "--nproc";
    ours_storage.push_back(a);
  }
  for (auto& s : ours_storage) ours.push_back(s.c_str());
  try {
    if (!flags.parse(static_cast<int>(ours.size()), ours.data())) {
      std::fputs(flags.usage().c_str(), stdout);
      return 0;
    }
    if (prog >= argc) throw tern::UsageError("no PROGRAM given");
    const int64_t n = flags.get_int("nproc");
    if (n < 1 || n > 1024) throw tern::UsageError("-n must be between 1 and 1024");
    const int64_t port = flags.get_int("port");
    if (port < 0 || port > 65535) throw tern::UsageError("--port must be in 0..65535");
    if (flags.get_float("timeout") < 0 || flags.get_float("grace") < 0)
      throw tern::UsageError("--timeout and --grace must be >= 0");
    const auto cpus = rank_cpus(static_cast<int>(n), tern::launch::parse_bind_policy(flags.get_string("bind-to")),
                                flags.get_bool("report-bindings"));
    std::vector<char*> program(argv + prog, argv + argc);
    return run(static_cast<int>(n), flags.get_string("host"), static_cast<int>(port), flags.get_float("timeout"),
               flags.get_float("grace"), flags.get_bool("keep-going"), cpus, program);
  } catch (const tern::UsageError& e) {
    std::fprintf(stderr, "ternrun: %s\n%s", e.what(), flags.short_usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ternrun: error: %s\n", e.what());
    return 1;
  }
}
