// Names a thread as `top -H`, gdb, perf and /proc/PID/task/*/comm show it, so that a rank's
// communication threads can be told apart from its compute threads (Linux keeps 15 bytes). Named by
// the thread that starts it, right after, so the name is there as soon as the constructor returns.
#pragma once

#include <pthread.h>

#include <string>
#include <thread>

namespace tern {

inline void name_thread(std::thread& thread, const std::string& name) {
  ::pthread_setname_np(thread.native_handle(), name.substr(0, 15).c_str());
}

}  // namespace tern
