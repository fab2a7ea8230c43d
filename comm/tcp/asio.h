// Boost.Asio for the tcp backend. Boost 1.74's asio.hpp uses std::exchange (awaitable.hpp under
// C++20) without including <utility>, so every file of ours takes Asio through this header.
#pragma once

// clang-format off
#include <utility>
#include <boost/asio.hpp>
// clang-format on
