// Names the calling thread as `top -H`, gdb, perf and /proc/PID/task/*/comm show it, so that a
// rank's communication threads can be told apart from its compute threads (Linux keeps 15 bytes).
#pragma once

#include <pthread.h>

#include <string>

namespace tern {

inline void name_this_thread(const std::string& name) { ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str()); }

}  // namespace tern
