// Reset and semihosting for the QEMU mps2 boards: the vector table, a reset handler that sets up
// .data/.bss and the FPU and calls main, and the two ARM semihosting calls the demo needs (write a
// string to the host's stdout, exit with a status code). No C library start-up, no heap.
#include <stdint.h>

#include "ondevice/baremetal/semihost.h"

extern "C" {
extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
int main();
void reset_handler();
void fault_handler();
}

namespace {

// Semihosting: r0 = operation, r1 = argument, then BKPT 0xAB; QEMU answers when run with
// -semihosting-config enable=on.
int32_t semihost_call(int32_t op, const void* arg) {
  register int32_t r0 asm("r0") = op;
  register const void* r1 asm("r1") = arg;
  asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

constexpr int32_t kSysWrite0 = 0x04;
constexpr int32_t kSysExitExtended = 0x20;
constexpr uint32_t kApplicationExit = 0x20026;  // ADP_Stopped_ApplicationExit

}  // namespace

namespace tern::baremetal {

void write(const char* text) { semihost_call(kSysWrite0, text); }

[[noreturn]] void exit(int status) {
  const uint32_t block[2] = {kApplicationExit, static_cast<uint32_t>(status)};
  for (;;) semihost_call(kSysExitExtended, block);
}

}  // namespace tern::baremetal

extern "C" void reset_handler() {
#if defined(__ARM_FP)
  // Enable CP10/CP11 (the FPU) before any float instruction runs.
  volatile uint32_t* cpacr = reinterpret_cast<volatile uint32_t*>(0xE000ED88u);
  *cpacr |= 0xFu << 20;
  asm volatile("dsb\n isb" ::: "memory");
#endif
  for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  tern::baremetal::exit(main());
}

extern "C" void fault_handler() {
  tern::baremetal::write("tern-demo: hard fault\n");
  tern::baremetal::exit(3);
}

// Initial stack pointer, reset, NMI, hard fault, then the other faults; nothing else is enabled.
__attribute__((section(".vectors"), used)) void (*const kVectors[16])() = {
    reinterpret_cast<void (*)()>(&__stack_top), reset_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, fault_handler};
