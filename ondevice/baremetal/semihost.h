// Output and exit for the bare-metal demo through ARM semihosting (QEMU -semihosting-config
// enable=on): what the program prints reaches the host's stdout, and its status the host's $?.
#pragma once

#include <stdint.h>

namespace tern::baremetal {

void write(const char* text);
[[noreturn]] void exit(int status);

}  // namespace tern::baremetal
