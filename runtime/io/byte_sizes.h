// Byte counts as people write them: parse_bytes reads "256KB" from a flag, format_bytes writes
// "63.5 KB" into a message (memory budgets, shared-memory sizes).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tern {

// "300000", "256KB", "256K", "256KiB", "1.5MB", "2M" (K = 1024 bytes, M = 1024 K; case-insensitive).
// Throws tern::Error for anything else, a negative or fractional byte count, or an overflow.
size_t parse_bytes(std::string_view text);
// "812 B", "63.5 KB", "1.25 MB".
std::string format_bytes(size_t bytes);

}  // namespace tern
